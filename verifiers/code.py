"""`CodeVerifier`: grades a program by running it on tests in the sandbox.

The program is the last fenced Python block of the response (```python, ```py, or an untagged
fence when no tagged one exists), else the whole response. The reference is one of:

- `{"entry_point": "f", "tests": [{"args": [...], "kwargs": {...}, "expected": <JSON>}, ...]}`:
  the sandbox calls `f` on each input and sends the result out as plain data (exact builtin
  types only); it is compared here, outside the sandbox, so the expected values never enter
  it. The comparison is on JSON types: null, booleans, strings, arrays and objects must match
  in type (`True` is not `1`, `"1"` is not `1`, a tuple counts as an array, a set or bytes
  match no JSON value); numbers compare by value (JSON has one number type), floats within a
  relative tolerance.
- `{"entry_point": "f", "test_code": "assert f(1) == 2\\n..."}` (HumanEval style): each
  top-level `assert` or call (such as `check(f)`) is a test; `check` is called with the entry
  point when the code defines it and never calls it. The test code runs in the sandbox in a
  process of its own that the program cannot read; the program's functions are called through
  pipes with plain data, so an object with a rigged `__eq__` never reaches an assert. The test
  code sees the program's functions and standard-library imports, never under a builtin's
  name (a program's own `sorted` cannot answer for the test's).
- `{"stdio": [{"stdin": "...", "stdout": "..."}, ...]}`: the program reads the stdin; its
  stdout must equal the expected one up to trailing whitespace on each line and trailing blank
  lines, and it must exit with status 0.

`score` is the fraction of tests passed; `correct` means all of them. `feedback` says how many
passed and what the first failing test was: its input, the expected value (unless
`reveal_expected=False`), and what came instead, or the error. A malformed reference raises
ValueError with a one-line message naming the field; a misbehaving program never raises.

`time_limit_s` bounds the whole run of one response (all its tests together): a program that
hangs scores 0 within that limit plus the sandbox's start-up. Reward hacks earn nothing by
construction (see `harness.py`): exiting early leaves tests without a result, printing fake
results is not read, patched builtins or a patched harness can only change the program's own
answers, and the expected values are never where the program could read them.

Not covered: programs that need third-party packages (the sandbox runs Python with `-I -S`,
standard library only); classes, functions or other objects as arguments or results; and, in
`test_code`, tests that check an argument mutated in place (values cross a process boundary
as plain data).
"""

from __future__ import annotations

import math
import os
import signal
import textwrap
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .codec import Unrepresentable, decode, encode, split_tests
from .sandbox import Limits, Sandbox, SandboxResult
from .verdict import JSON, Verdict

_PYTHON_TAGS = ("python", "py", "python3", "py3")
_SHOW = 160  # characters of a value shown in feedback


@dataclass(frozen=True)
class _Reference:
    kind: str  # "tests", "test_code" or "stdio"
    entry_point: str
    # call tests: {"args", "kwargs", "expected"}; stdio tests: {"stdin", "stdout"}
    tests: tuple[dict, ...]
    test_code: str
    test_texts: tuple[str, ...]  # test_code: the source of each test, for feedback


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    feedback: str = ""  # why it failed, for the agent
    kind: str = ""  # machine-readable failure kind


