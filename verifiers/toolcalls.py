"""Tool calls in model text: find them, decode them, check them against the tools' schemas.

Chat models write tool calls in a few shapes; this module reads all of them from one string:

- Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, several per
  message; a missing closing tag (generation stopped at it) is tolerated.
- OpenAI: `{"tool_calls": [{"id": ..., "type": "function", "function": {"name": ...,
  "arguments": "<JSON string>"}}]}`, or one `{"type": "function", "function": {...}}`.
- Bare JSON: `{"name": ..., "arguments": {...}}` (Llama's `"parameters"` is read as
  `"arguments"`), or a list of those (Mistral's `[TOOL_CALLS][...]`), anywhere in the text,
  fenced in a ```json block or not.

`arguments` may be an object or a JSON string of an object (OpenAI's wire format).

The text is untrusted, so the work is bounded and nothing is executed: a response over
`max_chars` is rejected unparsed; one linear scan finds the bracketed spans (respecting JSON
strings), spans nested deeper than `max_depth` are never handed to `json.loads`; NaN/Infinity
and over-long integers are invalid JSON; at most `max_calls` calls and errors, and 16 times
as many call-like spans, are read. Each failure is a `ParseError` with its character
position, never an exception.

Outside `<tool_call>` tags, JSON that does not look like a call (no `"name"`, `"arguments"`,
`"function"` or `"tool_calls"` in it) is ordinary text: a model may show a JSON answer, a dict
in code or LaTeX braces without it being a broken call.

Not covered: XML-parameter formats (Qwen3-Coder's `<function=...><parameter=...>`), Python-call
syntax (`get_weather(city="Paris")`, BFCL's "python" format), and calls nested inside other JSON.
The dataclasses here do not import the core types (`opd_selfplay.types.ToolCall`), which sit
above the verifiers; `ParsedCall.to_openai()` gives the dict that `ToolCall.from_dict` reads.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .jsonschema_lite import SchemaError, check_schema, json_type, short, validate
from .verdict import JSON

__all__ = [
    "ParseError",
    "ParseResult",
    "ParsedCall",
    "ToolSpec",
    "load_tools",
    "parse_tool_calls",
    "validate_call",
]

MAX_CHARS = 1_000_000
MAX_DEPTH = 100
MAX_CALLS = 64
_OPEN_TAG, _CLOSE_TAG = "<tool_call>", "</tool_call>"
_CALL_HINTS = ('"name"', '"arguments"', '"function"', '"tool_calls"')
_OPENER = re.compile(r"[{\[]")
_TOKEN = re.compile(r'"|[{\[]+|[}\]]+')  # a quote, a run of openers, or a run of closers

Format = Literal["hermes", "openai", "json", "none"]
ErrorKind = Literal[
    "too_large", "too_deep", "invalid_json", "unterminated", "not_a_call", "bad_call", "too_many"
]


@dataclass(frozen=True)
class ParsedCall:
    """One tool call read from model text."""

    name: str
    """The tool's name, as written."""
    arguments: dict[str, JSON]
    """The arguments, decoded (always an object)."""
    raw: str
    """The text the call was read from (the JSON span, or the item re-encoded for OpenAI lists)."""
    id: str = ""
    """The call id when the format carries one (OpenAI), else empty: the environment assigns."""
    position: int = 0
    """Character offset of the call's text in the response."""

    def arguments_json(self) -> str:
        """The arguments as a compact JSON string (OpenAI's wire format)."""
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> dict[str, JSON]:
        """`{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}`."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json()},
        }


@dataclass(frozen=True)
class ParseError:
    """A tool call that was attempted but could not be read."""

    kind: ErrorKind
    """What went wrong: too_large, too_deep, invalid_json, unterminated, not_a_call, bad_call,
    too_many."""
    message: str
    """One line for the agent: what was wrong, where, and a short excerpt."""
    position: int
    """Character offset in the response where the problem is."""


@dataclass(frozen=True)
class ParseResult:
    """Everything `parse_tool_calls` read from one response."""

    calls: tuple[ParsedCall, ...] = ()
    """The calls, in the order they appear."""
    errors: tuple[ParseError, ...] = ()
    """Attempted calls that could not be read, in the order they appear."""
    text: str = ""
    """The response without the calls and broken attempts (and fences left empty): the
    message's prose, or the final answer when there are no calls."""
    format: Format = "none"
    """The format of the first call or attempt: hermes, openai, json, or none."""


