"""Example plugin: `example/Reverse-v0`, reverse a word, with one retry.

Importing this module registers the env (the `reverse` entry point names the module itself).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from opd_selfplay.envs.base import TextTaskEnv
from opd_selfplay.envs.tasks import ProceduralSource, Task
from opd_selfplay.verifiers import Verdict

WORDS = ("gymnasium", "plugin", "teacher", "student", "reward", "verifier", "rollout")


def make_task(rng: np.random.Generator, difficulty: int) -> Task:
    """A word (two joined words above difficulty 1) and its reversal."""
    word = "".join(WORDS[int(rng.integers(len(WORDS)))] for _ in range(max(1, difficulty)))
    return Task(prompt=f"Reverse the word: {word}", reference=word[::-1], id=f"reverse-{word}")


class ReverseEnv(TextTaskEnv):
    """Reverse a word; the answer is the last whitespace-separated token of the reply."""

    def __init__(self, difficulty: int = 1, max_attempts: int = 2, render_mode=None):
        super().__init__(
            ProceduralSource(make_task, difficulty),
            max_attempts=max_attempts,
            render_mode=render_mode,
        )

    def verify(self, action: str, task: Task) -> Verdict:
        words = action.split()
        if not words:
            return Verdict.fail("Empty reply: write the reversed word.", parse_error=True)
        if words[-1] == task.reference:
            return Verdict(1.0, True, "Correct.")
        return Verdict(0.0, False, f"'{words[-1][:50]}' is not the reversed word.")

    def oracle_action(self) -> str | None:
        return None if self.task is None else str(self.task.reference)

    def wrong_action(self) -> str | None:
        return "definitely-not-it"


if "example/Reverse-v0" not in gym.registry:
    gym.register("example/Reverse-v0", entry_point="opd_plugin_example:ReverseEnv")
