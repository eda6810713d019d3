"""Subprocess smoke test of `opd grid --quick` at tiny sizes, checking the files and the values
it writes (table, CSV, plot, run folders, the on-/off-policy pair), and its bad-input errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

RUN_CELLS = [
    "wb-token-fkl", "wb-token-fkl-offpolicy", "wb-token-rkl", "wb-seq-rkl", "wb-hybrid",
    "gb-token-top20", "tf-privileged-self", "tf-snapshot", "tf-ema", "outcome-grpo",
    "bb-seqkd", "tf-verified-self", "sp-spin",
]  # fmt: skip
UNSUPPORTED = {"bb-judge": "cannot grade", "self-play-games": "both sides learning"}


def opd(*args: str, env: dict[str, str], timeout: int = 280) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opd_selfplay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def md_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown table, as cells."""
    lines = [x for x in text.splitlines() if x.startswith("| ")]
    return [[c.strip() for c in x.strip().strip("|").split(" | ")] for x in lines[1:]]


@pytest.mark.slow
def test_grid_quick_writes_table_csv_plot_and_one_run_per_cell(tmp_path, cli_env):
    out = tmp_path / "grid"
    done = opd(
        "grid", "--quick", "--steps", "2", "--episodes", "8", "--warm-steps", "2",
        "--episodes-per-step", "8", "--threads", "1", "--out", str(out), env=cli_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    names = [r["cell"] for r in rows]
    assert names == ["student-start", "teacher", *RUN_CELLS, *UNSUPPORTED]
    md = md_rows((out / "results.md").read_text(encoding="utf-8"))
    assert [r[0] for r in md] == names  # the same rows, in the same order
    assert all(name in done.stdout for name in names)  # the table is printed too

    by = {r["cell"]: r for r in rows}
    start = float(by["student-start"]["before"])
    for name in RUN_CELLS:
        r = by[name]
        assert r["status"] == "ok", r
        before, after, kl = float(r["before"]), float(r["after"]), float(r["kl_to_teacher"])
        assert 0 <= before <= 1 and 0 <= after <= 1 and int(r["steps"]) == 2
        assert math.isfinite(kl) and kl >= -1e-6
        # Every cell starts from the same saved student and is evaluated on the same held-out
        # tasks (greedy), so every "before" equals the reference row's.
        assert before == start
        md_row = md[names.index(name)]
        assert md_row[7] == f"{before:.3f} → {after:.3f}"
    for name, reason in UNSUPPORTED.items():
        r = by[name]
        assert r["status"].startswith("not ") and reason in r["status"]
        assert r["before"] == r["after"] == "" and r["kl_to_teacher"] == ""
        assert md[names.index(name)][7] == "—"
    assert float(by["teacher"]["kl_to_teacher"]) == 0.0

    # One run folder per cell, with the trainer's records.
    for name in RUN_CELLS:
        run = out / "cells" / name
        summary = json.loads((run / "summary.json").read_text())
        assert summary["steps"] == 2 and summary["before"] == float(by[name]["before"])
        train = [
            json.loads(x)
            for x in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["phase"] == "train"
        ]
        assert len(train) == 2 and all(0 <= t["reward"] <= 1 for t in train)
        assert (run / "model" / "config.json").is_file()

    config = {n: json.loads((out / "cells" / n / "config.json").read_text()) for n in RUN_CELLS}
    teacher_dir = str(out / "models" / "teacher")
    student_dir = str(out / "models" / "student")
    assert all(c["model"] == student_dir and c["warmstart"]["steps"] == 0 for c in config.values())
    # On- vs off-policy: the same teacher and loss at equal compute; only the sampler differs.
    on, off = config["wb-token-fkl"], config["wb-token-fkl-offpolicy"]
    assert on["rollout"]["sample_from"] == "student" and off["rollout"]["sample_from"] == "teacher"
    for key in ("steps", "tasks_per_step", "group_size", "objective", "teacher", "optim"):
        assert on[key] == off[key], key
    assert on["teacher"]["model"] == teacher_dir and on["teacher"]["kind"] == "white_box"
    assert config["gb-token-top20"]["teacher"]["model"].startswith("http://127.0.0.1:")
    # Equal episodes per step everywhere: 8 tasks × 1, or 2 tasks × 4 with an outcome term.
    for name, c in config.items():
        assert c["tasks_per_step"] * c["group_size"] == 8, name
    assert config["outcome-grpo"]["group_size"] == 4 and config["wb-hybrid"]["group_size"] == 4
    assert config["outcome-grpo"]["teacher"]["kind"] == "none"

    teacher_cfg = json.loads((out / "models" / "teacher" / "config.json").read_text())
    student_cfg = json.loads((out / "models" / "student" / "config.json").read_text())
    assert teacher_cfg["hidden_size"] == 192 and student_cfg["hidden_size"] == 128
    grid = json.loads((out / "grid.json").read_text())
    assert grid["settings"]["steps"] == 2 and len(grid["rows"]) == len(names)
    assert (out / "plots.png").stat().st_size > 5000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--episodes-per-step", "6"], "episodes_per_step must be a multiple of 4"),
        (["--warm-steps", "-1"], "--warm-steps must be >= 0"),
        (["--cells", "wb-token-fkl,nope"], "--cells: unknown cell 'nope'; cells: wb-token-fkl,"),
    ],
)
def test_grid_bad_input_exits_2_with_one_line(tmp_path, cli_env, args, message):
    done = opd("grid", "--quick", *args, "--out", str(tmp_path / "g"), env=cli_env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()  # nothing was started


def test_grid_refuses_a_non_empty_out_folder(tmp_path, cli_env):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "keep.txt").write_text("mine")
    done = opd("grid", "--quick", "--out", str(tmp_path / "g"), env=cli_env)
    assert done.returncode == 2 and "not an empty folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / "g" / "keep.txt").read_text() == "mine"