@dataclass
class _Span:
    start: int
    end: int
    closed: bool
    deepest: int


class _Clock:
    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.n = 0

    def tick(self) -> None:
        self.n += 1
        if self.deadline is not None and self.n % 4096 == 0 and time.monotonic() > self.deadline:
            raise TimeoutError("tool-call parsing ran past its time limit")


def _spans(text: str, start: int, stop: int, clock: _Clock) -> Iterator[_Span]:
    """Top-level `{...}` / `[...]` spans in text[start:stop], skipping brackets inside strings.

    Linear in the text, and a run of brackets is one step (so 1 MB of `[` is cheap). An
    unclosed span runs to `stop`.
    """
    pos = start
    while pos < stop:
        m = _OPENER.search(text, pos, stop)
        if m is None:
            return
        s = k = m.start()
        depth = deepest = 0
        closed = False
        while (m := _TOKEN.search(text, k, stop)) is not None:
            clock.tick()
            token, k = m.group(), m.end()
            if token == '"':
                k = _string_end(text, k, stop)
            elif token[0] in "{[":
                depth += len(token)
                deepest = max(deepest, depth)
            elif len(token) >= depth:  # this run of closers ends the span
                k = m.start() + depth
                closed = True
                break
            else:
                depth -= len(token)
        yield _Span(s, k if closed else stop, closed, deepest)
        pos = k if closed else stop


def _string_end(text: str, k: int, stop: int) -> int:
    """Index just past the closing quote of a JSON string whose body starts at k (or `stop`)."""
    while True:
        q = text.find('"', k, stop)
        if q < 0:
            return stop
        b = q
        while b > k and text[b - 1] == "\\":
            b -= 1
        if (q - b) % 2 == 0:
            return q + 1
        k = q + 1


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> object:
    """json.loads without NaN/Infinity; control characters inside strings are tolerated."""
    return json.loads(text, parse_constant=_reject_constant, strict=False)


def _depth(text: str, clock: _Clock) -> int:
    return max((sp.deepest for sp in _spans(text, 0, len(text), clock)), default=0)


