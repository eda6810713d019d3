"""`opd train [--config FILE] [--preset NAME] [KEY=VALUE ...]`, and `--resume RUN_DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a student (any point of the survey grid); writes a run folder",
        description="Train with a config file, a preset and KEY=VALUE overrides "
        "(e.g. teacher.kind=snapshot steps=50). Writes config.json, metrics.jsonl, "
        "checkpoints/, samples/, plots.png and summary.json into the run folder.",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)"
    )
    p.add_argument("--config", default=None, help="TOML or YAML config file")
    p.add_argument("--preset", default=None, help="opsd, gkd, tinker, grpo, hybrid, snapshot")
    p.add_argument("--out", default=None, help="run folder (default: config 'out')")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its latest checkpoint",
    )
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    p.set_defaults(func=run)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"override {pair!r}: expected KEY=VALUE, e.g. teacher.kind=snapshot")
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from opd_selfplay.config import describe_fields, load_config

    if args.help_config:
        for name, default, doc in describe_fields():
            print(f"{name:28} {default:18} {doc}")
        return 0
    overrides = parse_overrides(args.overrides)
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.json"
        if not saved.is_file():
            raise InputError(f"--resume {run_dir}: no config.json there; is it a run folder?")
        config = load_config(saved, overrides)
    else:
        if args.out:
            overrides["out"] = args.out
        config = load_config(args.config, overrides, args.preset)
        run_dir = Path(config.out)
    from opd_selfplay.rollout import resolve_env_id

    resolve_env_id(config.env)
    from opd_selfplay.trainer import Trainer

    summary = Trainer(config, run_dir, resume=bool(args.resume)).run()
    print(json.dumps({k: summary[k] for k in ("before", "after", "steps", "wall_seconds")}))
    print(f"run folder: {run_dir}", file=sys.stderr)
    return 0
