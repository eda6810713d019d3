"""Normalise a final answer and read its structure, without sympy.

An answer string (`"x = \\dfrac{1}{3}"`, `"[-1, 2) \\cup (3, \\infty)"`, `"(3, 2), (7, 2)"`,
`"28\\%"`, `"15\\mbox{ cm}^2"`) is first normalised as text: LaTeX spacing and sizing commands,
`\\text{}` units, degrees, currency and thousands separators are dropped; `\\dfrac`, `\\frac12`,
`\\sqrt3`, relation symbols, "percent", "and"/"or" get one spelling. `parse_answer` then reads
the structure that decides how two answers compare: lists of solutions, tuples, intervals,
sets, unions, relation chains (`x = 3`, `a < x \\le b`, `x \\in S`), `\\pm`, and leaves:
single expressions, still LaTeX, that `math_compare` turns into sympy only when a plain
comparison cannot decide. `simple_number` reads the leaves that need no sympy at all
(integers, decimals, `a/b`, `\\frac{a}{b}`, scientific notation).

Everything here runs in the caller's process on untrusted text: every step is a regular
expression without nested quantifiers or a linear scan, and nesting is capped (`MAX_DEPTH`).

Not covered: finding the answer in a response (`math_extract`), sympy (`math_compare`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Union

MAX_DEPTH = 24
"""Deeper nesting is left to sympy (under the time limit) as one leaf."""

MAX_ITEMS = 64
"""Longer lists, tuples and sets are one leaf (left to sympy, under the time limit)."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One expression, as normalised LaTeX."""

    text: str
    percent: bool = False
    """Written with `%`: `28\\%` matches 28 and 0.28."""


@dataclass(frozen=True, slots=True)
class Words:
    """Text rather than math: `\\text{Evelyn}`, a multiple-choice letter `(C)`."""

    text: str


@dataclass(frozen=True, slots=True)
class Group:
    """Several answers: `list` (solutions, unordered), `tuple` (ordered), `set` (`\\{\\}`)."""

    kind: str
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Interval:
    """An interval with at least one closed end (`(a, b)` reads as a tuple)."""

    lo: Node
    hi: Node
    lo_closed: bool
    hi_closed: bool