def _decode_arguments(value: object, clock: _Clock, max_depth: int) -> dict[str, JSON] | str:
    """The arguments as an object, or an error message."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        if not value.strip():
            return {}
        if _depth(value, clock) > max_depth:
            return f"arguments string nested deeper than {max_depth} levels"
        try:
            decoded = _loads(value)
        except json.JSONDecodeError as exc:
            return f"arguments string is not valid JSON at char {exc.pos} ({exc.msg})"
        except (ValueError, RecursionError) as exc:
            return f"arguments string is not valid JSON ({exc})"
        if isinstance(decoded, dict):
            return decoded
        return f"arguments must be a JSON object, got {json_type(decoded)} {short(decoded)}"
    return f"arguments must be a JSON object, got {json_type(value)} {short(value)}"


def _call_like(obj: object, in_tag: bool) -> bool:
    if not isinstance(obj, dict):
        return False
    if isinstance(obj.get("function"), dict):
        return True
    return "name" in obj and ("arguments" in obj or "parameters" in obj or in_tag)


def _call_items(value: object, in_tag: bool) -> tuple[list[object], bool] | None:
    """The call objects in a decoded JSON value and whether it was OpenAI-shaped, or None."""
    if isinstance(value, dict):
        if "name" not in value and isinstance(value.get("tool_calls"), list):
            return list(value["tool_calls"]), True
        if _call_like(value, in_tag):
            return [value], isinstance(value.get("function"), dict)
        return None
    if isinstance(value, list) and value and all(_call_like(v, in_tag) for v in value):
        return list(value), any(isinstance(v.get("function"), dict) for v in value)
    return None


class _Reader:
    """State of one `parse_tool_calls` run."""

    def __init__(self, text: str, max_depth: int, max_calls: int, clock: _Clock):
        self.text = text
        self.max_depth = max_depth
        self.max_calls = max_calls
        self.clock = clock
        self.calls: list[ParsedCall] = []
        self.errors: list[ParseError] = []
        self.cut: list[tuple[int, int]] = []  # spans removed from the prose
        self.format: Format = "none"
        self.stopped = False  # set once max_calls attempts were read: the rest stays prose
        self.decodes_left = 16 * max_calls  # call-like spans decoded, calls or not

    def error(self, kind: ErrorKind, message: str, position: int) -> None:
        self.errors.append(ParseError(kind, message, position))

    def room(self, position: int) -> bool:
        """Whether another attempt may be read; past `max_calls` (calls and errors together)
        or 16 times as many call-like spans decoded, one `too_many` error is recorded and
        reading stops, which bounds every list and the decoding work."""
        if len(self.calls) + len(self.errors) < self.max_calls and self.decodes_left > 0:
            return True
        if not self.stopped:
            self.stopped = True
            what = f"{self.max_calls} tool calls"
            if self.decodes_left <= 0:  # the decode cap, not the call cap, was reached
                what = f"{16 * self.max_calls} JSON objects that look like tool calls"
            self.error("too_many", f"more than {what}; the rest was ignored", position)
        return False

    def excerpt(self, start: int, end: int, limit: int = 60) -> str:
        """The text at [start, end) on one line, cut to `limit` characters."""
        piece = self.text[start : min(end, start + limit + 1)]
        piece = piece.replace("\r", " ").replace("\n", " ").replace("\t", " ")
        return piece if end - start <= limit else piece[: limit - 1] + "…"

    def span(self, sp: _Span, in_tag: bool) -> bool:
        """Read one JSON span; return whether it was a call or an attempted one."""
        raw = self.text[sp.start : sp.end]
        if not (in_tag or any(h in raw for h in _CALL_HINTS)) or not self.room(sp.start):
            return False
        self.decodes_left -= 1
        problem = self.decode(sp, raw)
        if isinstance(problem, ParseError):
            self.attempt("json", in_tag)
            self.errors.append(problem)
            return True
        found = _call_items(problem, in_tag)
        if found is None:
            if in_tag:
                self.error(
                    "not_a_call",
                    f"the JSON in <tool_call> at char {sp.start} is not a call: expected "
                    f'{{"name": ..., "arguments": {{...}}}}, got {self.excerpt(sp.start, sp.end)}',
                    sp.start,
                )
            return in_tag
        items, openai = found
        self.attempt("openai" if openai else "json", in_tag)
        for i, item in enumerate(items):
            item_raw = raw if len(items) == 1 else json.dumps(item, ensure_ascii=False)
            self.item(item, item_raw, sp.start, i if len(items) > 1 else None)
        return True

    def attempt(self, fmt: Format, in_tag: bool) -> None:
        if self.format == "none":
            self.format = "hermes" if in_tag else fmt

    def decode(self, sp: _Span, raw: str) -> object:
        """The decoded span, or the `ParseError` that says why it cannot be decoded."""
        if sp.deepest > self.max_depth:
            message = f"JSON at char {sp.start} is nested deeper than {self.max_depth} levels"
            return ParseError("too_deep", message, sp.start)
        if not sp.closed:
            message = f"JSON at char {sp.start} is never closed: {self.excerpt(sp.start, sp.end)}"
            return ParseError("unterminated", message, sp.start)
        try:
            return _loads(raw)
        except json.JSONDecodeError as exc:
            pos = sp.start + exc.pos
            near = self.excerpt(max(sp.start, pos - 30), sp.end)
            message = f"invalid JSON at char {pos} ({exc.msg}) near: {near}"
            return ParseError("invalid_json", message, pos)
        except (ValueError, RecursionError) as exc:
            return ParseError("invalid_json", f"invalid JSON at char {sp.start} ({exc})", sp.start)

    def item(self, obj: object, raw: str, position: int, index: int | None) -> None:
        where = f"tool call at char {position}" + (f" (item {index})" if index is not None else "")
        if not self.room(position):
            return
        if not isinstance(obj, dict):
            self.error("bad_call", f"{where} must be an object, got {json_type(obj)}", position)
            return
        fn = obj["function"] if isinstance(obj.get("function"), dict) else obj
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            self.error(
                "bad_call",
                f"{where} needs a 'name' that is a non-empty string, got {short(name)}",
                position,
            )
            return
        args = fn["arguments"] if "arguments" in fn else fn.get("parameters", {})
        decoded = _decode_arguments(args, self.clock, self.max_depth)
        if isinstance(decoded, str):
            self.error("bad_call", f"{where} to {short(name)}: {decoded}", position)
            return
        call_id = obj.get("id") if isinstance(obj.get("id"), str) else ""
        self.calls.append(ParsedCall(name.strip(), decoded, raw, call_id, position))

    def hermes(self) -> None:
        text = self.text
        self.format = "hermes"
        pos = text.find(_OPEN_TAG)
        while pos >= 0 and not self.stopped:
            body = pos + len(_OPEN_TAG)
            close = text.find(_CLOSE_TAG, body)
            nxt = text.find(_OPEN_TAG, body)
            if close >= 0 and (nxt < 0 or close < nxt):
                end, after = close, close + len(_CLOSE_TAG)
            else:  # unclosed tag: the body runs to the next tag or the end
                end = after = nxt if nxt >= 0 else len(text)
            self.cut.append((pos, after))
            found = False
            for sp in _spans(text, body, end, self.clock):
                found = self.span(sp, in_tag=True) or found
                if self.stopped:
                    return
            if not found and self.room(pos):
                self.error(
                    "not_a_call",
                    f"<tool_call> at char {pos} holds no JSON call: {self.excerpt(body, end)}",
                    pos,
                )
            pos = nxt if nxt >= 0 else -1

    def bare(self) -> None:
        if not any(h in self.text for h in _CALL_HINTS):
            return  # no span could be a call or an attempt: nothing to scan
        for sp in _spans(self.text, 0, len(self.text), self.clock):
            if self.span(sp, in_tag=False):
                self.cut.append((sp.start, sp.end))
            if self.stopped:
                return

    def prose(self) -> str:
        """The text without the cut spans, and without fences that held nothing else."""
        text = self.text
        cuts = sorted(self.cut + list(_empty_fences(text, self.cut)))
        out, pos = [], 0
        for s, e in cuts:
            if s >= pos:
                out.append(text[pos:s])
            pos = max(pos, e)
        out.append(text[pos:])
        return "".join(out).strip()


def _empty_fences(text: str, cuts: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Fenced blocks (```lang ... ```) whose content is whitespace once the cuts are removed."""
    if not cuts or "```" not in text:
        return
    cuts = sorted(cuts)
    first = 0  # cuts before this index end before the current fence: one pass over both lists
    pos = 0
    while first < len(cuts):
        s = text.find("```", pos)
        line_end = text.find("\n", s) if s >= 0 else -1
        e = text.find("```", line_end) if line_end >= 0 else -1
        if e < 0:
            return
        while first < len(cuts) and cuts[first][0] < line_end:
            first += 1
        last = first
        while last < len(cuts) and cuts[last][1] <= e:
            last += 1
        if last > first:
            rest, at = [], line_end
            for a, b in cuts[first:last]:
                rest.append(text[at:a])
                at = max(at, b)
            rest.append(text[at:e])
            if not "".join(rest).strip():
                yield (s, e + 3)
        first, pos = last, e + 3


