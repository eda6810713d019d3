"""`opd eval --env ENV_ID --model MODEL`: success rate and pass@k on held-out tasks."""

from __future__ import annotations

import argparse
import json

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="success rate and pass@k of a model on an env")
    p.add_argument("--env", required=True, metavar="ENV_ID", help="registered env id")
    p.add_argument(
        "--model", required=True, help="'tiny', a model folder, a run's checkpoint folder, or a URL"
    )
    p.add_argument("--episodes", type=int, default=200, help="held-out tasks (default 200)")
    p.add_argument("--pass-k", type=int, default=1, help="samples per task for pass@k (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--max-turns", type=int, default=2, help="actions per episode (default 2)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens per action (default 16)")
    p.add_argument("--out", default=None, help="write the trajectories to this JSONL file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1 or args.pass_k < 1:
        raise InputError("--episodes and --pass-k must be >= 1")
    from opd_selfplay.rollout import RolloutConfig, RolloutEngine, resolve_env_id

    resolve_env_id(args.env)
    from opd_selfplay.agents.loading import load_policy
    from opd_selfplay.evaluation import evaluate

    policy = load_policy(args.model)
    engine = RolloutEngine(
        policy, RolloutConfig(max_turns=args.max_turns, max_new_tokens=args.max_new_tokens)
    )
    from rich.console import Console

    with Console(stderr=True).status(f"evaluating {args.episodes} × {args.pass_k} episodes"):
        metrics, trajs = evaluate(
            engine, args.env, args.episodes, temperature=args.temperature, pass_k=args.pass_k
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for t in trajs:
                fh.write(t.to_json() + "\n")
    print(json.dumps(metrics))
    return 0
