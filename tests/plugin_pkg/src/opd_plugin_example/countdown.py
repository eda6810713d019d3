"""Example plugin, callable style: `register()` registers `example/Countdown-v0`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from opd_selfplay.envs.base import TextTaskEnv
from opd_selfplay.envs.tasks import ProceduralSource, Task
from opd_selfplay.verifiers import Verdict


def make_task(rng: np.random.Generator, difficulty: int) -> Task:
    start = int(rng.integers(3, 3 + 3 * difficulty))
    answer = " ".join(str(i) for i in range(start, -1, -1))
    return Task(prompt=f"Count down from {start} to 0.", reference=answer, id=f"countdown-{start}")


class CountdownEnv(TextTaskEnv):
    """Count down from a number to 0, numbers separated by spaces."""

    metadata = {"render_modes": ["ansi"], "description": "count down from N to 0 (plugin example)"}  # noqa: RUF012

    def __init__(self, difficulty: int = 1, render_mode=None):
        super().__init__(
            ProceduralSource(make_task, difficulty), max_attempts=1, render_mode=render_mode
        )

    def verify(self, action: str, task: Task) -> Verdict:
        got = " ".join(action.replace(",", " ").split())
        if got == task.reference:
            return Verdict(1.0, True, "Correct.")
        return Verdict(0.0, False, "Not the right countdown.")

    def oracle_action(self) -> str | None:
        return None if self.task is None else str(self.task.reference)


def register() -> None:
    """Register this module's envs (called by opd-selfplay through the entry point)."""
    if "example/Countdown-v0" not in gym.registry:
        gym.register("example/Countdown-v0", entry_point=CountdownEnv)
