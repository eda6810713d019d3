"""`opd/Math-v0`: the shipped task set, the GSM8K/MATH loaders, episodes with MathVerifier."""

from __future__ import annotations

import json
import re
from collections import Counter

import gymnasium as gym
import pytest

import opd_selfplay.envs  # noqa: F401  (registers the ids)
from opd_selfplay.envs import make_math_tasks
from opd_selfplay.envs.math_env import (
    SHIPPED_TASKS,
    MathEnv,
    gsm8k_row_to_task,
    last_boxed,
    load_math_tasks,
    math_row_to_task,
)
from opd_selfplay.envs.tasks import Task, TaskList, load_jsonl
from opd_selfplay.verifiers import MathVerifier

SHIPPED = load_jsonl(SHIPPED_TASKS)


def test_shipped_set_size_categories_and_ids():
    assert len(SHIPPED) >= 300
    counts = Counter(t.metadata["category"] for t in SHIPPED)
    assert set(counts) == {"linear", "quadratic", "fraction", "simplify", "system", "word"}
    assert min(counts.values()) >= 50
    assert len({t.id for t in SHIPPED}) == len(SHIPPED)
    assert len({t.prompt for t in SHIPPED}) == len(SHIPPED)
    templates = Counter(t.metadata.get("template") for t in SHIPPED if counts)
    assert len([k for k in templates if k]) == 10  # every word-problem template is used


def test_shipped_file_is_what_the_generator_writes():
    rows = make_math_tasks.generate(seed=0)
    shipped = [json.loads(line) for line in SHIPPED_TASKS.read_text(encoding="utf-8").splitlines()]
    assert rows == shipped


@pytest.fixture(scope="module")
def verifier():
    return MathVerifier()


def test_every_shipped_reference_passes_its_own_verifier(verifier):
    failures = []
    for t in SHIPPED:
        for response in (t.solution, f"The answer is \\boxed{{{t.reference}}}."):
            v = verifier.verify(response, t.reference)
            if not v.correct or v.score != 1.0:
                failures.append((t.id, response[-60:], v.feedback))
    assert failures == []


def _latex_number(text: str) -> str:
    """`-3/4` -> `-\\frac{3}{4}`; integers unchanged."""
    if "/" not in text:
        return text
    num, den = text.split("/")
    return ("-" if num.startswith("-") else "") + f"\\frac{{{num.lstrip('-')}}}{{{den}}}"


def _another_form(task: Task) -> str:
    """The reference written differently: roots in the other order as `x = a or x = b`,
    polynomial terms reversed, a system as `x = .., y = ..`, fractions in LaTeX."""
    ref, category = str(task.reference), task.metadata["category"]
    if category == "quadratic":
        roots = [_latex_number(r.strip()) for r in ref.split(",")]
        return " or ".join(f"x = {r}" for r in reversed(roots))
    if category == "simplify":
        terms = [t.replace(" ", "") for t in re.findall(r"[+-]? ?[^+-]+", ref)]
        return "+".join(reversed(terms)).replace("+-", "-").lstrip("+")
    if category == "system":
        x, y = ref.strip("()").split(", ")
        return f"x = {x}, y = {y}"
    if category == "linear":
        return f"x = {_latex_number(ref)}"
    return _latex_number(ref)


def test_shipped_references_are_math_not_just_text(verifier):
    """The verifier accepts each reference written another way, so a reference is a value the
    verifier understands, not a string it can only match verbatim."""
    failures = []
    for t in SHIPPED:
        other = _another_form(t)
        v = verifier.verify(f"So the answer is \\boxed{{{other}}}.", t.reference)
        if not v.correct:
            failures.append((t.id, t.reference, other, v.feedback))
    assert failures == []
    changed = sum(_another_form(t) != t.reference for t in SHIPPED)
    assert changed > 250


