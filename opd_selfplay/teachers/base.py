"""What every teacher shares: the signal it returns, the sequences it scores (with or
without privileged context), and the batched forward that picks the action rows.

The row order is fixed for every teacher: trajectory by trajectory, turn by turn, token by
token (the order of `action_rows` and `sampled_token_ids`).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from opd_selfplay.chunking import LinearHead, token_logprobs
from opd_selfplay.teachers.verified import best_verified
from opd_selfplay.types import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from opd_selfplay.rollout import RolloutEngine


class TeacherSignal:
    """What a teacher says about the N action tokens of a batch (rows in `action_rows` order).

    Args:
        logits_NV: full next-token logits at each action token (white-box).
        topk_ids_NK: ids of the teacher's k most likely tokens at each action token
            (grey-box).
        topk_logprobs_NK: their log-probs.
        logprobs_N: log-prob of the sampled action token itself (every teacher provides it;
            a white-box teacher that gives `head` and `sampled_ids_N` instead has it computed
            when first read).
        head: white-box without materialised logits: the final hidden states (N, H) at each
            action token and the teacher's lm_head, projected block by block by the loss
            (memory O(chunk × V) instead of O(N × V)).
        sampled_ids_N: the sampled tokens, for `logprobs_N` from `head`. A token-level loss
            never reads it: at a 151,936-token vocabulary that projection was 15% of a step.
            Read it before the head's weights change (in the step that scored it): a read
            after an in-place update (an optimizer step) raises instead of mixing the two.
    """

    def __init__(
        self,
        logits_NV: torch.Tensor | None = None,
        topk_ids_NK: torch.Tensor | None = None,
        topk_logprobs_NK: torch.Tensor | None = None,
        logprobs_N: torch.Tensor | None = None,
        head: LinearHead | None = None,
        sampled_ids_N: torch.Tensor | None = None,
    ) -> None:
        self.logits_NV = logits_NV
        self.topk_ids_NK = topk_ids_NK
        self.topk_logprobs_NK = topk_logprobs_NK
        self.head = head
        self.sampled_ids_N = sampled_ids_N
        self._logprobs_N = logprobs_N
        self._head_version = None if head is None else _version(head.weight)

    @property
    def logprobs_N(self) -> torch.Tensor | None:
        """Log-prob of the sampled action token itself (computed from `head` on first read)."""
        if self._logprobs_N is None and self.head is not None and self.sampled_ids_N is not None:
            if _version(self.head.weight) != self._head_version:
                raise RuntimeError(
                    "TeacherSignal.logprobs_N: the teacher's head changed in place since it "
                    "scored (an optimizer step?); read it in the step that made the signal"
                )
            with torch.no_grad():  # a live teacher's head is the student's own parameter
                self._logprobs_N = token_logprobs(self.head, self.sampled_ids_N)
        return self._logprobs_N

    @property
    def full(self) -> torch.Tensor | LinearHead | None:
        """The white-box distribution in whichever form the teacher gave (logits or head)."""
        return self.head if self.head is not None else self.logits_NV

    def logits(self) -> torch.Tensor:
        """The full logits (N, V), materialised if the teacher gave a head (small inputs)."""
        if self.logits_NV is not None:
            return self.logits_NV
        if self.head is None:
            raise ValueError("this teacher signal has no full distribution (grey/black-box)")
        return self.head.logits()


def _version(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter (None for inference tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def privileged_before(traj: Trajectory, turn: int) -> str:
    """The privileged context the environment had exposed before action `turn`: reset's for
    the first action, then the previous step's (which adds the feedback on that step)."""
    if turn == 0:
        return str(traj.info.get("privileged", "") or traj.privileged)
    prev = traj.turns[turn - 1].info.get("privileged")
    return str(prev) if prev is not None else traj.privileged


def sibling_hints(trajectories: Sequence[Trajectory]) -> dict[tuple[int, int | None], str]:
    """Per task group (group id, seed), the final answer of its best verified rollout, as a
    line of privileged context ("a successful sibling rollout from the same group")."""
    return {
        (t.group, t.seed): f"A verified answer from another attempt: {t.turns[-1].action_text}"
        for t in best_verified(trajectories).values()
    }


def teacher_sequences(
    engine: RolloutEngine,
    trajectories: Sequence[Trajectory],
    privileged: bool,
    hints: Mapping[tuple[int, int | None], str] | None = None,
    each_turn: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """The sequences a teacher must run, each with the positions of the action tokens in it.

    Without privileged context: one sequence per trajectory, its own tokens. With it:
    - default: still one sequence per trajectory — the first context re-rendered with the
      privileged information the env gave at reset, then the trajectory's own tokens (every
      later action, and the env's replies between them, unchanged). One teacher forward per
      episode, like a white-box teacher's;
    - `each_turn=True`: one sequence per turn, each re-rendered with the privileged context
      of that turn (`privileged_before`: the reset's, then the env's update after each step,
      e.g. feedback on the last attempt). Exact per-turn context, at about one more forward
      over the conversation per turn (measured 1.22× a white-box step on two-turn Arithmetic,
      against 0.97× for one sequence per episode).
    `hints` (from `sibling_hints`) add a line per task group to the privileged context.

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
        extra = (hints or {}).get((traj.group, traj.seed), "")

        def note(k: int, traj: Trajectory = traj, extra: str = extra) -> str:
            text = privileged_before(traj, k)
            return f"{text}\n{extra}" if text and extra else text or extra

        if not each_turn:
            ids, positions = [], []
            for k, turn in enumerate(traj.turns):
                ids.extend(
                    engine.turn_context_ids(traj, 0, note(0)) if k == 0 else turn.context_ids
                )
                positions.extend(range(len(ids), len(ids) + len(turn.action_ids)))
                ids.extend(turn.action_ids)
            if positions:
                out.append((ids, positions))
            continue
        for k, turn in enumerate(traj.turns):
            if not turn.action_ids:
                continue
            context = engine.turn_context_ids(traj, k, note(k))
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
    return _rows(model, sequences, pad_id, bucket, hidden=False)


def action_head(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    bucket: int = 32,
) -> LinearHead:
    """Like `action_rows`, but the final hidden states (N, H) (after the last norm) with the
    model's lm_head instead of the logits: the head is applied later, block by block
    (`chunking.LinearHead`), so no (positions × vocabulary) tensor is ever built — neither
    over the context positions nor over the action rows."""
    head = unwrap(model).get_output_embeddings()
    hidden = _rows(model, sequences, pad_id, bucket, hidden=True)
    return LinearHead(hidden, head.weight, getattr(head, "bias", None))


def _rows(
    model: torch.nn.Module,
    sequences: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    bucket: int,
    hidden: bool,
) -> torch.Tensor:
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
        kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if hidden:
            # The head runs on the last position only; the rows come from the hidden states.
            if _keeps_logits(model):
                kwargs["logits_to_keep"] = 1
            full = model(**kwargs, use_cache=False, output_hidden_states=True).hidden_states[-1]
        else:
            full = model(**kwargs, use_cache=False).logits
        picked = full[
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


def _keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' causal LMs do)."""
    base = unwrap(model)
    base = getattr(base, "get_base_model", lambda: base)()  # PEFT
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(unwrap(model))
    clone.eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
