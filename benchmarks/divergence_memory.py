"""Peak memory and time of the token-level distillation loss + backward, side by side.

Contenders, on identical work (same seeded inputs, generalized JSD with β = 0.5, the mean
over all positions, then backward):

- `ours_unchunked`: `opd_selfplay.divergences.divergence` on the whole (positions × V) block;
- `ours_chunked`: `opd_selfplay.chunking.chunked_divergence`, blocks of positions;
- `trl_gkd`: TRL's `GKDTrainer.generalized_jsd_loss` (trl 1.16, `trl.experimental.gkd`), the
  peer's implementation of the same loss. TRL is a benchmark-only peer (the `bench` extra),
  imported only inside its worker.

Two settings:
- `logits`: the student's logits (with grad) and the teacher's logits are given; the step is
  the loss and its backward. Memory beyond the inputs is the loss's own, plus the logits'
  gradient (positions × V), which every contender must produce.
- `hidden`: the student gives final hidden states and its lm_head weight (hidden 256), the
  teacher its logits. The unchunked contenders project to logits first; `ours_chunked` fuses
  the projection (`LinearHead`), so no positions × V tensor exists at all.

How it measures. Each (setting, contender) runs in a fresh subprocess: imports and inputs
first; then the kernel's peak-RSS mark is reset (/proc/self/clear_refs, so that setup does
not count) and the resident set size is read as the baseline; one warm-up step and `steps`
timed steps follow; the peak is VmHWM − baseline (ru_maxrss where the mark cannot be reset;
tracemalloc would not see torch's allocations). Rounds interleave the contenders (A B C, B C A, …) so that drift on
a shared machine hits all of them alike; we report medians, min–max and ratios to
`ours_unchunked`, for wall time and for CPU time (process_time, all threads: less sensitive
to other load on a shared machine than wall time, though memory bandwidth is still shared).
A contender whose estimated peak would not fit in the available memory is
skipped with the reason. The losses of all contenders are compared (same work).

Cost: a float32 (2,048 × 151,936) block is 1.24 GB. Above its inputs (two such blocks), the
unchunked step peaks at ~8–10 GB and TRL's at ~18 GB, so at 2,048 positions TRL needs ~21 GB
available and is skipped on smaller machines (compare at `--positions 1024`, ~11 GB). A full
round takes ~6 minutes on 2 cores. `--quick` uses 256 positions and one timed step per run
(~2.5 GB peak, 2–4 minutes on a busy 2-core machine).

Usage: `python benchmarks/divergence_memory.py [--quick] [--positions N] [--json FILE]`, or
`run(quick)` from Python, which returns the records as a dict; `suite(quick)` is the same run
in the shape of `benchmarks.harness` (one row per contender, round and metric; comparisons of
ours to TRL's loss and of chunked to unchunked) for `python -m benchmarks`. Under `--tiny`
(`OPD_BENCH_TINY=1`) it runs 16 positions of the `logits` setting, one round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 151_936
HIDDEN = 256
CONTENDERS = ("ours_unchunked", "ours_chunked", "trl_gkd")
SETTINGS = ("logits", "hidden")
# Peak per position above the inputs, in float32 rows of V, as measured with --quick (worst
# setting, rounded up); used only to skip a contender that cannot fit in memory.
_ROWS_PER_POSITION = {"ours_unchunked": 9.5, "ours_chunked": 3.0, "trl_gkd": 15.5}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so that setup does not count (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(contender: str, setting: str, positions: int, steps: int, chunk: int | None) -> dict:
    """One contender in this process: returns times, peak bytes above baseline, loss."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch

    from opd_selfplay.chunking import LinearHead, chunked_divergence
    from opd_selfplay.divergences import divergence

    jsd = None
    if contender == "trl_gkd":
        from trl.experimental.gkd import GKDTrainer

        jsd = GKDTrainer.generalized_jsd_loss

    gen = torch.Generator().manual_seed(0)
    # In-place scaling: no transient copy of the inputs (it would count in the peak).
    teacher = torch.randn(positions, VOCAB, generator=gen).mul_(2.0)
    if setting == "logits":
        student = torch.randn(positions, VOCAB, generator=gen).mul_(2.0).requires_grad_(True)
        params = [student]
    else:
        hidden = torch.randn(positions, HIDDEN, generator=gen).requires_grad_(True)
        weight = torch.randn(VOCAB, HIDDEN, generator=gen).mul_(0.1).requires_grad_(True)
        params = [hidden, weight]

    def student_logits():
        return student if setting == "logits" else hidden @ weight.T

    def step():
        if contender == "ours_unchunked":
            return divergence("jsd", student_logits(), teacher, beta=0.5).sum() / positions
        if contender == "ours_chunked":
            source = student if setting == "logits" else LinearHead(hidden, weight)
            weights = torch.full((positions,), 1.0 / positions)
            return chunked_divergence(
                "jsd", source, teacher, weights=weights, chunk_size=chunk, beta=0.5
            ).loss
        return jsd(student_logits()[None], teacher[None], beta=0.5, num_items_in_batch=positions)

    import gc

    gc.collect()
    reset = _reset_peak()
    baseline = _rss_bytes()
    times: list[float] = []
    cpu_times: list[float] = []
    loss_value = 0.0
    for i in range(steps + 1):
        for p in params:
            p.grad = None
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step()
        loss.backward()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        loss_value = float(loss.detach())
        if i > 0:  # the first step is the warm-up
            times.append(elapsed)
            cpu_times.append(cpu)
    peak = (
        _peak_bytes() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) - baseline
    grad_norm = float(sum(p.grad.double().pow(2).sum() for p in params) ** 0.5)
    return {
        "times_s": times,
        "cpu_s": cpu_times,
        "peak_bytes": peak,
        "loss": loss_value,
        "grad_norm": grad_norm,
    }