def parse_tool_calls(
    text: str,
    *,
    max_chars: int = MAX_CHARS,
    max_depth: int = MAX_DEPTH,
    max_calls: int = MAX_CALLS,
    deadline: float | None = None,
) -> ParseResult:
    """Read every tool call in a model's response.

    If the text has a `<tool_call>` tag, only the tags' contents are read as calls (Hermes
    format); otherwise every top-level JSON object or array that looks like a call is read.

    Args:
        text: the response (untrusted).
        max_chars: longer responses are rejected with one `too_large` error and not parsed.
        max_depth: JSON nested deeper than this is rejected (`too_deep`) before decoding.
        max_calls: calls past this many are dropped with one `too_many` error.
        deadline: a `time.monotonic()` value past which `TimeoutError` is raised.

    Returns:
        The calls, the errors (each with its position) and the remaining prose.

    Raises:
        TypeError: when `text` is not a string.
        TimeoutError: when `deadline` passes (only on input near the size cap).
    """
    if not isinstance(text, str):
        raise TypeError(f"response must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        err = ParseError(
            "too_large",
            f"response has {len(text)} characters, over the limit of {max_chars}; not parsed",
            0,
        )
        return ParseResult(errors=(err,))
    reader = _Reader(text, max_depth, max_calls, _Clock(deadline))
    if _OPEN_TAG in text:
        reader.hermes()
    else:
        reader.bare()
    return ParseResult(tuple(reader.calls), tuple(reader.errors), reader.prose(), reader.format)


