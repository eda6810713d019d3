"""CodeVerifier: the three reference formats, feedback, references, and reward hacks.

Every reward hack below is a real program run in the real sandbox; each must score 0 (or no
more than the honest part of its work). Host-level hostile cases (fork storms, network, ...)
are in test_sandbox.py; the ones here also check that nothing outlives the verdict.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import warnings

import pytest

from opd_selfplay.verifiers import CodeVerifier, Verdict, sandbox
from opd_selfplay.verifiers.code import extract_program, json_equal, parse_reference

ADD_TESTS = {
    "entry_point": "add",
    "tests": [
        {"args": [1, 2], "expected": 3},
        {"args": [-5, 5], "expected": 0},
        {"args": [0.1, 0.2], "expected": 0.3},
        {"args": [], "kwargs": {"a": 2, "b": 40}, "expected": 42},
    ],
}
ADD_ASSERTS = {
    "entry_point": "add",
    "test_code": "assert add(1, 2) == 3\nassert add(-5, 5) == 0\nassert add(2, 40) == 42\n",
}
ADD_CHECK = {
    "entry_point": "add",
    "test_code": "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n",
}
ADD_STDIO = {
    "stdio": [
        {"stdin": "1 2\n", "stdout": "3\n"},
        {"stdin": "-5 5\n", "stdout": "0"},
        {"stdin": "2 40", "stdout": "42\n\n"},
    ]
}
REFERENCES = {"tests": ADD_TESTS, "asserts": ADD_ASSERTS, "check": ADD_CHECK, "stdio": ADD_STDIO}
GOLD_FUNCTION = "Here you go:\n\n```python\ndef add(a, b):\n    return a + b\n```\n"
GOLD_STDIO = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def _gold(kind: str) -> str:
    return GOLD_STDIO if kind == "stdio" else GOLD_FUNCTION


@pytest.fixture(scope="module")
def verifier() -> CodeVerifier:
    return CodeVerifier(time_limit_s=2.0)


@pytest.fixture(scope="module")
def quiet() -> CodeVerifier:
    """Feedback without the expected values (hidden tests)."""
    return CodeVerifier(time_limit_s=2.0, reveal_expected=False)


# -- the three formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(REFERENCES))
def test_gold_scores_one(verifier: CodeVerifier, kind: str) -> None:
    verdict = verifier.verify(_gold(kind), REFERENCES[kind])
    assert (verdict.score, verdict.correct) == (1.0, True), verdict.feedback
    assert verdict.feedback.startswith("all ")
    assert verdict.details["passed"] == verdict.details["total"]


@pytest.mark.parametrize("kind", list(REFERENCES))
@pytest.mark.parametrize("response", ["", "   \n", "I don't know.", "def add(a, b) return"])
def test_empty_and_garbage_score_zero(verifier: CodeVerifier, kind: str, response: str) -> None:
    verdict = verifier.verify(response, REFERENCES[kind])
    assert (verdict.score, verdict.correct) == (0.0, False)
    assert verdict.feedback


@pytest.mark.parametrize("kind", list(REFERENCES))
@pytest.mark.parametrize("where", ["import", "call"])
def test_infinite_loops_score_zero_within_the_limit(kind: str, where: str, host_ok) -> None:
    verifier = CodeVerifier(time_limit_s=1.0)
    if where == "import":
        program = "while True:\n    pass\n"
    elif kind == "stdio":
        program = "input()\nwhile True:\n    pass\n"
    else:
        program = "def add(a, b):\n    while True:\n        pass\n"
    started = time.monotonic()
    verdict = verifier.verify(program, REFERENCES[kind])
    assert time.monotonic() - started < 1.0 + 1.0
    assert verdict.score == 0.0
    assert "timed out" in verdict.feedback or "not run" in verdict.feedback
    host_ok(verdict.details["run_id"])


def test_partial_credit_and_feedback_of_the_first_failure(verifier, quiet) -> None:
    program = "def add(a, b):\n    return a + b if a != -5 else 'zero'\n"
    verdict = verifier.verify(program, ADD_TESTS)
    assert verdict.score == 0.75 and not verdict.correct
    assert "test 2 failed: add(-5, 5) returned 'zero', expected 0" in verdict.feedback
    assert verdict.details["failed"] == [1] and verdict.details["error"] == "wrong_answer"
    hidden = quiet.verify(program, ADD_TESTS)
    assert "returned 'zero'" in hidden.feedback and "expected" not in hidden.feedback


def test_feedback_names_the_error_of_a_raising_call(verifier: CodeVerifier) -> None:
    program = (
        "def add(a, b):\n    if a < 0:\n        raise ValueError('negative')\n    return a + b"
    )
    verdict = verifier.verify(program, ADD_TESTS)
    assert verdict.score == 0.75
    assert "add(-5, 5) raised ValueError: negative" in verdict.feedback


def test_asserts_are_graded_one_by_one(verifier: CodeVerifier, quiet: CodeVerifier) -> None:
    program = "def add(a, b):\n    return a + b if a > 0 else 1"
    verdict = verifier.verify(program, ADD_ASSERTS)
    assert verdict.score == pytest.approx(2 / 3)
    assert "`assert add(-5, 5) == 0`: AssertionError" in verdict.feedback
    assert "== 0" not in quiet.verify(program, ADD_ASSERTS).feedback


def test_test_code_may_expect_an_exception(verifier: CodeVerifier) -> None:
    reference = {
        "entry_point": "root",
        "test_code": (
            "import math\n"
            "assert math.isclose(root(9.0), 3.0)\n"
            "try:\n    root(-1)\n    raise RuntimeError('no error')\nexcept ValueError:\n    pass\n"
        ),
    }
    program = "def root(x):\n    if x < 0:\n        raise ValueError('neg')\n    return x ** 0.5"
    assert verifier.verify(program, reference).score == 1.0


def test_stdio_compares_lines_and_needs_exit_zero(verifier: CodeVerifier) -> None:
    crash = "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(2)"
    verdict = verifier.verify(crash, ADD_STDIO)
    assert verdict.score == 0.0 and "exited with status 2" in verdict.feedback
    wrong = "a, b = map(int, input().split())\nprint(a - b)"
    verdict = verifier.verify(wrong, ADD_STDIO)
    assert "input '1 2\\n': printed '-1\\n', expected '3\\n'" in verdict.feedback


def test_values_are_compared_on_json_types() -> None:
    assert json_equal([1, [2, 3]], (1, (2, 3)))  # a tuple is a JSON array
    assert json_equal({"a": 0.30000000000000004}, {"a": 0.3})
    assert json_equal(2.0, 2) and json_equal(2, 2.0)  # one number type in JSON
    assert not json_equal(1, True) and not json_equal(True, 1)
    assert not json_equal("1", 1) and not json_equal(None, 0) and not json_equal([], {})
    assert not json_equal([1, 2], {1, 2}) and not json_equal({"1": 2}, {1: 2})
    assert json_equal(float("nan"), float("nan")) and not json_equal(1, float("nan"))
    assert not json_equal(1e308, 10**400)


def test_big_ints_and_python_types_cross_exactly(verifier: CodeVerifier) -> None:
    reference = {
        "entry_point": "f",
        "tests": [{"args": [300], "expected": 2**300}, {"args": [0], "expected": [1, [2]]}],
    }
    assert (
        verifier.verify("def f(n):\n    return 2 ** n if n else (1, (2,))", reference).score == 1.0
    )
    verdict = verifier.verify("def f(n):\n    return {1, 2}", reference)
    assert verdict.score == 0.0 and "returned {1, 2}" in verdict.feedback


# -- references and programs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ([1, 2], "must be an object"),
        ({"entry_point": "f"}, "exactly one of 'tests', 'test_code', 'stdio' (found none)"),
        ({"tests": [], "stdio": []}, "found 'tests', 'stdio'"),
        (
            {"entry_point": "1f", "tests": [{"expected": 1}]},
            "'entry_point' must be a function name",
        ),
        ({"entry_point": "f", "tests": []}, "'tests' must be a non-empty list"),
        ({"entry_point": "f", "tests": [{"args": [1]}]}, "tests[0] needs an 'expected'"),
        ({"entry_point": "f", "tests": [{"args": 1, "expected": 1}]}, "tests[0].args"),
        ({"entry_point": "f", "tests": [{"kwargs": [], "expected": 1}]}, "tests[0].kwargs"),
        ({"entry_point": "f", "test_code": "assert (("}, "'test_code' does not parse"),
        ({"entry_point": "f", "test_code": "x = 1"}, "holds no top-level assert"),
        ({"stdio": [{"stdin": "1"}]}, "stdio[0] needs a string 'stdout'"),
        ({"stdio": [{"stdin": 1, "stdout": ""}]}, "stdio[0].stdin must be a string"),
    ],
)
def test_malformed_references_raise_one_line_naming_the_field(reference, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_reference(reference)
    assert "\n" not in str(info.value)


def test_a_non_string_response_is_a_type_error(verifier: CodeVerifier) -> None:
    with pytest.raises(TypeError, match="response must be a str"):
        verifier.verify(None, ADD_TESTS)  # type: ignore[arg-type]


def test_the_last_python_block_is_the_program() -> None:
    text = "```python\nold()\n```\nand\n```text\nnot code\n```\n```py\n    new()\n```\ntrailing"
    assert extract_program(text) == "new()"
    assert extract_program("```\nuntagged()\n```") == "untagged()"
    assert extract_program("no fences here") == "no fences here"
    assert extract_program("```python\ncut_off()\n") == "cut_off()"  # cut at the token limit
    assert extract_program("~~~~python\na = '```'\n~~~~") == "a = '```'"
    assert extract_program("inline ```x``` only") == "inline ```x``` only"


def test_batch_keeps_order_and_fails_bad_references_alone(verifier: CodeVerifier) -> None:
    pairs = [
        (GOLD_FUNCTION, ADD_TESTS),
        ("def add(a, b):\n    return 0", ADD_TESTS),
        (GOLD_FUNCTION, {"entry_point": "add"}),
        (GOLD_STDIO, ADD_STDIO),
    ]
    for processes in (1, 4):
        verdicts = verifier.verify_batch(pairs, processes=processes)
        assert [v.score for v in verdicts] == [1.0, 0.25, 0.0, 1.0]
        assert verdicts[2].details["error"] == "invalid_reference"
        assert all(isinstance(v, Verdict) for v in verdicts)


def test_rlimit_mode_grades_the_same() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sandbox.SandboxWarning)
        weak = CodeVerifier(time_limit_s=2.0, isolation="rlimit")
    for kind, reference in REFERENCES.items():
        verdict = weak.verify(_gold(kind), reference)
        assert verdict.score == 1.0 and verdict.details["isolation"] == "rlimit"
        assert verdict.details["sandbox_warning"]


def test_the_command_line_prints_the_verdict() -> None:
    command = [sys.executable, "-m", "opd_selfplay", "verify", "code", "--time-limit", "3"]
    good = subprocess.run(
        [*command, "--response", GOLD_FUNCTION, "--reference", json.dumps(ADD_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["score"] == 1.0
    bad = subprocess.run(
        [*command, "--response", GOLD_FUNCTION, "--reference", '{"entry_point": "add"}'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "exactly one of" in bad.stderr


HOSTILE = {
    "200 MB of output": "import sys\ndef add(a, b):\n    for _ in range(200):\n"
    "        sys.stdout.write('x' * (1 << 20))\n    return a + b\n",
    "4 GB under 512 MB": "def add(a, b):\n    x = bytearray(4 << 30)\n    return a + b\n",
    "fork storm": "import os\ndef add(a, b):\n    while True:\n        try:\n"
    "            os.fork()\n        except OSError:\n            pass\n",
    "killing its parents": "import os, signal\ndef add(a, b):\n"
    "    os.kill(os.getppid(), signal.SIGKILL)\n    os.killpg(0, signal.SIGKILL)\n",
}


@pytest.mark.parametrize("kind", list(REFERENCES))
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_programs_score_zero_and_leave_nothing(isolated, kind, case, host_ok) -> None:
    program = HOSTILE[case]
    if kind == "stdio":
        program = program.replace("def add(a, b):", "if True:").replace("return a + b", "print(3)")
    verifier = CodeVerifier(time_limit_s=1.0, memory_limit_mb=512)
    started = time.monotonic()
    verdict = verifier.verify(program, REFERENCES[kind])
    assert time.monotonic() - started < 1.0 + 1.0
    assert verdict.score == 0.0, verdict.feedback
    host_ok(verdict.details["run_id"])


# -- reward hacking earns nothing ------------------------------------------------------------


EXIT_EARLY = {
    "sys.exit": "import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n",
    "os._exit": "import os\nos._exit(0)\ndef add(a, b):\n    return a + b\n",
    "exit in call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "SystemExit in call": "def add(a, b):\n    raise SystemExit(0)\n",
}


@pytest.mark.parametrize("kind", list(REFERENCES))
@pytest.mark.parametrize("hack", list(EXIT_EARLY))
def test_exiting_early_with_status_zero_earns_nothing(verifier, kind, hack, host_ok) -> None:
    program = EXIT_EARLY[hack]
    if kind == "stdio":
        program = program.replace("def add(a, b):", "if True:")
    verdict = verifier.verify(program, REFERENCES[kind])
    assert verdict.score == 0.0, verdict.feedback
    host_ok(verdict.details["run_id"])


ALWAYS_EQUAL = {
    "object": (
        "class Anything:\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "    __hash__ = None\n"
        "def add(a, b):\n    return Anything()\n"
    ),
    "int subclass": (
        "class Int(int):\n"
        "    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Int(7)\n"
    ),
    "str subclass": "class S(str):\n    __eq__ = lambda s, o: True\ndef add(a, b):\n    return S('x')",
}


@pytest.mark.parametrize("kind", ["tests", "asserts", "check"])
@pytest.mark.parametrize("hack", list(ALWAYS_EQUAL))
def test_objects_equal_to_everything_earn_nothing(verifier, kind, hack) -> None:
    verdict = verifier.verify(ALWAYS_EQUAL[hack], REFERENCES[kind])
    assert verdict.score == 0.0, verdict.feedback
    assert "not plain data" in verdict.feedback


PATCHING = {
    "builtins": (
        "import builtins\n"
        "class Quiet(Exception):\n    pass\n"
        "builtins.AssertionError = Quiet\n"
        "builtins.isinstance = lambda *a: True\n"
        "builtins.print = lambda *a, **k: None\n"
        "def add(a, b):\n    return -1\n"
    ),
    "harness globals": (
        "import sys\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    g = frame.f_globals\n"
        "    for name in ('encode', 'describe', 'json_equal'):\n"
        "        if name in g:\n"
        "            g[name] = lambda *a, **k: True\n"
        "    frame = frame.f_back\n"
        "def add(a, b):\n    return -1\n"
    ),
    "codec module": (
        "import sys\n"
        "codec = sys.modules.get('opd_sandbox_codec')\n"
        "if codec is not None:\n"
        "    codec.encode = lambda *a, **k: True\n"
        "    codec.decode = lambda *a, **k: True\n"
        "def add(a, b):\n    return -1\n"
    ),
}


@pytest.mark.parametrize("kind", ["tests", "asserts", "check"])
@pytest.mark.parametrize("hack", list(PATCHING))
def test_monkeypatching_builtins_or_the_harness_earns_nothing(verifier, kind, hack) -> None:
    # The patches can only change what this program answers (here: True, never equal to 3);
    # the comparison happens where the program cannot reach.
    verdict = verifier.verify(PATCHING[hack], REFERENCES[kind])
    assert verdict.score == 0.0, verdict.feedback


FORGE = (
    "import os, sys\n"
    "print('PASSED'); print('All tests passed'); print('ok')\n"
    "lines = [{'ev': 'test', 'i': i, 'ok': True} for i in range(10)]\n"
    "lines += [{'ev': 'result', 'i': i, 'value': 'forged'} for i in range(10)]\n"
    "lines += [{'ev': 'done'}]\n"
    "import json\n"
    "data = ''.join(json.dumps(l) + '\\n' for l in lines).encode()\n"
    "for fd in range(64):\n"
    "    try:\n"
    "        os.write(fd, data)\n"
    "    except OSError:\n"
    "        pass\n"
)


@pytest.mark.parametrize("kind", list(REFERENCES))
def test_printing_fake_results_earns_nothing(verifier: CodeVerifier, kind: str) -> None:
    program = FORGE + ("def add(a, b):\n    return 'forged'\n" if kind != "stdio" else "")
    verdict = verifier.verify(program, REFERENCES[kind])
    assert verdict.score == 0.0, verdict.feedback


def test_stopiteration_cannot_end_a_test_loop_early(verifier: CodeVerifier) -> None:
    reference = {
        "entry_point": "double",
        "test_code": (
            "def check(candidate):\n"
            "    for got, want in zip(map(candidate, [1, 2]), [2, 4]):\n"
            "        assert got == want\n"
        ),
    }
    assert verifier.verify("def double(x):\n    return 2 * x", reference).score == 1.0
    verdict = verifier.verify("def double(x):\n    raise StopIteration", reference)
    assert verdict.score == 0.0


DIG = """
import gc, os, sys

