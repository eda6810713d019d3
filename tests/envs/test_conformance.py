"""The conformance check over every registered id (built-in and whatever else is registered).

Each id gets `check_env` (Gymnasium's checker, seeding, return types, episodes that end,
oracle reward 1 and wrong answers 0 with feedback where the env has an oracle, bad actions)
and a determinism test: two fresh envs, the same seeds and the same actions, give the same
observations, rewards and flags.
"""

from __future__ import annotations

import gymnasium as gym
import pytest

from opd_selfplay.envs import list_envs
from opd_selfplay.envs.check import GENERIC_WRONG_ACTION, check_env, make_env
from opd_selfplay.errors import InputError

ENV_IDS = [e.id for e in list_envs()]


def make_or_skip(env_id: str) -> gym.Env:
    """Make the env; skip when it needs an optional package that is not installed (the env
    says so with an `InputError` or `ImportError` naming the package)."""
    try:
        return make_env(env_id)
    except (InputError, ImportError) as exc:
        pytest.skip(f"{env_id} cannot be made here: {exc}")


def test_the_core_envs_are_registered():
    assert {"opd/Arithmetic-v0", "opd/Math-v0"} <= set(ENV_IDS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_conforms(env_id):
    make_or_skip(env_id).close()
    assert check_env(env_id, seeds=(0, 1)) == []


def _transcript(env: gym.Env, seed: int, steps: int = 4) -> list:
    obs, info = env.reset(seed=seed)
    out = [obs, info.get("privileged")]
    u = env.unwrapped
    for _ in range(steps):
        wrong = u.wrong_action() if callable(getattr(u, "wrong_action", None)) else None
        obs, reward, terminated, truncated, info = env.step(wrong or GENERIC_WRONG_ACTION)
        out += [obs, reward, terminated, truncated, info.get("privileged")]
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_env_is_deterministic_under_a_seed(env_id):
    a, b = make_or_skip(env_id), make_or_skip(env_id)
    for seed in (0, 1, 2, 3):
        ta, tb = _transcript(a, seed), _transcript(b, seed)
        assert ta == tb, f"{env_id}: seed {seed} gave different episodes"
    assert _transcript(a, 2) == _transcript(b, 2)  # and again after other episodes
