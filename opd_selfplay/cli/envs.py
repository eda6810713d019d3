"""`opd envs list` and `opd envs check ENV_ID...`: the registered environments and their check.

`list` prints every registered id (built-in and plugins; `--all` adds Gymnasium's own), one per
line: the id, then a short description. Plugins that failed to load are named on stderr.

`check` runs `opd_selfplay.envs.check.check_env` on each id: exit 0 when all conform, 1 with the
problems (one per line, on stdout) when one does not, 2 for an unknown id (one line on stderr).

Fast start: nothing here imports torch; the env modules load their own heavy dependencies
(sympy, the sandbox) only when an env is checked.
"""

from __future__ import annotations

import argparse
import sys

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envs", help="list the registered environments, or check one")
    envs_sub = p.add_subparsers(dest="envs_command", metavar="{list,check}", parser_class=type(p))
    envs_sub.required = True

    lp = envs_sub.add_parser("list", help="every registered env id with a short description")
    lp.add_argument(
        "--all", action="store_true", help="also list Gymnasium's own (non-text) environments"
    )
    lp.add_argument("--source", action="store_true", help="also show where each id comes from")
    lp.set_defaults(func=run_list)

    cp = envs_sub.add_parser("check", help="run the conformance check on env ids")
    cp.add_argument("env_ids", nargs="+", metavar="ENV_ID", help="a registered id, or module:Id")
    cp.add_argument(
        "--seeds", type=int, default=3, help="episodes per check, seeds 0..N-1 (default 3)"
    )
    cp.add_argument(
        "--max-steps", type=int, default=100, help="an episode must end within this (default 100)"
    )
    cp.add_argument(
        "--no-bad-actions",
        action="store_true",
        help="skip the bad-action episodes (1 MB of garbage and friends)",
    )
    cp.set_defaults(func=run_check)


def run_list(args: argparse.Namespace) -> int:
    from opd_selfplay.envs import registry

    listing = registry.list_envs(include_gymnasium=args.all)
    width = max((len(e.id) for e in listing), default=0)
    for e in listing:
        extra = f"  [{e.source}]" if args.source else ""
        print(f"{e.id:<{width}}  {e.description}{extra}".rstrip())
    for label, error in registry.plugin_errors().items():
        print(f"opd envs list: warning: plugin {label} failed to load: {error}", file=sys.stderr)
    return 0


def run_check(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    if args.max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {args.max_steps}")
    from opd_selfplay.envs.check import check_env, make_env

    for env_id in args.env_ids:  # unknown ids fail before any check runs
        make_env(env_id).close()
    status = 0
    for env_id in args.env_ids:
        problems = check_env(
            env_id,
            seeds=tuple(range(args.seeds)),
            max_steps=args.max_steps,
            bad_actions=not args.no_bad_actions,
        )
        if problems:
            status = 1
            print(f"{env_id}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"{env_id}: ok")
    return status