class CodeVerifier:
    """Runs a response's program on the reference's tests in the sandbox.

    Thread-safe; `verify_batch` runs responses concurrently in sandboxed subprocesses.
    """

    def __init__(
        self,
        time_limit_s: float = 5.0,
        memory_limit_mb: int = 512,
        *,
        reveal_expected: bool = True,
        float_rel_tol: float = 1e-9,
        nproc: int = 16,
        output_bytes: int = 1 << 20,
        isolation: str | None = None,
    ) -> None:
        """
        Args:
            time_limit_s: wall-clock (and per-process CPU) seconds for one response's run.
            memory_limit_mb: address space per process, MiB.
            reveal_expected: whether feedback shows the expected value or assert of the first
                failing test (the issue's default); False hides it, for hidden tests.
            float_rel_tol: relative tolerance when a float takes part in a comparison.
            nproc: processes and threads the program may hold at once.
            output_bytes: cap on the program's stdout (per stdio test) and stderr.
            isolation: "auto", "bwrap" or "rlimit" (see `sandbox.Sandbox`).
        """
        if not time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive, got {time_limit_s!r}")
        if not float_rel_tol >= 0:
            raise ValueError(f"float_rel_tol must be >= 0, got {float_rel_tol!r}")
        self.time_limit_s = float(time_limit_s)
        self.memory_limit_mb = int(memory_limit_mb)
        self.reveal_expected = reveal_expected
        self.float_rel_tol = float_rel_tol
        limits = Limits(
            wall_s=self.time_limit_s,
            memory_mb=self.memory_limit_mb,
            nproc=nproc,
            output_bytes=output_bytes,
        )
        self.sandbox = Sandbox(limits, isolation)

    def verify(self, response: str, reference: Mapping[str, JSON]) -> Verdict:
        """Grades one response.

        Args:
            response: the model's text; its last fenced Python block is the program.
            reference: one of the three reference shapes (module docstring).

        Returns:
            The verdict; `details` holds `passed`, `total`, the first failure, and the sandbox's
            `isolation`, `limit` and `duration_s`.

        Raises:
            TypeError: when `response` is not a str.
            ValueError: when the reference is malformed (the message names the field).
        """
        if not isinstance(response, str):
            raise TypeError(f"response must be a str, got {type(response).__name__}")
        ref = parse_reference(reference)
        program = extract_program(response)
        total = len(ref.tests) if ref.kind != "test_code" else len(ref.test_texts)
        if not program.strip():
            return Verdict.fail(
                "no program found: put the solution in a ```python block",
                error="no_program",
                passed=0,
                total=total,
            )
        if ref.kind == "tests":
            spec = {
                "entry_point": ref.entry_point,
                "tests": [{"args": t["args"], "kwargs": t["kwargs"]} for t in ref.tests],
            }
            result = self.sandbox.run_harness("call", program, spec)
        elif ref.kind == "test_code":
            spec = {"entry_point": ref.entry_point}
            result = self.sandbox.run_harness("assert", program, spec, secret=ref.test_code)
        else:
            spec = {"stdin": [t["stdin"] for t in ref.tests]}
            result = self.sandbox.run_harness("stdio", program, spec)
        return self._verdict(ref, result, total)

    def verify_batch(
        self,
        pairs: Sequence[tuple[str, Mapping[str, JSON]]],
        processes: int | None = None,
    ) -> list[Verdict]:
        """Grades many (response, reference) pairs concurrently.

        Each response already runs in its own sandboxed process tree, so a thread pool of that
        many workers is the process pool. A malformed reference fails its own pair
        (`details["error"] == "invalid_reference"`), not the batch.

        Args:
            pairs: (response, reference) tuples.
            processes: concurrent sandboxes; None: one per CPU; 1: one after another.

        Returns:
            One verdict per pair, in order.
        """
        jobs = list(pairs)
        workers = processes if processes is not None else (os.cpu_count() or 1)
        workers = max(1, min(workers, len(jobs)))
        if workers == 1:
            return [self._verify_safe(job) for job in jobs]
        with ThreadPoolExecutor(workers, thread_name_prefix="opd-code-verify") as pool:
            return list(pool.map(self._verify_safe, jobs))

    def _verify_safe(self, job: tuple[str, Mapping[str, JSON]]) -> Verdict:
        response, reference = job
        try:
            return self.verify(response, reference)
        except (TypeError, ValueError) as exc:
            return Verdict.fail(f"invalid reference: {exc}", error="invalid_reference")

    # -- grading -------------------------------------------------------------------------------

    def _verdict(self, ref: _Reference, result: SandboxResult, total: int) -> Verdict:
        records = result.records
        load_error = next((r for r in records if r.get("ev") == "load_error"), None)
        if ref.kind == "tests":
            outcomes = self._grade_calls(ref, records, result)
        elif ref.kind == "test_code":
            outcomes = self._grade_asserts(ref, records, result)
        else:
            outcomes = self._grade_stdio(ref, records, result)
        passed = sum(o.passed for o in outcomes)
        failed = [i for i, o in enumerate(outcomes) if not o.passed]
        details: dict[str, JSON] = {
            "passed": passed,
            "total": total,
            "failed": failed[:20],
            "isolation": result.isolation,
            "limit": result.limit,
            "timed_out": result.timed_out,
            "duration_s": round(result.duration_s, 4),
            "run_id": result.run_id,
        }
        if result.warning:
            details["sandbox_warning"] = result.warning
        if load_error is not None and passed == 0:
            error = _clip(str(load_error.get("error", "")), 300)
            details["error"] = "load_error"
            return Verdict(0.0, False, f"the program failed to load: {error}", details)
        if not failed:
            noun = "test" if total == 1 else "tests"
            return Verdict(1.0, True, f"all {total} {noun} passed", details)
        first = failed[0]
        details["error"] = outcomes[first].kind
        details["first_failure"] = first
        noun = "test" if total == 1 else "tests"
        feedback = f"passed {passed} of {total} {noun}; test {first + 1} failed: "
        return Verdict(passed / total, False, feedback + outcomes[first].feedback, details)

    def _grade_calls(
        self, ref: _Reference, records: Sequence[dict], result: SandboxResult
    ) -> list[_Outcome]:
        answers: dict[int, dict] = {}
        for record in records:  # the program may write records too: they are only its answers
            i = record.get("i")
            if record.get("ev") == "result" and type(i) is int and i not in answers:
                answers[i] = record
        outcomes = []
        for i, test in enumerate(ref.tests):
            call = _call_text(ref.entry_point, test["args"], test["kwargs"])
            record = answers.get(i)
            if record is None:
                why = _missing(result, self.time_limit_s)
                outcomes.append(_Outcome(False, f"{call}: {why}", _kind(result)))
            elif "value" in record:
                outcomes.append(self._compare(call, test["expected"], record["value"]))
            elif "error" in record:
                error = _clip(str(record["error"]), 300)
                outcomes.append(_Outcome(False, f"{call} raised {error}", "exception"))
            else:
                what = _clip(str(record.get("unrepresentable", "")), 200)
                why = f"{call} returned {what}, which is not plain data (JSON values only)"
                outcomes.append(_Outcome(False, why, "not_plain_data"))
        return outcomes

    def _compare(self, call: str, expected: object, encoded: object) -> _Outcome:
        try:
            got = decode(encoded)
        except (ValueError, TypeError, RecursionError):
            return _Outcome(False, f"{call} returned a malformed value", "malformed")
        if json_equal(expected, got, self.float_rel_tol):
            return _Outcome(True)
        shown = f"{call} returned {_show(got)}"
        if self.reveal_expected:
            shown += f", expected {_show(expected)}"
        return _Outcome(False, shown, "wrong_answer")

    def _grade_asserts(
        self, ref: _Reference, records: Sequence[dict], result: SandboxResult
    ) -> list[_Outcome]:
        verdicts: dict[int, dict] = {}
        for record in records:  # written by the runner only: the program cannot reach it
            i = record.get("i")
            if record.get("ev") == "test" and type(i) is int and i not in verdicts:
                verdicts[i] = record
        outcomes = []
        for i, text in enumerate(ref.test_texts):
            shown = f"`{_clip(' '.join(text.split()), _SHOW)}`" if self.reveal_expected else ""
            record = verdicts.get(i)
            if record is None:
                why = _missing(result, self.time_limit_s)
                outcomes.append(_Outcome(False, f"{shown}: {why}" if shown else why, _kind(result)))
            elif record.get("ok") is True:
                outcomes.append(_Outcome(True))
            else:
                error = _clip(str(record.get("error", "failed")), 300)
                kind = "wrong_answer" if error.startswith("AssertionError") else "exception"
                kind = "timeout" if "timed out" in error else kind
                outcomes.append(_Outcome(False, f"{shown}: {error}" if shown else error, kind))
        return outcomes

    def _grade_stdio(
        self, ref: _Reference, records: Sequence[dict], result: SandboxResult
    ) -> list[_Outcome]:
        runs: dict[int, dict] = {}
        for record in records:
            i = record.get("i")
            if record.get("ev") == "test" and type(i) is int and i not in runs:
                runs[i] = record
        outcomes = []
        for i, test in enumerate(ref.tests):
            label = f"input {_show(test['stdin'])}"
            run = runs.get(i)
            expected = f", expected {_show(test['stdout'])}" if self.reveal_expected else ""
            if run is None:
                why = _missing(result, self.time_limit_s)
                outcomes.append(_Outcome(False, f"{label}: {why}", _kind(result)))
            elif "skipped" in run:
                outcomes.append(_Outcome(False, f"{label}: not run, {run['skipped']}", "timeout"))
            elif run.get("timeout") or run.get("signal") == signal.SIGXCPU:
                limit = f"{self.time_limit_s:g} s"
                outcomes.append(_Outcome(False, f"{label}: timed out ({limit})", "timeout"))
            elif run.get("output_limit"):
                why = f"printed more than {self.sandbox.limits.output_bytes} bytes"
                outcomes.append(_Outcome(False, f"{label}: {why}", "output_limit"))
            elif run.get("exit") != 0:
                status = run.get("exit", f"signal {run.get('signal')}")
                error = _last_line(str(run.get("stderr", "")))
                why = f"exited with status {status}" + (f": {error}" if error else "")
                outcomes.append(_Outcome(False, f"{label}: {why}", "exception"))
            elif _lines(str(run.get("stdout", ""))) == _lines(test["stdout"]):
                outcomes.append(_Outcome(True))
            else:
                got = _show(str(run.get("stdout", "")))
                outcomes.append(
                    _Outcome(False, f"{label}: printed {got}{expected}", "wrong_answer")
                )
        return outcomes


