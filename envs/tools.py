"""Tools for `opd/ToolUse-v0` and the world state they act on.

What: a safe arithmetic evaluator (`safe_eval`, an AST walk with bounds, never `eval`), a unit
converter, a small seeded world (cities, people, bank accounts) with lookup and transfer tools,
and a Python tool that runs code in the verifiers' sandbox. Each tool has an OpenAI tool schema
(`{"type": "function", "function": {"name", "description", "parameters"}}`) and an
implementation `(world, arguments) -> str`; `call_tool` validates the arguments against the
schema and turns every failure into a one-line error string for the agent, never an exception.

Why here: the env (`tool_env.py`) owns turns, parsing and rewards; this module owns what a
tool does, so a task generator can compute reference answers with the same code the agent
calls.

Not covered: tools with side effects outside the world object (files, network); the Python
tool's isolation is the sandbox's business (see `opd_selfplay.verifiers.sandbox`).
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from opd_selfplay.verifiers.jsonschema_lite import validate

Number = int | float | Fraction

# ---------------------------------------------------------------------------------------------
# Safe arithmetic
# ---------------------------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 500
"""Longer expressions are refused before parsing: `ast.parse` of hostile text is itself work."""
_MAX_INT_BITS = 4096  # results past ~1200 decimal digits are refused, so no step can explode
_MAX_NODES = 200

_BINOPS: dict[type, Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Number]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTS = {"pi": math.pi, "e": math.e}


class ExpressionError(ValueError):
    """The expression is not valid arithmetic, or its value is out of bounds."""


def _check_size(value: Number) -> Number:
    if isinstance(value, Fraction):
        if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_INT_BITS:
            raise ExpressionError("intermediate value too large")
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise ExpressionError("intermediate value too large")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("result is not a finite number")
    return value


def _pow(base: Number, exp: Number) -> Number:
    # Bound the work before doing it: |base|**exp has about exp * log2|base| bits.
    try:
        if isinstance(exp, int) or (isinstance(exp, Fraction) and exp.denominator == 1):
            e = int(exp)
            magnitude = abs(float(base))
            if magnitude > 1 and abs(e) * math.log2(magnitude) > _MAX_INT_BITS:
                raise ExpressionError("power too large")
            value = base**e
        else:
            value = float(base) ** float(exp)
    except ZeroDivisionError as exc:
        raise ExpressionError("division by zero") from exc
    except OverflowError as exc:
        raise ExpressionError("power too large") from exc
    if isinstance(value, complex):
        raise ExpressionError("fractional power of a negative number")
    return _check_size(value)


class _Evaluator:
    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.nodes = 0

    def eval(self, node: ast.AST) -> Number:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise ExpressionError(f"expression has more than {_MAX_NODES} parts")
        if isinstance(node, ast.Expression):
            return self.eval(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ExpressionError(f"unsupported literal {node.value!r}")
            if self.exact and isinstance(node.value, float):
                return Fraction(repr(node.value))
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = self.eval(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.eval(node.left), self.eval(node.right)
            if isinstance(node.op, ast.Pow):
                return _pow(left, right)
            if isinstance(node.op, ast.Div) and self.exact:
                if right == 0:
                    raise ExpressionError("division by zero")
                return _check_size(Fraction(left) / Fraction(right))
            try:
                return _check_size(_BINOPS[type(node.op)](left, right))
            except ZeroDivisionError as exc:
                raise ExpressionError("division by zero") from exc
            except OverflowError as exc:
                raise ExpressionError("result too large") from exc
        if isinstance(node, ast.Name) and node.id in _CONSTS and not self.exact:
            return _CONSTS[node.id]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
            and not self.exact
        ):
            args = [self.eval(a) for a in node.args]
            try:
                return _check_size(_FUNCS[node.func.id](*args))
            except (ValueError, TypeError, OverflowError) as exc:
                raise ExpressionError(f"{node.func.id}() failed: {exc}") from exc
        what = type(node).__name__
        if isinstance(node, ast.Name):
            what = f"name {node.id!r}"
        elif isinstance(node, ast.Call):
            what = "that function call"
        allowed = "numbers, + - * / // % ** and parentheses"
        if not self.exact:
            allowed += ", pi, e and " + ", ".join(sorted(_FUNCS))
        raise ExpressionError(f"{what} is not allowed; use only {allowed}")


def safe_eval(expression: str, *, exact: bool = False) -> Number:
    """Evaluates an arithmetic expression without `eval`, with bounds on size and work.

    Args:
        expression: e.g. `"(3 + 4) * 2 ** 10 / 7"`; `^` is read as a power.
        exact: rational arithmetic (`/` gives a `Fraction`, float literals become fractions)
            and no functions or constants; used where an exact answer is the reference.

    Returns:
        The value: an int, a float, or (with `exact`) an int or `Fraction`.

    Raises:
        ExpressionError: a syntax error, a disallowed construct, division by zero, or a value
            past the bounds (about 1,200 digits; 200 AST nodes; 500 characters).
    """
    if not isinstance(expression, str):
        raise ExpressionError("expression must be a string")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.replace("^", "**").replace("×", "*").replace("÷", "/").strip()
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"cannot parse {expression[:60]!r} as arithmetic") from exc
    value = _Evaluator(exact).eval(tree)
    if exact and isinstance(value, Fraction) and value.denominator == 1:
        return int(value)
    return value


def format_number(value: Number) -> str:
    """Shows a number the way a calculator would: ints exact, floats to 12 significant digits.

    Args:
        value: an int, float or Fraction.

    Returns:
        `"42"`, `"3.5"`, `"0.333333333333"`, or `"7/3"` for a non-integral Fraction.
    """
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else f"{value}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".12g")
    return str(value)


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------

_UNITS: dict[str, tuple[str, float]] = {
    # length, in meters
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "cm": ("length", 0.01),
    "mm": ("length", 0.001),
    "mi": ("length", 1609.344),
    "yd": ("length", 0.9144),
    "ft": ("length", 0.3048),
    "in": ("length", 0.0254),
    # mass, in kilograms
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
    "t": ("mass", 1000.0),
    # time, in seconds
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "day": ("time", 86400.0),
    "week": ("time", 604800.0),
    # volume, in liters
    "l": ("volume", 1.0),
    "ml": ("volume", 0.001),
    "gal": ("volume", 3.785411784),
    # speed, in meters per second
    "m/s": ("speed", 1.0),
    "km/h": ("speed", 1000.0 / 3600.0),
    "mph": ("speed", 1609.344 / 3600.0),
}
_TEMPERATURES = ("C", "F", "K")


def _pairs(text: str) -> dict[str, str]:
    return dict(pair.split("=") for pair in text.split())


# Common English names of the units, as "name=symbol" pairs.
_ALIASES = _pairs(
    "meter=m meters=m kilometer=km kilometers=km mile=mi miles=mi foot=ft feet=ft inch=in "
    "inches=in kilogram=kg kilograms=kg gram=g grams=g pound=lb pounds=lb lbs=lb liter=l "
    "liters=l hour=h hours=h minute=min minutes=min second=s seconds=s days=day weeks=week "
    "celsius=C fahrenheit=F kelvin=K"
)


def _unit(name: str) -> str:
    key = name.strip()
    if key in _UNITS or key in _TEMPERATURES:
        return key
    low = key.lower()
    if low in _ALIASES:
        return _ALIASES[low]
    if low in _UNITS:
        return low
    if key.upper() in _TEMPERATURES and len(key) == 1:
        return key.upper()
    known = ", ".join([*_UNITS, *_TEMPERATURES])
    raise ValueError(f"unknown unit {name[:30]!r}; known units: {known}")


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """Converts between units of one kind (length, mass, time, volume, speed, temperature).

    Args:
        value: the quantity in `from_unit`.
        from_unit: a unit symbol (`km`, `lb`, `C`, ...) or a common English name (`miles`).
        to_unit: the target unit.

    Returns:
        The converted value, not rounded.

    Raises:
        ValueError: an unknown unit, or units of different kinds.
    """
    a, b = _unit(from_unit), _unit(to_unit)
    if a in _TEMPERATURES or b in _TEMPERATURES:
        if not (a in _TEMPERATURES and b in _TEMPERATURES):
            raise ValueError(f"cannot convert {a} to {b}: different kinds of unit")
        kelvin = {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[a]
        return {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[b]
    (kind_a, fa), (kind_b, fb) = _UNITS[a], _UNITS[b]
    if kind_a != kind_b:
        raise ValueError(f"cannot convert {a} ({kind_a}) to {b} ({kind_b})")
    return value * fa / fb


# ---------------------------------------------------------------------------------------------
# World state
# ---------------------------------------------------------------------------------------------

# Invented names, so an agent cannot answer from memory and must call the tools.
_CITY_NAMES = [
    "Aldermoor",
    "Brightwater",
    "Caldera",
    "Dunmere",
    "Eastwick",
    "Fallowmere",
    "Glenhollow",
    "Harrowgate",
    "Ironvale",
    "Juniper",
    "Kestrel",
    "Lindenport",
    "Marrowick",
    "Northfen",
    "Oakhaven",
    "Pellmoor",
    "Quarrybank",
    "Ravensholm",
    "Saltmarsh",
    "Thornbury",
    "Umberfield",
    "Vexley",
    "Willowmere",
    "Yarrowby",
    "Zephyr",
]
_COUNTRIES = ("Norvania", "Estmark", "Valdoria", "Sunreach", "Corvia")
_FIRST = [
    "Ada",
    "Bram",
    "Cora",
    "Dax",
    "Elin",
    "Finn",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Lars",
    "Mila",
    "Nico",
    "Orla",
    "Pim",
    "Quinn",
    "Rosa",
    "Soren",
    "Tilda",
    "Uma",
    "Vito",
    "Wren",
    "Yara",
    "Zeno",
]
_LAST = [
    "Abbott",
    "Birch",
    "Crane",
    "Dale",
    "Ellery",
    "Frost",
    "Garner",
    "Hale",
    "Ives",
    "Jarrow",
    "Keane",
    "Lowe",
]
_EMPLOYERS = ("Acme Labs", "Blue Harbor", "Cobalt Works", "Delta Foods", "Evergreen Bank")


@dataclass
class World:
    """The mutable state that the tools read and write during one episode.

    Built by `World.generate(rng)` for a task and rebuilt from the task's copy
    (`from_json`) at each reset; only `transfer` changes it (`accounts` and `transfers`), so
    the final state a task checks is `accounts`.
    """

    cities: dict[str, dict[str, object]] = field(default_factory=dict)
    """City name -> {"country", "population", "elevation_m", "founded"}."""
    people: dict[str, dict[str, object]] = field(default_factory=dict)
    """Full name -> {"age", "city", "employer", "salary"}."""
    accounts: dict[str, int] = field(default_factory=dict)
    """Account owner (a person's full name) -> balance in whole dollars."""
    transfers: list[dict[str, object]] = field(default_factory=list)
    """Every successful transfer, in order, as {"from", "to", "amount"}."""

    @classmethod
    def generate(cls, rng: np.random.Generator, n_cities: int = 8, n_people: int = 14) -> World:
        """A random world: distinct city and person names, plausible numbers.

        Args:
            rng: the env's generator (seeded at reset).
            n_cities: how many cities (at most 25).
            n_people: how many people (at most 25 * 12).

        Returns:
            A fresh world.
        """
        world = cls()
        for name in rng.choice(_CITY_NAMES, size=n_cities, replace=False):
            world.cities[str(name)] = {
                "country": str(rng.choice(_COUNTRIES)),
                "population": int(rng.integers(2_000, 2_000_000)),
                "elevation_m": int(rng.integers(0, 2_500)),
                "founded": int(rng.integers(900, 1950)),
            }
        cities = list(world.cities)
        pairs = [(f, s) for f in _FIRST for s in _LAST]
        picks = rng.choice(len(pairs), size=n_people, replace=False)
        for i in picks:
            first, last = pairs[int(i)]
            name = f"{first} {last}"
            world.people[name] = {
                "age": int(rng.integers(19, 80)),
                "city": cities[int(rng.integers(len(cities)))],
                "employer": str(rng.choice(_EMPLOYERS)),
                "salary": int(rng.integers(24, 180)) * 1000,
            }
            world.accounts[name] = int(rng.integers(10, 5000)) * 10
        return world

    def to_json(self) -> dict[str, object]:
        """The world as JSON (deep copies), e.g. for a task's metadata."""
        return json.loads(
            json.dumps(
                {
                    "cities": self.cities,
                    "people": self.people,
                    "accounts": self.accounts,
                    "transfers": self.transfers,
                }
            )
        )

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> World:
        """Inverse of `to_json` (a fresh, independent world).

        Raises:
            ValueError: when a table is not an object of records.
        """
        data = json.loads(json.dumps(dict(data)))
        for key in ("cities", "people", "accounts"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"world field {key!r} must be an object, got {data[key]!r:.60}")
        return cls(
            cities=data.get("cities", {}),
            people=data.get("people", {}),
            accounts={str(k): int(v) for k, v in data.get("accounts", {}).items()},
            transfers=list(data.get("transfers", [])),
        )


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

ToolFn = Callable[[World, Mapping[str, object]], str]


class ToolError(Exception):
    """A tool refused its input; the message goes back to the agent as the tool's result."""


def _find(table: Mapping[str, object], key: str, what: str) -> str:
    for name in table:
        if name.casefold() == key.strip().casefold():
            return name
    raise ToolError(f"no {what} named {key[:60]!r}")


def _get_city(world: World, args: Mapping[str, object]) -> str:
    name = _find(world.cities, str(args["name"]), "city")
    return json.dumps({"name": name, **world.cities[name]})


def _get_person(world: World, args: Mapping[str, object]) -> str:
    name = _find(world.people, str(args["name"]), "person")
    return json.dumps({"name": name, **world.people[name]})


def _find_people(world: World, args: Mapping[str, object]) -> str:
    city = _find(world.cities, str(args["city"]), "city")
    found = [{"name": n, "age": p["age"]} for n, p in world.people.items() if p["city"] == city]
    return json.dumps(found)


def _get_balance(world: World, args: Mapping[str, object]) -> str:
    name = _find(world.accounts, str(args["account"]), "account")
    return json.dumps({"account": name, "balance": world.accounts[name]})


def _transfer(world: World, args: Mapping[str, object]) -> str:
    src = _find(world.accounts, str(args["from_account"]), "account")
    dst = _find(world.accounts, str(args["to_account"]), "account")
    amount = args["amount"]
    if float(amount) != int(amount) or int(amount) <= 0:
        raise ToolError(f"amount must be a positive whole number of dollars, got {amount!r}")
    amount = int(amount)
    if src == dst:
        raise ToolError("from_account and to_account must differ")
    if world.accounts[src] < amount:
        raise ToolError(f"insufficient funds: {src} has {world.accounts[src]}")
    world.accounts[src] -= amount
    world.accounts[dst] += amount
    world.transfers.append({"from": src, "to": dst, "amount": amount})
    return json.dumps({"ok": True, "from_balance": world.accounts[src]})


def _calculator(world: World, args: Mapping[str, object]) -> str:
    try:
        return format_number(safe_eval(str(args["expression"])))
    except ExpressionError as exc:
        raise ToolError(str(exc)) from exc


def _convert(world: World, args: Mapping[str, object]) -> str:
    try:
        value = convert_units(float(args["value"]), str(args["from_unit"]), str(args["to_unit"]))
    except ValueError as exc:
        raise ToolError(str(exc)) from exc
    return format_number(value)


def _python(world: World, args: Mapping[str, object]) -> str:
    # Imported here: the sandbox module is only needed when the agent runs code.
    from opd_selfplay.verifiers import sandbox

    result = sandbox.run_python(str(args["code"]), time_limit_s=5.0, memory_limit_mb=256)
    return sandbox_output(result)


def sandbox_output(result: object, limit: int = 2000) -> str:
    """Renders a sandbox run as the Python tool's reply: stdout, then the error tail if any.

    Args:
        result: the sandbox's result object (`stdout`, `stderr`, `timed_out`, `returncode`).
        limit: characters kept of each stream.

    Returns:
        The text shown to the agent.
    """
    out = str(getattr(result, "stdout", "") or "")[:limit]
    err = str(getattr(result, "stderr", "") or "")[-limit:]
    if getattr(result, "timed_out", False):
        return (out + "\n[timed out]").strip()
    code = getattr(result, "returncode", 0)
    if code:
        return (out + f"\n[exit status {code}]\n" + err).strip()
    return out.strip() or "(no output; print() the value you need)"


def _schema(name: str, description: str, props: dict[str, dict], required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_STR = {"type": "string"}
_NUM = {"type": "number"}


@dataclass(frozen=True)
class Tool:
    """One tool: its OpenAI schema and its implementation."""

    schema: dict
    """`{"type": "function", "function": {"name", "description", "parameters"}}`."""
    fn: ToolFn
    """`(world, validated arguments) -> result text`; raises `ToolError` to refuse."""

    @property
    def name(self) -> str:
        """The tool's name, as the agent calls it."""
        return str(self.schema["function"]["name"])


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            _schema(
                "calculator",
                "Evaluate arithmetic: numbers, + - * / // % ** ( ), pi, e, sqrt, abs, round, "
                "min, max, floor, ceil, log, exp, sin, cos, tan.",
                {"expression": {**_STR, "description": "e.g. '(12 + 30) * 1.5'"}},
                ["expression"],
            ),
            _calculator,
        ),
        Tool(
            _schema(
                "convert_units",
                "Convert a quantity between units of length (m, km, cm, mm, mi, yd, ft, in), "
                "mass (kg, g, lb, oz, t), time (s, min, h, day, week), volume (l, ml, gal), "
                "speed (m/s, km/h, mph) or temperature (C, F, K).",
                {"value": _NUM, "from_unit": _STR, "to_unit": _STR},
                ["value", "from_unit", "to_unit"],
            ),
            _convert,
        ),
        Tool(
            _schema(
                "get_city",
                "Look up a city: country, population, elevation in meters, year founded.",
                {"name": _STR},
                ["name"],
            ),
            _get_city,
        ),
        Tool(
            _schema(
                "get_person",
                "Look up a person by full name: age, home city, employer, yearly salary in dollars.",
                {"name": _STR},
                ["name"],
            ),
            _get_person,
        ),
        Tool(
            _schema(
                "find_people",
                "List the people (name and age) who live in a city.",
                {"city": _STR},
                ["city"],
            ),
            _find_people,
        ),
        Tool(
            _schema(
                "get_balance",
                "Current balance, in whole dollars, of the bank account owned by a person.",
                {"account": {**_STR, "description": "the owner's full name"}},
                ["account"],
            ),
            _get_balance,
        ),
        Tool(
            _schema(
                "transfer",
                "Move a whole number of dollars from one person's account to another's.",
                {
                    "from_account": _STR,
                    "to_account": _STR,
                    "amount": {"type": "integer", "minimum": 1},
                },
                ["from_account", "to_account", "amount"],
            ),
            _transfer,
        ),
        Tool(
            _schema(
                "python",
                "Run a short Python 3 program in a sandbox (no network, no files kept, 5 s) "
                "and return what it prints. Use print() to see values.",
                {"code": _STR},
                ["code"],
            ),
            _python,
        ),
    )
}


def call_tool(world: World, name: str, arguments: object, tools: Mapping[str, Tool]) -> str:
    """Runs one tool call and returns its result text; never raises for bad model input.

    Args:
        world: the episode's state.
        name: the tool name the agent used.
        arguments: the decoded arguments (any JSON value; validated here).
        tools: the tools this task offers.

    Returns:
        The tool's result, or a line starting with `Error:` that says what was wrong.
    """
    tool = tools.get(name)
    if tool is None:
        return f"Error: unknown tool {name[:60]!r}; available tools: {', '.join(tools)}"
    problems = validate(arguments, tool.schema["function"]["parameters"], name="arguments")
    if problems:
        return f"Error: bad arguments for {name}: " + "; ".join(problems[:3])
    try:
        return tool.fn(world, arguments)  # type: ignore[arg-type]
    except ToolError as exc:
        return f"Error: {exc}"