@dataclass(frozen=True, slots=True)
class SetUnion:
    """`A \\cup B \\cup ...`."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Relation:
    """A chain `t0 op0 t1 op1 t2 ...` with ops among `= != < <= > >= in`."""

    terms: tuple[Node, ...]
    ops: tuple[str, ...]


Node = Union[Leaf, Words, Group, Interval, SetUnion, Relation]  # noqa: UP007 - runtime alias

# ------------------------------------------------------------------------ normalisation

_UNICODE = str.maketrans(
    {
        "\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u00b7": r"\cdot ",
        "\u00f7": r"\div ", "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u2264": "<=",
        "\u2265": ">=", "\u2260": "!=", "\u221a": r"\sqrt", "\u00b2": "^2", "\u00b3": "^3",
        "\u00b0": r"^\circ ", "\u222a": r"\cup ", "\u2208": r"\in ", "\u00b1": r"\pm ",
        "\u2213": r"\mp ", "\u00a0": " ", "\u20ac": "", "\u00a3": "", "\u00a5": "",
        "\u20b9": "", "\u2248": r"\approx ",
    }
)  # fmt: skip
_DROP = re.compile(
    r"(?<!\\)\\!\s*|\\\$|\$|\\(?:displaystyle|textstyle|scriptstyle)|\\[dl]?dots|\\cdots"
)
_SPACE = re.compile(r"(?<!\\)\\[,;:> ]|\\q?quad(?![a-zA-Z])|~|\\hspace\{[^{}]*\}")
_GROUP_COMMA = re.compile(r" ?\{ ?, ?\} ?")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])\.?")
_BRACKETS = [
    (re.compile(r"\\lbrace(?![a-zA-Z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![a-zA-Z])"), r"\\}"),
    (re.compile(r"\\langle(?![a-zA-Z])"), "("),
    (re.compile(r"\\rangle(?![a-zA-Z])"), ")"),
    (re.compile(r"\\lbrack(?![a-zA-Z])"), "["),
    (re.compile(r"\\rbrack(?![a-zA-Z])"), "]"),
    (re.compile(r"\\[lr]?vert(?![a-zA-Z])|\\mid(?![a-zA-Z])"), "|"),
]
_FRAC_NAMES = re.compile(r"\\[dtc]frac(?![a-zA-Z])")
_TEXT_CMD = re.compile(
    r"\\(text|textbf|textit|textrm|textnormal|textsf|texttt|mbox|mathrm|mathit|mathbf|mathsf"
    r"|mathcal|mathbb|operatorname)\s*\{([^{}]*)\}(\s*\^\s*\{?\s*[23]\s*\}?)?"
)
_UNITS = (
    r"(?:square |sq\.? |cubic |cu\.? )?(?:mm|cm|km|m|meters?|metres?|in|inch(?:es)?|ft|feet|foot"
    r"|yd|yards?|miles?|mi|mph|kmh|km/h|m/s|kg|g|grams?|mg|lbs?|pounds?|ounces?|oz|l|liters?"
    r"|litres?|ml|s|sec|seconds?|min|minutes?|h|hr|hrs|hours?|days?|weeks?|months?|years?"
    r"|dollars?|cents?|yuan|euros?|rupees?|units?|degrees?|deg|radians?|rad|percent"
    r"|cm\^2|m\^2|people|students?|ways?|times|points?|dots?|coins?|marbles?|apples?)"
)
_UNIT_WORD = re.compile(rf"\s*(?:{_UNITS})\.?\s*", re.IGNORECASE)
_TRAILING_UNIT = re.compile(rf"(?<=[\d}}])\s+(?:{_UNITS})(?:\^\{{?[23]\}}?)?\s*$")
_CONNECTORS = frozenset({"and", "or", ",", "and also", "or also", "; and"})
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degrees?(?![a-zA-Z])")
_PERCENT = re.compile(r"\\%|(?<=[\d\s}])\s*(?:percent(?:age)?|pct)(?![a-zA-Z])")
_RELATIONS = [
    (re.compile(r"\\(?:leqslant|leq|le)(?![a-zA-Z])|⩽"), "<="),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|⩾"), ">="),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])"), "!="),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\(?:approx|simeq|thickapprox|sim)(?![a-zA-Z])"), " \u2248 "),
    (re.compile(r"\\in(?![a-zA-Z])"), " \u2208 "),
    (re.compile(r"\\equiv(?![a-zA-Z])"), "="),
    (re.compile(r"\\(?:Rightarrow|Longrightarrow|implies)(?![a-zA-Z])"), " \u21d2 "),
]
_INFINITY = re.compile(r"(?<![\\a-zA-Z])(?:infinity|inf)(?![a-zA-Z])")
_ARRAY = re.compile(r"\\begin\{array\}\s*\{[^{}]*\}|\\begin\{smallmatrix\}")
_ARRAY_END = re.compile(r"\\end\{(?:array|smallmatrix)\}")
_AND_OR = re.compile(r"(\\text\{[^{}]*\})|(?<![A-Za-z\\])(?: ?,)? ?(?:and|or)(?![a-z]) ?")
_WS = re.compile(r"\s+")
_PLAIN_TEXT = re.compile(r"[-+\d.,/: ]{1,200}%?")
_THOUSANDS_LATEX = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
_THOUSANDS_PLAIN = re.compile(r"-?[1-9]\d{0,2}(?:[ ,]\d{3})+(?:\.\d+)?")
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")


def normalize(text: str, plain: bool = False) -> str:
    """One spelling for an answer string (see the module doc).

    Args:
        text: the answer as found (`Candidate.text`).
        plain: the text came from prose: `1 000` and `2,74` are then single numbers.

    Returns:
        The normalised string ("" when nothing is left).
    """
    plain = plain and not any(c in text for c in "{}\\")  # braces or commands: LaTeX
    if _PLAIN_TEXT.fullmatch(text):  # digits and punctuation only: most answers, no LaTeX
        return _number_spelling(_WS.sub(" ", text).rstrip(" .,;:").lstrip(" ,;:="), plain)
    # Whitespace first: every pattern below then meets single spaces, so none can backtrack
    # over a long run of them.
    s = _WS.sub(" ", text.translate(_UNICODE))
    if "\\boxed" in s or "\\fbox" in s:
        from .math_extract import boxed_contents

        s = boxed_contents(s) or s
    s = _DROP.sub("", s)
    s = _SPACE.sub(" ", s)
    s = _GROUP_COMMA.sub(",", s)
    s = _SIZING.sub("", s)
    for pattern, repl in _BRACKETS:
        s = pattern.sub(repl, s)
    s = _FRAC_NAMES.sub(r"\\frac", s)
    if "\\frac" in s or "\\sqrt" in s:
        s = _brace_arguments(s)
    s = _TEXT_CMD.sub(_text_command, s)
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("%", s)
    for pattern, repl in _RELATIONS:
        s = pattern.sub(repl, s)
    s = _INFINITY.sub(r"\\infty", s)
    s = _ARRAY.sub(r"\\begin{pmatrix}", s)
    s = _ARRAY_END.sub(r"\\end{pmatrix}", s)
    s = _AND_OR.sub(lambda m: m.group(1) or ",", s)
    s = _WS.sub(" ", s).strip()
    s = s.rstrip(" .,;:").lstrip(" ,;:=")
    s = _strip_outer_braces(s)
    s = _TRAILING_UNIT.sub("", s)
    return _number_spelling(s, plain)


def _number_spelling(s: str, plain: bool) -> str:
    """Thousands separators dropped, a decimal comma made a point (prose only)."""
    core, pct = (s[:-1].rstrip(), "%") if s.endswith("%") else (s, "")
    if plain and (_THOUSANDS_PLAIN.fullmatch(core)):
        core = core.replace(",", "").replace(" ", "")
    elif plain and _DECIMAL_COMMA.fullmatch(core):
        core = core.replace(",", ".")
    elif _THOUSANDS_LATEX.fullmatch(core):
        core = core.replace(",", "")
    return core + pct


def _text_command(m: re.Match[str]) -> str:
    command, content, power = m.group(1), m.group(2).strip(), m.group(3) or ""
    low = content.lower().strip(" .")
    if low in _CONNECTORS:
        return ","
    if low in ("%", "percent", "percentage", "pct"):
        return "%"
    if not low or _UNIT_WORD.fullmatch(low):
        return " "
    if command in ("text", "textbf", "textit", "textrm", "textnormal", "textsf", "texttt", "mbox"):
        return f"\\text{{{content}}}{power}"
    return f"\\{command}{{{content}}}{power}"


def _brace_arguments(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac94\pi` -> `\frac{9}{4}\pi`, `\sqrt3` -> `\sqrt{3}`."""
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        if s.startswith("\\frac", i) or s.startswith("\\sqrt", i):
            is_frac = s[i + 1] == "f"
            out.append(s[i : i + 5])
            i += 5
            if i < n and s[i].isalpha():  # another command such as \sqrtx: leave it
                continue
            if not is_frac and i < n and s[i] == "[":
                close = s.find("]", i)
                if close < 0:
                    continue
                out.append(s[i : close + 1])
                i = close + 1
            for _ in range(2 if is_frac else 1):
                while i < n and s[i] == " ":
                    i += 1
                if i >= n:
                    break
                if s[i] == "{":
                    close = _closing(s, i)
                    end = n if close < 0 else close + 1
                    out.append(s[i:end])
                    i = end
                elif s[i] == "\\":
                    m = re.match(r"\\[a-zA-Z]+", s[i:])
                    token = m.group() if m else s[i : i + 2]
                    out.append("{" + token + "}")
                    i += len(token)
                else:
                    out.append("{" + s[i] + "}")
                    i += 1
            continue
        out.append(s[i])
        i += 1
    return "".join(out)


