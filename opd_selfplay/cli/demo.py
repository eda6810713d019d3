"""`opd demo [--out DIR] [--seed N]`: the main job, on the built-in tiny model, on a CPU."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="teacher-free self-distillation of the tiny model on Arithmetic (CPU, < 10 min)",
        description="Build the tiny model, warm-start it, measure held-out success, run "
        "teacher-free on-policy self-distillation (privileged self-teacher) on "
        "opd/Arithmetic-v0 with multi-turn feedback, measure again. Writes summary.json and "
        "plots.png into --out.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument(
        "--minutes",
        type=float,
        default=8.0,
        help="time budget for warm start + training (default 8)",
    )
    p.add_argument("--steps", type=int, default=150, help="most distillation steps (default 150)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.minutes <= 0 or args.steps < 1:
        raise InputError("--minutes must be > 0 and --steps >= 1")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: folder is not empty; choose a new one or remove it")
    from opd_selfplay.demo import demo_config, format_table
    from opd_selfplay.trainer import Trainer

    config = demo_config(out, seed=args.seed, minutes=args.minutes, steps=args.steps)
    print(
        f"opd demo: seed {args.seed}, writing to {out}/ (at most {args.minutes:g} minutes of training, plus evaluations)",
        file=sys.stderr,
    )
    summary = Trainer(config, out).run()
    print(format_table(summary))
    print(
        json.dumps(
            {"before": summary["before"], "after": summary["after"], "steps": summary["steps"]}
        )
    )
    return 0
