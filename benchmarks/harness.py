"""The shared shape of every benchmark suite: interleaved rounds, flat records, comparisons.

A suite (`benchmarks/<name>.py`) exposes `suite(quick) -> SuiteResult`. It measures its
contenders with `interleave` (each round calls every contender once, the order rotated each
round, so that drift on a shared machine hits all contenders alike), flattens the runs with
`records`, and states what it compares with `Comparison` (ours / peer, per round, against a
goal). `benchmarks/__main__.py` runs the suites and writes the report from these values;
`summarize` and `ratios` are the statistics it uses (medians with min–max; ratios paired by
round).

Not covered here: process isolation and peak-memory measurement (the entry point runs each
suite in its own process; suites that need a peak per contender spawn their own workers, see
`peak_rss_reset` / `peak_rss_bytes`).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

Contender = Callable[[], Mapping[str, float]]
"""One timed unit of work; returns metric -> value, e.g. {"seconds": 0.12, "peak_mb": 310.0}."""

RECORD_KEYS = ("suite", "case", "contender", "metric", "value", "unit", "round")


def tiny() -> bool:
    """Whether the entry point asked for the trivially small test setting (`OPD_BENCH_TINY=1`).

    Returns:
        True when suites should shrink to a few seconds of work (used by the test only).
    """
    return os.environ.get("OPD_BENCH_TINY", "") not in ("", "0")


def interleave(contenders: Mapping[str, Contender], rounds: int, warmup: int = 1) -> list[dict]:
    """Run `warmup` untimed calls of each contender, then `rounds` rotated rounds.

    Each round calls every contender once; the order is rotated each round (A B C, B C A,
    C A B, …) so that neither position in a round is favoured.

    Args:
        contenders: name -> callable doing one unit of work and returning its metrics.
        rounds: number of measured rounds (≥ 1).
        warmup: untimed calls of each contender before the first round.

    Returns:
        [{"contender": name, "round": r, "metrics": {...}}, ...] in call order.
    """
    if rounds < 1:
        raise ValueError(f"interleave: rounds must be >= 1, got {rounds}")
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    runs: list[dict] = []
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            metrics = {key: float(v) for key, v in contenders[name]().items()}
            runs.append({"contender": name, "round": r, "metrics": metrics})
    return runs


def records(suite: str, case: str, runs: list[dict], units: Mapping[str, str]) -> list[dict]:
    """Flatten `interleave` output to one row per (contender, round, metric).

    Args:
        suite: suite name (e.g. "opd_step").
        case: the setting within the suite (e.g. "tiny").
        runs: output of `interleave` (or rows of the same shape).
        units: metric -> unit ("s", "MB", "tokens/s"); a metric not listed gets "".

    Returns:
        Rows {"suite", "case", "contender", "metric", "value", "unit", "round"}.
    """
    rows = []
    for run in runs:
        for metric, value in run["metrics"].items():
            rows.append(
                {
                    "suite": suite,
                    "case": case,
                    "contender": run["contender"],
                    "metric": metric,
                    "value": float(value),
                    "unit": units.get(metric, ""),
                    "round": int(run["round"]),
                }
            )
    return rows


@dataclass(frozen=True)
class Comparison:
    """A claim to check: ours / peer on one (case, metric), paired by round, against a goal.

    `lower_is_better`: for seconds or bytes the ratio passes when ≤ goal; for throughput it
    passes when ≥ goal.
    """

    suite: str
    case: str
    metric: str
    ours: str
    peer: str
    goal: float | None = None
    lower_is_better: bool = True


@dataclass
class SuiteResult:
    """What a suite returns: raw rows, the comparisons to report, one-line notes."""

    records: list[dict]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """Returns: a JSON-serialisable dict (the child process hands this to the parent)."""
        return {
            "records": self.records,
            "comparisons": [asdict(c) for c in self.comparisons],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> SuiteResult:
        """Args: data: output of `to_json`. Returns: the SuiteResult."""
        return cls(
            records=list(data["records"]),
            comparisons=[Comparison(**c) for c in data["comparisons"]],
            notes=list(data.get("notes", [])),
        )


def summarize(values: list[float]) -> dict[str, float]:
    """Args: values: measurements (non-empty). Returns: {"median", "min", "max", "n"}."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": float(len(values)),
    }


def ratios(rows: list[dict], comparison: Comparison) -> list[float]:
    """Per-round ratios ours / peer for one comparison (rounds where both have a value).

    Rows from several processes are paired by (process, round) when rows carry a "process"
    key (the entry point adds it when it pools processes), else by round.

    Args:
        rows: records (any suites/cases; filtered here).
        comparison: which case, metric and contenders.

    Returns:
        The ratios in round order; empty when the two never share a round.
    """
    by: dict[str, dict[tuple, float]] = {comparison.ours: {}, comparison.peer: {}}
    for row in rows:
        if (
            row["suite"] == comparison.suite
            and row["case"] == comparison.case
            and row["metric"] == comparison.metric
            and row["contender"] in by
        ):
            by[row["contender"]][(row.get("process", 0), row["round"])] = row["value"]
    ours, peer = by[comparison.ours], by[comparison.peer]
    return [ours[k] / peer[k] for k in sorted(ours) if k in peer and peer[k] != 0]


def verdict(ratio_median: float, comparison: Comparison) -> str:
    """Args: ratio_median: median of `ratios`; comparison: its goal.

    Returns:
        "met", "missed", or "" when the comparison has no goal.
    """
    if comparison.goal is None:
        return ""
    ok = (
        ratio_median <= comparison.goal
        if comparison.lower_is_better
        else ratio_median >= comparison.goal
    )
    return "met" if ok else "missed"


def peak_rss_reset() -> bool:
    """Reset this process's peak resident set (VmHWM) so that setup does not count.

    Returns:
        False when the kernel refuses (then `peak_rss_bytes` falls back to the lifetime peak).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def rss_bytes() -> int:
    """Returns: this process's current resident set size in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Returns: this process's peak resident set size (VmHWM) in bytes, since the last reset.

    Falls back to ru_maxrss (lifetime peak) where /proc/self/status has no VmHWM.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_bytes() -> int:
    """Returns: the memory the kernel says is available (MemAvailable), in bytes; 0 if unknown."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
