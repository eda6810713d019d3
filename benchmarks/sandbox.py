"""Sandboxed executions per second of a trivial program: isolated (bwrap) vs unisolated.

Run: `python benchmarks/sandbox.py [--quick]`

Contenders, each running `print(1)` to completion, one after another in one thread:

- `bwrap`: `Sandbox(isolation="bwrap").run` — namespaces, read-only binds, tmpfs, limits, the
  harness, output capture and the full tree kill.
- `rlimit`: `Sandbox(isolation="rlimit").run` — the same harness and limits, no namespaces.
- `subprocess`: a bare `subprocess.run([python, "-I", "-S", "-c", ...])` with the same
  rlimits set in `preexec_fn`: the floor for any sandbox that starts a fresh interpreter.

Rounds are interleaved (each round runs every contender in turn, rotating the order) so load
from other processes on the machine hits all of them alike; the report gives medians, min–max
and the ratios. A last row measures `CodeVerifier.verify` (a function-call test, bwrap) and
`verify_batch` with one sandbox per CPU.

`suite(quick)` returns them as records for `python -m benchmarks` (no goals: the ratios are
reported); `run(quick)` returns the same figures as a dict; `main` prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from opd_selfplay.verifiers import CodeVerifier
from opd_selfplay.verifiers.isolation import python
from opd_selfplay.verifiers.sandbox import Limits, Sandbox, SandboxWarning, bwrap_status

if TYPE_CHECKING:  # pragma: no cover
    from benchmarks.harness import SuiteResult

PROGRAM = "print(1)"
LIMITS = Limits(wall_s=10.0, memory_mb=512)


def _bare_subprocess() -> Callable[[], None]:
    interpreter = python()

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (10, 11))
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    def one() -> None:
        out = subprocess.run(
            [interpreter, "-I", "-S", "-c", PROGRAM],
            capture_output=True,
            preexec_fn=limits,  # single-threaded benchmark: safe here
            env={"PATH": "/usr/bin:/bin"},
            timeout=10,
            check=False,
        )
        assert out.stdout == b"1\n", out

    return one


def _sandboxed(isolation: str) -> Callable[[], None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)
        box = Sandbox(LIMITS, isolation=isolation)

    def one() -> None:
        result = box.run(PROGRAM)
        assert result.stdout == "1\n" and result.isolation == isolation, result

    return one


def _rate(function: Callable[[], None], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        function()
    return n / (time.perf_counter() - started)


def _verifier_rates(n: int, isolation: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)
        verifier = CodeVerifier(time_limit_s=10.0, isolation=isolation)
    reference = {"entry_point": "f", "tests": [{"args": [i], "expected": 2 * i} for i in range(5)]}
    response = "```python\ndef f(x):\n    return 2 * x\n```"
    started = time.perf_counter()
    for _ in range(n):
        assert verifier.verify(response, reference).score == 1.0
    single = n / (time.perf_counter() - started)
    workers = os.cpu_count() or 1
    started = time.perf_counter()
    verdicts = verifier.verify_batch([(response, reference)] * (n * 2), processes=workers)
    batch = n * 2 / (time.perf_counter() - started)
    assert all(v.score == 1.0 for v in verdicts)
    return {"verify_per_s": single, "batch_per_s": batch, "batch_workers": workers}


def run(quick: bool = False) -> dict:
    """Interleaved rounds of every contender; returns the raw rates and their summary.

    Args:
        quick: fewer, shorter rounds (well under a minute).

    Returns:
        {"rates": {name: [executions/s per round]}, "median": {...}, "ratio": {...},
        "verifier": {...}, "isolation_available": bool, "reason": str}
    """
    rounds, n = (3, 15) if quick else (7, 40)
    works, reason = bwrap_status()
    contenders: dict[str, Callable[[], None]] = {}
    if works:
        contenders["bwrap"] = _sandboxed("bwrap")
    contenders["rlimit"] = _sandboxed("rlimit")
    contenders["subprocess"] = _bare_subprocess()
    for function in contenders.values():  # warm-up: caches, the probe, page cache
        function()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            rates[name].append(_rate(contenders[name], n))
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = {}
    if works:
        ratio["bwrap / rlimit"] = median["bwrap"] / median["rlimit"]
        ratio["bwrap / subprocess"] = median["bwrap"] / median["subprocess"]
    ratio["rlimit / subprocess"] = median["rlimit"] / median["subprocess"]
    verifier = _verifier_rates(n, "bwrap" if works else "rlimit")
    return {
        "program": PROGRAM,
        "rounds": rounds,
        "executions_per_round": n,
        "rates": rates,
        "median": median,
        "ratio": ratio,
        "verifier": verifier,
        "isolation_available": works,
        "reason": reason,
        "cpus": os.cpu_count(),
    }


def suite(quick: bool) -> SuiteResult:
    """The suite for `python -m benchmarks`: the same contenders as `run`, as records.

    Case `print(1)`: `bwrap` (when it works here), `rlimit` and `subprocess`, each round
    `n` executions one after another (metric `executions_per_s`). Case `CodeVerifier`:
    `verify` one at a time and `verify_batch` over one worker per CPU.

    Args:
        quick: 3 rounds of 15 executions (full: 7 of 40).
    Returns:
        Records, comparisons (no goals: reported ratios) and notes.
    """
    from benchmarks.harness import Comparison, SuiteResult, interleave, records, tiny

    small = tiny()
    rounds, n = (1, 2) if small else ((3, 15) if quick else (7, 40))
    works, reason = bwrap_status()
    programs: dict[str, Callable[[], None]] = {}
    if works:
        programs["bwrap"] = _sandboxed("bwrap")
    programs["rlimit"] = _sandboxed("rlimit")
    programs["subprocess"] = _bare_subprocess()
    contenders = {
        name: (lambda f=f: {"executions_per_s": _rate(f, n)}) for name, f in programs.items()
    }
    runs = interleave(contenders, rounds=rounds, warmup=0 if small else 1)
    units = {"executions_per_s": "executions/s", "verifications_per_s": "verifications/s"}
    rows = records("sandbox", "print(1)", runs, units)
    case = "print(1)"
    comparisons = [
        Comparison(
            "sandbox", case, "executions_per_s", "rlimit", "subprocess", lower_is_better=False
        )
    ]
    if works:
        comparisons += [
            Comparison(
                "sandbox", case, "executions_per_s", "bwrap", "subprocess", lower_is_better=False
            ),
            Comparison(
                "sandbox", case, "executions_per_s", "bwrap", "rlimit", lower_is_better=False
            ),
        ]
    notes = [
        f"`{PROGRAM}` to completion, {rounds} interleaved rounds × {n} executions one after "
        f"another; {os.cpu_count()} CPUs, shared machine: figures are indicative",
        "subprocess: bare `subprocess.run([python, '-I', '-S', '-c', ...])` with the same "
        "rlimits (the floor for any sandbox that starts a fresh interpreter)",
    ]
    if not works:
        notes.append(f"bwrap skipped: {reason}")
    v = _verifier_rates(n, "bwrap" if works else "rlimit")
    rows += records(
        "sandbox",
        "CodeVerifier",
        [
            {
                "contender": "verify",
                "round": 0,
                "metrics": {"verifications_per_s": v["verify_per_s"]},
            },
            {
                "contender": f"verify_batch_{v['batch_workers']}",
                "round": 0,
                "metrics": {"verifications_per_s": v["batch_per_s"]},
            },
        ],
        units,
    )
    notes.append(
        f"CodeVerifier: a 5-test function-call check ({'bwrap' if works else 'rlimit'}), "
        f"{n} verifications one at a time and {2 * n} with verify_batch over "
        f"{v['batch_workers']} workers, one round each"
    )
    return SuiteResult(rows, comparisons, notes)


def report(record: dict) -> str:
    """A markdown table of `run`'s record."""
    lines = [
        f"Trivial program `{record['program']}`, {record['rounds']} interleaved rounds × "
        f"{record['executions_per_round']} executions, {record['cpus']} CPUs.",
        "",
        "| contender | executions/s (median) | min–max |",
        "| --- | --- | --- |",
    ]
    for name, values in record["rates"].items():
        lines.append(
            f"| {name} | {record['median'][name]:.1f} | {min(values):.1f}–{max(values):.1f} |"
        )
    lines += ["", "| ratio of medians | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.2f} |" for name, value in record["ratio"].items()]
    v = record["verifier"]
    lines += [
        "",
        f"CodeVerifier (5 function-call tests): {v['verify_per_s']:.1f} verifications/s one at a "
        f"time, {v['batch_per_s']:.1f}/s with verify_batch over {v['batch_workers']} workers.",
    ]
    if not record["isolation_available"]:
        lines.append(f"bwrap unavailable here: {record['reason']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    print(report(run(args.quick)))


if __name__ == "__main__":
    main()
