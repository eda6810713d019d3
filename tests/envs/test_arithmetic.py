"""`opd/Arithmetic-v0`: task generation per level, tolerant parsing, feedback, episodes."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import opd_selfplay.envs  # noqa: F401  (registers the ids)
from opd_selfplay.envs.arithmetic import (
    LEVELS,
    ArithmeticEnv,
    ArithmeticTasks,
    check_integer_answer,
    parse_integer,
)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_levels_generate_correct_expressions_in_range(level):
    lo, hi, ops = LEVELS[level]
    tasks = ArithmeticTasks.from_level(level)
    rng = np.random.default_rng(level)
    seen_ops, seen_digits = set(), set()
    for _ in range(300):
        t = tasks.sample(rng)
        expr = t.metadata["expression"]
        assert t.prompt == f"{expr}="
        assert int(t.reference) == eval(expr)  # the expression is our own digits and + - *
        assert int(t.reference) >= 0
        numbers = re.findall(r"\d+", expr)
        seen_digits.update(len(n) for n in numbers)
        seen_ops.update(re.findall(r"[-+*]", expr))
    assert seen_digits == set(range(lo, hi + 1))
    assert seen_ops == set(ops)


def test_default_is_one_to_three_digit_addition_with_two_attempts():
    env = gym.make("opd/Arithmetic-v0")
    u = env.unwrapped
    assert (u.tasks.min_digits, u.tasks.max_digits, u.tasks.ops, u.max_attempts) == (1, 3, "+", 2)
    obs, _info = env.reset(seed=0)
    assert re.fullmatch(r"\d{1,3}\+\d{1,3}=", obs)
    assert obs.isascii() and len(obs) <= 8


def test_overrides_words_format_and_negative_results():
    tasks = ArithmeticTasks.from_level(
        4, max_digits=2, operands=3, allow_negative=True, prompt_format="words"
    )
    rng = np.random.default_rng(0)
    samples = [tasks.sample(rng) for _ in range(300)]
    assert all(re.fullmatch(r"What is \d+ [-+] \d+ [-+] \d+\?", t.prompt) for t in samples)
    assert any(int(t.reference) < 0 for t in samples)
    with pytest.raises(ValueError, match="difficulty must be one of"):
        ArithmeticTasks.from_level(99)
    with pytest.raises(ValueError, match="ops must be a non-empty string over"):
        ArithmeticTasks(ops="/")
    with pytest.raises(ValueError, match="digits must satisfy"):
        ArithmeticTasks(min_digits=3, max_digits=2)


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("19", 19, 19),
        ("12+7=19", 12, 19),
        ("The answer is 19.", 19, 19),
        ("1,234 or 5", 1234, 5),
        ("12-7", 12, 7),  # a minus after a digit is an operator, not a sign
        ("answer: -5", -5, -5),
        ("x1,23", 1, 23),  # not a thousands group
        ("", "no number found", "no number found"),
        ("no digits at all ٤٢", "no number found", "no number found"),
        ("9" * 41, "number too long", "number too long"),
        ("9" * 100_000, "number too long", "number too long"),
    ],
)
def test_parse_integer(text, first, last):
    assert parse_integer(text, "first") == first
    assert parse_integer(text, "last") == last


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**12), 10**12), st.text(alphabet=st.characters(blacklist_categories=["Nd"])))
def test_parse_integer_finds_a_number_after_any_non_digit_text(n, prefix):
    assert parse_integer(f"{prefix} {n}", "last") == n


def test_feedback_levels():
    assert check_integer_answer("25", 19).feedback == "too high"
    assert check_integer_answer("3", 19).feedback == "too low"
    assert check_integer_answer("3", 19, feedback="wrong").feedback == "wrong"
    v = check_integer_answer("it is 19", 19)
    assert (v.score, v.correct, v.feedback, v.details) == (
        1.0,
        True,
        "correct",
        {"parsed": 19, "parse_error": False},
    )
    v = check_integer_answer("no idea", 19)
    assert (v.score, v.feedback, v.details["parse_error"]) == (0.0, "no number found", True)


def test_wrong_then_right_episode():
    env = gym.make("opd/Arithmetic-v0")
    obs, info = env.reset(seed=3)
    ref = int(info["reference"])
    assert info["privileged"] == f"answer {ref}"
    obs, r, term, trunc, info = env.step(str(ref + 10))
    assert (obs, r, term, trunc) == ("too high, try again", 0.0, False, False)
    assert info["privileged"] == f"answer {ref}; last: too high"
    obs, r, term, trunc, info = env.step(str(ref))
    assert (obs, r, term, trunc) == ("correct", 1.0, True, False)


def test_two_wrong_answers_end_the_episode_with_zero():
    env = gym.make("opd/Arithmetic-v0", feedback="wrong", prompt_format="words")
    obs, info = env.reset(seed=4)
    assert obs.startswith("What is ") and obs.endswith("?")
    obs, r, term, _, _ = env.step("0" if info["reference"] != "0" else "1")
    assert obs == "Wrong. Try again." and not term
    obs, r, term, trunc, info = env.step("I give up")
    assert (obs, r, term, trunc) == ("no number found", 0.0, True, False)
    assert info["stop_reason"] == "parse_error"


def test_one_attempt_env_and_oracle_and_wrong_action():
    env = gym.make("opd/Arithmetic-v0", max_attempts=1, difficulty=7)
    for seed in range(20):
        env.reset(seed=seed)
        _, r, term, _, _ = env.step(env.unwrapped.oracle_action())
        assert (r, term) == (1.0, True)
        env.reset(seed=seed)
        _, r, term, _, info = env.step(env.unwrapped.wrong_action())
        assert (r, term, info["verdict"].feedback) == (0.0, True, "too high")


def test_group_of_envs_with_one_seed_share_the_task():
    group = [ArithmeticEnv() for _ in range(8)]
    prompts = {e.reset(seed=42)[0] for e in group}
    assert len(prompts) == 1
    other = {ArithmeticEnv().reset(seed=s)[0] for s in range(30)}
    assert len(other) > 20


def test_huge_garbage_answer_is_cheap_and_wrong():
    env = ArithmeticEnv()
    env.reset(seed=0)
    garbage = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    _obs, r, term, _, info = env.step(garbage.decode("utf-8", "replace"))
    assert r == 0.0 and not term and info["verdict"].feedback