def _scan(text, found):
    for prefix in ('ARG-', 'SECRET-'):
        start = text.find(prefix)
        if start >= 0:
            found.add(text[start:start + len(prefix) + 12])

def dig(*args, **kwargs):
    found = set()
    frame = sys._getframe()
    while frame is not None:  # every frame's locals, globals and constants
        for space in (frame.f_locals, frame.f_globals):
            for value in list(space.values()):
                _scan(repr(value)[:100000], found)
        _scan(repr(frame.f_code.co_consts), found)
        frame = frame.f_back
    for obj in gc.get_objects():  # everything the collector knows
        try:
            _scan(repr(obj)[:10000], found)
        except Exception:
            pass
    for pid in ['self', str(os.getppid()), '1']:  # other processes' memory, fds, environment
        for part in ('environ', 'cmdline'):
            try:
                _scan(open(f'/proc/{pid}/{part}', 'rb').read().decode('latin-1'), found)
            except OSError:
                pass
        try:
            for fd in os.listdir(f'/proc/{pid}/fd'):
                try:  # non-blocking: a pipe with nothing in it must not hang the search
                    handle = os.open(f'/proc/{pid}/fd/{fd}', os.O_RDONLY | os.O_NONBLOCK)
                    _scan(os.read(handle, 1 << 20).decode('latin-1'), found)
                    os.close(handle)
                except OSError:
                    pass
        except OSError:
            pass
        try:
            with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/mem', 'rb') as mem:
                for line in maps:
                    low, high = (int(x, 16) for x in line.split()[0].split('-'))
                    if 'r' in line.split()[1] and high - low < (64 << 20):
                        try:
                            mem.seek(low)
                            _scan(mem.read(high - low).decode('latin-1'), found)
                        except (OSError, ValueError, OverflowError):
                            pass
        except OSError:
            pass
    skip = {'/proc', '/sys', '/dev', '/usr', os.path.realpath(sys.base_prefix)}
    for root in ('/', ):  # every readable file but the system's and Python's own
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
            for name in files:
                try:
                    with open(os.path.join(folder, name), 'rb') as fh:
                        _scan(fh.read(1 << 20).decode('latin-1'), found)
                except OSError:
                    pass
    for path in PATHS:  # where the reference lives on the host
        try:
            _scan(open(path).read(), found)
        except OSError:
            pass
    return sorted(found)
