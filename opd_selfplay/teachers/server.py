"""`ServerTeacher` (grey-box): the top-k log-probs of an OpenAI-compatible server (`opd
serve`, vLLM) or of any policy with `top_logprobs`, for top-k estimators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from opd_selfplay.teachers.base import TeacherSignal, teacher_sequences
from opd_selfplay.types import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from opd_selfplay.rollout import RolloutEngine


class ServerTeacher:
    """Grey-box: the top-k log-probs a server (or any policy with `top_logprobs`) returns.

    Args:
        policy: `OpenAIPolicy` (or `HFPolicy`) of the teacher; same tokenizer as the student.
        engine: the student's rollout engine.
        k: alternatives per position.
        privileged: re-render the context with the privileged information.
    """

    def __init__(
        self, policy, engine: RolloutEngine, k: int = 20, privileged: bool = False
    ) -> None:
        self.policy = policy
        self.engine = engine
        self.k = k
        self.privileged = privileged

    @property
    def name(self) -> str:
        return f"grey-box top-{self.k}"

    def score(self, trajectories: Sequence[Trajectory]) -> TeacherSignal:
        sequences = teacher_sequences(self.engine, trajectories, self.privileged)
        top = self.policy.top_logprobs([s for s, _ in sequences], self.k)
        scored = self.policy.score([s for s, _ in sequences])
        ids_rows, lp_rows, own = [], [], []
        for (_seq, positions), (ids, lps), row in zip(sequences, top, scored):
            for p in positions:
                ids_rows.append(ids[p - 1])
                lp_rows.append(lps[p - 1])
                own.append(row[p])
        return TeacherSignal(
            topk_ids_NK=torch.as_tensor(ids_rows, dtype=torch.long),
            topk_logprobs_NK=torch.as_tensor(lp_rows, dtype=torch.float32),
            logprobs_N=torch.as_tensor(own, dtype=torch.float32),
        )

    def after_step(self, student: torch.nn.Module, step: int) -> None:
        """A server teacher does not follow the student."""

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        pass
