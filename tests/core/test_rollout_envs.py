"""The tiny model plays every built-in env through the rollout engine (and one via the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import pytest

import opd_selfplay.envs  # noqa: F401 - registers the built-in ids
from opd_selfplay.rollout import RolloutConfig, RolloutEngine
from opd_selfplay.types import StopReason

BUILT_IN = sorted(k for k in gym.registry if k.startswith("opd/") and k != "opd/ReasoningGym-v0")


def test_every_built_in_env_is_covered():
    assert {"opd/Arithmetic-v0", "opd/Math-v0", "opd/Code-v0", "opd/ToolUse-v0"} <= set(BUILT_IN)


@pytest.mark.parametrize("env_id", BUILT_IN)
def test_tiny_model_rolls_out_on(env_id, tiny_policy):
    engine = RolloutEngine(
        tiny_policy, RolloutConfig(max_turns=2, max_new_tokens=12, max_context_tokens=2048)
    )
    trajs = engine.run(env_id, seeds=[0, 1], group_size=2)
    assert len(trajs) == 4
    for t in trajs:
        assert t.stop_reason is not StopReason.ENV_ERROR, t.error
        assert 1 <= len(t.turns) <= 2
        assert len(t.token_ids) == len(t.action_mask) and sum(t.action_mask) == t.num_action_tokens
        assert 0.0 <= t.reward <= 1.0
    assert trajs[0].messages[0] == trajs[1].messages[0]  # same seed, same task


def test_opd_rollout_cli_on_arithmetic(tmp_path, cli_env):
    out = tmp_path / "a.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "opd_selfplay",
            "rollout",
            "--env",
            "opd/Arithmetic-v0",
            "--model",
            "tiny",
            "--episodes",
            "3",
            "--max-new-tokens",
            "6",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["env_id"] == "opd/Arithmetic-v0" for r in rows)
    assert all("answer" in r["privileged"] for r in rows)
