"""Small environments and a scripted policy for testing the rollout engine.

`Scripted` is not a stand-in for a model (the tiny model covers that); it lets property tests
choose the exact action texts, so that the token bookkeeping can be compared with the chat
template's own render of the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
from gymnasium import spaces

from opd_selfplay.agents.base import Sample, SamplingParams
from opd_selfplay.verifiers import Verdict


class Countdown(gym.Env):
    """Knows nothing of opd-selfplay: text in, text out. Ends after `turns` actions; reward 1
    when the last action contains the seed's digit."""

    def __init__(self, turns: int = 3) -> None:
        self.observation_space = spaces.Text(200)
        self.action_space = spaces.Text(200)
        self.turns = turns

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.left = self.turns
        self.digit = int(self.np_random.integers(0, 10))
        return f"count {self.left}", {}

    def step(self, action: str):
        self.left -= 1
        done = self.left == 0
        reward = float(done and str(self.digit) in action)
        return f"count {self.left}", reward, done, False, {}


class Scripted(gym.Env):
    """Replays given observations (text or message lists); grades with a Verdict."""

    def __init__(self, observations: Sequence[object], first: object = "start") -> None:
        self.observation_space = spaces.Text(10_000)
        self.action_space = spaces.Text(10_000)
        self.observations = list(observations)
        self.first = first

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.i = 0
        return self.first, {"privileged": f"seed {seed}"}

    def step(self, action: str):
        obs = self.observations[self.i] if self.i < len(self.observations) else "more"
        self.i += 1
        done = self.i > len(self.observations)
        verdict = Verdict(score=1.0 if done else 0.0, correct=done, feedback="ok" if done else "no")
        return obs, verdict.score, done, False, {"verdict": verdict, "privileged": f"step {self.i}"}


class Exploding(gym.Env):
    """Raises on step number `at` (0 = in reset)."""

    def __init__(self, at: int = 2) -> None:
        self.observation_space = spaces.Text(100)
        self.action_space = spaces.Text(100)
        self.at = at

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if self.at == 0:
            raise RuntimeError("boom in reset")
        self.n = 0
        return "go", {}

    def step(self, action: str):
        self.n += 1
        if self.n == self.at:
            raise RuntimeError("boom\nsecond line")
        return "again", 0.0, False, False, {}


class ScriptedPolicy:
    """Emits the given texts in turn (tokenized canonically, then the EOS when `eos`)."""

    def __init__(self, tokenizer, texts: Sequence[str], eos: bool = True) -> None:
        self._tokenizer = tokenizer
        self.texts = list(texts)
        self.eos = eos
        self.calls = 0

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, params: SamplingParams):
        text = self.texts[min(self.calls, len(self.texts) - 1)]
        self.calls += 1
        ids = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.eos:
            ids.append(self._tokenizer.eos_token_id)
        ids = ids[: params.max_new_tokens]
        finish = "stop" if self.eos and len(ids) <= params.max_new_tokens else "length"
        return [
            Sample(
                token_ids=tuple(ids),
                logprobs=tuple([-1.0] * len(ids)),
                text=self._tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason=finish,
            )
            for _ in prompts
        ]

    def score(self, sequences, temperature: float = 1.0):
        return [[0.0] * len(s) for s in sequences]
