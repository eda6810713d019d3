"""The previous iterate as a self-play opponent (SPIN, Chen et al. 2024).

The opponent is a frozen copy of the student taken every `refresh_every` steps (one SPIN
iteration). It plays the step's episodes (its samples are the "generated" responses y'), and
the environment's oracle answers for the same tasks are the "real" responses y. The student
is trained to tell them apart relative to the opponent (`objectives.spin_loss`): raise
log π(y)/π_old(y), lower log π(y')/π_old(y'). When the student matches the real data the
opponent's samples look like it and the loss reaches its fixed point.

Departures: the real data are the env's oracle demonstrations (`oracle_action()`), played
through the same rendering as every rollout, instead of an SFT dataset; an env without an
oracle is refused. The opponent is refreshed on a step schedule rather than after a full
pass over a dataset. By default the trainer adds a cross-entropy term on the real answers
(`objective.spin_nll`, as iterative RPO does for DPO): pure SPIN collapsed in our grid cell
(0.32 → 0.04 held-out success; the log-likelihood of the real answers fell along with the
generated ones' and the student rambled to the length limit), the anchored loss reached 0.98.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from opd_selfplay.chunking import token_logprobs
from opd_selfplay.errors import InputError
from opd_selfplay.teachers.base import action_head, frozen_copy, unwrap
from opd_selfplay.types import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from opd_selfplay.rollout import RolloutEngine


class SpinOpponent:
    """A frozen previous iterate that generates the opponent's samples and is SPIN's
    reference model.

    Args:
        student: the student model (copied).
        engine: the student's rollout engine (tokenizer, rendering, limits).
        env: the env id whose `oracle_action()` gives the real responses.
        env_kwargs: its keyword arguments.
        refresh_every: copy the student into the opponent every K steps (0 = never).
    """

    def __init__(
        self,
        student: torch.nn.Module,
        engine: RolloutEngine,
        env: str,
        env_kwargs: Mapping[str, object] | None = None,
        refresh_every: int = 0,
    ) -> None:
        from opd_selfplay.agents.hf import HFPolicy

        self.model = frozen_copy(student)
        self.engine = engine
        self.env = env
        self.env_kwargs = dict(env_kwargs or {})
        self.refresh_every = refresh_every
        self.policy = HFPolicy(self.model, engine.tokenizer)
        self.pad_id = int(engine.tokenizer.pad_token_id or 0)

    @property
    def name(self) -> str:
        return "spin opponent (previous iterate)"

    def targets(self, trajectories: Sequence[Trajectory]) -> list[tuple[list[int], list[int]]]:
        """The real response for each generated trajectory's task (same env seed), as
        `(token_ids, action_positions)`, one per trajectory in order."""

        def oracle(env_obj, turn: int) -> str:
            answer = env_obj.oracle_action() if hasattr(env_obj, "oracle_action") else None
            if answer is None:
                raise InputError(
                    f"teacher.kind=spin_opponent needs an env with oracle_action(); "
                    f"{self.env} has none (use verified_self instead)"
                )
            return answer

        seeds = [int(t.seed or 0) for t in trajectories]
        demos = self.engine.demonstrate(self.env, seeds, oracle, self.env_kwargs)
        return [(list(d.token_ids), [i for i, m in enumerate(d.action_mask) if m]) for d in demos]

    @torch.no_grad()
    def sequence_logprobs(
        self, sequences: Sequence[tuple[list[int], list[int]]], temperature: float = 1.0
    ) -> torch.Tensor:
        """log π_old(y | x) of each sequence's action tokens, shape (len(sequences),)."""
        head = action_head(self.model, sequences, self.pad_id)
        ids = [seq[p] for seq, ps in sequences for p in ps]
        logp = token_logprobs(head, torch.as_tensor(ids, device=head.hidden.device), temperature)
        return sum_per_sequence(logp, sequences)

    @torch.no_grad()
    def after_step(self, student: torch.nn.Module, step: int) -> None:
        """Start the next SPIN iteration every `refresh_every` steps."""
        if self.refresh_every and step % self.refresh_every == 0:
            self.model.load_state_dict(unwrap(student).state_dict())

    def state_dict(self) -> dict[str, object]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "model" in state:
            self.model.load_state_dict(state["model"])  # type: ignore[arg-type]


def sum_per_sequence(
    logprobs_N: torch.Tensor, sequences: Sequence[tuple[list[int], list[int]]]
) -> torch.Tensor:
    """Σ of each sequence's action-token log-probs (rows in sequence order; grad flows)."""
    owner = torch.as_tensor(
        [i for i, (_, positions) in enumerate(sequences) for _ in positions],
        device=logprobs_N.device,
    )
    out = torch.zeros(len(sequences), device=logprobs_N.device, dtype=logprobs_N.dtype)
    return out.index_add(0, owner, logprobs_N)
