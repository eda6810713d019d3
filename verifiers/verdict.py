"""The verdict every verifier returns: the outcome signal and the feedback an agent sees.

A `Verdict` is the only thing that crosses from a verifier to an environment or a trainer, so it
is small, frozen and JSON-serialisable. It does not say how the score was computed beyond the
free-form `details`; verifiers document their own scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

#: A JSON value, as carried in `details`.
JSON = Union[  # noqa: UP007 - a runtime alias with forward references
    None, bool, int, float, str, list["JSON"], dict[str, "JSON"]
]


@dataclass(frozen=True)
class Verdict:
    """The result of checking one response against its reference."""

    score: float
    """Reward in [0, 1]: 1 is fully correct; partial credit (fraction of tests passed, of tool
    calls matched) lies between."""

    correct: bool
    """Whether the response counts as a success (usually `score == 1`)."""

    feedback: str = ""
    """One or a few lines for the agent: what was found and why it does or does not match. A
    multi-turn environment shows it in its next message; a privileged self-teacher conditions on
    it. Never contains the reference itself unless the verifier is configured to reveal it."""

    details: dict[str, JSON] = field(default_factory=dict)
    """Machine-readable facts for logs (parsed answer, failing test, error kind, timings)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Verdict.score must lie in [0, 1], got {self.score!r}")

    def to_dict(self) -> dict[str, JSON]:
        """A JSON-ready dict with `score`, `correct`, `feedback`, `details`."""
        return {
            "score": float(self.score),
            "correct": bool(self.correct),
            "feedback": self.feedback,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Verdict:
        """Inverse of `to_dict`."""
        return cls(
            score=float(data["score"]),  # type: ignore[arg-type]
            correct=bool(data["correct"]),
            feedback=str(data.get("feedback", "")),
            details=dict(data.get("details") or {}),  # type: ignore[arg-type]
        )

    @classmethod
    def fail(cls, feedback: str, **details: JSON) -> Verdict:
        """A zero-score verdict with a reason, for errors, timeouts and unparseable output."""
        return cls(score=0.0, correct=False, feedback=feedback, details=details)
