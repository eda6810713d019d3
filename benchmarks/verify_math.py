"""Math answer verification, side by side: `MathVerifier` against Math-Verify.

    python benchmarks/verify_math.py [--quick]

On Math-Verify's own regression cases (`../shared/data/math_verify_cases.jsonl`, 254 labelled
pairs) this measures, in one run:

- accuracy (agreement with the labels) of both, honouring each case's `precision`, `strict`
  and `allow_set_relation_comp` settings, and of Math-Verify with its defaults too;
- verifications per second of both, one call at a time, passes over all cases interleaved
  (Math-Verify, then ours, repeated), reported as medians and as a ratio. Each pass starts
  with cold caches on both sides (our reference and sympy caches, Math-Verify's
  `lru_cache`s), after one untimed warm-up pass each, so neither side measures import time
  or replays a previous pass. Math-Verify runs in this process (its `signal.alarm` timeouts
  need the main thread); ours runs its sympy work in one limits worker, so a single CPU is
  busy at any time on both sides;
- how `verify_batch` scales with its process pool (1 and 2 processes).

`suite(quick)` returns them as records for `python -m benchmarks` (no goal: the ratio is
reported); `run(quick)` returns the same figures as a dict and the script prints them as a
markdown table. Math-Verify is the `bench` extra (`pip install -e .[bench]`), never a
dependency of the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from benchmarks.harness import SuiteResult

CASES = Path(__file__).resolve().parents[2] / "shared/data/math_verify_cases.jsonl"


def load_cases(path: Path = CASES) -> list[dict]:
    """The labelled cases: `gold`, `pred`, `expected` and optional settings."""
    if not path.exists():
        raise SystemExit(
            f"cases not found at {path}; the shared data folder sits next to "
            "the repository checkout"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _settings(case: dict) -> tuple[int, bool, bool]:
    return (
        case.get("precision", 6),
        case.get("strict", True),
        case.get("allow_set_relation_comp", False),
    )


def _math_verify_runner(cases: list[dict], honour_settings: bool) -> Callable[[], list[bool]]:
    import math_verify.parser as mv_parser
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    caches = [
        getattr(mv_parser, name)
        for name in ("parse_latex_cached", "parse_expr_cached", "extract_latex")
    ]

    def run_all() -> list[bool]:
        for cached in caches:
            cached.cache_clear()
        out = []
        for case in cases:
            kwargs = {}
            if honour_settings:
                precision, strict, set_rel = _settings(case)
                kwargs = {
                    "float_rounding": precision,
                    "strict": strict,
                    "allow_set_relation_comp": set_rel,
                }
            out.append(bool(verify(parse(case["gold"]), parse(case["pred"]), **kwargs)))
        return out

    return run_all


def _ours_runner(cases: list[dict], honour_settings: bool) -> Callable[[], list[bool]]:
    from opd_selfplay.verifiers import MathVerifier
    from opd_selfplay.verifiers import math as math_module

    verifiers = {
        key: MathVerifier(precision=key[0], strict=key[1], allow_set_relation_comp=key[2])
        for key in {_settings(c) for c in cases}
    }
    default = MathVerifier()

    def run_all() -> list[bool]:
        math_module.clear_caches()
        return [
            (verifiers[_settings(c)] if honour_settings else default)
            .verify(c["pred"], c["gold"])
            .correct
            for c in cases
        ]

    return run_all


def _accuracy(cases: list[dict], verdicts: list[bool]) -> int:
    return sum(v == bool(c["expected"]) for c, v in zip(cases, verdicts))


def run(quick: bool = False) -> dict:
    """Measure both verifiers on the shared cases.

    Args:
        quick: 3 interleaved passes and one batch repetition instead of 7 and 4.

    Returns:
        `{"cases", "passes", "cpus", "math_verify": {...}, "opd": {...}, "speedup",
        "batch": {processes: verifications/s}}`.
    """
    from opd_selfplay.verifiers import MathVerifier
    from opd_selfplay.verifiers import math as math_module

    cases = load_cases()
    passes = 3 if quick else 7
    ours = _ours_runner(cases, honour_settings=True)
    theirs = _math_verify_runner(cases, honour_settings=True)
    MathVerifier().warm(2)

    ours_verdicts, theirs_verdicts = ours(), theirs()  # warm-up passes, untimed
    ours_s: list[float] = []
    theirs_s: list[float] = []
    for _ in range(passes):
        for runner, times in ((theirs, theirs_s), (ours, ours_s)):
            started = time.perf_counter()
            verdicts = runner()
            times.append(time.perf_counter() - started)
            if runner is ours:
                ours_verdicts = verdicts
            else:
                theirs_verdicts = verdicts
    theirs_default = _math_verify_runner(cases, honour_settings=False)()
    ours_default = _ours_runner(cases, honour_settings=False)()

    n = len(cases)
    result: dict = {
        "cases": n,
        "passes": passes,
        "cpus": os.cpu_count(),
        "math_verify": {
            "verifications_per_s": n / statistics.median(theirs_s),
            "pass_s": theirs_s,
            "agree": _accuracy(cases, theirs_verdicts),
            "agree_default_settings": _accuracy(cases, theirs_default),
        },
        "opd": {
            "verifications_per_s": n / statistics.median(ours_s),
            "pass_s": ours_s,
            "agree": _accuracy(cases, ours_verdicts),
            "agree_default_settings": _accuracy(cases, ours_default),
        },
    }
    result["speedup"] = (
        result["opd"]["verifications_per_s"] / result["math_verify"]["verifications_per_s"]
    )

    verifier = MathVerifier()
    pairs = [(c["pred"], c["gold"]) for c in cases] * (1 if quick else 4)
    result["batch"] = {}
    for processes in (1, 2):
        verifier.warm(processes)
        math_module.clear_caches()
        started = time.perf_counter()
        verifier.verify_batch(pairs, processes=processes)
        result["batch"][processes] = len(pairs) / (time.perf_counter() - started)
    return result


def suite(quick: bool) -> SuiteResult:
    """The suite for `python -m benchmarks`: the same measurements as `run`, as records.

    Case `one at a time`: contenders `ours` and `math_verify`, each round one cold-cache pass
    over every case (metric `verifications_per_s`; `seconds` per pass). Case `batch`: ours'
    `verify_batch` over 1 and 2 processes. Without Math-Verify installed, its contender is
    left out with a note.

    Args:
        quick: 3 rounds and one batch repetition (full: 7 and 4).
    Returns:
        Records, comparisons (no goals: reported ratios) and notes (settings, agreement).
    """
    from benchmarks.harness import Comparison, SuiteResult, interleave, records, tiny
    from opd_selfplay.verifiers import MathVerifier
    from opd_selfplay.verifiers import math as math_module

    small = tiny()
    cases = load_cases()[: 8 if small else None]
    n = len(cases)
    rounds = 1 if small else (3 if quick else 7)
    verdicts: dict[str, list[bool]] = {}

    def timed(name: str, runner: Callable[[], list[bool]]) -> Callable[[], dict[str, float]]:
        def one() -> dict[str, float]:
            started = time.perf_counter()
            verdicts[name] = runner()
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "verifications_per_s": n / seconds}

        return one

    warmup = 0 if small else 1
    MathVerifier().warm(1 if small else 2)
    contenders = {"ours": timed("ours", _ours_runner(cases, honour_settings=True))}
    notes = [
        f"{n} Math-Verify regression cases (shared/data/math_verify_cases.jsonl), one call at a "
        f"time, cold caches every pass, {rounds} interleaved passes after {warmup} warm-up pass; "
        f"{os.cpu_count()} CPUs, shared machine: figures are indicative"
    ]
    try:
        contenders["math_verify"] = timed(
            "math_verify", _math_verify_runner(cases, honour_settings=True)
        )
    except ImportError as exc:
        notes.append(f"math_verify skipped: {exc} (pip install -e '.[bench]')")
    runs = interleave(contenders, rounds=rounds, warmup=warmup)
    units = {"seconds": "s", "verifications_per_s": "verifications/s"}
    rows = records("verify_math", "one at a time", runs, units)
    for name, got in verdicts.items():
        notes.append(f"{name} agrees with the labels on {_accuracy(cases, got)}/{n} cases")
    comparisons = []
    if "math_verify" in contenders:
        comparisons.append(
            Comparison(
                "verify_math",
                "one at a time",
                "verifications_per_s",
                "ours",
                "math_verify",
                lower_is_better=False,
            )
        )
    if not small:
        verifier = MathVerifier()
        pairs = [(c["pred"], c["gold"]) for c in cases] * (1 if quick else 4)

        def batch(processes: int) -> Callable[[], dict[str, float]]:
            def one() -> dict[str, float]:
                verifier.warm(processes)
                math_module.clear_caches()
                started = time.perf_counter()
                verifier.verify_batch(pairs, processes=processes)
                return {"verifications_per_s": len(pairs) / (time.perf_counter() - started)}

            return one

        runs = interleave(
            {"batch_1": batch(1), "batch_2": batch(2)}, rounds=1 if quick else 2, warmup=0
        )
        rows += records("verify_math", "batch", runs, units)
        comparisons.append(
            Comparison(
                "verify_math",
                "batch",
                "verifications_per_s",
                "batch_2",
                "batch_1",
                lower_is_better=False,
            )
        )
        notes.append(f"batch: verify_batch over {len(pairs)} pairs with 1 and 2 processes")
    return SuiteResult(rows, comparisons, notes)


def to_markdown(result: dict) -> str:
    """The figures of `run` as a markdown table."""
    mv, ours = result["math_verify"], result["opd"]
    n = result["cases"]
    lines = [
        f"Math answer verification on {n} Math-Verify regression cases "
        f"(median of {result['passes']} interleaved passes, {result['cpus']} CPUs)",
        "",
        "| verifier | verifications/s | agrees with labels (case settings) | (default settings) |",
        "| --- | ---: | ---: | ---: |",
        f"| Math-Verify 0.9 | {mv['verifications_per_s']:.0f} | {mv['agree']}/{n} | "
        f"{mv['agree_default_settings']}/{n} |",
        f"| opd MathVerifier | {ours['verifications_per_s']:.0f} | {ours['agree']}/{n} | "
        f"{ours['agree_default_settings']}/{n} |",
        "",
        f"Speed-up (opd / Math-Verify, one call at a time): **{result['speedup']:.2f}x**",
        "",
        "| verify_batch processes | verifications/s |",
        "| ---: | ---: |",
    ]
    lines += [f"| {p} | {v:.0f} |" for p, v in result["batch"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer passes (for CI)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    try:
        import math_verify  # noqa: F401
    except ImportError:
        print("Math-Verify is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    result = run(quick=args.quick)
    print(to_markdown(result))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
