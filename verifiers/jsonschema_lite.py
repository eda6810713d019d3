"""Checks on untrusted JSON values: a small JSON Schema validator, and comparison with references.

Two checks that tool-call verification and the ToolUse environment share, both walking a value
that a model wrote: `validate` (does it fit the tool's schema?) and `compare` (does it match the
reference, with numeric tolerance and markers such as `{"$any": [...]}`?).

Tool schemas (`{"type": "function", "function": {"parameters": <JSON Schema>}}`) describe the
arguments a model may pass. The verifiers and the ToolUse environment check every call against
them, so a wrong type or a missing argument gets a feedback line that names the argument.

Why not the `jsonschema` package: it is not installed with the base dependencies, it pulls in
`referencing`, `attrs` and the compiled `rpds-py`, and its error messages and work bounds are not
made for hostile instances. The instances here are untrusted model output, so this validator
counts its steps and stops at a budget (and at an optional deadline), whatever the schema does.

Covered keywords: `type` (one name or a list; `integer` accepts integral floats, as the spec
says), `enum`, `const`, `properties`, `required`, `additionalProperties` (bool or schema),
`items` (schema, or a list as in draft 4), `prefixItems`, `minItems`, `maxItems`, `uniqueItems`,
`minLength`, `maxLength`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (number,
or the draft-4 boolean), `multipleOf`, `anyOf`, `oneOf`, `allOf`, `not`, OpenAPI's `nullable`,
boolean schemas, and `$ref` to local definitions (`#`, `#/$defs/...`, `#/definitions/...`).

Not covered, and ignored so that they never reject a valid call: `format`, `pattern`,
`patternProperties` (a schema's regex run on untrusted strings is a ReDoS risk), `if`/`then`/
`else`, `dependentRequired`, `dependentSchemas`, `unevaluated*`, `contains`, remote `$ref`.

`compare` is documented where it is defined; it does no semantic matching of free text.
"""

from __future__ import annotations

import json
import math
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MARKERS",
    "Rules",
    "SchemaError",
    "bipartite_matching",
    "check_markers",
    "check_schema",
    "compare",
    "json_equal",
    "json_type",
    "marker",
    "norm_text",
    "numbers_close",
    "path_name",
    "short",
    "validate",
]

_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_NUMBER_KEYS = ("minimum", "maximum", "multipleOf")
_COUNT_KEYS = ("minItems", "maxItems", "minLength", "maxLength")
_MAX_SCHEMA_DEPTH = 64
_MAX_REF_HOPS = 32


class SchemaError(ValueError):
    """The schema itself is malformed (a bug in the tool description, not in the model's call)."""


class _Budget(Exception):
    """Raised inside the walk when the step budget is spent."""


def json_type(value: object) -> str:
    """The JSON type name of a Python value (`boolean` for bools, `integer` for ints, ...).

    Args:
        value: a value decoded from JSON.

    Returns:
        One of null, boolean, integer, number, string, array, object, or the Python type name.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def short(value: object, limit: int = 40) -> str:
    """A one-line JSON rendering of `value`, cut to `limit` characters with an ellipsis.

    Args:
        value: any JSON value (other values are rendered with `repr`).
        limit: the most characters to keep.

    Returns:
        The rendering, safe to put in a one-line feedback message.
    """
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_equal(a: object, b: object) -> bool:
    """Equality as JSON Schema defines it: 1 == 1.0, but true != 1 and "1" != 1.

    Args:
        a: a JSON value.
        b: a JSON value.

    Returns:
        Whether the two values are equal as JSON.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _is_type(value: object, name: str) -> bool:
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return json_type(value) == name


def path_name(path: tuple[str | int, ...]) -> str:
    """`("options", "dates", 0)` -> `options.dates[0]`: how messages name a nested argument."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _canon(value: object) -> object:
    """A form whose JSON text is equal exactly when the values are `json_equal`."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    return value


