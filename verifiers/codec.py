"""Plain-data codec shared by the sandbox's host side and its in-sandbox runner.

Values cross the sandbox's boundary (and, in `assert` mode, the boundary between the runner and
the candidate process) as JSON text of an `encode` tree: exact builtin types only, so decoding
never builds an object whose methods the program chose, and no `__eq__` of the program's ever
takes part in a comparison. `split_tests` splits HumanEval-style test code into setup and tests
the same way on both sides.

Standard library only, and nothing heavy: the runner loads this file inside the sandbox, where
Python starts with `-I -S` and every millisecond of start-up is paid per execution (so no
`json`, whose `re` import is a third of the start-up; `_json`'s C scanner is used directly).

Not covered: arbitrary objects, classes or functions as values; anything `encode` refuses.
"""

from __future__ import annotations

MAX_DEPTH = 100
"""Values nested deeper than this are refused by `encode` and `decode`."""

_SAFE_INT = 1 << 53  # ints beyond this travel as hex strings, exact and free of digit limits


class Unrepresentable(TypeError):
    """A value that is not plain data (a custom object, a generator, a cycle, too deep)."""


def encode(value: object, depth: int = 0) -> object:
    """Plain data → a JSON-ready tree, by exact type (subclasses and custom objects refused).

    JSON scalars and lists stay as they are; every other container becomes a one-key object
    (`{"t": [...]}` tuple, `{"d": [[k, v], ...]}` dict, `{"s": ...}` set, `{"f": ...}` frozenset,
    `{"b": hex}` bytes, `{"c": [re, im]}` complex, `{"I": hex}` big int), so `decode` is exact.

    Args:
        value: the value to encode.
        depth: current nesting (callers leave it at 0).

    Returns:
        A tree of None, bool, int, float, str, list and one-key dicts.

    Raises:
        Unrepresentable: for any other type, or nesting deeper than `MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise Unrepresentable(f"a value nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is float:
        return value
    if kind is int:
        return value if -_SAFE_INT < value < _SAFE_INT else {"I": hex(value)}
    # Exact types only: iterating a list, tuple, dict or set of an exact builtin type runs no
    # user code, whatever the elements are.
    if kind is list:
        return [encode(v, depth + 1) for v in value]  # type: ignore[attr-defined]
    if kind is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}  # type: ignore[attr-defined]
    if kind is dict:
        items = value.items()  # type: ignore[attr-defined]
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in items]}
    if kind is set or kind is frozenset:
        tag = "s" if kind is set else "f"
        return {tag: [encode(v, depth + 1) for v in value]}  # type: ignore[attr-defined]
    if kind is bytes:
        return {"b": value.hex()}  # type: ignore[attr-defined]
    if kind is complex:
        return {"c": [value.real, value.imag]}  # type: ignore[attr-defined]
    raise Unrepresentable(f"a value of type {type_name(value)}")


def decode(tree: object, depth: int = 0) -> object:
    """Inverse of `encode`; a malformed tree raises ValueError (it may come from the program).

    Args:
        tree: what `encode` produced, after a JSON round trip.
        depth: current nesting (callers leave it at 0).

    Returns:
        The plain-data value.
    """
    if depth > MAX_DEPTH:
        raise ValueError("encoded value nested too deeply")
    kind = type(tree)
    if tree is None or kind in (bool, int, float, str):
        return tree
    if kind is list:
        return [decode(v, depth + 1) for v in tree]  # type: ignore[union-attr]
    if kind is not dict or len(tree) != 1:  # type: ignore[arg-type]
        raise ValueError("malformed encoded value")
    ((tag, payload),) = tree.items()  # type: ignore[union-attr]
    try:
        if tag == "I" and type(payload) is str:
            return int(payload, 16)
        if tag == "b" and type(payload) is str:
            return bytes.fromhex(payload)
        if type(payload) is not list:
            raise ValueError("malformed encoded value")
        if tag == "c" and len(payload) == 2:
            return complex(float(payload[0]), float(payload[1]))
        if tag == "d" and all(type(p) is list and len(p) == 2 for p in payload):
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in payload}
        items = [decode(v, depth + 1) for v in payload]
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "f":
            return frozenset(items)
    except TypeError:  # an unhashable key or element, a non-number in a complex
        pass
    raise ValueError("malformed encoded value")


def dumps(tree: object) -> str:
    """Compact JSON of an `encode` tree or a record, without importing `json` (whose import,
    through `re`, would be a third of the sandbox's start-up time).

    Args:
        tree: None, bool, int, float, str, list, or dict with str keys, nested.

    Returns:
        JSON text on one line (control characters and non-ASCII escaped).
    """
    kind = type(tree)
    if tree is None:
        return "null"
    if kind is bool:
        return "true" if tree else "false"
    if kind is int:
        return int.__repr__(tree)  # type: ignore[arg-type]
    if kind is float:
        if tree != tree:
            return "NaN"
        if tree in (float("inf"), float("-inf")):
            return "Infinity" if tree > 0 else "-Infinity"  # type: ignore[operator]
        return float.__repr__(tree)  # type: ignore[arg-type]
    if kind is str:
        return _escape(tree)
    if kind is list:
        return "[" + ",".join([dumps(v) for v in tree]) + "]"  # type: ignore[attr-defined]
    if kind is dict:
        items = tree.items()  # type: ignore[attr-defined]
        return "{" + ",".join([_escape(str(k)) + ":" + dumps(v) for k, v in items]) + "}"
    raise TypeError(f"dumps cannot write {type_name(tree)}")


def loads(text: str) -> object:
    """Parses one JSON document (the C scanner of `_json`, without `json`'s `re` import).

    Raises:
        ValueError: on malformed text (RecursionError on absurd nesting).
    """
    global _SCANNER
    if _SCANNER is None:
        _SCANNER = _make_scanner()
    try:
        value, end = _SCANNER(text, 0)
    except StopIteration:
        raise ValueError("malformed JSON") from None
    if end != len(text):
        raise ValueError("trailing data after JSON")
    return value


def _make_scanner():  # type: ignore[no-untyped-def]
    try:
        import _json
    except ImportError:  # pragma: no cover - CPython always has it
        import json

        return lambda text, idx: json.JSONDecoder().raw_decode(text, idx)

    constants = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}

    class Context:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = constants.__getitem__
        memo = {}  # noqa: RUF012 - typing's import would cost more than the sandbox's start

    return _json.make_scanner(Context())


def _escape(text: str) -> str:
    global _ESCAPE
    if _ESCAPE is None:
        try:
            from _json import encode_basestring_ascii as _ESCAPE
        except ImportError:  # pragma: no cover
            from json.encoder import py_encode_basestring_ascii as _ESCAPE
    return _ESCAPE(text)


_SCANNER = None
_ESCAPE = None


def type_name(value: object) -> str:
    """The value's type name, safe against hostile metaclasses."""
    try:
        name = type.__getattribute__(type(value), "__name__")
        return name if type(name) is str else "object"
    except BaseException:
        return "object"


def describe(exc: BaseException, limit: int = 300) -> str:
    """`Type: message`, one line, never raising (the message may come from hostile code)."""
    name = type_name(exc)
    try:
        text = str(exc)
        message = text if type(text) is str else ""
    except BaseException:
        message = "<unprintable message>"
    message = " ".join(message.split())
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{name}: {message}" if message else name


def split_tests(source: str, entry_point: str) -> list[tuple[str, str, object]]:
    """Splits HumanEval-style test code into setup statements and tests.

    A test is a top-level `assert` or a top-level call expression (such as `check(f)`); every
    other statement is setup, run in order. Test code that defines `check` and never calls it
    gets `check(<entry_point>)` appended, the HumanEval convention.

    Args:
        source: the test code.
        entry_point: the candidate function's name.

    Returns:
        (kind, text, node) triples, kind "setup" or "test", node a parsed statement.

    Raises:
        SyntaxError: when the test code does not parse.
        ValueError: when it holds no test.
    """
    import _ast

    tree = compile(source, "<test_code>", "exec", _ast.PyCF_ONLY_AST)
    lines = source.splitlines()
    parts: list[tuple[str, str, object]] = []
    defines_check = calls_check = False
    for node in tree.body:
        is_test = isinstance(node, _ast.Assert) or (
            isinstance(node, _ast.Expr) and isinstance(node.value, _ast.Call)
        )
        if isinstance(node, _ast.FunctionDef) and node.name == "check":
            defines_check = True
        if is_test and isinstance(node, _ast.Expr):
            func = node.value.func  # type: ignore[attr-defined]
            calls_check = calls_check or (isinstance(func, _ast.Name) and func.id == "check")
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        text = "\n".join(lines[first - 1 : node.end_lineno])
        parts.append(("test" if is_test else "setup", text, node))
    if defines_check and not calls_check:
        text = f"check({entry_point})"
        call = compile(text, "<test_code>", "exec", _ast.PyCF_ONLY_AST).body[0]
        parts.append(("test", text, call))
    if not any(kind == "test" for kind, _, _ in parts):
        raise ValueError("test_code holds no top-level assert, call, or check() function")
    return parts