# -- comparison ----------------------------------------------------------------------------------


def json_equal(expected: object, got: object, rel_tol: float = 1e-9) -> bool:
    """Equality on JSON types, type-strict but for numbers (see the module docstring).

    Args:
        expected: the reference value (JSON data; a tuple counts as an array).
        got: the program's value, decoded plain data.
        rel_tol: relative tolerance when either number is a float.

    Returns:
        Whether they match.
    """
    kind = type(expected)
    if expected is None:
        return got is None
    if kind is bool:
        return type(got) is bool and got == expected
    if kind in (int, float):
        if type(got) not in (int, float):
            return False
        if kind is int and type(got) is int:
            return got == expected
        try:
            a, b = float(expected), float(got)  # type: ignore[arg-type]
        except OverflowError:
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12)
    if kind is str:
        return type(got) is str and got == expected
    if kind in (list, tuple):
        if type(got) not in (list, tuple) or len(got) != len(expected):  # type: ignore[arg-type]
            return False
        return all(json_equal(e, g, rel_tol) for e, g in zip(expected, got))  # type: ignore[call-overload]
    if kind is dict:
        if type(got) is not dict or got.keys() != expected.keys():  # type: ignore[union-attr]
            return False
        return all(json_equal(v, got[k], rel_tol) for k, v in expected.items())  # type: ignore[index, union-attr]
    if kind in (set, frozenset, bytes, complex):  # references built in Python, not JSON
        return type(got) is kind and got == expected
    return False


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# -- references and programs ---------------------------------------------------------------------


