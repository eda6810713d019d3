"""The step's objective on the trainer's side: from a step's trajectories and the teacher's
answer to the backward passes of the configured loss.

Three shapes of teacher, three paths (all normalised over the global batch, micro-batched):
- teachers that score the student's own tokens (white-box logits, grey-box top-k) and the
  outcome/hybrid terms: `_own_tokens_backward` → `_loss`, which composes
  `opd_selfplay.objectives` per `objective.kind`;
- teachers that write target text (black-box imitate, verified self): `_imitation_backward`,
  cross-entropy on the targets (`objectives.imitation_loss`);
- the SPIN opponent: `_spin_backward`, real against generated sequences
  (`objectives.spin_loss`).

`StepObjective` is a mixin of `Trainer`: it reads `config`, `train_model`, `policy`,
`teacher`, `reference`, `world` and `judge_metrics` from it, and holds no state of its own.
"""

from __future__ import annotations

import torch

from opd_selfplay.chunking import LinearHead, token_logprobs
from opd_selfplay.divergences import get_divergence
from opd_selfplay.objectives import (
    imitation_loss,
    outcome_loss,
    sequence_level_loss,
    spin_loss,
    token_level_loss,
    token_level_topk_loss,
)
from opd_selfplay.teachers import (
    CrossTokenizerTeacher,
    ModelTeacher,
    ServerTeacher,
    SpinOpponent,
    TeacherSignal,
    TextTeacher,
    VerifiedSelfTeacher,
    sampled_token_ids,
)
from opd_selfplay.teachers.base import action_head
from opd_selfplay.teachers.spin import sum_per_sequence
from opd_selfplay.types import Trajectory

Teacher = (
    ModelTeacher
    | ServerTeacher
    | CrossTokenizerTeacher
    | TextTeacher
    | VerifiedSelfTeacher
    | SpinOpponent
)
SCORERS = (ModelTeacher, ServerTeacher, CrossTokenizerTeacher)
"""Teachers that score the student's own tokens (`score` → `TeacherSignal`)."""


def all_reduce_sum(value: float) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item())