def _resolve(ref: str, root: object) -> object:
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise SchemaError(f"$ref {ref!r}: only local references ('#/...') are supported")
    node = root
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise SchemaError(f"$ref {ref!r} does not resolve inside the schema")
        node = node[part]
    return node


def check_schema(schema: object, where: str = "schema") -> None:
    """Check that `schema` is well formed for the covered keywords, so validation cannot crash.

    Args:
        schema: a JSON Schema (a dict, or a boolean schema).
        where: how to name the schema in the error (e.g. "tool 'get_weather' parameters").

    Raises:
        SchemaError: naming the keyword path that is malformed and what it should be.
    """
    _check(schema, where, (), schema, 0)


def _check(node: object, where: str, path: tuple[str | int, ...], root: object, depth: int) -> None:
    at = f"{where} at '{path_name(path) or '#'}'"
    if isinstance(node, bool):
        return
    if not isinstance(node, Mapping):
        raise SchemaError(f"{at}: a schema must be an object or a boolean, got {json_type(node)}")
    if depth > _MAX_SCHEMA_DEPTH:
        raise SchemaError(f"{at}: schema nested deeper than {_MAX_SCHEMA_DEPTH} levels")
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for k in kinds:
        if k not in _TYPES:
            raise SchemaError(f"{at}: unknown type {k!r}; use one of {', '.join(_TYPES)}")
    if "required" in node and not (
        isinstance(node["required"], list) and all(isinstance(r, str) for r in node["required"])
    ):
        raise SchemaError(f"{at}: 'required' must be a list of property names")
    if "enum" in node and not isinstance(node["enum"], list):
        raise SchemaError(f"{at}: 'enum' must be a list")
    for key in _NUMBER_KEYS:
        value = node.get(key)
        if key in node and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise SchemaError(f"{at}: {key!r} must be a number")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], (int, float)):
            raise SchemaError(f"{at}: {key!r} must be a number or a boolean")
    for key in _COUNT_KEYS:
        value = node.get(key)
        if key in node and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SchemaError(f"{at}: {key!r} must be a non-negative integer")
    for key in _SCHEMA_MAPS:
        if key in node:
            if not isinstance(node[key], Mapping):
                raise SchemaError(f"{at}: {key!r} must be an object of schemas")
            for name, sub in node[key].items():
                _check(sub, where, (*path, key, str(name)), root, depth + 1)
    for key in _SCHEMA_LISTS:
        if key in node:
            if not isinstance(node[key], list) or not node[key]:
                raise SchemaError(f"{at}: {key!r} must be a non-empty list of schemas")
            for i, sub in enumerate(node[key]):
                _check(sub, where, (*path, key, i), root, depth + 1)
    items = node.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            _check(sub, where, (*path, "items", i), root, depth + 1)
    elif "items" in node:
        _check(items, where, (*path, "items"), root, depth + 1)
    for key in ("not", "additionalProperties"):
        if key in node:
            _check(node[key], where, (*path, key), root, depth + 1)
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise SchemaError(f"{at}: '$ref' must be a string")
        try:
            _resolve(ref, root)
        except SchemaError as exc:
            raise SchemaError(f"{at}: {exc}") from None