def _spawn(contender: str, setting: str, positions: int, steps: int, chunk: int | None) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        contender,
        "--setting",
        setting,
        "--positions",
        str(positions),
        "--steps",
        str(steps),
    ]
    if chunk:
        cmd += ["--chunk", str(chunk)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _have_trl() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def run(
    quick: bool,
    positions: int | None = None,
    rounds: int | None = None,
    chunk: int | None = None,
    settings: tuple[str, ...] = SETTINGS,
) -> dict:
    """Run the benchmark; returns {"config": ..., "results": {setting: {contender: stats}}}.

    Args:
        quick: 256 positions, 2 rounds of 1 timed step; else 2,048 positions, 3 rounds of 2.
        positions: override the number of positions.
        rounds: override the number of interleaved rounds.
        chunk: positions per block of `ours_chunked` (default: the library's).
        settings: which of "logits" and "hidden" to run.
    """
    positions = positions or (256 if quick else 2048)
    rounds = rounds or (2 if quick else 3)
    steps = 1 if quick else 2
    contenders = [c for c in CONTENDERS if c != "trl_gkd" or _have_trl()]
    records: dict[str, dict[str, list[dict]]] = {s: {c: [] for c in contenders} for s in settings}
    skipped: dict[str, str] = {}
    row_bytes = VOCAB * 4
    for r in range(rounds):
        for setting in settings:
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for c in order:
                need = (_ROWS_PER_POSITION[c] + 2) * positions * row_bytes
                if need > 0.85 * _available_bytes():
                    skipped[c] = (
                        f"needs ~{need / 2**30:.1f} GiB, {_available_bytes() / 2**30:.1f} GiB available"
                    )
                    continue
                result = _spawn(c, setting, positions, steps, chunk)
                result["round"] = r
                records[setting][c].append(result)
    results: dict[str, dict[str, dict]] = {}
    for setting, per in records.items():
        results[setting] = {}
        for c, recs in per.items():
            good = [x for x in recs if "error" not in x]
            if not good:
                errors = [x["error"] for x in recs if "error" in x]
                results[setting][c] = {
                    "skipped": skipped.get(c) or (errors[0] if errors else "not run")
                }
                continue
            times = [t for x in good for t in x["times_s"]]
            cpus = [t for x in good for t in x["cpu_s"]]
            peaks = [x["peak_bytes"] for x in good]
            results[setting][c] = {
                "time_median_s": statistics.median(times),
                "time_min_s": min(times),
                "time_max_s": max(times),
                "cpu_median_s": statistics.median(cpus),
                "peak_median_mb": statistics.median(peaks) / 2**20,
                "peak_min_mb": min(peaks) / 2**20,
                "peak_max_mb": max(peaks) / 2**20,
                "loss": good[-1]["loss"],
                "grad_norm": good[-1]["grad_norm"],
                "runs": len(good),
            }
        losses = [v["loss"] for v in results[setting].values() if "loss" in v]
        if losses:
            # Same work: every contender's loss within float32 rounding of the others.
            spread = (max(losses) - min(losses)) / abs(max(losses))
            results[setting]["_same_work"] = {"loss_max_rel_diff": spread}
        base = results[setting].get("ours_unchunked", {})
        for stats in results[setting].values():
            if "time_median_s" in stats and "time_median_s" in base:
                stats["time_ratio"] = stats["time_median_s"] / base["time_median_s"]
                stats["cpu_ratio"] = stats["cpu_median_s"] / base["cpu_median_s"]
                stats["peak_ratio"] = stats["peak_median_mb"] / base["peak_median_mb"]
    return {
        "raw": records,
        "config": {
            "positions": positions,
            "vocab": VOCAB,
            "hidden": HIDDEN,
            "rounds": rounds,
            "steps_per_run": steps,
            "divergence": "jsd(beta=0.5)",
            "chunk": chunk,
            "threads": os.cpu_count(),
        },
        "results": results,
    }


def suite(quick: bool):  # -> benchmarks.harness.SuiteResult
    """The benchmark as a `SuiteResult`: metrics seconds, cpu_seconds, peak_mb per (setting,
    contender, round); a contender that could not run is left out with a note.

    Args:
        quick: as `run(quick)`.
    """
    from benchmarks.harness import Comparison, SuiteResult, records, tiny

    small = tiny()
    report = run(
        quick,
        positions=16 if small else None,
        rounds=1 if small else None,
        settings=("logits",) if small else SETTINGS,
    )
    cfg = report["config"]
    rows: list[dict] = []
    notes = [
        f"token-level JSD (beta 0.5) loss + backward on {cfg['positions']} positions × "
        f"V={cfg['vocab']}, {cfg['rounds']} interleaved rounds × {cfg['steps_per_run']} timed "
        "step(s), each (setting, contender, round) in a fresh process; peak_mb is VmHWM above "
        "the inputs",
    ]
    units = {"seconds": "s", "cpu_seconds": "s", "peak_mb": "MB"}
    for setting, per in report["raw"].items():
        for c, results in per.items():
            runs = [
                {
                    "contender": c,
                    "round": x["round"],
                    "metrics": {
                        "seconds": statistics.median(x["times_s"]),
                        "cpu_seconds": statistics.median(x["cpu_s"]),
                        "peak_mb": x["peak_bytes"] / 2**20,
                    },
                }
                for x in results
                if "error" not in x
            ]
            rows += records("divergence_memory", setting, runs, units)
            skipped = report["results"][setting].get(c, {}).get("skipped")
            if skipped:
                notes.append(f"{setting}/{c} skipped: {skipped}")
        same = report["results"][setting].get("_same_work")
        if same:
            notes.append(
                f"{setting}: losses agree to {same['loss_max_rel_diff']:.1e} relative (same work)"
            )
    comparisons = []
    for setting in report["raw"]:
        for metric in ("peak_mb", "seconds"):
            comparisons += [
                Comparison("divergence_memory", setting, metric, "ours_chunked", "trl_gkd"),
                Comparison("divergence_memory", setting, metric, "ours_unchunked", "trl_gkd"),
                Comparison("divergence_memory", setting, metric, "ours_chunked", "ours_unchunked"),
            ]
    return SuiteResult(rows, comparisons, notes)


def _table(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"token-level JSD loss + backward, {cfg['positions']} positions × V={cfg['vocab']}, "
        f"{cfg['rounds']} interleaved rounds × {cfg['steps_per_run']} steps",
    ]
    for setting, per in report["results"].items():
        lines += [
            "",
            f"setting: {setting}",
            "| contender | wall s median (min–max) | × unchunked | CPU s median | × unchunked "
            "| peak MB median (min–max) | × unchunked | loss |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c, s in per.items():
            if c == "_same_work":
                lines.append(
                    f"| (losses agree to {s['loss_max_rel_diff']:.1e} relative) | | | | | | | |"
                )
                continue
            if "skipped" in s:
                lines.append(f"| {c} | skipped: {s['skipped']} | | | | | | |")
                continue
            lines.append(
                f"| {c} | {s['time_median_s']:.2f} ({s['time_min_s']:.2f}–{s['time_max_s']:.2f}) "
                f"| {s.get('time_ratio', float('nan')):.2f} "
                f"| {s['cpu_median_s']:.2f} | {s.get('cpu_ratio', float('nan')):.2f} "
                f"| {s['peak_median_mb']:.0f} ({s['peak_min_mb']:.0f}–{s['peak_max_mb']:.0f}) "
                f"| {s.get('peak_ratio', float('nan')):.3f} | {s['loss']:.6f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 positions, 2 rounds of 1 step")
    parser.add_argument(
        "--positions", type=int, help="number of positions (default 2048, quick 256)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--chunk", type=int, help="positions per block for ours_chunked")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated subset of logits,hidden"
    )
    parser.add_argument("--json", type=Path, help="also write the records here")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=SETTINGS, default="logits", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(
            json.dumps(_worker(args.worker, args.setting, args.positions, args.steps, args.chunk))
        )
        return 0
    settings = tuple(x for x in args.settings.split(",") if x)
    if not set(settings) <= set(SETTINGS):
        parser.error(f"--settings: choose from {', '.join(SETTINGS)}, got {args.settings!r}")
    report = run(args.quick, args.positions, args.rounds, args.chunk, settings)
    print(_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
