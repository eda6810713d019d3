"""`opd/ReasoningGym-v0`: any reasoning-gym dataset as an env, scored by its own `score_answer`.

What: `ReasoningGymEnv(task="leg_counting", **config)` builds the reasoning-gym dataset `task`
(`reasoning_gym.create_dataset(task, seed=..., size=..., **config)`), draws an entry index
with the env's RNG at each reset, and asks the entry's `question`. The agent answers inside
`<answer>...</answer>` tags (reasoning-gym's convention; a last `Answer: ...` line is accepted
too). The score is **the dataset's own `score_answer(answer, entry)`**, clipped to [0, 1];
`correct` means a score of 1. The entry's `answer` field is never used as gold (some tasks
have none, others accept many answers): it only serves as the oracle action and as
privileged context, and only when `score_answer` gives it full marks.

Why an adapter rather than copied tasks: reasoning-gym has 100+ procedural tasks with
difficulty configs; scoring through its own function keeps every task's rules exact.

reasoning-gym is an optional dependency (`pip install 'opd-selfplay[reasoning]'`), imported
when an env is built: without it, building one raises `InputError` with that command; this
module itself imports without it, so the id is always registered and listed.

Multi-turn: with `max_attempts > 1`, a wrong answer gets feedback (its score, never the
answer) and another try. `info["privileged"]` holds the entry's answer when it scores 1, and
the feedback.

Not covered: reasoning-gym's curricula and composite datasets' weighting (pass a `composite`
config through `**config` if needed); tasks whose entries are not JSON-serialisable keep only
their JSON-safe metadata in `info["task_metadata"]`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from opd_selfplay.errors import InputError
from opd_selfplay.verifiers.verdict import Verdict

from .base import TextTaskEnv
from .tasks import Task

__all__ = ["ReasoningGymEnv", "extract_answer"]

_INSTALL = "pip install 'opd-selfplay[reasoning]'"
_TAGGED = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
_LINE = re.compile(r"(?im)^\s*answer\s*:\s*(.+?)\s*$")
_FORMAT = "\n\nGive your final answer between <answer> and </answer> tags."


def extract_answer(text: str) -> str | None:
    """The answer in a reply: the last `<answer>...</answer>`, else the last `Answer: ...` line.

    Args:
        text: the model's reply.

    Returns:
        The stripped answer, or None when there is none.
    """
    tagged = _TAGGED.findall(text)
    if tagged:
        return tagged[-1].strip()
    lines = _LINE.findall(text[-10_000:])
    return lines[-1].strip() if lines else None


def _json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of `value` (tuples as lists, other objects as their repr)."""
    if depth > 20:
        return repr(value)[:200]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    return repr(value)[:200]


def _import_reasoning_gym() -> Any:
    try:
        import reasoning_gym  # optional dependency
    except ImportError:
        raise InputError(
            f"opd/ReasoningGym-v0 needs the optional package reasoning-gym: {_INSTALL}"
        ) from None
    return reasoning_gym


class _EntrySource:
    """Draws an entry index with the env's RNG and turns the entry into a `Task`."""

    def __init__(self, env: ReasoningGymEnv) -> None:
        self.env = env

    def sample(self, rng: np.random.Generator) -> Task:
        return self.env.task_at(int(rng.integers(self.env.size)))


