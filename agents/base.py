"""The policy protocol: what the rollout engine and the teachers need from a model.

A policy samples continuations of token sequences and scores token sequences. It carries the
Hugging Face tokenizer whose chat template the rollout engine renders (policies never render
conversations themselves: that is the engine's job, so token bookkeeping lives in one place).

Backends: `HFPolicy` (transformers, CPU/GPU), `OpenAIPolicy` (any OpenAI-compatible server,
including `opd serve`), `VLLMPolicy` (in-process vLLM, GPU). This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one batch of continuations."""

    max_new_tokens: int = 64
    """Upper bound on generated tokens per sequence."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1 disables it."""
    stop: tuple[str, ...] = ()
    """Strings that end a sequence once its generated text contains one (the token that
    completes the string is kept, so the tokens always decode to the returned text)."""
    seed: int | None = None
    """Seed of this call's random generator; None draws from the global RNG."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Sample:
    """One sampled continuation."""

    token_ids: tuple[int, ...]
    """The generated tokens, exactly as sampled (EOS included when the policy emitted it)."""
    logprobs: tuple[float, ...]
    """Log-prob of each token under the sampling distribution: log softmax(logits / T) (for
    greedy decoding, T = 1). Top-p truncation is not folded in."""
    text: str
    """`token_ids` decoded with special tokens skipped."""
    finish_reason: FinishReason
    """`stop` (EOS or a stop string) or `length` (max new tokens)."""


@runtime_checkable
class Policy(Protocol):
    """What every backend provides."""

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer whose chat template and vocabulary the policy uses."""
        ...

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]:
        """Sample one continuation per prompt (token ids), batched.

        Args:
            prompts: context token ids, one sequence per row.
            params: sampling settings shared by the batch.
        Returns:
            One `Sample` per prompt, in order.
        """
        ...

    def score(
        self, sequences: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Log-prob of every token given its prefix, log softmax(logits / T).

        Returns:
            Per sequence, a list of the same length; position 0 (no prefix) is 0.0.
        """
        ...