def _strip_outer_braces(s: str) -> str:
    """`{{x}}` -> `x`: drop brace pairs that enclose the whole string, in one linear pass."""
    lead = len(s) - len(s.lstrip("{"))
    if not lead:
        return s
    stack: list[int] = []
    strip = lead
    for i, c in enumerate(s):
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            j = stack.pop()
            if j < lead and i != len(s) - 1 - j:
                strip = min(strip, j)  # this opening brace closes early: keep it
    if stack:
        return s
    return s[strip : len(s) - strip].strip() if strip else s


def _closing(s: str, open_pos: int) -> int:
    """Index of the bracket closing the one at `open_pos` (any of `)]}` closes), or -1."""
    depth = 0
    for i in range(open_pos, len(s)):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


_COMPACT = re.compile(r"(?<=[A-Za-z])\s+(?=[A-Za-z])")
_COMPACT_REST = re.compile(r"\s+")
_SUBSCRIPT_ONE = re.compile(r"_([A-Za-z0-9])")


def compact(text: str) -> str:
    """`text` without the spaces that carry no meaning (`\\sin x` keeps its space)."""
    s = _COMPACT.sub("\x00", text)
    s = _COMPACT_REST.sub("", s).replace("\x00", " ")
    return _SUBSCRIPT_ONE.sub(r"_{\1}", s)


