"""`opd grid [--quick] [--out DIR] [--seed N]`: the survey's grid as a small experiment matrix.

See `opd_selfplay.grid` for what runs and `docs/grid.md` for measured results. The size flags
(`--steps`, `--episodes`, `--warm-steps`) shrink or grow a preset, e.g. for a smoke test.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grid",
        help="experiment matrix over the survey's axes on tiny models (results table + plots)",
        description="Build a white-box teacher (a wider tiny model trained longer) and a "
        "briefly warm-started student, then train one cell per meaningful combination of "
        "feedback × teacher access × granularity, including on- vs off-policy distillation at "
        "equal compute. Writes results.md, results.csv, plots.png and one run folder per cell.",
    )
    p.add_argument("--quick", action="store_true", help="the few-minute version")
    p.add_argument("--out", default="grid_out", help="output folder (default grid_out)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="steps per cell (default: preset's)")
    p.add_argument(
        "--episodes", type=int, default=None, help="held-out episodes (default: preset's)"
    )
    p.add_argument(
        "--warm-steps",
        type=int,
        default=None,
        help="student warm-start steps; the teacher gets 3x (default: preset's)",
    )
    p.add_argument(
        "--episodes-per-step",
        type=int,
        default=None,
        help="episodes per step in every cell, a multiple of 4 (default: preset's)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument(
        "--cells", default="", help="comma-separated cell names to run (default: all of them)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opd_selfplay.grid import FULL, QUICK, grid_cells, markdown_table, run_grid

    settings = QUICK if args.quick else FULL
    changes: dict[str, int] = {"threads": args.threads}
    for flag, name in (
        ("--steps", "steps"),
        ("--episodes", "eval_episodes"),
        ("--episodes-per-step", "episodes_per_step"),
    ):
        value = getattr(args, name if name != "eval_episodes" else "episodes")
        if value is not None:
            if value < 1:
                raise InputError(f"{flag} must be >= 1, got {value}")
            changes[name] = value
    if args.warm_steps is not None:
        if args.warm_steps < 0:
            raise InputError(f"--warm-steps must be >= 0, got {args.warm_steps}")
        changes["student_warm_steps"] = args.warm_steps
        changes["teacher_warm_steps"] = 3 * args.warm_steps
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    settings = replace(settings, **changes)
    only = [c.strip() for c in args.cells.split(",") if c.strip()]
    known = [c.name for c in grid_cells(settings)]
    for name in only:
        if name not in known:
            raise InputError(f"--cells: unknown cell {name!r}; cells: {', '.join(known)}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not an empty folder; choose a new one")
    rows = run_grid(out, settings, seed=args.seed, only=only or None)
    print(markdown_table(rows))
    print(f"wrote {out}/results.md, results.csv, plots.png", file=sys.stderr)
    failed = [r.cell for r in rows if r.status.startswith("failed")]
    if failed:
        print(f"opd grid: {len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