class ReasoningGymEnv(TextTaskEnv):
    """A reasoning-gym dataset, scored by its own `score_answer` (see the module docstring).

    Args:
        task: A reasoning-gym dataset name (`reasoning_gym.factory.DATASETS`).
        size: Entries in the dataset; resets draw an index in `[0, size)`.
        dataset_seed: The dataset's own seed (entry i is fixed for a given seed).
        max_attempts: Answers allowed per episode.
        system_prompt: Optional system message (e.g. one of reasoning-gym's `SYSTEM_PROMPTS`).
        render_mode: None or "ansi".
        **config: The dataset's config fields (e.g. `min_animals=3` for `leg_counting`).

    Raises:
        InputError: reasoning-gym is not installed, `task` is not one of its datasets, or
            `config` does not fit the dataset.
    """

    metadata = {"render_modes": ["ansi"], "description": "reasoning-gym datasets"}  # noqa: RUF012

    def __init__(
        self,
        task: str = "leg_counting",
        *,
        size: int = 10_000,
        dataset_seed: int = 0,
        max_attempts: int = 1,
        system_prompt: str | None = None,
        render_mode: str | None = None,
        **config: Any,
    ) -> None:
        rg = _import_reasoning_gym()
        from reasoning_gym.factory import DATASETS

        if task not in DATASETS:
            close = [n for n in sorted(DATASETS) if task.lower()[:4] in n][:8]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise InputError(
                f"unknown reasoning-gym task {task!r}{hint}; see reasoning_gym.factory.DATASETS"
            )
        if int(size) < 1:
            raise InputError(f"ReasoningGym size must be >= 1, got {size!r}")
        try:
            self.dataset = rg.create_dataset(task, seed=int(dataset_seed), size=int(size), **config)
        except (TypeError, ValueError, AssertionError) as exc:
            raise InputError(f"reasoning-gym task {task!r}: bad config {config!r}: {exc}") from None
        self.task_name = task
        self.size = int(size)
        self.dataset_seed = int(dataset_seed)
        self._entries: dict[int, dict[str, Any]] = {}
        super().__init__(
            _EntrySource(self),
            max_attempts=max_attempts,
            system_prompt=system_prompt,
            render_mode=render_mode,
        )

    # ---------------------------------------------------------------------- tasks ---
    def entry(self, index: int) -> dict[str, Any]:
        """The dataset's entry `index` (cached)."""
        if index not in self._entries:
            self._entries[index] = self.dataset[index]
        return self._entries[index]

    def task_at(self, index: int) -> Task:
        """Entry `index` as a `Task` (the entry's answer in `reference`, display only)."""
        entry = self.entry(index)
        answer = entry.get("answer")
        return Task(
            prompt=str(entry["question"]) + _FORMAT,
            reference=None if answer is None else str(answer),
            id=f"reasoning_gym/{self.task_name}/{self.dataset_seed}/{index}",
            metadata={
                "source": "reasoning_gym",
                "dataset": self.task_name,
                "index": index,
                "entry_metadata": _json_safe(entry.get("metadata", {})),
            },
        )

    def _current_entry(self) -> dict[str, Any]:
        assert self.task is not None
        index = self.task.metadata.get("index")
        if self.task.metadata.get("dataset") != self.task_name or not isinstance(index, int):
            raise ValueError(
                f"task {self.task.id!r} is not an entry of reasoning-gym task {self.task_name!r}"
            )
        return self.entry(index)

    # ------------------------------------------------------------------- checking ---
    def verify(self, action: str, task: Task) -> Verdict:
        entry = self._current_entry()
        answer = extract_answer(action)
        if answer is None:
            return Verdict.fail(
                "No answer found: put the final answer between <answer> and </answer>.",
                parse_error=True,
            )
        raw = self.dataset.score_answer(answer=answer, entry=entry)
        score = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) else 0.0
        score = min(1.0, max(0.0, score))
        correct = score >= 1.0
        if correct:
            feedback = "Correct."
        elif score > 0:
            feedback = f"Partly right: the answer {answer[:80]!r} scores {score:.2f} of 1."
        else:
            feedback = f"The answer {answer[:80]!r} is not correct."
        return Verdict(score, correct, feedback, {"answer": answer[:200], "score": score})

    def reference_text(self, task: Task) -> str:
        return "" if task.reference is None else str(task.reference)

    def render_privileged(self, task: Task, feedback: str) -> str:
        parts = []
        if self.oracle_action() is not None:  # only an answer the scorer accepts
            parts.append(f"Reference answer: {self.reference_text(task)}")
        if feedback:
            parts.append(f"Feedback on the last answer: {feedback}")
        return "\n".join(parts)

    def oracle_action(self) -> str | None:
        """The entry's `answer` in tags, when `score_answer` gives it full marks; else None."""
        if self.task is None or self.task.reference is None:
            return None
        answer = str(self.task.reference)
        try:
            ok = float(self.dataset.score_answer(answer=answer, entry=self._current_entry()))
        except Exception:  # a dataset whose scorer rejects its own answer has no oracle
            return None
        return f"<answer>{answer}</answer>" if ok >= 1.0 else None

    def wrong_action(self) -> str | None:
        """An answer that no task accepts."""
        return "<answer>∅ no answer ∅</answer>"
