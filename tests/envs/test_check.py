"""The conformance checker finds each kind of broken env, and passes good ones."""

from __future__ import annotations

import gymnasium as gym
import pytest

from opd_selfplay.envs.base import TextTaskEnv, UnicodeText
from opd_selfplay.envs.check import check_env
from opd_selfplay.envs.tasks import ProceduralSource, Task
from opd_selfplay.errors import InputError
from opd_selfplay.verifiers.verdict import Verdict


def number_task(rng, difficulty):
    n = int(rng.integers(1000))
    return Task(prompt=f"Say {n}", reference=str(n))


class Good(TextTaskEnv):
    def __init__(self, **kw):
        super().__init__(ProceduralSource(number_task), max_attempts=2, **kw)

    def verify(self, action, task):
        ok = action.strip() == task.reference
        return Verdict(float(ok), ok, "" if ok else "not that number")

    def oracle_action(self):
        return str(self.task.reference)


def problems_of(env) -> list[str]:
    return check_env(env, seeds=(0, 1))


def test_good_env_conforms():
    assert problems_of(Good()) == []


def test_stock_text_action_space_is_reported():
    env = Good()
    env.action_space = gym.spaces.Text(100)
    assert any("rejects non-ASCII text" in p for p in problems_of(env))


def test_oracle_that_fails_is_reported():
    class BadOracle(Good):
        def oracle_action(self):
            return "nope"

    problems = problems_of(BadOracle())
    assert any("oracle episode (seed 0): earned 0, expected 1" in p for p in problems)


def test_feedbackless_wrong_answers_are_reported():
    class Silent(Good):
        def verify(self, action, task):
            ok = action.strip() == task.reference
            return Verdict(float(ok), ok, "")

    assert any("wrong answer got empty feedback" in p for p in problems_of(Silent()))


def test_env_rewarding_wrong_answers_is_reported():
    class Generous(Good):
        def verify(self, action, task):
            return Verdict(1.0, action.strip() == task.reference, "fine")

    assert any("expected 0" in p for p in problems_of(Generous()))


def test_nondeterministic_reset_is_reported():
    import itertools

    counter = itertools.count()

    class Drifting(Good):
        def __init__(self):
            TextTaskEnv.__init__(
                self,
                ProceduralSource(lambda rng, d: Task(f"Say {next(counter)}", "0")),
                max_attempts=2,
            )

    problems = check_env(Drifting(), seeds=(0,), bad_actions=False)
    assert any("same seed must give same task" in p or "non-deterministic" in p for p in problems)


def test_crash_on_empty_action_is_reported():
    class Fragile(Good):
        def respond(self, action):
            if not action:
                raise IndexError("empty")
            return super().respond(action)

    problems = problems_of(Fragile())
    assert any(p.startswith("bad action (empty text): step raised IndexError") for p in problems)


class Endless(gym.Env):
    """A plain text env that never ends and has no privileged context."""

    def __init__(self):
        self.observation_space = UnicodeText(100)
        self.action_space = UnicodeText(100)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return "go", {}

    def step(self, action):
        return "more", 0.0, False, False, {}


def test_endless_env_and_missing_privileged_are_reported():
    problems = check_env(Endless(), seeds=(0,), max_steps=20, bad_actions=False)
    assert any("info['privileged'] must be a str" in p for p in problems)
    assert any("did not end within 20 steps" in p for p in problems)


def test_plain_text_env_without_privileged_can_pass():
    class OneShot(Endless):
        def step(self, action):
            return "bye", 0.0, True, False, {}

    assert check_env(OneShot(), seeds=(0,), require_privileged=False) == []


def test_wrong_return_types_are_reported():
    class Sloppy(Endless):
        def step(self, action):
            return 3, "1", 0, False, {"verdict": "yes"}

    problems = check_env(Sloppy(), seeds=(0,), require_privileged=False, bad_actions=False)
    text = "\n".join(problems)
    assert "observation must be a str or a list" in text
    assert "reward must be a float, got str" in text
    assert "terminated must be a bool, got int" in text
    assert "info['verdict'] must be a Verdict" in text


def test_unknown_ids_raise_input_error():
    with pytest.raises(InputError, match="unknown env id 'opd/Nope-v0'.*opd envs list"):
        check_env("opd/Nope-v0")
    with pytest.raises(InputError, match="cannot import its module"):
        check_env("no_such_module_xyz:opd/Nope-v0")