def parse_reference(reference: object) -> _Reference:
    """Validates a code reference.

    Raises:
        ValueError: one line naming the missing or malformed field.
    """
    if not isinstance(reference, Mapping):
        raise ValueError(
            "code reference must be an object with 'tests', 'test_code' or 'stdio', "
            f"got {type(reference).__name__}"
        )
    kinds = [k for k in ("tests", "test_code", "stdio") if k in reference]
    if len(kinds) != 1:
        found = ", ".join(repr(k) for k in kinds) or "none"
        raise ValueError(
            f"code reference needs exactly one of 'tests', 'test_code', 'stdio' (found {found})"
        )
    kind = kinds[0]
    if kind == "stdio":
        cases = reference["stdio"]
        if not isinstance(cases, (list, tuple)) or not cases:
            raise ValueError("reference 'stdio' must be a non-empty list of {stdin, stdout}")
        tests = []
        for i, case in enumerate(cases):
            if not isinstance(case, Mapping) or not isinstance(case.get("stdout"), str):
                raise ValueError(f"reference stdio[{i}] needs a string 'stdout'")
            stdin = case.get("stdin", "")
            if not isinstance(stdin, str):
                raise ValueError(f"reference stdio[{i}].stdin must be a string")
            tests.append({"stdin": stdin, "stdout": case["stdout"]})
        return _Reference("stdio", "", tuple(tests), "", ())
    entry = reference.get("entry_point")
    if not isinstance(entry, str) or not entry.isidentifier():
        raise ValueError(f"reference 'entry_point' must be a function name, got {entry!r}")
    if kind == "test_code":
        code = reference["test_code"]
        if not isinstance(code, str) or not code.strip():
            raise ValueError("reference 'test_code' must be non-empty Python source")
        try:
            parts = split_tests(code, entry)
        except SyntaxError as exc:
            raise ValueError(
                f"reference 'test_code' does not parse: {exc.msg} (line {exc.lineno})"
            ) from None
        texts = tuple(text for part, text, _ in parts if part == "test")
        return _Reference("test_code", entry, (), code, texts)
    cases = reference["tests"]
    if not isinstance(cases, (list, tuple)) or not cases:
        raise ValueError("reference 'tests' must be a non-empty list of {args, kwargs, expected}")
    tests = []
    for i, case in enumerate(cases):
        if not isinstance(case, Mapping) or "expected" not in case:
            raise ValueError(f"reference tests[{i}] needs an 'expected' value")
        args = case.get("args", [])
        kwargs = case.get("kwargs", {})
        if not isinstance(args, (list, tuple)):
            raise ValueError(f"reference tests[{i}].args must be a list")
        if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"reference tests[{i}].kwargs must be an object with string keys")
        try:
            encode([list(args), dict(kwargs)])
        except Unrepresentable as exc:
            raise ValueError(f"reference tests[{i}] arguments must be JSON data ({exc})") from None
        tests.append({"args": list(args), "kwargs": dict(kwargs), "expected": case["expected"]})
    return _Reference("tests", entry, tuple(tests), "", ())