class _Walker:
    """One validation: the root (for `$ref`), the step budget, the deadline, the errors."""

    def __init__(self, root: object, name: str, max_errors: int, max_steps: int, deadline: Any):
        self.root = root
        self.name = name
        self.max_errors = max_errors
        self.steps_left = max_steps
        self.deadline = deadline
        self.errors: list[str] = []

    def where(self, path: tuple[str | int, ...]) -> str:
        return f"argument '{path_name(path)}'" if path else self.name

    def tick(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise _Budget
        late = self.deadline is not None and self.steps_left % 1024 == 0
        if late and time.monotonic() > self.deadline:
            raise TimeoutError("schema validation ran past its time limit")

    def errors_of(self, value: object, schema: object, path: tuple, hops: int) -> list[str]:
        """The problems of `value` against `schema`, not recorded (for anyOf/oneOf/not)."""
        saved, self.errors = self.errors, []
        try:
            self.walk(value, schema, path, hops)
            return self.errors
        finally:
            self.errors = saved

    def add(self, message: str) -> None:
        if len(self.errors) < self.max_errors:
            self.errors.append(message)

    def walk(self, value: object, schema: object, path: tuple[str | int, ...], hops: int) -> None:
        self.tick()
        if schema is True or schema == {}:
            return
        if schema is False:
            self.add(f"{self.where(path)} is not allowed")
            return
        assert isinstance(schema, Mapping)
        where = self.where(path)
        if "$ref" in schema:
            if hops >= _MAX_REF_HOPS:
                self.add(f"{where}: the schema's $ref chain loops")
                return
            self.walk(value, _resolve(schema["$ref"], self.root), path, hops + 1)
        if value is None and schema.get("nullable") is True:
            return
        kind = schema.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            if not any(_is_type(value, k) for k in kinds):
                wanted = " or ".join(kinds)
                self.add(f"{where} must be {wanted}, got {json_type(value)} {short(value)}")
                return
        if "enum" in schema and not any(json_equal(value, e) for e in schema["enum"]):
            self.add(f"{where} must be one of {short(schema['enum'], 80)}, got {short(value)}")
        if "const" in schema and not json_equal(value, schema["const"]):
            self.add(f"{where} must be {short(schema['const'])}, got {short(value)}")
        self._combinators(value, schema, path, hops, where)
        if isinstance(value, dict):
            self._object(value, schema, path)
        elif isinstance(value, list):
            self._array(value, schema, path, where)
        elif isinstance(value, str):
            n = len(value)
            if n < schema.get("minLength", 0):
                self.add(f"{where} must have at least {schema['minLength']} characters, got {n}")
            if "maxLength" in schema and n > schema["maxLength"]:
                self.add(f"{where} must have at most {schema['maxLength']} characters, got {n}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number(value, schema, where)

    def _combinators(
        self, value: object, schema: Mapping, path: tuple[str | int, ...], hops: int, where: str
    ) -> None:
        for sub in schema.get("allOf", ()):
            self.walk(value, sub, path, hops)
        for key in ("anyOf", "oneOf"):
            if key not in schema:
                continue
            found = [self.errors_of(value, sub, path, hops) for sub in schema[key]]
            n = sum(not f for f in found)
            if n == 0:
                first = found[0][0] if found[0] else "invalid"
                self.add(f"{where} matches none of the allowed forms (first: {first})")
            elif n > 1 and key == "oneOf":
                self.add(f"{where} matches {n} of the forms where exactly one is allowed")
        if "not" in schema and not self.errors_of(value, schema["not"], path, hops):
            self.add(f"{where} matches a form that is not allowed")

    def _object(self, value: dict, schema: Mapping, path: tuple[str | int, ...]) -> None:
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                self.add(f"missing required argument '{path_name((*path, key))}'")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                self.walk(item, props[key], (*path, key), 0)
            elif extra is False:
                self.add(f"unexpected argument '{path_name((*path, key))}' (not in the schema)")
            elif extra is not True:
                self.walk(item, extra, (*path, key), 0)

    def _array(self, value: list, schema: Mapping, path: tuple[str | int, ...], where: str) -> None:
        n = len(value)
        if n < schema.get("minItems", 0):
            self.add(f"{where} must have at least {schema['minItems']} items, got {n}")
        if "maxItems" in schema and n > schema["maxItems"]:
            self.add(f"{where} must have at most {schema['maxItems']} items, got {n}")
        items = schema.get("items", True)
        prefix = schema.get("prefixItems")
        if isinstance(items, list):  # draft 4 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        for i, item in enumerate(value):
            sub = prefix[i] if prefix is not None and i < len(prefix) else items
            self.walk(item, sub, (*path, i), 0)
        if schema.get("uniqueItems") is True:
            seen: set[str] = set()
            for item in value:
                self.tick()
                key = json.dumps(_canon(item), sort_keys=True)
                if key in seen:
                    self.add(f"{where} must not repeat items, got {short(item)} twice")
                    break
                seen.add(key)

    def _number(self, value: float, schema: Mapping, where: str) -> None:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if xlo is True:  # draft 4: a flag on minimum
            xlo, lo = lo, None
        if xhi is True:
            xhi, hi = hi, None
        if lo is not None and value < lo:
            self.add(f"{where} must be >= {lo}, got {short(value)}")
        if hi is not None and value > hi:
            self.add(f"{where} must be <= {hi}, got {short(value)}")
        if isinstance(xlo, (int, float)) and not isinstance(xlo, bool) and value <= xlo:
            self.add(f"{where} must be > {xlo}, got {short(value)}")
        if isinstance(xhi, (int, float)) and not isinstance(xhi, bool) and value >= xhi:
            self.add(f"{where} must be < {xhi}, got {short(value)}")
        step = schema.get("multipleOf")
        if step and math.isfinite(value):
            if isinstance(value, int) and isinstance(step, int):
                bad = value % step != 0
            else:
                q = value / step
                bad = not math.isfinite(q) or abs(q - round(q)) > 1e-9 * max(1.0, abs(q))
            if bad:
                self.add(f"{where} must be a multiple of {step}, got {short(value)}")


def validate(
    instance: object,
    schema: object,
    *,
    name: str = "arguments",
    max_errors: int = 20,
    max_steps: int = 200_000,
    deadline: float | None = None,
) -> list[str]:
    """Validate a decoded JSON value against a schema; return one message per problem.

    Call `check_schema` on the schema once beforehand: a malformed schema may raise here.

    Args:
        instance: the value to check (untrusted: e.g. a model's tool-call arguments).
        schema: the JSON Schema (trusted: written by the tool's author).
        name: how the top-level value is named in messages; nested values are named
            "argument 'path.to[0].field'".
        max_errors: stop recording after this many messages.
        max_steps: a bound on the work (schema nodes visited); past it, one message says the
            value is too complex and validation stops.
        deadline: a `time.monotonic()` value past which `TimeoutError` is raised.

    Returns:
        The problems, each one line naming the argument and the expected and actual types or
        values; empty when the instance is valid.

    Raises:
        TimeoutError: when `deadline` passes.
    """
    walker = _Walker(schema, name, max_errors, max_steps, deadline)
    try:
        walker.walk(instance, schema, (), 0)
    except _Budget:
        walker.errors.append(f"{name} too complex to validate (over {max_steps} schema steps)")
    except RecursionError:
        walker.errors.append(f"{name} nested too deeply to validate")
    return walker.errors


# --- Comparison with reference values ----------------------------------------------------------

MARKERS = ("$any", "$optional", "$ignore", "$unordered", "$literal")
"""One-key objects in a reference value that do not stand for themselves (see `compare`)."""


@dataclass(frozen=True)
class Rules:
    """How `compare` treats values."""

    rel_tol: float = 1e-6
    """Relative tolerance for numbers."""
    abs_tol: float = 1e-9
    """Absolute tolerance for numbers (what makes 1e-12 equal to 0)."""
    normalize_strings: bool = False
    """Compare strings after NFKC, case folding and collapsing whitespace."""
    reveal: bool = False
    """Put expected values in the messages (off: the agent must not see the reference)."""
    noun: str = "argument"
    """How messages name a value at a path ("argument 'a.b'", "state key 'x'")."""
    deadline: float | None = None
    """A `time.monotonic()` value past which `TimeoutError` is raised."""


def marker(value: object) -> str | None:
    """The marker a reference value is (`"$any"`, ...), or None for a plain value."""
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        if isinstance(key, str) and key in MARKERS:
            return key
    return None


def check_markers(value: object, where: str, *, literal: bool = False) -> None:
    """Raise ValueError, naming the place, on a non-JSON value or a malformed marker.

    Non-JSON: NaN, infinities, tuples, sets, non-string keys and other Python objects. A one-key
    object whose key starts with `$` but is no marker is an error too (a typo would otherwise
    turn into a literal that never matches); `{"$literal": ...}` wraps such objects.

    Args:
        value: a reference value.
        where: how to name it in the error ("reference tool_calls[0].arguments").
        literal: check only that it is JSON (inside `$literal`).
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a JSON number")
    if not isinstance(value, (dict, list, str, int, float, type(None))):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_markers(item, f"{where}[{i}]", literal=literal)
    if not isinstance(value, dict):
        return
    if not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where}: object keys must be strings, got {list(value)[:5]}")
    keys = [k for k in value if k.startswith("$")]
    kind, inner = marker(value), next(iter(value.values()), None)
    if not literal:
        if len(value) == 1 and keys and kind is None:
            raise ValueError(
                f"{where}: unknown marker {keys[0]!r} (markers: {', '.join(MARKERS)}); "
                'wrap a literal object in {"$literal": ...}'
            )
        if any(k in MARKERS for k in keys) and len(value) > 1:
            raise ValueError(f"{where}: a marker must be the only key of its object, got {keys}")
        if kind == "$any" and not (isinstance(inner, list) and inner):
            raise ValueError(f"{where}: '$any' takes a non-empty list of acceptable values")
        if kind == "$ignore" and inner is not True:
            raise ValueError(f"{where}: '$ignore' takes true")
        if kind == "$unordered" and not isinstance(inner, list):
            raise ValueError(f"{where}: '$unordered' takes a list")
    inside = literal or kind == "$literal"
    for key, item in value.items():
        check_markers(item, f"{where}.{key}" if kind is None else where, literal=inside)


def numbers_close(a: float, b: float, rules: Rules) -> bool:
    """Whether two JSON numbers are equal: two ints exactly (any size), else within tolerance."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return math.isclose(float(a), float(b), rel_tol=rules.rel_tol, abs_tol=rules.abs_tol)
    except OverflowError:
        return False


def norm_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: the form normalised strings are compared in."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def bipartite_matching(ok: list[list[bool]]) -> list[tuple[int, int]]:
    """A maximum set of (row, column) pairs with `ok[row][col]`, each row and column used once.

    Kuhn's augmenting paths: O(rows * edges), for the small matrices of calls and list items.
    """
    owner: dict[int, int] = {}

    def augment(row: int, seen: set[int]) -> bool:
        for col, edge in enumerate(ok[row]):
            if edge and col not in seen:
                seen.add(col)
                if col not in owner or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    for r in range(len(ok)):
        augment(r, set())
    return sorted((row, col) for col, row in owner.items())


def compare(
    got: object,
    expected: object,
    rules: Rules = Rules(),
    path: tuple[str | int, ...] = (),
    defaults: Mapping[str, object] | None = None,
) -> list[str]:
    """Compare a value from a response with a reference value; return one line per mismatch.

    Strings and booleans compare exactly (or normalised), numbers within the tolerances (1 ==
    1.0, but true != 1 and "1" != 1) except that two integers compare exactly (ids and counts
    are not measurements: 1000001 is not 1000000), lists item by item, objects key by key (a missing or an
    unexpected key is a mismatch). Markers in `expected`:
    `{"$any": [v, ...]}` any of these; `{"$optional": v}` (as an object's value) may be absent,
    else matches v; `{"$ignore": true}` any value; `{"$unordered": [...]}` a list in any order;
    `{"$literal": v}` v as is, markers inside not interpreted. A plain list is a literal list.

    Args:
        got: the value from the response (untrusted).
        expected: the reference value (checked with `check_markers` beforehand).
        rules: tolerances, string normalisation, reveal, naming, deadline.
        path: where `got` sits, for the messages.
        defaults: top-level keys that may appear beyond `expected` with exactly these values
            (a tool schema's defaults).

    Returns:
        The mismatches, each naming the value's path and what was wrong; empty on a match.

    Raises:
        TimeoutError: when `rules.deadline` passes.
    """
    return _Comparer(rules).run(got, expected, path, defaults or {}, False)


class _Comparer:
    def __init__(self, rules: Rules):
        self.rules = rules
        self.steps = 0

    def where(self, path: tuple[str | int, ...]) -> str:
        return f"{self.rules.noun} '{path_name(path)}'" if path else f"{self.rules.noun}s"

    def run(
        self, got: object, exp: object, path: tuple, defaults: Mapping[str, object], literal: bool
    ) -> list[str]:
        self.steps += 1
        late = self.rules.deadline is not None and self.steps % 1024 == 0
        if late and time.monotonic() > self.rules.deadline:  # type: ignore[operator]
            raise TimeoutError("comparison with the reference ran past its time limit")
        where, reveal = self.where(path), self.rules.reveal
        kind = None if literal else marker(exp)
        if kind is not None:
            inner = next(iter(exp.values()))  # type: ignore[union-attr]
            if kind == "$ignore":
                return []
            if kind in ("$optional", "$literal"):
                return self.run(got, inner, path, {}, kind == "$literal")
            if kind == "$any":
                if any(not self.run(got, o, path, {}, False) for o in inner):
                    return []
                tail = f", expected one of {short(inner, 80)}" if reveal else ""
                return [f"{where} has a value that is not accepted: got {short(got)}{tail}"]
            return self.unordered(got, inner, path, where)
        if isinstance(exp, dict):
            if not isinstance(got, dict):
                return [f"{where} should be object, got {json_type(got)} {short(got)}"]
            lines: list[str] = []
            for key, sub in exp.items():
                if key in got:
                    lines += self.run(got[key], sub, (*path, key), {}, literal)
                elif literal or marker(sub) != "$optional":
                    lines.append(f"missing {self.rules.noun} '{path_name((*path, key))}'")
            for key in got:
                if key not in exp and not (key in defaults and json_equal(got[key], defaults[key])):
                    lines.append(f"unexpected {self.rules.noun} '{path_name((*path, key))}'")
            return lines
        if isinstance(exp, list):
            if not isinstance(got, list):
                return [f"{where} should be array, got {json_type(got)} {short(got)}"]
            if len(got) != len(exp):
                tail = f", expected {len(exp)}" if reveal else ""
                return [f"{where} has the wrong number of items: got {len(got)}{tail}"]
            lines = []
            for i, (g, e) in enumerate(zip(got, exp, strict=True)):
                lines += self.run(g, e, (*path, i), {}, literal)
            return lines
        return self.scalar(got, exp, where)

    def scalar(self, got: object, exp: object, where: str) -> list[str]:
        tail = f", expected {short(exp)}" if self.rules.reveal else ""
        if isinstance(exp, bool) or exp is None or isinstance(exp, str):
            if type(got) is not type(exp):
                return [f"{where} should be {json_type(exp)}, got {json_type(got)} {short(got)}"]
            same = got == exp
            if isinstance(exp, str) and self.rules.normalize_strings:
                same = norm_text(got) == norm_text(exp)  # type: ignore[arg-type]
            return [] if same else [f"{where} has the wrong value: got {short(got)}{tail}"]
        if isinstance(exp, (int, float)):
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                return [f"{where} should be a number, got {json_type(got)} {short(got)}"]
            if numbers_close(got, exp, self.rules):
                return []
            return [f"{where} has the wrong value: got {short(got)}{tail}"]
        raise ValueError(f"reference value {short(exp)} is not JSON")

    def unordered(self, got: object, exp: list, path: tuple, where: str) -> list[str]:
        if not isinstance(got, list):
            return [f"{where} should be array, got {json_type(got)} {short(got)}"]
        if len(got) != len(exp):
            tail = f", expected {len(exp)}" if self.rules.reveal else ""
            return [f"{where} has the wrong number of items: got {len(got)}{tail}"]
        ok = [[not self.run(g, e, path, {}, False) for e in exp] for g in got]
        if len(bipartite_matching(ok)) == len(exp):
            return []
        return [f"{where} does not hold the expected items (in any order): got {short(got)}"]
