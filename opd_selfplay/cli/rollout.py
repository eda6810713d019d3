"""`opd rollout`: play a policy on an environment and write the trajectories as JSONL."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="play a model on an env, write one JSON trajectory per line",
        description="Play MODEL on ENV_ID for N episodes and write one JSON trajectory per line "
        "(token ids, action mask, turns, rewards, stop reason).",
    )
    p.add_argument(
        "--env", required=True, metavar="ENV_ID", help="registered env id (opd envs list)"
    )
    p.add_argument(
        "--model",
        required=True,
        help="'tiny', a Hugging Face model folder, an http(s) server URL, or vllm:PATH",
    )
    p.add_argument("--episodes", type=int, required=True, metavar="N", help="number of episodes")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="output file")
    p.add_argument(
        "--group-size", type=int, default=1, metavar="G", help="samples per task (default 1)"
    )
    p.add_argument("--max-turns", type=int, default=4, help="actions per episode (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens per action (default 64)")
    p.add_argument("--max-context-tokens", type=int, default=2048, help="tokens per episode")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="task seeds are SEED, SEED+1, ...")
    p.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the env (VALUE parsed as JSON when it can be); repeatable",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, ... (local models)")
    p.add_argument("--tokenizer", default=None, help="tokenizer for a server MODEL")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_env_args(pairs: list[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs as keyword arguments, VALUE read as JSON when it parses."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--env-arg {pair!r}: expected KEY=VALUE with KEY a Python name")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise InputError(f"--episodes must be >= 1, got {args.episodes}")
    if args.group_size < 1:
        raise InputError(f"--group-size must be >= 1, got {args.group_size}")
    if args.episodes % args.group_size:
        raise InputError(
            f"--episodes {args.episodes} is not a multiple of --group-size {args.group_size}"
        )
    out = Path(args.out)
    if not out.parent.exists():
        raise InputError(f"--out {out}: folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; give a file name such as {out}/rollouts.jsonl")
    env_kwargs = parse_env_args(args.env_arg)

    from opd_selfplay.rollout import RolloutConfig, resolve_env_id

    resolve_env_id(args.env)  # fail on an unknown env before loading a model
    config = RolloutConfig(
        max_turns=args.max_turns,
        max_new_tokens=args.max_new_tokens,
        max_context_tokens=args.max_context_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )

    from opd_selfplay.agents.loading import load_policy
    from opd_selfplay.rollout import RolloutEngine

    policy = load_policy(args.model, device=args.device, tokenizer=args.tokenizer)
    engine = RolloutEngine(policy, config)
    groups = args.episodes // args.group_size
    seeds = list(range(args.seed, args.seed + groups))
    started = time.monotonic()
    trajectories = _run_with_progress(engine, args, seeds, env_kwargs, started)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for traj in trajectories:
            fh.write(traj.to_json() + "\n")
    tmp.replace(out)
    elapsed = time.monotonic() - started
    n_tok = sum(t.num_action_tokens for t in trajectories)
    success = sum(t.success for t in trajectories) / len(trajectories)
    reasons: dict[str, int] = {}
    for t in trajectories:
        reasons[t.stop_reason.value] = reasons.get(t.stop_reason.value, 0) + 1
    print(
        f"wrote {len(trajectories)} trajectories to {out} in {elapsed:.1f}s "
        f"({n_tok / max(elapsed, 1e-9):.0f} tokens/s); success {success:.3f}; stop reasons {reasons}",
        file=sys.stderr,
    )
    return 0


def _run_with_progress(engine, args, seeds, env_kwargs, started):
    if args.quiet or not sys.stderr.isatty():
        return engine.run(args.env, seeds, args.group_size, env_kwargs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]rollout"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes · {task.fields[tps]:.0f} tokens/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task("rollout", total=args.episodes, tps=0.0)

        def on_turn(_trajs, finished: int, tokens: int) -> None:
            tps = tokens / max(time.monotonic() - started, 1e-9)
            bar.update(task, completed=finished, tps=tps)

        result = engine.run(args.env, seeds, args.group_size, env_kwargs, on_turn=on_turn)
        bar.update(task, completed=args.episodes)
        return result
