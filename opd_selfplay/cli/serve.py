"""`opd serve --model MODEL`: an OpenAI-compatible server (completions and chat, log-probs)."""

from __future__ import annotations

import argparse
import sys

from opd_selfplay.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a local model over the OpenAI API (completions, chat, log-probs)",
        description="Serve a local model (tiny or a Hugging Face folder) with OpenAI-compatible "
        "/v1/completions and /v1/chat/completions, log-probs included. For grey-box and "
        "black-box teachers in a separate process.",
    )
    p.add_argument("--model", required=True, help="'tiny' or a Hugging Face model folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    p.add_argument("--name", default=None, help="model id clients pass (default: MODEL)")
    p.add_argument("--device", default=None, help="cpu, cuda, ...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model.startswith(("http://", "https://", "vllm:")):
        raise InputError(
            f"--model {args.model}: opd serve serves local models; use 'tiny' or a folder"
        )
    from opd_selfplay.agents.hf import HFPolicy
    from opd_selfplay.agents.loading import load_policy
    from opd_selfplay.agents.server import PolicyServer

    policy = load_policy(args.model, device=args.device)
    assert isinstance(policy, HFPolicy)
    root = str(policy.model.name_or_path)
    try:
        server = PolicyServer(policy, args.name or args.model, root, args.host, args.port)
    except OSError as exc:
        raise InputError(f"cannot bind {args.host}:{args.port}: {exc.strerror}") from None
    print(f"opd serve: {args.model} at {server.url}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0
