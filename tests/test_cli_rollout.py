"""`opd rollout` and the `opd` dispatcher as subprocesses: files written, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def opd(*args: str, env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opd_selfplay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_rollout_writes_one_trajectory_per_line(cli_env, tmp_path, tiny_path):
    out = tmp_path / "rollouts.jsonl"
    done = opd(
        "rollout",
        "--env",
        "toyenvs_registered:toy/Countdown-v0",
        "--model",
        "tiny",
        "--episodes",
        "4",
        "--group-size",
        "2",
        "--max-turns",
        "3",
        "--max-new-tokens",
        "6",
        "--env-arg",
        "turns=2",
        "--out",
        str(out),
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 4 trajectories" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4
    assert [r["group"] for r in rows] == [0, 0, 1, 1]
    for r in rows:
        assert len(r["token_ids"]) == len(r["action_mask"])
        assert sum(r["action_mask"]) == sum(len(t["action_ids"]) for t in r["turns"])
        assert len(r["turns"]) == 2 and r["stop_reason"] == "completed"


def test_rollout_from_a_model_folder(cli_env, tmp_path, tiny_path):
    out = tmp_path / "r.jsonl"
    done = opd(
        "rollout",
        "--env",
        "toyenvs_registered:toy/Countdown-v0",
        "--model",
        str(tiny_path),
        "--episodes",
        "1",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        "--out",
        str(out),
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--env", "nope/Missing-v0", "--model", "tiny", "--episodes", "1"],
            "unknown env 'nope/Missing-v0'",
        ),
        (
            [
                "--env",
                "toyenvs_registered:toy/Countdown-v0",
                "--model",
                "/no/such/folder",
                "--episodes",
                "1",
            ],
            "--model /no/such/folder: no such folder",
        ),
        (
            ["--env", "toyenvs_registered:toy/Countdown-v0", "--model", "tiny", "--episodes", "0"],
            "--episodes must be >= 1",
        ),
        (
            [
                "--env",
                "toyenvs_registered:toy/Countdown-v0",
                "--model",
                "tiny",
                "--episodes",
                "3",
                "--group-size",
                "2",
            ],
            "not a multiple of --group-size",
        ),
        (
            ["--env", "toyenvs_registered:toy/Countdown-v0", "--model", "tiny", "--episodes", "x"],
            "invalid int value: 'x'",
        ),
        (
            [
                "--env",
                "toyenvs_registered:toy/Countdown-v0",
                "--model",
                "tiny",
                "--episodes",
                "1",
                "--env-arg",
                "oops",
            ],
            "expected KEY=VALUE",
        ),
        (["--model", "tiny", "--episodes", "1"], "required: --env"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli_env, tmp_path, args, message):
    done = opd("rollout", *args, "--out", str(tmp_path / "x.jsonl"), env=cli_env)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_folder_without_config_and_missing_out_dir(cli_env, tmp_path):
    (tmp_path / "empty").mkdir()
    done = opd(
        "rollout",
        "--env",
        "toyenvs_registered:toy/Countdown-v0",
        "--model",
        str(tmp_path / "empty"),
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "o.jsonl"),
        env=cli_env,
    )
    assert done.returncode == 2 and "has no config.json" in done.stderr
    done = opd(
        "rollout",
        "--env",
        "toyenvs_registered:toy/Countdown-v0",
        "--model",
        "tiny",
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "nodir" / "o.jsonl"),
        env=cli_env,
    )
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_help_lists_commands(cli_env):
    done = opd("--help", env=cli_env)
    assert done.returncode == 0
    for cmd in ("rollout", "serve", "verify"):
        assert cmd in done.stdout
