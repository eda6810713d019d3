"""`opd envs list` and `opd envs check`: output lines and exit codes, through a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import opd_selfplay.envs


def opd(*args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [sys.executable, "-m", "opd_selfplay", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_list_prints_every_id_with_a_description():
    proc = opd("envs", "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ids = [line.split()[0] for line in lines]
    assert ids == sorted(ids)
    assert set(ids) == {e.id for e in opd_selfplay.envs.list_envs()}
    by_id = dict(line.split(None, 1) for line in lines)
    assert by_id["opd/Arithmetic-v0"].startswith("procedural integer arithmetic")
    assert by_id["opd/Math-v0"].startswith("free-text math problems")
    with_source = opd("envs", "list", "--source").stdout
    assert "[builtin]" in with_source
    assert "CartPole-v1" in opd("envs", "list", "--all").stdout


def test_check_a_conforming_env_exits_0():
    proc = opd("envs", "check", "opd/Arithmetic-v0", "--seeds", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "opd/Arithmetic-v0: ok"


def test_check_an_unknown_id_exits_2_with_one_line():
    proc = opd("envs", "check", "opd/NoSuchEnv-v0")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("opd envs: error: unknown env id 'opd/NoSuchEnv-v0'")
    assert "Traceback" not in proc.stderr


def test_check_bad_flags_exit_2():
    proc = opd("envs", "check", "opd/Arithmetic-v0", "--seeds", "0")
    assert proc.returncode == 2 and "--seeds must be >= 1" in proc.stderr
    proc = opd("envs", "frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_check_a_broken_env_exits_1_with_reasons(tmp_path):
    (tmp_path / "broken_envs_mod.py").write_text(
        textwrap.dedent(
            """
            import gymnasium as gym
            from opd_selfplay.envs.base import TextTaskEnv
            from opd_selfplay.envs.tasks import ProceduralSource, Task
            from opd_selfplay.verifiers import Verdict

            class AlwaysRight(TextTaskEnv):
                def __init__(self):
                    super().__init__(ProceduralSource(lambda rng, d: Task("say hi", "hi")))

                def verify(self, action, task):
                    return Verdict(1.0, True, "")

                def wrong_action(self):
                    return "bye"

            gym.register("broken/AlwaysRight-v0", entry_point=AlwaysRight)
            """
        )
    )
    proc = opd(
        "envs",
        "check",
        "broken_envs_mod:broken/AlwaysRight-v0",
        "--seeds",
        "1",
        "--no-bad-actions",
        pythonpath=str(tmp_path),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "broken_envs_mod:broken/AlwaysRight-v0: 1 problem(s)"
    assert lines[1] == "  - wrong-answer episode (seed 0): earned 1, expected 0"
