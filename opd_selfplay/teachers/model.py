"""`ModelTeacher`: a local model that scores the student's action tokens with full logits
(white-box), following the student or not (fixed, snapshot, EMA, live), with or without the
environment's privileged context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch

from opd_selfplay.teachers.base import (
    TeacherSignal,
    action_head,
    frozen_copy,
    sampled_token_ids,
    sibling_hints,
    teacher_sequences,
    unwrap,
)
from opd_selfplay.types import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from opd_selfplay.rollout import RolloutEngine

Update = Literal["fixed", "snapshot", "ema", "live"]


class ModelTeacher:
    """A local model that scores the student's action tokens (white-box).

    Args:
        model: the teacher model, or the student itself for `snapshot`/`ema`/`live`
            (copied for `snapshot` and `ema`).
        engine: the student's rollout engine (renders privileged contexts).
        update: how the teacher follows the student (see the module docstring).
        privileged: score with the environment's privileged context in the system message.
        refresh_every: for `snapshot`, copy the student again every K steps (0 = never).
        ema_decay: for `ema`, the weight of the old teacher in each update.
        student_vocab: the student's vocabulary size, checked against the teacher's.
        sibling: with `privileged`, also show the final answer of the best verified rollout
            of the same task group (SDPO-style); call `prepare` with the step's episodes.
        each_turn: with `privileged`, re-render every turn with that turn's privileged
            context (see `teacher_sequences`) instead of one sequence per episode.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        engine: RolloutEngine,
        update: Update = "fixed",
        privileged: bool = False,
        refresh_every: int = 0,
        ema_decay: float = 0.99,
        student_vocab: int | None = None,
        sibling: bool = False,
        each_turn: bool = False,
    ) -> None:
        if update not in ("fixed", "snapshot", "ema", "live"):
            raise ValueError(f"teacher update must be fixed, snapshot, ema or live; got {update!r}")
        self.update = update
        self.engine = engine
        self.privileged = privileged
        self.refresh_every = refresh_every
        self.ema_decay = ema_decay
        self.model = model if update in ("fixed", "live") else frozen_copy(model)
        teacher_vocab = self.model.get_output_embeddings().weight.shape[0]
        if student_vocab is not None and teacher_vocab != student_vocab:
            raise ValueError(
                f"teacher vocabulary has {teacher_vocab} tokens but the student's has {student_vocab}; "
                "white-box distillation needs the same tokenizer"
            )
        self.pad_id = int(engine.tokenizer.pad_token_id or 0)
        self.sibling = sibling and privileged
        self.each_turn = each_turn
        self.hints: dict[tuple[int, int | None], str] = {}

    @property
    def name(self) -> str:
        sibling = " + sibling" if self.sibling else ""
        return f"{'privileged ' if self.privileged else ''}{self.update}{sibling}"

    def prepare(self, trajectories: Sequence[Trajectory]) -> None:
        """See the whole step's episodes before scoring them in micro-batches (the sibling
        hint of a group needs all its members)."""
        self.hints = sibling_hints(trajectories) if self.sibling else {}

    @torch.no_grad()
    def score(self, trajectories: Sequence[Trajectory]) -> TeacherSignal:
        """The full distribution (hidden states + head, projected lazily) and the sampled
        tokens, whose log-probs are projected only if the objective reads them."""
        sequences = teacher_sequences(
            self.engine, trajectories, self.privileged, self.hints, self.each_turn
        )
        was_training = self.model.training
        self.model.eval()
        try:
            head = action_head(self.model, sequences, self.pad_id)
        finally:
            self.model.train(was_training)
        ids = sampled_token_ids(trajectories).to(head.hidden.device)
        return TeacherSignal(head=head, sampled_ids_N=ids)

    @torch.no_grad()
    def after_step(self, student: torch.nn.Module, step: int) -> None:
        """Follow the student after optimizer step `step` (1-based)."""
        if self.update == "snapshot" and self.refresh_every and step % self.refresh_every == 0:
            self.model.load_state_dict(unwrap(student).state_dict())
        elif self.update == "ema":
            for t, s in zip(self.model.parameters(), unwrap(student).parameters()):
                t.lerp_(s.detach(), 1.0 - self.ema_decay)

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint must hold to resume (the copy, for snapshot and EMA teachers)."""
        if self.update in ("snapshot", "ema"):
            return {"model": self.model.state_dict()}
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "model" in state:
            self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