def extract_program(response: str) -> str:
    """The last fenced Python block (an untagged fence if no tagged one), else the response.

    Line-based, linear in the response's length; an unclosed last fence (a response cut at its
    token limit) runs to the end.

    Args:
        response: the model's text.

    Returns:
        The program's source.
    """
    tagged: list[str] = []
    untagged: list[str] = []
    fence = tag = ""
    body: list[str] = []
    for line in response.splitlines():
        stripped = line.strip()
        if not fence:
            opened = _fence_open(stripped)
            if opened:
                (fence, tag), body = opened, []
            continue
        if stripped and stripped == stripped[0] * len(stripped) and stripped.startswith(fence):
            _keep(tag, body, tagged, untagged)
            fence = ""
            continue
        body.append(line)
    if fence:
        _keep(tag, body, tagged, untagged)
    blocks = tagged or untagged
    return textwrap.dedent(blocks[-1]) if blocks else response


def _fence_open(stripped: str) -> tuple[str, str] | None:
    """(fence, language tag) when the line opens a fenced block (CommonMark rules)."""
    for char in "`~":
        if stripped.startswith(char * 3):
            length = len(stripped) - len(stripped.lstrip(char))
            info = stripped[length:].strip()
            if char == "`" and "`" in info:
                return None  # inline code such as ```x```, not a fence
            return char * length, (info.split()[0].lower() if info else "")
    return None


def _keep(tag: str, body: list[str], tagged: list[str], untagged: list[str]) -> None:
    if tag in _PYTHON_TAGS:
        tagged.append("\n".join(body))
    elif not tag:
        untagged.append("\n".join(body))


# -- feedback helpers ----------------------------------------------------------------------------


def _missing(result: SandboxResult, time_limit_s: float) -> str:
    """Why a test has no result."""
    if result.limit in ("wall", "cpu"):
        return f"timed out (time limit {time_limit_s:g} s)"
    if result.limit == "memory":
        return "ran out of memory"
    if result.limit == "output":
        return "printed more output than allowed"
    error = _last_line(result.stderr)
    status = f"the program ended before this test ran (exit status {result.returncode})"
    return status + (f": {error}" if error else "")


def _kind(result: SandboxResult) -> str:
    return {"wall": "timeout", "cpu": "timeout", "memory": "memory", "output": "output_limit"}.get(
        result.limit or "", "no_result"
    )


def _call_text(name: str, args: list, kwargs: dict) -> str:
    parts = [_show(a, 60) for a in args] + [f"{k}={_show(v, 60)}" for k, v in kwargs.items()]
    return _clip(f"{name}({', '.join(parts)})", 200)


def _show(value: object, limit: int = _SHOW) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # ints past the str-digits limit, deep nesting
        text = f"<{type(value).__name__}>"
    return _clip(text, limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return _clip(lines[-1], 200) if lines else ""