"""


@pytest.mark.parametrize("kind", ["tests", "asserts"])
def test_expected_values_cannot_be_dug_out(isolated, kind, tmp_path, host_ok) -> None:
    secret = "SECRET-" + os.urandom(6).hex()
    arg = "ARG-" + os.urandom(6).hex()
    if kind == "tests":
        reference = {"entry_point": "dig", "tests": [{"args": [arg], "expected": [secret]}]}
    else:
        # The assert's message shows what the search found, in the feedback.
        test = f"assert dig({arg!r}) == [{secret!r}], dig({arg!r})\n"
        reference = {"entry_point": "dig", "test_code": test}
    (tmp_path / "reference.json").write_text(json.dumps(reference))  # a reference file on disk
    verifier = CodeVerifier(time_limit_s=10.0, reveal_expected=False)
    paths = [str(tmp_path / "reference.json"), __file__]
    verdict = verifier.verify(f"PATHS = {paths!r}\n" + DIG, reference)
    assert verdict.score == 0.0 and not verdict.details["timed_out"]
    # The search works (it finds the argument, which is in the sandbox), but the expected
    # value is nowhere it can reach.
    assert arg in verdict.feedback, verdict.feedback
    assert secret not in verdict.feedback
    host_ok(verdict.details["run_id"])


def test_the_candidate_cannot_kill_the_test_runner_into_a_pass(verifier, host_ok) -> None:
    program = "import os, signal\ndef add(a, b):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
    verdict = verifier.verify(program, ADD_ASSERTS)
    assert verdict.score == 0.0
    host_ok(verdict.details["run_id"])


def test_test_code_sees_the_programs_helpers_and_imports(verifier: CodeVerifier) -> None:
    reference = {
        "entry_point": "decode",
        "test_code": "assert decode(encode('abc')) == 'abc'\nassert m.floor(2.5) == 2\n",
    }
    program = (
        "import math as m\ndef encode(s):\n    return s[::-1]\ndef decode(s):\n    return s[::-1]"
    )
    assert verifier.verify(program, reference).score == 1.0


def test_a_program_cannot_shadow_builtins_used_by_the_test_code(verifier: CodeVerifier) -> None:
    reference = {
        "entry_point": "f",
        "test_code": "assert sorted(f(3)) == [1, 2, 3]\nassert len(f(2)) == 2\n",
    }
    honest = "def f(n):\n    return list(range(n, 0, -1))"
    assert verifier.verify(honest, reference).score == 1.0
    hack = (
        "def sorted(x):\n    return [1, 2, 3]\ndef len(x):\n    return 2\ndef f(n):\n    return []"
    )
    assert verifier.verify(hack, reference).score == 0.0


def test_the_codec_round_trips_plain_data_and_refuses_the_rest() -> None:
    from opd_selfplay.verifiers.codec import Unrepresentable, decode, dumps, encode, loads

    value = {"a": [1, (2, 3), {4}, frozenset([5]), b"x", 1 + 2j, 2**200, "é\n"], (1, 2): None}
    assert decode(loads(dumps(encode(value)))) == value
    nested: object = 0
    for _ in range(100):
        nested = {"k": nested}
    assert decode(loads(dumps(encode(nested)))) == nested
    cycle: list = []
    cycle.append(cycle)
    for bad in (cycle, object(), type("Int", (int,), {})(3), print):
        with pytest.raises(Unrepresentable):
            encode(bad)
    for tree in ({"x": 1}, {"t": 1, "s": 2}, {"d": [[[1], 2]]}, {"s": [[1]]}, {"c": ["a", []]}):
        with pytest.raises(ValueError):
            decode(tree)
