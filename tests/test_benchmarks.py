"""The benchmark entry points run on a trivially small setting and write well-formed output.

No benchmark is a test: nothing here asserts a time or a ratio. What is checked: the harness
interleaves and pairs rounds as documented, `python -m benchmarks --tiny` writes a report and
JSONL records with the contract keys, a suite that cannot run is reported as skipped with its
reason, and the GPU script's code paths run on the CPU (`gpu.py --dry-run`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of the checkout, not installed

from benchmarks.__main__ import _child  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    Comparison,
    SuiteResult,
    interleave,
    ratios,
    records,
    verdict,
)

KEYS = {"suite", "case", "contender", "metric", "value", "unit", "round"}


def test_interleave_rotates_order_and_pairs_rounds() -> None:
    calls: list[str] = []

    def contender(name: str, value: float):
        def run() -> dict[str, float]:
            calls.append(name)
            return {"seconds": value}

        return run

    runs = interleave(
        {"a": contender("a", 1.0), "b": contender("b", 2.0), "c": contender("c", 4.0)},
        rounds=3,
        warmup=1,
    )
    assert calls[:3] == ["a", "b", "c"]  # warm-up, untimed
    assert [r["contender"] for r in runs] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    rows = records("s", "x", runs, {"seconds": "s"})
    assert all(set(row) == KEYS for row in rows)
    assert {row["unit"] for row in rows} == {"s"}
    c = Comparison("s", "x", "seconds", "a", "b", goal=0.6)
    assert ratios(rows, c) == [0.5, 0.5, 0.5]
    assert verdict(0.5, c) == "met"
    assert verdict(2.5, Comparison("s", "x", "tps", "a", "b", 3.0, lower_is_better=False)) == (
        "missed"
    )
    # A result survives the child -> parent JSON hop unchanged.
    result = SuiteResult(rows, [c], ["note"])
    assert SuiteResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_missing_suite_is_reported_as_skipped(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert _child("no_such_suite", quick=True, out=out) == 0
    assert json.loads(out.read_text()) == {"skipped": "benchmarks/no_such_suite.py is not present"}


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def test_entry_point_and_gpu_dry_run_write_reports(tmp_path: Path) -> None:
    bench_out, gpu_out = tmp_path / "bench", tmp_path / "gpu"
    # The two runs are independent: run them side by side to halve the wait.
    bench = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--suites", "opd_step", "--tiny", "--out", str(bench_out)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    gpu = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(gpu_out)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    bench_log, _ = bench.communicate(timeout=240)
    gpu_log, _ = gpu.communicate(timeout=240)
    assert bench.returncode == 0, bench_log[-2000:]
    assert gpu.returncode == 0, gpu_log[-2000:]

    lines = [json.loads(x) for x in (bench_out / "records.jsonl").read_text().splitlines()]
    header, suite_row, rows = lines[0], lines[1], lines[2:]
    assert header["kind"] == "header"
    for key in ("torch", "threads", "cpu_count", "load_average_at_start", "git_commit", "date"):
        assert key in header
    assert suite_row == {**suite_row, "kind": "suite", "suite": "opd_step", "status": "ok"}
    assert rows and all(r["kind"] == "record" and set(r) >= KEYS for r in rows)
    contenders = {r["contender"] for r in rows}
    expected = {"ours", "floor"}
    if importlib.util.find_spec("trl") is not None:
        expected |= {"trl_fast", "trl_default", "trl_gkd"}
    assert contenders == expected
    assert all(r["value"] > 0 for r in rows if r["metric"] == "seconds")
    report = (bench_out / "report.md").read_text()
    assert "## opd_step" in report and "| ours / floor |" in report
    assert "ratio median" in report

    gpu_report = (gpu_out / "report.md").read_text()
    assert "## gpu_opd_step" in gpu_report and "## gpu_rollout" in gpu_report
    opd_section = gpu_report.split("## gpu_opd_step")[1].split("\n## ")[0]
    if importlib.util.find_spec("trl") is not None:
        assert "skipped:" not in opd_section
    else:  # CI installs no peers: TRL's contender is skipped with the reason, ours still runs
        assert "trl_fast skipped: No module named 'trl'" in opd_section
        assert "| ours |" in opd_section
    gpu_rows = [json.loads(x) for x in (gpu_out / "records.jsonl").read_text().splitlines()]
    tokens = [r for r in gpu_rows if r.get("metric") == "tokens_per_s"]
    assert {r["contender"] for r in tokens} == {"ours_hf", "hf_generate"}
    assert all(r["value"] > 0 for r in tokens)
    assert "ours_vllm skipped: dry run (no GPU)" in gpu_report
