"""ToolCallVerifier: score tool calls, a final answer, or a final state against a reference.

The reference is a JSON object with one or more of:

- `"tool_calls": [{"name": ..., "arguments": {...}}, ...]`: the calls the response must make.
  `[]` means "answer without calling a tool". Optional `"tools"` (OpenAI tool schemas) checks
  each call's tool and argument types; optional `"order"`: `"strict"` (the default: matched
  calls must keep the reference's relative order, an order-preserving matching) or `"any"`.
- `"answer": <JSON value>`: the final answer in the response's prose (the text outside calls).
  Read after the last `<answer>` tag, "answer:"/"answer is", else the last line or the text;
  numbers with tolerance (the last number in that place), strings normalised (case, spaces,
  quotes, a final period), booleans as true/yes/false/no, lists and objects as JSON.
- `"state": {...}`: the expected final state of the environment's world. The actual state is
  passed as `verify(..., state=...)`, or in the reference as `"final_state"` (for the command
  line). Only the expected keys are checked; `verify_state` is the same check on its own.

Arguments are compared exactly for strings and booleans, within `rel_tol` (1e-6) / `abs_tol`
(1e-9) for numbers (1 == 1.0, but true != 1 and "1" != 1; two integers compare exactly:
ids and counts are not measurements), element-wise for lists and
key-wise for objects (a missing or an unexpected argument is a mismatch; an extra argument equal
to its schema `default` is not). A reference value may be a **marker**, a one-key object:

- `{"$any": [v1, v2, ...]}`: any of these values (BFCL's lists of acceptable values); a plain
  list in the reference is always a literal list argument.
- `{"$optional": v}`: the argument may be omitted; if present it must match `v`.
- `{"$ignore": true}`: present with any value (`{"$optional": {"$ignore": true}}`: anything).
- `{"$unordered": [...]}`: a list whose items may come in any order.
- `{"$literal": v}`: `v` compared as is, markers inside it not interpreted (for an argument
  that is itself an object with a `$` key).
Any other one-key object whose key starts with `$` is an error in the reference.

Scoring (tool calls): `score = matched / max(reference calls, calls made + unreadable
attempts)`: missing, extra and broken calls all cost credit, and a call that breaks its schema
matches nothing. With `"order": "strict"` the matched pairs are the longest order-preserving
matching (LCS), with `"any"` a maximum matching. The answer scores 0 or 1, the state
matched keys / expected keys; with several parts the score is their mean and `correct` needs
all of them. Feedback has one line per mismatch and never shows reference values unless
`reveal=True` (it names arguments and types, which the tools' schemas show anyway).

The time limit is a deadline checked inside the parsing, validation and comparison loops: no
signals, so it works in any thread and in worker processes. The work is bounded anyway (1 MB
cap on responses, depth and call caps, a schema step budget). Not covered: semantic equality
of free-text arguments (a query phrased differently), executing tools (the environment's job).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Literal

from .jsonschema_lite import (
    Rules,
    bipartite_matching,
    check_markers,
    compare,
    json_type,
    marker,
    norm_text,
    numbers_close,
    path_name,
    short,
)
from .toolcalls import MAX_CHARS, ParseResult, ToolSpec, load_tools, parse_tool_calls, validate_call
from .verdict import JSON, Verdict

__all__ = ["ToolCallVerifier", "gold_response", "verify_state"]

Order = Literal["strict", "any"]
_MAX_LINES = 20  # feedback lines per verdict
_MAX_LINES_PER_CALL = 5


def _ordered_matching(ok: list[list[bool]]) -> list[tuple[int, int]]:
    """The longest order-preserving set of matched (call, reference) pairs (LCS)."""
    n, m = len(ok), len(ok[0]) if ok else 0
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            take = best[i + 1][j + 1] + 1 if ok[i][j] else 0
            best[i][j] = max(take, best[i + 1][j], best[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if ok[i][j] and best[i][j] == best[i + 1][j + 1] + 1:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


_MISSING = object()


@dataclass(frozen=True)
class _ExpectedCall:
    name: str
    arguments: dict[str, JSON]


@dataclass(frozen=True)
class _Reference:
    """A checked reference."""

    calls: tuple[_ExpectedCall, ...] | None
    tools: dict[str, ToolSpec]
    order: Order
    answer: object
    state: dict[str, JSON] | None
    final_state: dict[str, JSON] | None

    @classmethod
    def read(cls, ref: object, tools: dict[str, ToolSpec], order: Order) -> _Reference:
        if not isinstance(ref, Mapping):
            raise TypeError(
                "reference must be a JSON object with 'tool_calls', 'answer' or 'state', "
                f"got {json_type(ref)}"
            )
        if not any(k in ref for k in ("tool_calls", "answer", "state")):
            raise ValueError(
                f"reference needs 'tool_calls', 'answer' or 'state', got keys {sorted(ref)}"
            )
        if "tools" in ref:
            tools = load_tools(ref["tools"])
        order = ref.get("order", order)
        if order not in ("strict", "any"):
            raise ValueError(f"reference 'order' must be 'strict' or 'any', got {order!r}")
        calls = None
        if "tool_calls" in ref:
            items = ref["tool_calls"]
            if not isinstance(items, list):
                raise ValueError(f"reference 'tool_calls' must be a list, got {json_type(items)}")
            calls = tuple(_expected_call(item, i, tools) for i, item in enumerate(items))
        answer = ref.get("answer", _MISSING)
        if answer is not _MISSING:
            check_markers(answer, "reference answer")
        state = _object_or_none(ref, "state")
        if state is not None:
            check_markers(state, "reference state")
        return cls(calls, tools, order, answer, state, _object_or_none(ref, "final_state"))


def _object_or_none(ref: Mapping, key: str) -> dict[str, JSON] | None:
    value = ref.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"reference {key!r} must be an object, got {json_type(value)}")
    return None if value is None else dict(value)


def _expected_call(item: object, i: int, tools: Mapping[str, ToolSpec]) -> _ExpectedCall:
    where = f"reference tool_calls[{i}]"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where} must be an object, got {json_type(item)}")
    fn = item["function"] if isinstance(item.get("function"), Mapping) else item
    name, args = fn.get("name"), fn.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where} needs a non-empty string 'name'")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} 'arguments' string is not JSON: {exc.msg}") from None
    if not isinstance(args, Mapping):
        raise ValueError(f"{where} 'arguments' must be an object, got {json_type(args)}")
    if tools and name not in tools:
        raise ValueError(f"{where} calls {name!r}, which is not among the reference's tools")
    check_markers(dict(args), f"{where}.arguments")
    return _ExpectedCall(name, dict(args))


@dataclass(frozen=True)
class _Part:
    """The score of one part of a reference (tool calls, answer, state)."""

    score: float
    lines: list[str]
    details: dict[str, JSON]
    summary: str

    @property
    def correct(self) -> bool:
        return self.score == 1.0


def _label(i: int, name: str) -> str:
    """How feedback names the i-th call: "call 2 (get_weather): "."""
    name = " ".join(name.split())
    return f"call {i + 1} ({name if len(name) <= 40 else name[:39] + '…'}): "


def _defaults(spec: ToolSpec | None) -> dict[str, JSON]:
    props = spec.parameters.get("properties") if spec else None
    if not isinstance(props, Mapping):
        return {}
    return {k: v["default"] for k, v in props.items() if isinstance(v, Mapping) and "default" in v}


def _check_calls(parsed: ParseResult, ref: _Reference, rules: Rules) -> _Part:
    calls, expected = parsed.calls, ref.calls or ()
    problems = [
        validate_call(c, ref.tools, deadline=rules.deadline) if ref.tools else [] for c in calls
    ]

    def diff(i: int, j: int) -> list[str]:
        args, spec = calls[i].arguments, ref.tools.get(calls[i].name)
        return compare(args, expected[j].arguments, rules, (), _defaults(spec))

    ok = [
        [c.name == e.name and not problems[i] and not diff(i, j) for j, e in enumerate(expected)]
        for i, c in enumerate(calls)
    ]
    pairs = _ordered_matching(ok) if ref.order == "strict" else bipartite_matching(ok)
    used_c, used_e = {i for i, _ in pairs}, {j for _, j in pairs}
    lines = [e.message for e in parsed.errors]
    if not calls and not parsed.errors and expected:
        lines.append("no tool call found in the response")
    explained: set[int] = set()
    missing: list[_ExpectedCall] = []
    for j, e in enumerate(expected):
        if j in used_e:
            continue
        free = [i for i in range(len(calls)) if i not in used_c and i not in explained]
        i = next((i for i in free if ok[i][j]), None)
        i = next((i for i in free if calls[i].name == e.name), None) if i is None else i
        if i is None:
            missing.append(e)
            continue
        explained.add(i)
        prefix = _label(i, calls[i].name)
        if ok[i][j]:
            lines.append(prefix + "matches an expected call but comes out of order")
        else:
            lines += [prefix + m for m in (problems[i] or diff(i, j))[:_MAX_LINES_PER_CALL]]
    for i, c in enumerate(calls):
        if i not in used_c and i not in explained:
            why = problems[i][:_MAX_LINES_PER_CALL] or ["not expected (matches no reference call)"]
            lines += [_label(i, c.name) + m for m in why]
    if missing and rules.reveal:
        lines += [f"missing call {e.name}({short(e.arguments, 80)})" for e in missing]
    elif missing and (calls or parsed.errors):
        lines.append(f"{len(missing)} expected call(s) missing")
    attempts = len(calls) + len(parsed.errors)
    score = len(pairs) / max(len(expected), attempts) if max(len(expected), attempts) else 1.0
    details: dict[str, JSON] = {
        "matched": len(pairs),
        "expected": len(expected),
        "calls": [c.name for c in calls],
        "parse_errors": len(parsed.errors),
        "order": ref.order,
        "format": parsed.format,
    }
    summary = f"all {len(expected)} tool call(s) match" if expected else "no tool call, as expected"
    return _Part(score, lines, details, summary)


# "Answer: x", "the answer is x", "answer = x", GSM8K's "#### x"; not a bare mention of "answer".
_ANSWER_MARK = re.compile(r"\banswer\b\s*(?:is\b\s*[:=]?|[:=])|^####", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(
    r"[-+−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?"
    r"|[-+−]?\.\d+(?:[eE][-+]?\d+)?"
)
_STRIP = " \t\r\n*_`'\"$"


def _clean(text: str) -> str:
    text = text.strip(_STRIP).rstrip(".!").strip(_STRIP)
    return text.removeprefix("```json").removeprefix("```").removesuffix("```").strip()


def _answer_places(text: str) -> list[tuple[str, bool]]:
    """Where the answer may be, most explicit first: (text, whether it follows a marker)."""
    places: list[tuple[str, bool]] = []
    close = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, close) if close >= 0 else -1
    if start >= 0:
        places.append((text[start + len("<answer>") : close], True))
    mark = None
    for mark in _ANSWER_MARK.finditer(text):  # noqa: B007 - the last one is wanted
        pass
    if mark is not None:
        rest = text[mark.end() :].lstrip()
        places.append((rest.split("\n", 1)[0], True))
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        places.append((lines[-1], False))
    places.append((text, False))
    return [(_clean(p), marked) for p, marked in places if _clean(p)]


def _to_number(token: str) -> float | int | None:
    token = token.replace("−", "-").replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            num, den = token.split("/")
            return float(num) / float(den) if float(den) else None
        return int(token) if token.lstrip("+-").isdigit() else float(token)
    except (ValueError, OverflowError):
        return None


def _answer_matches(places: list[tuple[str, bool]], exp: object, rules: Rules) -> bool:
    kind = marker(exp)
    if kind == "$any":
        return any(_answer_matches(places, o, rules) for o in exp["$any"])  # type: ignore[index]
    if kind is not None:
        return kind == "$ignore" or _answer_matches(places, next(iter(exp.values())), rules)  # type: ignore[union-attr]
    texts = [norm_text(p) for p, _ in places]
    if isinstance(exp, bool):
        words = ("true", "yes") if exp else ("false", "no")
        return any(t in words for t in texts)
    if isinstance(exp, (int, float)):
        text, marked = places[0]
        found = list(_NUMBER.finditer(text))
        if not found:
            return False
        got = _to_number(found[0 if marked else -1].group())
        return got is not None and numbers_close(got, exp, rules)
    if isinstance(exp, str):
        return norm_text(_clean(exp)) in texts
    if exp is None:
        return any(t in ("null", "none") for t in texts)
    for text, _ in places:
        try:
            got = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if not compare(got, exp, rules):
            return True
    return False


def _check_answer(text: str, expected: object, rules: Rules) -> _Part:
    places = _answer_places(text)
    if not places:
        return _Part(0.0, ["no answer found in the response"], {"answer": None}, "")
    read = places[0][0]
    details: dict[str, JSON] = {"answer": read[:200]}
    if _answer_matches(places, expected, rules):
        return _Part(1.0, [], details, "the answer matches")
    tail = f" (expected {short(expected)})" if rules.reveal else ""
    return _Part(0.0, [f"read {short(read)}, which does not match the answer{tail}"], details, "")


def _check_state(state: object, expected: Mapping[str, JSON], rules: Rules) -> _Part:
    if not isinstance(state, Mapping):
        return _Part(0.0, [f"the final state must be an object, got {json_type(state)}"], {}, "")
    rules = dataclasses.replace(rules, noun="state key")
    lines: list[str] = []
    matched = 0
    for key, exp in expected.items():
        if key not in state:
            ok = marker(exp) == "$optional"
            lines += [] if ok else [f"missing state key '{path_name((key,))}'"]
        else:
            found = compare(state[key], exp, rules, (key,))
            lines += found[:_MAX_LINES_PER_CALL]
            ok = not found
        matched += ok
    score = matched / len(expected) if expected else 1.0
    details: dict[str, JSON] = {"matched_keys": matched, "expected_keys": len(expected)}
    return _Part(score, lines, details, "the final state matches")


def _combine(parts: dict[str, _Part], started: float) -> Verdict:
    score = sum(p.score for p in parts.values()) / len(parts)
    correct = all(p.correct for p in parts.values())
    lines = [line for p in parts.values() for line in p.lines]
    if len(lines) > _MAX_LINES:
        lines = [*lines[:_MAX_LINES], f"… and {len(lines) - _MAX_LINES} more"]
    feedback = "\n".join(lines) if lines else "; ".join(p.summary for p in parts.values())
    details: dict[str, JSON] = {k: p.details for k, p in parts.items()}
    details["elapsed_s"] = round(time.monotonic() - started, 6)
    return Verdict(min(1.0, max(0.0, score)), correct and not lines, feedback, details)


def verify_state(
    state: Mapping[str, JSON],
    expected: Mapping[str, JSON],
    *,
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-9,
    normalize_strings: bool = False,
    reveal: bool = False,
) -> Verdict:
    """Compare an environment's final state with the expected one (only the expected keys).

    Args:
        state: the actual final state (e.g. the world dict of the ToolUse env).
        expected: the expected values by key; markers allowed (`{"$optional": v}` lets a key
            be absent).
        rel_tol: relative tolerance for numbers.
        abs_tol: absolute tolerance for numbers.
        normalize_strings: compare strings after NFKC, case folding and collapsing spaces.
        reveal: include expected values in the feedback.

    Returns:
        Score = matched keys / expected keys; one feedback line per mismatched key.

    Raises:
        ValueError: when `expected` is not an object or holds a malformed marker.
    """
    if not isinstance(expected, Mapping):
        raise ValueError(f"expected state must be an object, got {json_type(expected)}")
    check_markers(dict(expected), "expected state")
    rules = Rules(rel_tol, abs_tol, normalize_strings, reveal)
    return _combine({"state": _check_state(state, expected, rules)}, time.monotonic())


def _render(value: object) -> object:
    """A plain value that a reference value (with markers) accepts."""
    kind = marker(value)
    if kind is not None:
        inner = next(iter(value.values()))  # type: ignore[union-attr]
        if kind == "$any":
            return _render(inner[0])
        return None if kind == "$ignore" else inner if kind == "$literal" else _render(inner)
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v) for v in value]
    return value


def gold_response(reference: Mapping[str, JSON]) -> str:
    """A response that earns full marks on a reference's tool calls and answer: an oracle.

    Calls are written in the Hermes format, the answer in `<answer>` tags. A marker renders as a
    value it accepts (`$any`: the first option; `$ignore`: null, which a schema may reject).
    A state cannot be written in text: a state-only reference gives an empty string.

    Args:
        reference: a reference as `ToolCallVerifier.verify` takes it.

    Returns:
        The response text.
    """
    parts = []
    for call in reference.get("tool_calls") or []:
        fn = call.get("function", call)  # type: ignore[union-attr]
        args = fn.get("arguments", {})
        args = json.loads(args) if isinstance(args, str) and args.strip() else args or {}
        body = json.dumps({"name": fn["name"], "arguments": _render(args)}, ensure_ascii=False)
        parts.append(f"<tool_call>\n{body}\n</tool_call>")
    if "answer" in reference:
        answer = _render(reference["answer"])
        text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
        parts.append(f"<answer>{text}</answer>")
    return "\n".join(parts)


class ToolCallVerifier:
    """Checks tool calls, a final answer and/or a final state against a reference.

    See the module docstring for the reference format, the markers and the scoring.
    """

    def __init__(
        self,
        time_limit_s: float = 5.0,
        tools: Sequence[Mapping[str, object] | ToolSpec] | None = None,
        order: Order = "strict",
        *,
        rel_tol: float = 1e-6,
        abs_tol: float = 1e-9,
        normalize_strings: bool = False,
        reveal: bool = False,
        max_chars: int = MAX_CHARS,
    ) -> None:
        """Args:
        time_limit_s: deadline for one verification; past it the verdict is a 0 with
            `details["error"] == "timeout"`.
        tools: OpenAI tool schemas used when a reference has no `"tools"` of its own.
        order: `"strict"` or `"any"`, when a reference has no `"order"`.
        rel_tol: relative tolerance for numbers.
        abs_tol: absolute tolerance for numbers.
        normalize_strings: compare string arguments after NFKC, case folding and collapsing
            spaces (answers are always compared this way).
        reveal: show expected values in the feedback (off: the agent must not see them).
        max_chars: responses longer than this score 0 unparsed.

        Raises:
            ValueError: on a non-positive limit, a negative tolerance, an unknown order or a
                malformed tool schema.
        """
        if not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0):
            raise ValueError(f"time_limit_s must be a positive number, got {time_limit_s!r}")
        if order not in ("strict", "any"):
            raise ValueError(f"order must be 'strict' or 'any', got {order!r}")
        if rel_tol < 0 or abs_tol < 0:
            raise ValueError(f"tolerances must be >= 0, got rel_tol={rel_tol}, abs_tol={abs_tol}")
        self.time_limit_s = float(time_limit_s)
        self.tools = load_tools(tools)
        self.order: Order = order
        self.rel_tol, self.abs_tol = float(rel_tol), float(abs_tol)
        self.normalize_strings, self.reveal = normalize_strings, reveal
        self.max_chars = max_chars

    def _rules(self, deadline: float | None) -> Rules:
        return Rules(
            self.rel_tol, self.abs_tol, self.normalize_strings, self.reveal, deadline=deadline
        )

    def verify(
        self,
        response: str,
        reference: Mapping[str, JSON],
        *,
        state: Mapping[str, JSON] | None = None,
    ) -> Verdict:
        """Score one response.

        Args:
            response: the model's message (untrusted).
            reference: `{"tool_calls": [...], "tools": [...], "order": ..., "answer": ...,
                "state": {...}, "final_state": {...}}`, at least one of tool_calls, answer,
                state (see the module docstring).
            state: the environment's final state, for a reference with `"state"` (else the
                reference's `"final_state"` is used).

        Returns:
            The verdict; any problem with the response (garbage, too large, too slow) is a
            zero score with feedback, never an exception.

        Raises:
            TypeError: when the response is not a string or the reference not an object.
            ValueError: on a malformed reference, naming the field.
        """
        if not isinstance(response, str):
            raise TypeError(f"response must be a string, got {type(response).__name__}")
        started = time.monotonic()
        ref = _Reference.read(reference, self.tools, self.order)
        actual = state if state is not None else ref.final_state
        if ref.state is not None and actual is None:
            raise ValueError(
                "reference has 'state' but no final state was given: pass state=... "
                "or put it in the reference as 'final_state'"
            )
        rules = self._rules(started + self.time_limit_s)
        try:
            parsed = parse_tool_calls(response, max_chars=self.max_chars, deadline=rules.deadline)
            if parsed.errors and parsed.errors[0].kind == "too_large":
                return Verdict.fail(parsed.errors[0].message, error="too_large")
            parts: dict[str, _Part] = {}
            if ref.calls is not None:
                parts["tool_calls"] = _check_calls(parsed, ref, rules)
            if ref.answer is not _MISSING:
                parts["answer"] = _check_answer(parsed.text, ref.answer, rules)
            if ref.state is not None:
                parts["state"] = _check_state(actual, ref.state, rules)
        except TimeoutError:
            return Verdict.fail(
                f"verification ran past its time limit of {self.time_limit_s:g} s", error="timeout"
            )
        except (RecursionError, MemoryError) as exc:
            return Verdict.fail(
                f"response could not be checked ({type(exc).__name__})", error="limit"
            )
        return _combine(parts, started)

    def verify_state(self, state: Mapping[str, JSON], expected: Mapping[str, JSON]) -> Verdict:
        """`verify_state` with this verifier's tolerances and reveal setting."""
        return verify_state(
            state,
            expected,
            rel_tol=self.rel_tol,
            abs_tol=self.abs_tol,
            normalize_strings=self.normalize_strings,
            reveal=self.reveal,
        )

    def verify_batch(
        self,
        pairs: Sequence[tuple[str, Mapping[str, JSON]]],
        processes: int | None = None,
    ) -> list[Verdict]:
        """Score many (response, reference) pairs, in a process pool when it pays.

        A malformed reference fails its own pair (`details["error"] == "invalid_reference"`),
        not the batch. State references carry the actual state as `"final_state"`. Workers
        start with forkserver (spawn where missing), which is safe in a threaded trainer; as
        with any process pool, the calling script needs an `if __name__ == "__main__":` guard.

        Args:
            pairs: (response, reference) tuples.
            processes: worker processes; None: in this process below `POOL_MIN_PAIRS` pairs
                (one verification takes well under a millisecond, starting workers about a
                second), else one per CPU; 1: no pool.

        Returns:
            One verdict per pair, in order.
        """
        pairs = list(pairs)
        if processes is None:
            cpus = os.cpu_count() or 1
            processes = 1 if len(pairs) < POOL_MIN_PAIRS or cpus < 3 else min(cpus, 16)
        if processes <= 1 or len(pairs) <= 1:
            return [_verify_one(self, response, reference) for response, reference in pairs]
        import multiprocessing as mp

        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        chunk = max(1, -(-len(pairs) // (4 * processes)))
        try:
            with ProcessPoolExecutor(
                processes, mp.get_context(method), initializer=_init_worker, initargs=(self,)
            ) as pool:
                return list(pool.map(_verify_pair, pairs, chunksize=chunk))
        except BrokenProcessPool:  # a worker died (e.g. killed for memory): finish here
            return [_verify_one(self, response, reference) for response, reference in pairs]


POOL_MIN_PAIRS = 5000
"""`verify_batch` uses a pool by default from this many pairs on, and only with 3 CPUs or more.
Measured on a shared 2-core machine: 3,700-5,000 verifications/s in one process; a pool of 2
reached about half that at 3,000 pairs and broke even at 15,000 (starting workers ~1 s)."""

_WORKER: ToolCallVerifier | None = None


def _init_worker(verifier: ToolCallVerifier) -> None:
    global _WORKER
    _WORKER = verifier


def _verify_pair(pair: tuple[str, Mapping[str, JSON]]) -> Verdict:
    assert _WORKER is not None
    return _verify_one(_WORKER, *pair)


def _verify_one(
    verifier: ToolCallVerifier, response: str, reference: Mapping[str, JSON]
) -> Verdict:
    try:
        return verifier.verify(response, reference)
    except (TypeError, ValueError) as exc:
        return Verdict.fail(f"invalid reference: {exc}", error="invalid_reference")