@dataclass(frozen=True)
class ToolSpec:
    """One tool, as an OpenAI tool schema describes it."""

    name: str
    """The name calls must use."""
    description: str = ""
    """What the tool does (shown to the model; not used for checking)."""
    parameters: dict[str, JSON] = field(default_factory=lambda: {"type": "object"})
    """The JSON Schema of the arguments object."""

    @classmethod
    def from_schema(cls, schema: Mapping[str, object]) -> ToolSpec:
        """Read `{"type": "function", "function": {...}}` or the flat `{"name", "parameters"}`.

        Args:
            schema: one OpenAI tool schema.

        Returns:
            The tool, with its parameters schema checked.

        Raises:
            ValueError: naming the tool and the malformed field.
        """
        if not isinstance(schema, Mapping):
            raise ValueError(f"a tool schema must be an object, got {json_type(schema)}")
        fn = schema.get("function", schema)
        if not isinstance(fn, Mapping):
            raise ValueError(f"tool schema 'function' must be an object, got {json_type(fn)}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool schema needs a non-empty string 'name', got {short(name)}")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, Mapping):
            raise ValueError(f"tool {name!r}: 'parameters' must be a JSON Schema object")
        if params.get("type", "object") != "object":
            raise ValueError(f"tool {name!r}: 'parameters' must have type 'object'")
        try:
            check_schema(params, f"tool {name!r} parameters")
        except SchemaError as exc:
            raise ValueError(str(exc)) from None
        description = fn.get("description", "")
        return cls(name, description if isinstance(description, str) else "", dict(params))

    def to_openai(self) -> dict[str, JSON]:
        """The OpenAI tool schema `{"type": "function", "function": {...}}`."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def load_tools(tools: Iterable[Mapping[str, object] | ToolSpec] | None) -> dict[str, ToolSpec]:
    """Index tool schemas by name.

    Args:
        tools: OpenAI tool schemas or `ToolSpec`s; None for none.

    Returns:
        A dict from tool name to `ToolSpec`.

    Raises:
        ValueError: on a malformed schema or a name used twice, naming the entry.
    """
    if tools is None:
        return {}
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Iterable):
        raise ValueError(f"tools must be a list of tool schemas, got {type(tools).__name__}")
    out: dict[str, ToolSpec] = {}
    for i, tool in enumerate(tools):
        try:
            spec = tool if isinstance(tool, ToolSpec) else ToolSpec.from_schema(tool)
        except ValueError as exc:
            raise ValueError(f"tools[{i}]: {exc}") from None
        if spec.name in out:
            raise ValueError(f"tools[{i}]: tool name {spec.name!r} is used twice")
        out[spec.name] = spec
    return out


def validate_call(
    call: ParsedCall, tools: Mapping[str, ToolSpec], *, deadline: float | None = None
) -> list[str]:
    """Check a call against the tools: the tool exists, the arguments fit its schema.

    Args:
        call: a parsed call.
        tools: the available tools, by name (see `load_tools`).
        deadline: a `time.monotonic()` value past which `TimeoutError` is raised.

    Returns:
        One line per problem ("unknown tool 'x' (available: a, b)", "argument 'days' must be
        integer, got string \"3\""); empty when the call is valid.
    """
    spec = tools.get(call.name)
    if spec is None:
        names = sorted(tools)
        listed = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
        return [f"unknown tool {short(call.name)} (available: {listed or 'none'})"]
    return validate(call.arguments, spec.parameters, deadline=deadline)
