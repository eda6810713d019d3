"""Find the final answer in free text: the candidates a math verifier should compare.

A response is a worked solution; its answer is usually the last `\\boxed{}`, what follows "final
answer is" or "Answer:", the last formula, or the last number. `extract_candidates` returns up
to a few candidate strings, best first, each tagged with where it was found; the verifier
compares the first that parses. Priority, highest first (within a tier the rightmost wins):

1. `boxed` (the last `\\boxed{}`/`\\fbox{}` and boxes right before it that a separator such
   as "and" or "," joins to it) and `final_answer` ("final answer ... is X");
2. `answer` (the first formula or number within 60 characters after the word "answer");
3. `bare`: the whole text, when it is a short formula or number rather than prose;
4. `math` (the last `$...$`, `$$...$$`, `\\[...\\]`, `\\(...\\)`, with neighbours joined by
   "and"/"or"/",") and `number` (the last number or plain arithmetic expression in prose).

Everything here runs in the caller's process on untrusted text, so every scan is linear in
the length of the text: no regular expression here can backtrack over more than a bounded
window, and delimiter matching remembers when a closer no longer exists.

Not covered: parsing the candidates (see `math_answer`) and comparing them (`math_compare`).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

SOURCES = ("boxed", "final_answer", "answer", "bare", "math", "number")
"""Every place an answer can come from, in the order they are tried (see the module doc)."""

_MAX_CANDIDATES = 6
_MAX_BOXES = 12


@dataclass(frozen=True)
class Candidate:
    """One possible final answer found in a text."""

    text: str
    """The answer as written (LaTeX or plain), delimiters and `\\boxed{}` removed."""

    source: str
    """Where it was found: one of `SOURCES`."""

    plain: bool = False
    """True when it comes from prose rather than LaTeX: then `1 000` and `2,74` are numbers
    (space thousands separator, decimal comma) instead of lists."""


@dataclass(frozen=True)
class _Span:
    start: int  # of the opening delimiter
    end: int  # after the closing delimiter
    inner: str


_DOUBLE_BACKSLASH = re.compile(r"\\\\(?=[a-zA-Z])")
_OPENER = re.compile(r"\$\$|\$|\\\[|\\\(")
_CLOSERS = {"$$": "$$", "\\[": "\\]", "\\(": "\\)"}
_PERCENT_AFTER = re.compile(r"[ \t]*(?:\\?%|[Pp]ercent(?:age)?\b|[Pp]ct\b)")
_BOX_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")
_FINAL_ANSWER = re.compile(r"(?i)final\s+answer")
_IS = re.compile(r"\sis\b:?")
_ANSWER = re.compile(r"(?i)\banswer\b")
_SKIP_AFTER_ANCHOR = re.compile(r"[\s\"'\\:*=]*")
_NUMBER = (
    r"-?(?:[1-9]\d{0,2}(?:[ ,]\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:[.,]\d+)?|\.\d+)"
    r"(?:[ \t]*(?:%|[Pp]ercent(?:age)?\b|[Pp]ct\b))?"
)
_ATOM = r"\(?-?(?:\d+(?:\.\d+)?|\.\d+)\)?"
# A number, or plain arithmetic such as "(1/2) * (4/3)"; each repetition consumes an operator,
# so the match cannot backtrack quadratically.
_PLAIN = re.compile(
    rf"(?<![A-Za-z0-9_.\\^])(?:(?P<expr>{_ATOM}(?:[ \t]*[-+*/^×÷][ \t]*{_ATOM})+)|(?P<num>{_NUMBER}))"
)
_JOINER = re.compile(r"\s*(?:,|and|or|&)?\s*(?:,|and|or)?\s*$")
_PROSE_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_TEXT_GROUP = re.compile(r"\\(?:text\w*|mbox|math\w+|operatorname)\s*\{[^{}]*\}")
_ONE_WORD = re.compile(r"\s*[A-Za-z]{1,24}\s*")
# Words that may appear in a bare formula (everything else of two letters or more is prose).
_MATH_WORDS = frozenset(
    {"sqrt", "frac", "infty", "infinity", "inf", "undefined", "none", "and", "or", "pi", "sin",
     "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "max", "min", "gcd", "lcm", "mod",
     "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "det", "pct"}
)  # fmt: skip


def extract_candidates(text: str, sources: tuple[str, ...] = SOURCES) -> list[Candidate]:
    """The final-answer candidates of `text`, best first (at most a handful).

    Args:
        text: a model response or a reference solution.
        sources: which places to look in (a subset of `SOURCES`); order does not matter.

    Returns:
        Candidates in priority order; empty when the text holds no answer.
    """
    if not text or not text.strip():
        return []
    if "matrix" not in text and "array" not in text:
        # Answers pasted from JSON or Python often double every backslash ("\\frac").
        text = _DOUBLE_BACKSLASH.sub(r"\\", text)
    spans = _math_spans(text)
    starts = [s.start for s in spans]
    found: list[Candidate] = []

    tier: list[tuple[int, Candidate]] = []
    if "boxed" in sources:
        boxed = _last_boxed_group(text)
        if boxed is not None:
            tier.append(boxed)
    if "final_answer" in sources:
        tier.extend(_after_anchor(text, _FINAL_ANSWER, spans, starts, "final_answer", True))
    found.extend(c for _, c in sorted(tier, key=lambda pc: -pc[0]))

    if "answer" in sources:
        answered = _after_anchor(text, _ANSWER, spans, starts, "answer", False)
        found.extend(c for _, c in sorted(answered, key=lambda pc: -pc[0]))

    if "bare" in sources and not spans and "\\boxed" not in text and _is_bare(text):
        found.append(Candidate(text.strip(), "bare", plain=True))

    last: list[tuple[int, Candidate]] = []
    if "math" in sources and spans:
        for index in range(len(spans) - 1, max(-1, len(spans) - 3), -1):
            joined = _join_left(text, spans, index)
            last.append(
                (spans[index].end, Candidate(joined + _percent_after(text, spans[index]), "math"))
            )
    if "number" in sources:
        last.extend(_last_plain_numbers(text, spans, starts))
    found.extend(c for _, c in sorted(last, key=lambda pc: -pc[0]))

    unique: list[Candidate] = []
    seen: set[str] = set()
    for cand in found:
        key = cand.text.strip()
        if key and key not in seen:
            seen.add(key)
            unique.append(cand)
        if len(unique) == _MAX_CANDIDATES:
            break
    return unique


def _math_spans(text: str) -> list[_Span]:
    """Every math span, left to right, in one linear pass."""
    spans: list[_Span] = []
    closed: set[str] = set()  # delimiter kinds with no closer left in the text
    pos = 0
    n = len(text)
    while pos < n:
        m = _OPENER.search(text, pos)
        if m is None:
            break
        opener = m.group()
        start = m.start()
        if start > 0 and text[start - 1] == "\\":  # an escaped dollar sign
            pos = m.end()
            continue
        if opener == "$":
            if start > 0 and text[start - 1].isdigit():  # "1,000.99$": a currency suffix
                pos = m.end()
                continue
            if "$" in closed:
                break
            close = _find_unescaped_dollar(text, m.end())
            if close < 0:
                closed.add("$")
                pos = m.end()
                continue
            inner = text[m.end() : close]
            if "\n" in inner:  # inline math does not span lines; the closer may open the next
                pos = close
                continue
            if inner.strip():
                spans.append(_Span(start, close + 1, inner))
            pos = close + 1
            continue
        if opener in closed:
            pos = m.end()
            continue
        closer = _CLOSERS[opener]
        close = text.find(closer, m.end())
        if close < 0:
            closed.add(opener)
            pos = m.end()
            continue
        inner = text[m.end() : close]
        if inner.strip():
            spans.append(_Span(start, close + len(closer), inner))
        pos = close + len(closer)
    return spans


def _find_unescaped_dollar(text: str, pos: int) -> int:
    while True:
        i = text.find("$", pos)
        if i <= 0 or text[i - 1] != "\\":
            return i
        pos = i + 1


def _match_brace(text: str, open_pos: int, limit: int) -> int:
    """Index of the `}` closing the `{` at `open_pos`, or -1 before `limit`."""
    depth = 0
    for i in range(open_pos, limit):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _box_at(text: str, pos: int, limit: int) -> tuple[str, int] | None:
    """Content and end of the `\\boxed`/`\\fbox` command at `pos`, not looking past `limit`."""
    name_end = pos + (6 if text.startswith("\\boxed", pos) else 5)
    i = name_end
    while i < limit and text[i].isspace():
        i += 1
    if i >= limit:
        return None
    if text[i] != "{":
        m = re.match(r"[^\s$]+", text[i:limit])
        return (m.group(), i + m.end()) if m else None
    close = _match_brace(text, i, limit)
    if close < 0:
        return text[i + 1 : limit], limit  # unclosed: take the rest
    return text[i + 1 : close], close + 1


def _last_box_start(text: str, end: int, fbox: bool = True) -> int:
    boxed = text.rfind("\\boxed", 0, end)
    return max(boxed, text.rfind("\\fbox", 0, end)) if fbox else boxed


def _last_boxed_group(text: str) -> tuple[int, Candidate] | None:
    """The last box, with earlier boxes joined to it by a short separator ("and", ",")."""
    fbox = "\\fbox" in text
    pos = _last_box_start(text, len(text), fbox)
    if pos < 0:
        return None
    box = _box_at(text, pos, len(text))
    if box is None:
        return None
    contents = [box[0].strip()]
    group_end = box[1]
    for _ in range(_MAX_BOXES):
        prev = _last_box_start(text, pos, fbox)
        if prev < 0:
            break
        prev_box = _box_at(text, prev, pos)
        if prev_box is None:
            break
        between = text[prev_box[1] : pos]
        content = prev_box[0].strip()
        joined = len(between) < 10 or (
            len(between) < 70 and content != contents[-1] and _BOX_SEPARATOR.search(between)
        )
        if not joined:
            break
        if content != contents[-1]:
            contents.append(content)
        pos = prev
    answer = ", ".join(c for c in reversed(contents) if c)
    answer += _percent_words(text[group_end : group_end + 16])
    return group_end, Candidate(answer, "boxed")


def boxed_contents(text: str) -> str | None:
    """The contents of the last `\\boxed{}` group of `text` (joined by ", "), or None."""
    group = _last_boxed_group(text)
    return None if group is None else group[1].text


def _percent_words(after: str) -> str:
    m = _PERCENT_AFTER.match(after.lstrip("$} "))
    return "\\%" if m else ""


def _percent_after(text: str, span: _Span) -> str:
    return _percent_words(text[span.end : span.end + 16])


def _join_left(text: str, spans: list[_Span], index: int) -> str:
    """Span `index` with up to five spans before it joined by ",", "and" or "or"."""
    parts = [spans[index].inner]
    i = index
    while i > 0 and len(parts) < 6:
        gap = text[spans[i - 1].end : spans[i].start]
        if len(gap) > 12 or not _JOINER.fullmatch(gap):
            break
        i -= 1
        parts.append(spans[i].inner)
    return ", ".join(p.strip().rstrip(",.;") for p in reversed(parts))


def _join_right(text: str, spans: list[_Span], index: int) -> tuple[str, int]:
    parts = [spans[index].inner]
    i = index
    while i + 1 < len(spans) and len(parts) < 6:
        gap = text[spans[i].end : spans[i + 1].start]
        if len(gap) > 12 or not _JOINER.fullmatch(gap):
            break
        i += 1
        parts.append(spans[i].inner)
    return ", ".join(p.strip().rstrip(",.;") for p in parts), spans[i].end


def _value_at(
    text: str, pos: int, limit: int, spans: list[_Span], starts: list[int], first_only: bool
) -> tuple[int, str, bool] | None:
    """The formula or number starting at `pos` (or, unless `first_only`, the first one before
    `limit`): (end, text, plain)."""
    k = bisect.bisect_left(starts, pos)
    span = spans[k] if k < len(spans) and spans[k].start < limit else None
    box = text.find("\\boxed", pos, limit)
    number = _PLAIN.search(text, pos, limit)
    choices: list[tuple[int, int, str, bool]] = []
    if span is not None:
        joined, end = _join_right(text, spans, k)
        choices.append((span.start, end, joined + _percent_after(text, spans[k]), False))
    if box >= 0:
        got = _box_at(text, box, len(text))
        if got is not None:
            choices.append((box, got[1], got[0], False))
    if number is not None:
        choices.append((number.start(), number.end(), number.group(), True))
    if not choices:
        return None
    start, end, value, plain = min(choices, key=lambda c: c[0])
    if first_only and start != pos:
        return None
    return end, value, plain


def _after_anchor(
    text: str,
    anchor: re.Pattern[str],
    spans: list[_Span],
    starts: list[int],
    source: str,
    needs_is: bool,
) -> list[tuple[int, Candidate]]:
    """Answers right after the last few occurrences of an anchor phrase."""
    matches = list(anchor.finditer(text))[-4:]
    found: list[tuple[int, Candidate]] = []
    for m in reversed(matches):
        pos = m.end()
        if needs_is:
            is_match = _IS.search(text, pos, min(len(text), pos + 100))
            if is_match is None:
                continue
            pos = is_match.end()
        pos = _SKIP_AFTER_ANCHOR.match(text, pos).end()
        got = _value_at(text, pos, min(len(text), pos + 60), spans, starts, first_only=needs_is)
        if got is not None:
            end, value, plain = got
            found.append((end, Candidate(value, source, plain)))
    return found


def _last_plain_numbers(
    text: str, spans: list[_Span], starts: list[int]
) -> list[tuple[int, Candidate]]:
    """The last numbers or plain expressions in prose, outside math spans (searching windows
    that grow from the end, so a long text with its answer at the end is read once)."""
    window = 2048
    while True:
        begin = max(0, len(text) - window)
        if begin:  # start the window at a space, so no number is cut in two
            space = text.rfind(" ", 0, begin)
            begin = space + 1 if space >= 0 else 0
        last: list[re.Match[str]] = []
        for m in _PLAIN.finditer(text, begin):
            k = bisect.bisect_right(starts, m.start()) - 1
            if k >= 0 and spans[k].start <= m.start() < spans[k].end:
                continue
            last.append(m)
            if len(last) > 2:
                del last[0]
        if len(last) == 2 or begin == 0:
            return [(m.end(), Candidate(m.group().strip(), "number", plain=True)) for m in last]
        window *= 8


def _is_bare(text: str) -> bool:
    """Whether the whole text is a short answer (a formula or number), not prose."""
    stripped = text.strip()
    if len(stripped) > 300 or "\n\n" in stripped:
        return False
    if _ONE_WORD.fullmatch(stripped):
        return True
    words = [
        w
        for w in _PROSE_WORD.findall(_TEXT_GROUP.sub(" ", stripped))
        if w.lower() not in _MATH_WORDS
    ]
    return not words or (len(words) == 1 and len(words[0]) <= 3)