def test_shipped_wrong_answers_fail_with_feedback(verifier):
    for t in list(SHIPPED)[::7]:
        v = verifier.verify("The answer is \\boxed{-987654321}.", t.reference)
        assert (v.score, v.correct) == (0.0, False) and v.feedback, t.id


def test_episode_wrong_then_right():
    env = gym.make("opd/Math-v0", category="linear")
    obs, info = env.reset(seed=0)
    assert obs.startswith("Solve for x: ") and obs.endswith("Put your final answer in \\boxed{}.")
    assert info["task_metadata"]["category"] == "linear"
    assert info["privileged"].startswith(f"Reference answer: {info['reference']}\n")
    obs, r, term, trunc, info = env.step("I think it is \\boxed{1000}.")
    assert (r, term, trunc) == (0.0, False, False)
    assert info["verdict"].feedback and obs.endswith("Try again.")
    assert info["privileged"].endswith(f"Feedback on the last answer: {info['feedback']}")
    obs, r, term, trunc, info = env.step(
        f"So x = {info['reference']}, i.e. \\boxed{{{info['reference']}}}"
    )
    assert (r, term, trunc) == (1.0, True, False)


def test_no_answer_twice_ends_with_parse_error():
    env = MathEnv(category="word")
    env.reset(seed=1)
    env.step("")
    *_, term, _, info = env.step("I have no idea.")
    assert term and info["verdict"].score == 0.0 and info["verdict"].feedback


def test_gsm8k_and_math_rows():
    t = gsm8k_row_to_task(
        {
            "question": "Nat sold 48 clips, then half as many. How many?",
            "answer": "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 1,072",
        },
        3,
    )
    assert (t.reference, t.id) == ("1072", "gsm8k-3")
    assert "<<" not in t.solution and t.solution.endswith("\\boxed{1072}.")
    m = math_row_to_task(
        {
            "problem": "Compute $\\frac{1}{2}+\\frac{1}{3}$.",
            "solution": "We get $\\boxed{\\frac{5}{6}}$.",
            "level": "Level 2",
            "type": "Algebra",
        },
        0,
    )
    assert m.reference == "\\frac{5}{6}" and m.metadata == {
        "source": "math",
        "level": "Level 2",
        "type": "Algebra",
    }
    with pytest.raises(ValueError, match="####"):
        gsm8k_row_to_task({"question": "q", "answer": "no marker"}, 0)
    with pytest.raises(ValueError, match="no \\\\boxed"):
        math_row_to_task({"problem": "p", "solution": "none"}, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{3}", "3"),
        ("a \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{7}", "7"),
        ("\\boxed{unclosed", None),
        ("nothing", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_loaders_detect_the_format_and_the_env_plays_them(tmp_path, verifier):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        json.dumps({"question": "2 apples and 3 more?", "answer": "2+3=5\n#### 5"}) + "\n",
        encoding="utf-8",
    )
    math = tmp_path / "math.jsonl"
    math.write_text(
        json.dumps({"problem": "What is $2^{10}$?", "solution": "$2^{10} = \\boxed{1024}$."})
        + "\n",
        encoding="utf-8",
    )
    assert load_math_tasks(gsm)[0].reference == "5"
    assert load_math_tasks(math)[0].reference == "1024"
    for path in (gsm, math):
        env = MathEnv(tasks=path, max_attempts=1)
        env.reset(seed=0)
        _, r, term, _, _ = env.step(env.oracle_action())
        assert (r, term) == (1.0, True)
    with pytest.raises(ValueError, match="task_format must be one of"):
        load_math_tasks(gsm, task_format="csv")  # type: ignore[arg-type]


def test_task_list_and_category_filter():
    tl = TaskList([Task("What is 6*7?", "42", metadata={"category": "a"}), Task("1+1?", "2")])
    env = MathEnv(tasks=tl, instruction="", category="a")
    obs, _info = env.reset(seed=0)
    assert obs == "What is 6*7?" and len(env.tasks) == 1
