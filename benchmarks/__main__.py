"""`python -m benchmarks`: run the suites side by side with their peers and write the report.

Usage (from the repository root):

    python -m benchmarks [--quick] [--suites a,b] [--out DIR] [--processes N] [--tiny]

Each suite runs in a fresh subprocess (`python -m benchmarks --child NAME`), so one suite's
memory, threads and imports do not affect the next; `--processes N` runs each suite N times,
each in its own process, and pools the rounds (medians drift between processes on a shared
machine; rows then carry `process` and ratios are paired within a process). The child writes
its `SuiteResult` as JSON; a suite that raises (TRL missing, not enough memory, a module not
written yet) or dies is reported as skipped with a one-line reason, and the others go on.

`--tiny` sets `OPD_BENCH_TINY=1` in the children: every suite shrinks to a trivially small
setting (seconds), which the test suite uses to check that this entry point works; its
figures mean nothing. Writes `DIR/report.md`, `DIR/records.jsonl` and `DIR/logs/<suite>.log`
(each child's output).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SUITES = [
    "opd_step",
    "large_vocab",
    "rollout",
    "teacher_free",
    "verify_math",
    "sandbox",
    "divergence_memory",
]
ROOT = Path(__file__).resolve().parent.parent


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _child(name: str, quick: bool, out: Path) -> int:
    """Run one suite in this process and write its result (or the skip reason) to `out`."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"benchmarks.{name}":
            reason = f"benchmarks/{name}.py is not present"
        else:
            reason = f"import failed: {_one_line(str(exc))}"
        out.write_text(json.dumps({"skipped": reason}))
        return 0
    except Exception as exc:
        reason = f"import failed: {_one_line(f'{type(exc).__name__}: {exc}')}"
        out.write_text(json.dumps({"skipped": reason}))
        return 0
    suite = getattr(module, "suite", None)
    if suite is None:
        out.write_text(
            json.dumps({"skipped": f"benchmarks/{name}.py has no suite(quick) function yet"})
        )
        return 0
    try:
        result = suite(quick)
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        out.write_text(json.dumps({"skipped": _one_line(f"{type(exc).__name__}: {exc}")}))
        return 0
    data = result.to_json()
    try:
        import torch

        data["threads"] = torch.get_num_threads()
    except ImportError:
        pass
    out.write_text(json.dumps(data))
    return 0


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_header(argv: list[str], tiny: bool) -> dict[str, object]:
    """Facts about this run: versions, threads, CPUs, load, commit, date, command."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "command": "python -m benchmarks " + " ".join(argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": (commit + (" (uncommitted changes)" if dirty else "")) or "unknown",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "trl": _version("trl"),
        "math_verify": _version("math-verify"),
        "threads": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}; suites call "
        "torch.set_num_threads(1)",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "platform": platform.platform(),
        "tiny": tiny,
    }


def _run_suite(
    name: str, quick: bool, tiny: bool, process: int, out: Path, timeout: float
) -> dict | str:
    """One suite in a fresh process; returns its JSON result or the reason it was skipped."""
    result_file = out / "logs" / f"{name}.{process}.json"
    log_file = out / "logs" / f"{name}.log"
    result_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    if tiny:
        env["OPD_BENCH_TINY"] = "1"
    else:
        env.pop("OPD_BENCH_TINY", None)
    cmd = [sys.executable, "-m", "benchmarks", "--child", name, "--result", str(result_file)]
    if quick:
        cmd.append("--quick")
    with open(log_file, "a") as log:
        log.write(f"\n=== {name} process {process}: {' '.join(cmd)}\n")
        log.flush()
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout:.0f} s (see logs/{name}.log)"
    if result_file.exists():
        data = json.loads(result_file.read_text())
        return data.get("skipped", data)
    tail = [line for line in log_file.read_text().splitlines() if line.strip()][-1:]
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    hint = " (killed: out of memory?)" if done.returncode == -9 else ""
    return f"process died ({how}){hint}: {_one_line(tail[0]) if tail else 'no output'}"


def _pool(name: str, results: list[dict]):  # -> SuiteResult
    """Merge the results of one suite run in several processes (rows tagged with `process`)."""
    from benchmarks.harness import SuiteResult

    first = SuiteResult.from_json(results[0])
    rows: list[dict] = []
    notes: list[str] = []
    for p, data in enumerate(results):
        for row in data["records"]:
            rows.append({**row, "process": p} if len(results) > 1 else row)
        notes += [n for n in data.get("notes", []) if n not in notes]
    if len(results) > 1:
        notes.append(f"pooled over {len(results)} processes (ratios paired within a process)")
    return SuiteResult(rows, first.comparisons, notes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="each suite in about 1-2 minutes")
    parser.add_argument(
        "--suites", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument(
        "--processes", type=int, default=1, help="run each suite in N processes and pool rounds"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="trivially small setting (tests only; figures mean nothing)",
    )
    parser.add_argument(
        "--suite-timeout", type=float, help="seconds per suite process (default 900, quick 600)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        return _child(args.child, args.quick, args.result)
    names = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        parser.error(
            f"--suites: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(SUITES)}"
        )
    if args.processes < 1:
        parser.error(f"--processes must be >= 1, got {args.processes}")
    timeout = args.suite_timeout or (600.0 if args.quick else 900.0)
    out: Path = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for name in names:
        (out / "logs" / f"{name}.log").unlink(missing_ok=True)
    header = machine_header(argv, args.tiny)
    results: dict[str, object] = {}
    extra: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    for name in names:
        t0 = time.monotonic()
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        runs = [
            _run_suite(name, args.quick, args.tiny, p, out, timeout) for p in range(args.processes)
        ]
        good = [r for r in runs if isinstance(r, dict)]
        if good:
            results[name] = _pool(name, good)
            failed = [r for r in runs if isinstance(r, str)]
            if failed:
                results[name].notes.append(f"{len(failed)} process(es) failed: {failed[0]}")
        else:
            results[name] = runs[0]
        took = time.monotonic() - t0
        extra[name] = {"wall_seconds": round(took, 1), "processes": args.processes}
        status = "skipped: " + runs[0] if not good else "done"
        print(f"[bench] {name} {status} ({took:.0f} s)", file=sys.stderr, flush=True)
    header["total_seconds"] = round(time.monotonic() - started, 1)
    header["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    from benchmarks.report import write

    report, rec = write(out, header, results, extra)  # type: ignore[arg-type]
    print(f"[bench] wrote {report} and {rec}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
