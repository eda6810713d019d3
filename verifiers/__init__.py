"""Verifiers: the outcome signal and the feedback an agent sees.

Every verifier has `verify(response: str, reference) -> Verdict`. They run untrusted model
output, so all parsing and execution happens under time and memory limits (see `sandbox`).
This package imports neither torch nor transformers. Heavy modules (sympy, the sandbox) are
imported on first use, so `import opd_selfplay.verifiers` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .verdict import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from .code import CodeVerifier
    from .math import MathVerifier
    from .tool import ToolCallVerifier

__all__ = ["CodeVerifier", "MathVerifier", "ToolCallVerifier", "Verdict"]

_LAZY = {
    "MathVerifier": ".math",
    "CodeVerifier": ".code",
    "ToolCallVerifier": ".tool",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