# ------------------------------------------------------------------------- structure

_TOKENS = ("<=", ">=", "!=", "\u2248", "\u2208", "\u21d2", "=", "<", ">")
_OP_NAMES = {"\u2248": "~", "\u2208": "in", "\u21d2": "=>"}
_WORDS = re.compile(r"\\text\{([^{}]*)\}")
_CHOICE = re.compile(r"\(?([A-J])\)?")


def parse_answer(text: str) -> Node:
    """The structure of a normalised answer (see the module doc).

    Args:
        text: output of `normalize`, non-empty.

    Returns:
        A tree of `Leaf`, `Words`, `Group`, `Interval`, `SetUnion` and `Relation` nodes.
    """
    return _parse(text, 0)


def _split_top(s: str, seps: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split at separators outside brackets and environments: (parts, separators)."""
    if not any(sep in s for sep in seps):
        return [s], []
    parts: list[str] = []
    found: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        if depth == 0:
            sep = next((sep for sep in seps if s.startswith(sep, i)), None)
            if sep is not None:
                parts.append(s[start:i])
                found.append(sep)
                i += len(sep)
                start = i
                continue
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif c == "\\":
            if s.startswith("\\begin", i):
                depth += 1
            elif s.startswith("\\end", i):
                depth = max(0, depth - 1)
            elif i + 1 < n and s[i + 1] in "{}":
                depth = depth + 1 if s[i + 1] == "{" else max(0, depth - 1)
                i += 2
                continue
            i += 1
            while i < n and s[i].isalpha():
                i += 1
            continue
        i += 1
    parts.append(s[start:])
    return parts, found


def _parse(s: str, depth: int) -> Node:
    s = s.strip().strip(",;")
    if depth > MAX_DEPTH or not s:
        return Leaf(s)
    for sep in (";", ","):
        parts, _ = _split_top(s, (sep,))
        items = [p for p in parts if p.strip()]
        if len(items) > 1:
            if len(items) > MAX_ITEMS:
                return Leaf(s)
            return Group("list", tuple(_parse(p, depth + 1) for p in items))
    parts, found = _split_top(s, ("\u21d2",))
    if found:
        return _parse(parts[-1], depth + 1)
    parts, ops = _split_top(s, _TOKENS)
    if ops and all(p.strip() for p in parts):
        return _relation(parts, [_OP_NAMES.get(op, op) for op in ops], depth)
    return _parse_term(s, depth)


def _relation(parts: list[str], ops: list[str], depth: int) -> Node:
    if "~" in ops:
        first = ops.index("~")
        if "=" in ops[:first]:  # "x = 1/3 ≈ 0.33": the approximation adds nothing
            parts, ops = parts[: first + 1], ops[:first]
        else:  # "x ≈ 11": the approximation is the answer
            ops = ["=" if op == "~" else op for op in ops]
    terms = [_parse_term(p.strip(), depth + 1) for p in parts]
    if len(terms) >= 3 and all(op == "=" for op in ops):
        # "x = 5 + 5 + 1 = 11": the chain states the value of its first term (if a name).
        if is_name(terms[0]):
            return Relation((terms[0], terms[-1]), ("=",))
        return terms[-1]
    return Relation(tuple(terms), tuple(ops))


def _parse_term(s: str, depth: int) -> Node:
    s = s.strip()
    if depth > MAX_DEPTH or not s:
        return Leaf(s)
    parts, found = _split_top(s, ("\\cup",))
    if found and all(p.strip() for p in parts):
        return SetUnion(tuple(_parse_term(p, depth + 1) for p in parts))
    if s.startswith("\\{") and s.endswith("\\}") and _closing(s, 1) == len(s) - 1:
        inner = s[2:-2].strip()
        items = [p for p in _split_top(inner, (",", ";"))[0] if p.strip()] if inner else []
        if len(items) > MAX_ITEMS:
            return Leaf(s)
        return Group("set", tuple(_parse(p, depth + 1) for p in items))
    if s[0] in "([" and _closing(s, 0) == len(s) - 1:
        inner = s[1:-1]
        items = [p for p in _split_top(inner, (",", ";"))[0] if p.strip()]
        if len(items) == 2 and (s[0] == "[" or s[-1] == "]"):
            lo, hi = (_parse_term(p, depth + 1) for p in items)
            return Interval(lo, hi, s[0] == "[", s[-1] == "]")
        if len(items) > MAX_ITEMS:
            return Leaf(s)
        if len(items) >= 2:
            return Group("tuple", tuple(_parse(p, depth + 1) for p in items))
        if len(items) == 1 and (s[0] == "(" or "\\begin" in items[0]):
            return _parse(items[0], depth + 1)  # "(9 + 1)", "(\\begin{pmatrix}...)"
    if s.startswith("{") and _closing(s, 0) == len(s) - 1:
        return _parse(s[1:-1], depth + 1)
    if "\\pm" in s or "\\mp" in s:
        return Group("list", tuple(Leaf(v) for v in _expand_pm(s)))
    words = _WORDS.fullmatch(s)
    if words:
        inner = words.group(1).strip()
        choice = _CHOICE.fullmatch(inner)
        return Words(choice.group(1) if choice else inner)
    choice = _CHOICE.fullmatch(s)
    if choice and s != choice.group(1):
        return Words(choice.group(1))
    s = _TRAILING_UNIT.sub("", s) or s
    if s.endswith("%"):
        return Leaf(s[:-1].strip(), percent=True)
    return Leaf(s)


def _expand_pm(s: str) -> list[str]:
    variants = [s]
    for _ in range(3):
        nxt: list[str] = []
        for v in variants:
            m = re.search(r"\\(pm|mp)(?![a-zA-Z])", v)
            if m is None:
                nxt.append(v)
                continue
            first, second = ("+", "-") if m.group(1) == "pm" else ("-", "+")
            nxt.append(v[: m.start()] + first + v[m.end() :])
            nxt.append(v[: m.start()] + second + v[m.end() :])
        variants = nxt
    return variants


_NAME_STRIP = [
    (re.compile(r"_\{[^{}]*\}|_\\?[A-Za-z0-9]"), ""),
    (re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}"), r"\1/\2"),
    (re.compile(r"(?<=[A-Za-z}])\([^()]*\)"), ""),
    (
        re.compile(
            r"\\(?:angle|measuredangle|triangle|overline|overrightarrow|bar|vec|hat|widehat"
            r"|mathbf|mathrm|operatorname|text)\s*"
        ),
        "",
    ),
]
_NAME = re.compile(
    r"(?:[A-Za-z]|\\[A-Za-z]+(?![A-Za-z]))+(?:[:/,](?:[A-Za-z]|\\[A-Za-z]+(?![A-Za-z]))+)*"
)
_NOT_NAMES = frozenset({"\\pi", "\\infty", "\\emptyset", "\\varnothing"})
_VARIABLE = re.compile(r"(?:[A-Za-z]|\\[a-z]+)(?:_\{?\w+\}?)?(?:\([A-Za-z0-9, ]*\))?")


def is_name(node: Node) -> bool:
    """Whether `node` names something (`x`, `x_1`, `f(x)`, `|AB|`, `A:B`, `(p, q)`), so that
    `node = value` states a value rather than an equation to solve."""
    if isinstance(node, Group) and node.kind == "tuple":
        return all(is_name(item) for item in node.items)
    if not isinstance(node, Leaf) or node.percent or len(node.text) > 200:
        return False
    t = node.text
    for pattern, repl in _NAME_STRIP:
        t = pattern.sub(repl, t)
    t = re.sub(r"[{}| ']", "", t)
    return t not in _NOT_NAMES and bool(_NAME.fullmatch(t))


def is_variable(node: Node) -> bool:
    """Whether `node` is a single variable (`x`, `a_1`, `f(x)`), for reading `a < x < b` as an
    interval without solving anything."""
    return (
        isinstance(node, Leaf)
        and not node.percent
        and node.text not in _NOT_NAMES
        and bool(_VARIABLE.fullmatch(node.text.replace(" ", "")))
    )


def show(node: Node) -> str:
    """A short readable form of an answer, for feedback."""
    if isinstance(node, Leaf):
        return node.text + ("%" if node.percent else "")
    if isinstance(node, Words):
        return node.text
    if isinstance(node, Group):
        inner = ", ".join(show(i) for i in node.items)
        return {"tuple": f"({inner})", "set": f"{{{inner}}}"}.get(node.kind, inner)
    if isinstance(node, Interval):
        return (
            ("[" if node.lo_closed else "(")
            + f"{show(node.lo)}, {show(node.hi)}"
            + ("]" if node.hi_closed else ")")
        )
    if isinstance(node, SetUnion):
        return " ∪ ".join(show(p) for p in node.parts)
    out = show(node.terms[0])
    for op, term in zip(node.ops, node.terms[1:]):
        out += f" {'∈' if op == 'in' else op} {show(term)}"
    return out


# ---------------------------------------------------------------------- plain numbers

_INT = re.compile(r"[+-]?\d{1,400}")
_DEC = re.compile(r"[+-]?(?:\d{1,400}\.\d{0,400}|\.\d{1,400})")
_RATIO = re.compile(r"([+-]?\d{1,400})\s*[/:]\s*(\d{1,400})")
_FRAC = re.compile(r"([+-]?)\\frac\{([+-]?\d{1,400})\}\{([+-]?\d{1,400})\}")
_SCI = re.compile(
    r"([+-]?(?:\d{1,400}(?:\.\d{0,400})?|\.\d{1,400}))"
    r"(?:[eE]|\s*(?:\\times|\\cdot|\*)\s*10\^)\{?([+-]?\d{1,4})\}?"
)


def simple_number(text: str) -> tuple[Fraction, bool] | None:
    """The value of a leaf that is a plain number, and whether it is exact.

    Args:
        text: a normalised leaf (`"-3"`, `"0.25"`, `"\\frac{1}{3}"`, `"2/3"`, `"1.5e3"`).

    Returns:
        `(value, exact)`, `exact` False for decimals (compared to a precision); None when
        the text is anything else (including division by zero, left to sympy).
    """
    s = text.replace(" ", "")
    if not s or len(s) > 900:
        return None
    if _INT.fullmatch(s):
        return Fraction(int(s)), True
    if _DEC.fullmatch(s):
        return Fraction(Decimal(s)), False
    m = _RATIO.fullmatch(s) or _FRAC.fullmatch(s)
    if m:
        groups = m.groups()
        sign = -1 if len(groups) == 3 and groups[0] == "-" else 1
        num, den = int(groups[-2]), int(groups[-1])
        return (Fraction(sign * num, den), True) if den else None
    m = _SCI.fullmatch(s)
    if m:
        try:
            mantissa = Decimal(m.group(1))
        except InvalidOperation:
            return None
        exponent = int(m.group(2))
        value = Fraction(mantissa) * Fraction(10) ** exponent
        return value, "." not in m.group(1)
    return None
