"""The benchmark report: markdown tables from `SuiteResult`s, and the raw JSONL records.

Per suite: its notes, a table of each contender's median and min–max per (case, metric), and
a table of the comparisons (ours / peer, paired by round: median, min–max, goal, met/missed).
A suite that could not run is one line with its reason.

`records.jsonl` holds one header row (`"kind": "header"`: machine, versions, commit, date),
one row per suite (`"kind": "suite"`: status, reason, notes, comparison summaries), then the
raw rows (`"kind": "record"`, with the contract keys suite, case, contender, metric, value,
unit, round, and `process` when suites were repeated in several processes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from benchmarks.harness import Comparison, SuiteResult, ratios, summarize, verdict


def fmt(value: float) -> str:
    """A measurement with about three significant digits, never in exponent form above 1."""
    a = abs(value)
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 0.1:
        return f"{value:.3f}".rstrip("0").rstrip(".") if a < 1 else f"{value:.2f}"
    if a == 0:
        return "0"
    return f"{value:.3g}"


def comparison_summary(rows: list[dict], c: Comparison) -> dict:
    """Paired ratios of one comparison: {"n", "median", "min", "max", "verdict"} (n = 0 when
    the two contenders never share a round)."""
    values = ratios(rows, c)
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "verdict": ""}
    s = summarize(values)
    return {
        "n": len(values),
        "median": s["median"],
        "min": s["min"],
        "max": s["max"],
        "verdict": verdict(s["median"], c),
    }


def _ratio(value: float) -> str:
    return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.2g}"


def _goal(c: Comparison) -> str:
    if c.goal is None:
        return ""
    return f"{'≤' if c.lower_is_better else '≥'} {c.goal:g}"


def suite_markdown(name: str, result: SuiteResult) -> str:
    """The report section of one suite that ran.

    Args:
        name: the suite name.
        result: its rows, comparisons and notes.
    Returns:
        Markdown (a heading, notes, the contenders table, the comparisons table).
    """
    lines = [f"## {name}", ""]
    lines += [f"- {n}" for n in result.notes]
    if result.notes:
        lines.append("")
    groups: dict[tuple[str, str, str], list[float]] = {}
    units: dict[tuple[str, str], str] = {}
    for row in result.records:
        key = (row["case"], row["metric"], row["contender"])
        groups.setdefault(key, []).append(float(row["value"]))
        units[(row["case"], row["metric"])] = row.get("unit", "")
    if groups:
        lines += [
            "| case | metric | contender | median | min–max | n |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        # Grouped by case, then metric, then contender, each in order of first appearance.
        order = {k: i for i, k in enumerate(groups)}
        first: dict[tuple, int] = {}
        for case, metric, _ in groups:
            first.setdefault(("c", case), len(first))
            first.setdefault(("m", case, metric), len(first))
        keys = sorted(
            groups,
            key=lambda k: (first[("c", k[0])], first[("m", k[0], k[1])], order[k]),
        )
        for case, metric, contender in keys:
            values = groups[(case, metric, contender)]
            s = summarize(values)
            unit = units[(case, metric)]
            lines.append(
                f"| {case} | {metric}{f' ({unit})' if unit else ''} | {contender} "
                f"| {fmt(s['median'])} | {fmt(s['min'])}–{fmt(s['max'])} | {len(values)} |"
            )
        lines.append("")
    if result.comparisons:
        lines += [
            "| case | metric | ours / peer | ratio median | min–max | goal | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in result.comparisons:
            s = comparison_summary(result.records, c)
            if not s["n"]:
                lines.append(
                    f"| {c.case} | {c.metric} | {c.ours} / {c.peer} | not measured | | {_goal(c)} | |"
                )
                continue
            lines.append(
                f"| {c.case} | {c.metric} | {c.ours} / {c.peer} | {_ratio(s['median'])} "
                f"| {_ratio(s['min'])}–{_ratio(s['max'])} | {_goal(c)} | {s['verdict']} |"
            )
        lines.append("")
    return "\n".join(lines)


def skipped_markdown(name: str, reason: str) -> str:
    """The report section of a suite that did not run: one line with the reason."""
    return f"## {name}\n\nskipped: {reason}\n"


def header_markdown(header: Mapping[str, object]) -> str:
    """The report's opening: the command and the machine facts of the header row."""
    lines = ["# opd-selfplay benchmarks", ""]
    for key, value in header.items():
        if key == "kind":
            continue
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "Medians over interleaved rounds (A B C, B C A, …); ratios are ours / peer per round "
        "(paired), then their median and min–max. Lower is better for seconds and bytes, higher "
        "for throughput. Figures from a shared machine: compare ratios, not absolute times.",
        "",
    ]
    return "\n".join(lines)


def write(
    out: Path,
    header: Mapping[str, object],
    results: Mapping[str, SuiteResult | str],
    extra: Mapping[str, Mapping[str, object]] | None = None,
) -> tuple[Path, Path]:
    """Write `out/report.md` and `out/records.jsonl`.

    Args:
        out: the output folder (created).
        header: machine facts (torch version, threads, CPUs, load, commit, date, command).
        results: suite name -> its SuiteResult, or the reason it was skipped (in run order).
        extra: suite name -> facts to store in its suite row (wall seconds, processes).
    Returns:
        The paths of the report and of the records.
    """
    out.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    sections = [header_markdown(header)]
    lines = [json.dumps({"kind": "header", **header})]
    for name, result in results.items():
        info = dict(extra.get(name, {}))
        if isinstance(result, str):
            sections.append(skipped_markdown(name, result))
            lines.append(
                json.dumps(
                    {"kind": "suite", "suite": name, "status": "skipped", "reason": result, **info}
                )
            )
            continue
        sections.append(suite_markdown(name, result))
        summaries = [
            {**asdict(c), **comparison_summary(result.records, c)} for c in result.comparisons
        ]
        lines.append(
            json.dumps(
                {
                    "kind": "suite",
                    "suite": name,
                    "status": "ok",
                    "notes": result.notes,
                    "comparisons": summaries,
                    **info,
                }
            )
        )
        lines += [json.dumps({"kind": "record", **row}) for row in result.records]
    report = out / "report.md"
    report.write_text("\n".join(sections))
    rec = out / "records.jsonl"
    rec.write_text("\n".join(lines) + "\n")
    return report, rec
