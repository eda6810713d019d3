"""Subprocess smoke tests of `opd train`, `opd eval` and `opd demo` with tiny settings,
checking the files and values they write."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY = [
    "tasks_per_step=4",
    "group_size=2",
    "eval.episodes=4",
    "rollout.max_new_tokens=4",
    'env_kwargs={"difficulty": 1}',
    "threads=1",
]


def opd(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opd_selfplay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_train_writes_a_run_folder_and_eval_reads_its_model(tmp_path, cli_env):
    run = tmp_path / "run"
    done = opd(
        "train",
        *TINY,
        "steps=3",
        "warmstart.steps=2",
        "warmstart.batch=8",
        "eval.every=2",
        "--out",
        str(run),
        env=cli_env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["steps"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 3 and config["teacher"]["kind"] == "privileged_self"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in records]
    assert phases.count("warmstart") == 2 and phases.count("train") == 3
    assert [r["step"] for r in records if r["phase"] == "eval"] == [0, 2, 3]
    train = [r for r in records if r["phase"] == "train"]
    assert all(r["kl"] >= 0 and r["loss"] >= 0 and 0 <= r["reward"] <= 1 for r in train)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and 0 <= summary["before"] <= 1 and 0 <= summary["after"] <= 1
    assert summary["teacher"] == "privileged snapshot"
    assert (run / "plots.png").stat().st_size > 1000
    assert (run / "checkpoints" / "latest").read_text() == "step_000003.pt"
    assert list((run / "samples").glob("step_*.txt"))
    assert (run / "model" / "config.json").is_file()

    ev = opd(
        "eval",
        "--env",
        "opd/Arithmetic-v0",
        "--model",
        str(run / "model"),
        "--episodes",
        "6",
        "--pass-k",
        "2",
        "--out",
        str(tmp_path / "e.jsonl"),
        env=cli_env,
    )
    assert ev.returncode == 0, ev.stderr[-2000:]
    metrics = json.loads(ev.stdout)
    assert (
        metrics["episodes"] == 12 and 0 <= metrics["pass@2"] <= 1 and 0 <= metrics["success"] <= 1
    )
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["teacher.kind=oracle"], "config field teacher.kind='oracle' is not one of"),
        (["steps"], "expected KEY=VALUE"),
        (["--resume", "/no/such/run"], "no config.json there"),
        (["env=nope/Missing-v0"], "unknown env 'nope/Missing-v0'"),
    ],
)
def test_train_bad_input_exits_2_naming_the_field(tmp_path, cli_env, args, message):
    done = opd("train", *args, "--out", str(tmp_path / "r"), env=cli_env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_help_config_lists_fields(cli_env):
    done = opd("train", "--help-config", env=cli_env)
    assert done.returncode == 0
    assert "teacher.kind" in done.stdout and "objective.divergence" in done.stdout


@pytest.mark.slow
def test_demo_smoke_writes_summary_and_plot(tmp_path, cli_env):
    out = tmp_path / "demo"
    done = opd("demo", "--out", str(out), "--minutes", "0.05", "--steps", "2", env=cli_env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"before", "after", "steps", "wall_seconds", "train_seconds"}
    assert summary["before_metrics"]["episodes"] >= 200
    assert 0 <= summary["before"] <= 1 and 0 <= summary["after"] <= 1
    assert (out / "plots.png").is_file()
    assert "before" in done.stdout and "after" in done.stdout
    again = opd("demo", "--out", str(out), env=cli_env)
    assert again.returncode == 2 and "not empty" in again.stderr