class StepObjective:
    """Backward passes of the configured objective (mixed into `Trainer`)."""

    def _reads_own_tokens(self, has_advantages: bool) -> bool:
        """Whether a term of the objective is computed on the student's sampled tokens."""
        return isinstance(self.teacher, SCORERS) or has_advantages or self.reference is not None

    def _own_tokens_backward(
        self,
        trajs: list[Trajectory],
        advantages: torch.Tensor | None,
        n_local: int,
        n_global: float,
    ) -> dict[str, float]:
        """Backward of the terms on the student's own tokens, micro-batch by micro-batch;
        returns their diagnostics averaged over this rank's action tokens."""
        mb = self.config.optim.micro_batch
        scorer = self.teacher if isinstance(self.teacher, SCORERS) else None
        sums: dict[str, float] = {}
        for start in range(0, len(trajs), mb):
            chunk = trajs[start : start + mb]
            if not any(t.num_action_tokens for t in chunk):
                continue
            signal = scorer.score(chunk) if scorer is not None else None
            adv = None if advantages is None else advantages[start : start + mb]
            loss, diag = self._loss(chunk, signal, adv, max(n_global, 1.0))
            (loss * self.world).backward()
            for k, v in diag.items():
                sums[k] = sums.get(k, 0.0) + float(v) * sum(t.num_action_tokens for t in chunk)
        out = {k: v / max(n_local, 1) for k, v in sums.items()}
        out.update(getattr(scorer, "diagnostics", None) or {})  # the last micro-batch's
        return out

    def _rewards(self, trajs: list[Trajectory]) -> torch.Tensor:
        """The rewards behind outcome advantages: the env's, or mixed with a judge's."""
        env = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
        if not (isinstance(self.teacher, TextTeacher) and self.teacher.mode == "judge"):
            return env
        if self.config.objective.kind not in ("outcome", "hybrid"):
            return env
        w = self.config.teacher.judge_weight
        unparsed = self.teacher.unparsed
        judged = torch.tensor(self.teacher.rewards(trajs), dtype=torch.float32)
        self.judge_metrics = {
            "judge/score": float(judged.mean()) if len(judged) else 0.0,
            "judge/unparsed": float(self.teacher.unparsed - unparsed),
        }
        return (1 - w) * env + w * judged

    def _targets(self, trajs: list[Trajectory]) -> list[tuple[list[int], list[int]]] | None:
        """Target sequences of the teachers that write them (None for the others)."""
        t = self.teacher
        if isinstance(t, TextTeacher) and t.mode == "imitate":
            return t.targets(trajs)
        if isinstance(t, VerifiedSelfTeacher | SpinOpponent):
            return t.targets(trajs)
        return None

    def _imitation_backward(
        self, targets: list[tuple[list[int], list[int]]], n_batch_global: float
    ) -> dict[str, float]:
        """Cross-entropy on target text (black-box answers, verified siblings).

        Normalised by the step's action tokens `n_batch_global`, or by the target tokens when
        there are more: episodes without a target contribute zero, so a step with few
        verified winners moves the weights little (rejection-sampling fine-tuning read as
        REINFORCE with a 0/1 reward), while a teacher that answers every turn gets the plain
        token mean. (Measured: dividing by the target tokens alone made a step with 3 winners
        as large as one with 30, and verified self lost 13 points before recovering.)
        """
        o = self.config.objective
        n_local = sum(len(p) for _, p in targets)
        n_targets = all_reduce_sum(float(n_local))
        out = {"targets": float(len(targets)), "target_tokens": float(n_local)}
        if not n_targets:
            return out
        n_global = max(n_targets, n_batch_global)
        mb, nll = self.config.optim.micro_batch, 0.0
        for start in range(0, len(targets), mb):
            chunk = targets[start : start + mb]
            logp = self._target_logprobs(chunk)
            loss, _ = imitation_loss(logp[None], torch.ones_like(logp)[None], n_global)
            (o.kd_weight * loss * self.world).backward()
            nll -= float(logp.detach().sum())
        out["imitate/nll"] = nll / max(n_local, 1)
        out["imitate/loss"] = o.kd_weight * nll / n_global
        return out

    def _spin_backward(
        self, generated: list[Trajectory], real: list[tuple[list[int], list[int]]]
    ) -> dict[str, float]:
        """SPIN: real (oracle) against generated (previous iterate) sequences, pairwise."""
        assert isinstance(self.teacher, SpinOpponent)
        pairs = [
            (r, (list(g.token_ids), [i for i, m in enumerate(g.action_mask) if m]))
            for r, g in zip(real, generated, strict=True)
            if g.num_action_tokens and r[1]
        ]
        n_global = all_reduce_sum(float(len(pairs)))
        n_real = all_reduce_sum(float(sum(len(r[1]) for r, _ in pairs)))
        o = self.config.objective
        sums: dict[str, float] = {}
        if not n_global:
            return {"spin/pairs": 0.0}
        mb = max(1, self.config.optim.micro_batch // 2)
        for start in range(0, len(pairs), mb):
            chunk = pairs[start : start + mb]
            seqs = [r for r, _ in chunk] + [g for _, g in chunk]
            student = self._target_logprobs(seqs, per_sequence=True)
            temperature = self.config.rollout.temperature or 1.0
            ref = self.teacher.sequence_logprobs(seqs, temperature).to(student.device)
            k = len(chunk)
            loss, diag = spin_loss(
                student[:k],
                student[k:],
                ref[:k],
                ref[k:],
                beta=o.spin_beta,
                num_pairs_global=int(n_global),
            )
            if o.spin_nll:
                # RPO-style anchor: cross-entropy on the real answers, per real token.
                nll = -student[:k].sum() / max(n_real, 1.0)
                loss = loss + o.spin_nll * nll
                diag["nll"] = nll.detach() * n_real / max(sum(len(r[1]) for r, _ in chunk), 1)
            (loss * self.world).backward()
            diag["loss"] = loss.detach() * n_global / k
            for key, v in diag.items():
                sums[f"spin/{key}"] = sums.get(f"spin/{key}", 0.0) + float(v) * k
        out = {key: v / len(pairs) for key, v in sums.items()}
        out["spin/pairs"] = float(len(pairs))
        return out

    def _student_head(self, sequences: list[tuple[list[int], list[int]]]) -> LinearHead:
        """The student's final hidden states at the action rows of `sequences` (with grad)
        and its lm_head: logits are projected block by block by whoever consumes them."""
        # One forward under DDP (its reducer expects one forward per backward); buckets otherwise.
        bucket = len(sequences) if self.world > 1 else 32
        return action_head(self.train_model, sequences, self.policy.pad_token_id, bucket)

    def _target_logprobs(
        self, sequences: list[tuple[list[int], list[int]]], per_sequence: bool = False
    ) -> torch.Tensor:
        """The student's log-probs (with grad) of the target positions of `sequences`:
        one row per target token, or their sum per sequence."""
        temperature = self.config.rollout.temperature or 1.0
        head = self._student_head(sequences)
        ids = [seq[p] for seq, ps in sequences for p in ps]
        logp = token_logprobs(head, torch.as_tensor(ids, device=head.hidden.device), temperature)
        return sum_per_sequence(logp, sequences) if per_sequence else logp

    def _loss(
        self,
        trajs: list[Trajectory],
        signal: TeacherSignal | None,
        adv: torch.Tensor | None,
        n_global: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The configured objective on a micro-batch (rows = action tokens in order).

        The student's logits are never materialised on the white-box path: the loss takes
        hidden states and the lm_head (`chunking.LinearHead`), block by block; only the
        grey-box top-k loss projects all rows at once.
        """
        o = self.config.objective
        temperature = self.config.rollout.temperature or 1.0
        seqs = [(list(t.token_ids), [i for i, m in enumerate(t.action_mask) if m]) for t in trajs]
        head = self._student_head(seqs)
        device = head.hidden.device
        n = head.hidden.shape[0]
        student = LinearHead(head.hidden[None], head.weight, head.bias)
        ids = sampled_token_ids(trajs).to(device)
        counts = [t.num_action_tokens for t in trajs]
        ones = torch.ones((1, n), device=device)
        diag: dict[str, torch.Tensor] = {}
        loss = head.hidden.new_zeros((), dtype=torch.float32)
        # Pass the config's mixture weights only to divergences that declare them.
        accepted = get_divergence(o.divergence).defaults
        params = {k: v for k, v in (("beta", o.beta), ("alpha", o.alpha)) if k in accepted}
        full = None if signal is None else signal.full
        if o.kind in ("token", "hybrid") and full is not None:
            teacher = _batched(full, device)
            kd, d = token_level_loss(
                student,
                teacher,
                ones,
                n_global,
                divergence=o.divergence,
                temperature=temperature,
                **params,
            )
            loss = loss + o.kd_weight * kd
            diag.update({f"kd/{k}": v for k, v in d.items()})
            diag["kl"] = d["forward_kl"]  # exact, from the loss's own blocks
        needs_logp = o.kind in ("sequence", "outcome", "hybrid") or (
            signal is not None and signal.topk_ids_NK is not None
        )
        if not needs_logp and self.reference is None:
            diag["loss"] = loss.detach() * n_global / max(sum(counts), 1)
            return loss, diag
        logp = token_logprobs(head, ids, temperature)
        sampler = torch.tensor([x for t in trajs for x in _action_logprobs(t)], device=device)
        lp_BT, mask_BT = _pack(logp, counts)
        old_BT, _ = _pack(sampler, counts)
        if o.kind in ("token", "hybrid") and signal is not None and signal.topk_ids_NK is not None:
            kd, d = token_level_topk_loss(
                head.logits()[None],
                signal.topk_logprobs_NK[None].to(device),
                signal.topk_ids_NK[None].to(device),
                ones,
                n_global,
                divergence=o.divergence,
                **params,
            )
            loss = loss + o.kd_weight * kd
            diag.update({f"kd/{k}": v for k, v in d.items()})
            diag["kl"] = (logp.detach() - signal.logprobs_N.to(device)).mean()  # type: ignore[union-attr]
        if o.kind == "sequence" and signal is not None:
            teacher_BT, _ = _pack(signal.logprobs_N.to(device), counts)  # type: ignore[union-attr]
            seq, d = sequence_level_loss(
                lp_BT,
                teacher_BT,
                mask_BT,
                n_global,
                sampler_logprobs_BT=old_BT,
                clip_low=o.clip_eps,
                clip_high=o.clip_eps,
            )
            loss = loss + o.kd_weight * seq
            diag.update({f"seq/{k}": v for k, v in d.items()})
            diag["kl"] = (logp.detach() - signal.logprobs_N.to(device)).mean()  # type: ignore[union-attr]
        if o.kind in ("outcome", "hybrid") and adv is not None:
            out, d = outcome_loss(
                lp_BT,
                adv.to(device),
                mask_BT,
                n_global,
                sampler_logprobs_BT=old_BT,
                clip_low=o.clip_eps,
                clip_high=o.clip_eps,
            )
            loss = loss + o.outcome_weight * out
            diag.update({f"pg/{k}": v for k, v in d.items()})
        if self.reference is not None:
            ref = self.reference.score(trajs)
            rkl, _ = token_level_loss(
                student,
                _batched(ref.full, device),  # type: ignore[arg-type]
                ones,
                n_global,
                divergence="reverse_kl",
                temperature=temperature,
                with_entropy=False,
            )
            loss = loss + o.ref_kl * rkl
            diag["ref_kl"] = rkl.detach() * n_global / max(sum(counts), 1)
        diag["loss"] = loss.detach() * n_global / max(sum(counts), 1)
        return loss, diag

    # -- checkpoints --------------------------------------------------------------------------


def _action_logprobs(traj: Trajectory) -> list[float]:
    return [x for t in traj.turns for x in t.action_logprobs]


def _pack(values_N: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows in trajectory order → (values_BT, mask_BT) with each trajectory's action tokens
    left-aligned (context tokens carry no loss, so they need no slot)."""
    width = max(counts)
    out = values_N.new_zeros((len(counts), width))
    mask = torch.zeros((len(counts), width), device=values_N.device)
    rows = torch.repeat_interleave(
        torch.arange(len(counts), device=values_N.device),
        torch.tensor(counts, device=values_N.device),
    )
    cols = torch.cat([torch.arange(c, device=values_N.device) for c in counts])
    out = out.index_put((rows, cols), values_N)
    mask[rows, cols] = 1.0
    return out, mask


def _batched(full: torch.Tensor | LinearHead, device: torch.device) -> torch.Tensor | LinearHead:
    """A teacher's (N, ·) distribution with a leading batch axis of 1, on `device`."""
    if isinstance(full, LinearHead):
        bias = None if full.bias is None else full.bias.to(device)
        return LinearHead(full.hidden[None].to(device), full.weight.to(device), bias)
    return full[None].to(device)
