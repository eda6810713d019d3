"""The `opd` command line.

Each module of this package that defines `register(subparsers)` is one subcommand; `register`
adds its parser and sets `func(args) -> int`. Modules import heavy libraries (torch,
transformers, sympy) inside `func`, never at the top, so that `opd envs list` and
`opd verify` start fast.

Exit status: 0 on success, 1 when the command ran and found a failure (e.g. a non-conforming
env), 2 on bad usage or bad input, with a one-line reason on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from opd_selfplay.errors import InputError


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> Parser:
    """The `opd` parser with every subcommand found in this package."""
    parser = Parser(prog="opd", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `opd` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"opd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"opd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
