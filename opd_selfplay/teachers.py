"""Teacher sources: who scores the student's own action tokens, and with what context.

Every teacher gets the student's trajectories and returns a `TeacherSignal` for the action
tokens, in one fixed order (trajectory by trajectory, turn by turn, token by token: the
order of `action_rows`). Each action token is scored in its full conversation context, so
multi-turn trajectories are handled like single-turn ones.

Sources (survey axis "teacher access"; arXiv 2604.00626):
- `ModelTeacher`, white-box (full logits):
  - `update="fixed"`: another local model with the same tokenizer (a different vocabulary
    raises a clear error naming both sizes);
  - `update="snapshot"`: a frozen copy of the student, refreshed every K steps (K = 0: never);
  - `update="ema"`: an exponential moving average of the student;
  - `update="live"`: the student's own current weights (no copy);
  - `privileged=True` on any of them: the context is re-rendered with the environment's
    privileged information (reference answer, verifier feedback) in the system message, and
    the *same* action tokens are scored (OPSD/SDFT/SDPO-style privileged self-distillation).
    The notes on the teacher-free demo found that a *live* privileged self collapses (moving
    the student moves the teacher); a frozen snapshot is stable, so that is the default.
- `ServerTeacher`, grey-box: top-k log-probs from an OpenAI-compatible server (`opd serve`,
  vLLM) or any policy with `top_logprobs`; used with a top-k estimator.

Teacher scoring is forward-only (no gradient), batched over all sequences of a step.

Not covered yet: black-box (text-only) teachers and cross-tokenizer alignment; a teacher
with another vocabulary is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from opd_selfplay.types import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from opd_selfplay.rollout import RolloutEngine

Update = Literal["fixed", "snapshot", "ema", "live"]


@dataclass
class TeacherSignal:
    """What a teacher says about the N action tokens of a batch (rows in `action_rows` order)."""

    logits_NV: torch.Tensor | None = None
    """Full next-token logits at each action token (white-box)."""
    topk_ids_NK: torch.Tensor | None = None
    """Ids of the teacher's k most likely tokens at each action token (grey-box)."""
    topk_logprobs_NK: torch.Tensor | None = None
    """Their log-probs."""
    logprobs_N: torch.Tensor | None = None
    """Log-prob of the sampled action token itself (every teacher provides it)."""


def privileged_before(traj: Trajectory, turn: int) -> str:
    """The privileged context the environment had exposed before action `turn`: reset's for
    the first action, then the previous step's (which adds the feedback on that step)."""
    if turn == 0:
        return str(traj.info.get("privileged", "") or traj.privileged)
    prev = traj.turns[turn - 1].info.get("privileged")
    return str(prev) if prev is not None else traj.privileged


def teacher_sequences(
    engine: RolloutEngine, trajectories: Sequence[Trajectory], privileged: bool
) -> list[tuple[list[int], list[int]]]:
    """The sequences a teacher must run, each with the positions of the action tokens in it.

    Without privileged context, one sequence per trajectory (its own tokens). With it, one
    sequence per turn: the re-rendered context, then that turn's action tokens unchanged.

    Returns:
        `(token_ids, action_positions)` pairs, whose positions, concatenated, follow the
        order of `action_rows`.
    """
    out: list[tuple[list[int], list[int]]] = []
    for traj in trajectories:
        if not privileged:
            ids = list(traj.token_ids)
            out.append((ids, [i for i, m in enumerate(traj.action_mask) if m]))
            continue
        for k, turn in enumerate(traj.turns):
            if not turn.action_ids:
                continue
            context = engine.turn_context_ids(traj, k, privileged_before(traj, k))
            ids = context + list(turn.action_ids)
            out.append((ids, list(range(len(context), len(ids)))))
    return out


def action_rows(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    bucket: int = 32,
) -> torch.Tensor:
    """Logits predicting each action token (row i: the logits at position p − 1 for the i-th
    action position p), in sequence order, for right-padded sequences.

    Sequences are run in buckets of `bucket` sequences of similar length (sorted by length),
    so that a few long multi-turn sequences do not pad every row of the batch. Gradients flow
    when the caller has them enabled (the student's training forward uses this).
    """
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    pieces: dict[int, torch.Tensor] = {}
    for start in range(0, len(order), bucket):
        members = order[start : start + bucket]
        width = max(len(sequences[i][0]) for i in members)
        ids = torch.full((len(members), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(members), width), dtype=torch.long)
        rows_b, rows_t = [], []
        for b, i in enumerate(members):
            seq, positions = sequences[i]
            ids[b, : len(seq)] = torch.as_tensor(seq)
            mask[b, : len(seq)] = 1
            rows_b.extend([b] * len(positions))
            rows_t.extend(p - 1 for p in positions)
        logits = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
        ).logits
        picked = logits[
            torch.as_tensor(rows_b, device=device), torch.as_tensor(rows_t, device=device)
        ]
        offset = 0
        for i in members:
            n = len(sequences[i][1])
            pieces[i] = picked[offset : offset + n]
            offset += n
    return torch.cat([pieces[i] for i in range(len(sequences))], dim=0)


def sampled_token_ids(trajectories: Sequence[Trajectory]) -> torch.Tensor:
    """The action token ids, in `action_rows` order."""
    return torch.as_tensor(
        [t for traj in trajectories for turn in traj.turns for t in turn.action_ids],
        dtype=torch.long,
    )


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
    ) -> None:
        if update not in ("fixed", "snapshot", "ema", "live"):
            raise ValueError(f"teacher update must be fixed, snapshot, ema or live; got {update!r}")
        self.update = update
        self.engine = engine
        self.privileged = privileged
        self.refresh_every = refresh_every
        self.ema_decay = ema_decay
        self.model = model if update in ("fixed", "live") else _frozen_copy(model)
        teacher_vocab = self.model.get_output_embeddings().weight.shape[0]
        if student_vocab is not None and teacher_vocab != student_vocab:
            raise ValueError(
                f"teacher vocabulary has {teacher_vocab} tokens but the student's has {student_vocab}; "
                "white-box distillation needs the same tokenizer"
            )
        self.pad_id = int(engine.tokenizer.pad_token_id or 0)

    @property
    def name(self) -> str:
        return f"{'privileged ' if self.privileged else ''}{self.update}"

    @torch.no_grad()
    def score(self, trajectories: Sequence[Trajectory]) -> TeacherSignal:
        """Full logits and the sampled tokens' log-probs at every action token."""
        sequences = teacher_sequences(self.engine, trajectories, self.privileged)
        was_training = self.model.training
        self.model.eval()
        try:
            logits = action_rows(self.model, sequences, self.pad_id).float()
        finally:
            self.model.train(was_training)
        ids = sampled_token_ids(trajectories).to(logits.device)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, None]).squeeze(-1)
        return TeacherSignal(logits_NV=logits, logprobs_N=logprobs)

    @torch.no_grad()
    def after_step(self, student: torch.nn.Module, step: int) -> None:
        """Follow the student after optimizer step `step` (1-based)."""
        if self.update == "snapshot" and self.refresh_every and step % self.refresh_every == 0:
            self.model.load_state_dict(_unwrap(student).state_dict())
        elif self.update == "ema":
            for t, s in zip(self.model.parameters(), _unwrap(student).parameters()):
                t.lerp_(s.detach(), 1.0 - self.ema_decay)

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint must hold to resume (the copy, for snapshot and EMA teachers)."""
        if self.update in ("snapshot", "ema"):
            return {"model": self.model.state_dict()}
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "model" in state:
            self.model.load_state_dict(state["model"])  # type: ignore[arg-type]


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


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(_unwrap(model))
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
