"""`opd verify math|code|tool --response TEXT --reference TEXT`: print one verdict as JSON.

`--response` and `--reference` take literal text, `@PATH` to read a file, or `-` to read
standard input (one of them at most). For `code` and `tool` the reference is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from opd_selfplay.errors import InputError

KINDS = ("math", "code", "tool")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check one response against a reference, print the verdict")
    p.add_argument("kind", choices=KINDS, help="which verifier")
    p.add_argument("--response", required=True, help="the response: TEXT, @PATH or - (stdin)")
    p.add_argument(
        "--reference",
        required=True,
        help="the reference: TEXT (math), JSON (code, tool), @PATH or - (stdin)",
    )
    p.add_argument("--time-limit", type=float, default=None, help="seconds (default: verifier's)")
    p.set_defaults(func=run)


def _read(value: str, flag: str) -> str:
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{flag}: cannot read {path}: {exc.strerror}") from None
    return value


def run(args: argparse.Namespace) -> int:
    if args.response == "-" and args.reference == "-":
        raise InputError("--response and --reference cannot both read standard input")
    response = _read(args.response, "--response")
    reference_text = _read(args.reference, "--reference")
    kwargs = {} if args.time_limit is None else {"time_limit_s": args.time_limit}
    if args.kind == "math":
        reference: object = reference_text
    else:
        try:
            reference = json.loads(reference_text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--reference: {args.kind} references are JSON; parse failed at char {exc.pos}: {exc.msg}"
            ) from None
    try:
        verifier = _verifier(args.kind, kwargs)
        verdict = verifier.verify(response, reference)
    except (TypeError, ValueError) as exc:
        flag = "--time-limit" if "time" in str(exc).lower() else "--reference"
        raise InputError(f"{flag}: {exc}") from None
    print(json.dumps(verdict.to_dict(), ensure_ascii=False))
    return 0


def _verifier(kind: str, kwargs: dict[str, float]):
    from opd_selfplay import verifiers

    cls = {"math": "MathVerifier", "code": "CodeVerifier", "tool": "ToolCallVerifier"}[kind]
    return getattr(verifiers, cls)(**kwargs)
