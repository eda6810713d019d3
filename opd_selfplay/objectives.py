"""Training objectives of on-policy distillation, as pure functions of tensors.

No I/O, no model, no config object: each takes the tensors of a micro-batch of trajectories
the student sampled (shape suffixes: B sequences, T positions, V vocabulary, K top-k) and
returns `(loss, diagnostics)`, where diagnostics are 0-dim tensors without gradient (call
`.item()` when logging). A teacher source only has to deliver tensors: full logits (or hidden
states + lm_head) for white-box teachers, top-k log-probs + ids for grey-box ones, the
sampled tokens' log-probs for black-box ones.

Normalisation. Token-averaged losses divide by `num_tokens_global`, the number of action
tokens in the *global* batch (all micro-batches of the optimizer step, all ranks), passed in
by the trainer. Summing the micro-batch losses (and averaging gradients over ranks times the
world size, or summing them) then gives exactly the full batch's token mean, however the batch
was split; a per-micro-batch mean would weight short micro-batches up (the gradient
accumulation bug TRL fixed with `num_items_in_batch`).

The objectives, the papers they follow, and how they depart:

- `token_level_loss` / `token_level_topk_loss` — a divergence from
  `opd_selfplay.divergences` on every action token (GKD, Agarwal et al. 2024; the survey's
  token-level granularity). Departures: any registered divergence, not only GKD's JSD; global
  token normalisation instead of a per-sequence mean; optional per-token weights.
- `sequence_level_loss` — policy gradient with the per-token reward log p − log q of the
  sampled token (MiniLLM, Gu et al. 2024; tinker's on-policy distillation recipe, which uses
  the per-token reward as the advantage with no future credit: `discount=0`). `discount > 0`
  adds MiniLLM-style credit from future tokens. Departures from MiniLLM: no teacher-mixed
  sampling and no length normalisation; PPO's clipped ratio replaces its importance weight.
- `outcome_loss` — GRPO-style policy gradient with group-normalised outcome advantages
  (`opd_selfplay.advantages.group_advantages`). Departures: token-level normalisation over
  the global batch (DAPO, Yu et al. 2025) rather than GRPO's per-sequence mean; no KL term
  (add a token-level loss to a reference if wanted).
- `hybrid_loss` — one policy gradient whose per-token advantage is
  kd_weight · (distillation return) + outcome_weight · (outcome advantage), in the spirit of
  KDRL (Xu et al. 2025) and of the survey's hybrid granularity. For a white-box teacher the
  additive hybrid is simply `kd_weight * token_level_loss(...)[0] + outcome_weight *
  outcome_loss(...)[0]`.
- `imitation_loss` — cross-entropy on target text written by someone else: a black-box
  teacher's answer for the student's own context (sequence-level KD, Kim & Rush 2016, on
  on-policy contexts as in DAgger), or the best verified rollout of the group (RFT/STaR).
  Departure: normalised by the global number of target tokens, like every loss here.
- `spin_loss` — SPIN (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models
  to Strong Language Models", eq. 4.7): logistic loss on λ [log π/π_ref (target) − log
  π/π_ref (generated)], the reference being the previous iterate. Departures: the "real"
  sequence may be any target (human data, the teacher's text, the best verified rollout of
  the group), not only SFT data.
- Uncertainty-aware weighting (named open by the survey): `entropy_gated_kl` in the
  divergence registry mixes forward and reverse KL per token by the teacher's entropy;
  `teacher_confidence_weighting` down-weights tokens where the teacher is unsure. Both plug in
  through the token-level losses (`divergence=` and `weighting=` / `weights_BT=`).

Diagnostics, and where each comes from: `approx_kl` = mean((ρ − 1) − log ρ) between trainer and
sampler (the k3 estimator as cleanrl's PPO logs it, after Schulman's "Approximating KL
Divergence"); `clip_fraction` = share of tokens whose clipped term was the active one
(cleanrl/PPO); `entropy` (student) and `teacher_entropy` (as cleanrl logs the policy's);
`teacher_kl_k1` / `teacher_kl_k3` = sampled-token estimates of KL(q‖p) (tinker logs k1 as
its reverse-KL metric); SPIN's rewards, margins and accuracy as DPO trainers log them (TRL).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from opd_selfplay.advantages import discounted_returns
from opd_selfplay.chunking import LinearHead, TokenWeighting, chunked_divergence
from opd_selfplay.divergences import masked_mean
from opd_selfplay.errors import InputError
from opd_selfplay.estimators import k1, k3, topk_diagnostics, topk_divergence

__all__ = [
    "hybrid_loss",
    "imitation_loss",
    "outcome_loss",
    "policy_gradient_loss",
    "sequence_level_loss",
    "sequence_logprobs",
    "spin_loss",
    "teacher_confidence_weighting",
    "token_level_loss",
    "token_level_topk_loss",
]

Diagnostics = dict[str, Tensor]


def _check_mask(mask_BT: Tensor, *tensors: tuple[str, Tensor]) -> Tensor:
    for label, t in tensors:
        if t.shape[: mask_BT.ndim] != mask_BT.shape:
            raise InputError(
                f"{label} {tuple(t.shape)} does not match mask_BT {tuple(mask_BT.shape)}"
            )
    return mask_BT.to(torch.bool)


def _check_count(num_tokens_global: int | Tensor, local: Tensor) -> None:
    if isinstance(num_tokens_global, int | float) and num_tokens_global < 1:
        raise InputError(f"num_tokens_global must be >= 1, got {num_tokens_global}")
    if isinstance(num_tokens_global, int | float) and int(local) > num_tokens_global:
        raise InputError(
            f"num_tokens_global={num_tokens_global} is smaller than this micro-batch's "
            f"{int(local)} action tokens; pass the count over the whole batch"
        )


# --------------------------------------------------------------------------------------------
# Token level
# --------------------------------------------------------------------------------------------


def teacher_confidence_weighting(scale: float = 1.0, floor: float = 0.0) -> TokenWeighting:
    """A token weight that falls as the teacher's entropy rises: max(exp(−H / scale), floor).

    A confident teacher (H ≈ 0) gets weight 1; an unsure one, whose distribution is a weak
    target, is down-weighted. Pass the result as `weighting=` to `token_level_loss`.

    Args:
        scale: entropy (nats) at which the weight is 1/e.
        floor: the smallest weight, so no token is ignored entirely.

    Returns:
        A function from the teacher's entropy per position to weights.
    """
    if not scale > 0 or not 0.0 <= floor <= 1.0:
        raise InputError(
            f"teacher_confidence_weighting: need scale > 0 and floor in [0, 1], got {scale}, {floor}"
        )

    def weighting(teacher_entropy: Tensor) -> Tensor:
        return torch.exp(-teacher_entropy / scale).clamp(min=floor)

    return weighting


def token_level_loss(
    student: Tensor | LinearHead,
    teacher: Tensor | LinearHead,
    mask_BT: Tensor,
    num_tokens_global: int | Tensor,
    *,
    divergence: str = "reverse_kl",
    temperature: float = 1.0,
    weights_BT: Tensor | None = None,
    weighting: TokenWeighting | None = None,
    chunk_size: int | None = None,
    with_entropy: bool = True,
    **params: float,
) -> tuple[Tensor, Diagnostics]:
    """A full-vocabulary divergence on every action token (white-box teacher).

    loss = Σ_{action tokens} w_t · D(p_t, q_t) / num_tokens_global, computed in blocks of
    positions (memory O(chunk × V), see `opd_selfplay.chunking.chunked_divergence`).

    Args:
        student: logits_BTV, or `LinearHead(hidden_BTH, lm_head_weight_VH)` to fuse the
            projection (the logits are then never materialised).
        teacher: the teacher's logits_BTV, or a `LinearHead`; no gradient.
        mask_BT: 1 on action tokens (the trajectory's `action_mask`).
        num_tokens_global: action tokens in the global batch (see module docstring).
        divergence: a registered divergence name.
        temperature: T applied to both sides.
        weights_BT: optional per-token weights (no gradient).
        weighting: optional function of the teacher's entropy → weight, applied per block
            (e.g. `teacher_confidence_weighting()`).
        chunk_size: positions per block (default from the vocabulary size).
        with_entropy: report both entropies (one more pass over each block per side).
        **params: the divergence's parameters.

    Returns:
        (loss, diagnostics): `token_divergence` (mean over this micro-batch's action
        tokens), `entropy`, `teacher_entropy` and `forward_kl` (exact KL(p‖q), means, when
        `with_entropy`), `num_tokens`
        (local count).
    """
    s_lead = (student.hidden if isinstance(student, LinearHead) else student).shape[:-1]
    if tuple(s_lead) != tuple(mask_BT.shape):
        raise InputError(
            f"student positions {tuple(s_lead)} do not match mask_BT {tuple(mask_BT.shape)}"
        )
    keep = mask_BT.to(torch.bool)
    local = keep.sum()
    _check_count(num_tokens_global, local)
    w = torch.ones(keep.shape, device=keep.device) if weights_BT is None else weights_BT.detach()
    result = chunked_divergence(
        divergence,
        student,
        teacher,
        mask=keep,
        weights=w / num_tokens_global,
        temperature=temperature,
        chunk_size=chunk_size,
        with_entropy=with_entropy,
        weighting=weighting,
        **params,
    )
    diag = {
        "token_divergence": masked_mean(result.values, keep),
        "num_tokens": local.to(result.values.dtype),
    }
    if result.student_entropy is not None and result.teacher_entropy is not None:
        diag["entropy"] = masked_mean(result.student_entropy, keep)
        diag["teacher_entropy"] = masked_mean(result.teacher_entropy, keep)
    if result.forward_kl is not None:
        diag["forward_kl"] = masked_mean(result.forward_kl, keep)
    return result.loss, diag


def token_level_topk_loss(
    student_logits_BTV: Tensor,
    teacher_topk_logprobs_BTK: Tensor,
    topk_ids_BTK: Tensor,
    mask_BT: Tensor,
    num_tokens_global: int | Tensor,
    *,
    divergence: str = "reverse_kl",
    tail: str = "bucket",
    temperature: float = 1.0,
    weights_BT: Tensor | None = None,
    **params: float,
) -> tuple[Tensor, Diagnostics]:
    """A divergence on every action token from the teacher's top-k log-probs (grey-box).

    Args:
        student_logits_BTV: the student's logits.
        teacher_topk_logprobs_BTK: the teacher's log-probs of `topk_ids_BTK` (server output).
        topk_ids_BTK: the support: the teacher's top-k ids, or the student's
            (`opd_selfplay.estimators.student_topk_ids`) scored by the teacher.
        mask_BT: 1 on action tokens.
        num_tokens_global: action tokens in the global batch.
        divergence: a registered divergence name.
        tail: "bucket" or "renormalize" (bias: see `opd_selfplay.estimators`).
        temperature: T (tail="bucket" needs 1.0).
        weights_BT: optional per-token weights (no gradient).
        **params: the divergence's parameters.

    Returns:
        (loss, diagnostics): `token_divergence`, `num_tokens`, and the top-k coverage
        diagnostics of `topk_diagnostics` (meaningful when the ids are the teacher's top-k).
    """
    keep = _check_mask(
        mask_BT, ("student_logits_BTV", student_logits_BTV), ("topk_ids_BTK", topk_ids_BTK)
    )
    local = keep.sum()
    _check_count(num_tokens_global, local)
    values = topk_divergence(
        divergence,
        student_logits_BTV,
        teacher_topk_logprobs_BTK,
        topk_ids_BTK,
        tail=tail,
        temperature=temperature,
        mask=keep,
        **params,
    )
    weighted = values if weights_BT is None else values * weights_BT.detach()
    loss = masked_mean(weighted, keep, num_tokens_global)
    diag = {
        "token_divergence": masked_mean(values.detach(), keep),
        "num_tokens": local.to(values.dtype),
    }
    diag.update(topk_diagnostics(student_logits_BTV, teacher_topk_logprobs_BTK, topk_ids_BTK, keep))
    return loss, diag


# --------------------------------------------------------------------------------------------
# Policy gradient: sequence level, outcome, hybrid
# --------------------------------------------------------------------------------------------


def policy_gradient_loss(
    logprobs_BT: Tensor,
    advantages_BT: Tensor,
    mask_BT: Tensor,
    num_tokens_global: int | Tensor,
    *,
    sampler_logprobs_BT: Tensor | None = None,
    clip_low: float | None = 0.2,
    clip_high: float | None = 0.2,
) -> tuple[Tensor, Diagnostics]:
    """The PPO-clipped policy-gradient loss with per-token advantages (Schulman et al. 2017).

    per token: max(−A ρ, −A clip(ρ, 1 − clip_low, 1 + clip_high)), ρ = exp(log π − log π_old),
    where π_old is the sampler (vLLM, an older copy of the weights). Without sampler log-probs
    ρ ≡ 1 with the gradient ∇ log π: plain REINFORCE. Clipping matters only when the sampler
    and the trainer differ (off-policy steps, inference/training numerics).

    Args:
        logprobs_BT: the trainer's log-probs of the sampled tokens, with gradient.
        advantages_BT: per-token advantages (no gradient).
        mask_BT: 1 on action tokens.
        num_tokens_global: action tokens in the global batch.
        sampler_logprobs_BT: the sampler's log-probs of the same tokens, or None.
        clip_low, clip_high: PPO's ε on each side (asymmetric as in DAPO); None on both
            disables clipping (importance weight ρ unclipped).

    Returns:
        (loss, diagnostics): `approx_kl`, `clip_fraction`, `ratio_mean`, `ratio_max`,
        `advantage_mean`.
    """
    keep = _check_mask(mask_BT, ("logprobs_BT", logprobs_BT), ("advantages_BT", advantages_BT))
    _check_count(num_tokens_global, keep.sum())
    if (clip_low is None) != (clip_high is None):
        raise InputError("clip_low and clip_high must both be set or both be None")
    old = logprobs_BT.detach() if sampler_logprobs_BT is None else sampler_logprobs_BT.detach()
    log_ratio = torch.where(keep, logprobs_BT - old.to(logprobs_BT.dtype), 0.0)
    ratio = log_ratio.exp()
    adv = advantages_BT.detach().to(ratio.dtype)
    unclipped = -adv * ratio
    if clip_low is None:
        per_token = unclipped
        clipped_active = torch.zeros_like(keep)
    else:
        clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # type: ignore[operator]
        per_token = torch.maximum(unclipped, clipped)
        clipped_active = clipped > unclipped
    loss = masked_mean(per_token, keep, num_tokens_global)
    with torch.no_grad():
        lr = log_ratio.detach()
        diag = {
            # k3 estimate of KL(π_old‖π) (cleanrl's approx_kl; Schulman, "Approximating KL").
            "approx_kl": masked_mean(torch.expm1(lr) - lr, keep),
            # share of tokens where the clipped term was active (cleanrl's clipfrac).
            "clip_fraction": masked_mean(clipped_active.to(ratio.dtype), keep),
            "ratio_mean": masked_mean(ratio.detach(), keep),
            "ratio_max": torch.where(keep, ratio.detach(), -math.inf).max()
            if keep.any()
            else torch.ones((), dtype=ratio.dtype),
            "advantage_mean": masked_mean(adv, keep),
        }
    return loss, diag


def sequence_level_loss(
    logprobs_BT: Tensor,
    teacher_logprobs_BT: Tensor,
    mask_BT: Tensor,
    num_tokens_global: int | Tensor,
    *,
    sampler_logprobs_BT: Tensor | None = None,
    discount: float = 0.0,
    kl_coef: float = 1.0,
    clip_low: float | None = 0.2,
    clip_high: float | None = 0.2,
) -> tuple[Tensor, Diagnostics]:
    """On-policy distillation by policy gradient: reward −kl_coef (log q − log p) per token.

    The per-token reward uses the sampler's log-probs when given (the trajectory as it was
    sampled), else the trainer's, detached. Its return over future action tokens
    (`discount`, see `opd_selfplay.advantages.discounted_returns`) is the advantage; with
    discount = 0 this is tinker's estimator, whose expected gradient is that of
    Σ_t KL(q_t‖p_t) at each visited prefix.

    Args:
        logprobs_BT: the trainer's log-probs of the sampled tokens, with gradient.
        teacher_logprobs_BT: the teacher's log-probs of the same tokens (black-box suffices).
        mask_BT: 1 on action tokens.
        num_tokens_global: action tokens in the global batch.
        sampler_logprobs_BT: the sampler's log-probs (importance weights, reward), or None.
        discount: γ ∈ [0, 1] for credit from future tokens.
        kl_coef: scale of the reward.
        clip_low, clip_high: PPO clipping of the importance ratio (None: unclipped).

    Returns:
        (loss, diagnostics): those of `policy_gradient_loss` plus `teacher_kl_k1` and
        `teacher_kl_k3` (sampled-token estimates of KL(q‖p), mean over action tokens).
    """
    keep = _check_mask(mask_BT, ("teacher_logprobs_BT", teacher_logprobs_BT))
    behaviour = (
        logprobs_BT.detach() if sampler_logprobs_BT is None else sampler_logprobs_BT.detach()
    )
    teacher = teacher_logprobs_BT.detach().to(behaviour.dtype)
    rewards = -kl_coef * torch.where(keep, k1(behaviour, teacher), 0.0)
    advantages = discounted_returns(rewards, keep, discount)
    loss, diag = policy_gradient_loss(
        logprobs_BT,
        advantages,
        keep,
        num_tokens_global,
        sampler_logprobs_BT=sampler_logprobs_BT,
        clip_low=clip_low,
        clip_high=clip_high,
    )
    diag["teacher_kl_k1"] = masked_mean(torch.where(keep, k1(behaviour, teacher), 0.0), keep)
    diag["teacher_kl_k3"] = masked_mean(torch.where(keep, k3(behaviour, teacher), 0.0), keep)
    return loss, diag


def outcome_loss(
    logprobs_BT: Tensor,
    advantages_B: Tensor,
    mask_BT: Tensor,
    num_tokens_global: int | Tensor,
    *,
    sampler_logprobs_BT: Tensor | None = None,
    clip_low: float | None = 0.2,
    clip_high: float | None = 0.2,
) -> tuple[Tensor, Diagnostics]:
    """GRPO-style outcome policy gradient: each sequence's advantage on all its action tokens.

    Args:
        logprobs_BT: the trainer's log-probs of the sampled tokens, with gradient.
        advantages_B: one advantage per sequence, from
            `opd_selfplay.advantages.group_advantages` over the whole batch.
        mask_BT: 1 on action tokens.
        num_tokens_global: action tokens in the global batch.
        sampler_logprobs_BT: the sampler's log-probs, or None (on-policy).
        clip_low, clip_high: PPO clipping (None: unclipped).

    Returns:
        (loss, diagnostics) of `policy_gradient_loss`.
    """
    if advantages_B.shape != mask_BT.shape[:1]:
        raise InputError(
            f"advantages_B {tuple(advantages_B.shape)} must be (B,) for mask_BT {tuple(mask_BT.shape)}"
        )
    return policy_gradient_loss(
        logprobs_BT,
        advantages_B.detach().unsqueeze(-1).expand(mask_BT.shape),
        mask_BT,
        num_tokens_global,
        sampler_logprobs_BT=sampler_logprobs_BT,
        clip_low=clip_low,
        clip_high=clip_high,
    )


def hybrid_loss(
    logprobs_BT: Tensor,
    teacher_logprobs_BT: Tensor,
    outcome_advantages_B: Tensor,
    mask_BT: Tensor,
    num_tokens_global: int | Tensor,
    *,
    kd_weight: float = 1.0,
    outcome_weight: float = 1.0,
    sampler_logprobs_BT: Tensor | None = None,
    discount: float = 0.0,
    clip_low: float | None = 0.2,
    clip_high: float | None = 0.2,
) -> tuple[Tensor, Diagnostics]:
    """Distillation and outcome reward in one policy gradient.

    A_t = kd_weight · G_t + outcome_weight · A_outcome, where G_t is the discounted return of
    the per-token reward −(log q − log p) (as in `sequence_level_loss`) and A_outcome the
    sequence's group-normalised advantage (as in `outcome_loss`).

    Args:
        logprobs_BT: the trainer's log-probs of the sampled tokens, with gradient.
        teacher_logprobs_BT: the teacher's log-probs of the same tokens.
        outcome_advantages_B: from `group_advantages` over the whole batch.
        mask_BT: 1 on action tokens.
        num_tokens_global: action tokens in the global batch.
        kd_weight, outcome_weight: the weights of the two advantages.
        sampler_logprobs_BT: the sampler's log-probs, or None.
        discount: γ for the distillation return.
        clip_low, clip_high: PPO clipping (None: unclipped).

    Returns:
        (loss, diagnostics): `policy_gradient_loss`'s plus `teacher_kl_k1`, `teacher_kl_k3`,
        `kd_advantage_mean`, `outcome_advantage_mean`.
    """
    keep = _check_mask(mask_BT, ("teacher_logprobs_BT", teacher_logprobs_BT))
    if outcome_advantages_B.shape != mask_BT.shape[:1]:
        raise InputError(
            f"outcome_advantages_B {tuple(outcome_advantages_B.shape)} must be (B,) for mask_BT {tuple(mask_BT.shape)}"
        )
    behaviour = (
        logprobs_BT.detach() if sampler_logprobs_BT is None else sampler_logprobs_BT.detach()
    )
    teacher = teacher_logprobs_BT.detach().to(behaviour.dtype)
    kd_adv = discounted_returns(-torch.where(keep, k1(behaviour, teacher), 0.0), keep, discount)
    out_adv = outcome_advantages_B.detach().to(kd_adv.dtype).unsqueeze(-1).expand(mask_BT.shape)
    loss, diag = policy_gradient_loss(
        logprobs_BT,
        kd_weight * kd_adv + outcome_weight * out_adv,
        keep,
        num_tokens_global,
        sampler_logprobs_BT=sampler_logprobs_BT,
        clip_low=clip_low,
        clip_high=clip_high,
    )
    diag["teacher_kl_k1"] = masked_mean(torch.where(keep, k1(behaviour, teacher), 0.0), keep)
    diag["teacher_kl_k3"] = masked_mean(torch.where(keep, k3(behaviour, teacher), 0.0), keep)
    diag["kd_advantage_mean"] = masked_mean(kd_adv, keep)
    diag["outcome_advantage_mean"] = masked_mean(out_adv, keep)
    return loss, diag


def imitation_loss(
    logprobs_BT: Tensor, mask_BT: Tensor, num_tokens_global: int | Tensor
) -> tuple[Tensor, Diagnostics]:
    """Cross-entropy on target tokens: −Σ log q(target) / num_tokens_global.

    Args:
        logprobs_BT: the student's log-probs of the target tokens, with gradient.
        mask_BT: 1 on target tokens.
        num_tokens_global: target tokens in the global batch.

    Returns:
        (loss, diagnostics): `nll` (mean over this micro-batch's target tokens).
    """
    keep = _check_mask(mask_BT, ("logprobs_BT", logprobs_BT))
    _check_count(num_tokens_global, keep.sum())
    picked = torch.where(keep, logprobs_BT, 0.0)
    loss = -picked.sum() / num_tokens_global
    return loss, {"nll": -masked_mean(picked.detach(), keep)}


# --------------------------------------------------------------------------------------------
# Self-play: SPIN
# --------------------------------------------------------------------------------------------


def sequence_logprobs(logprobs_BT: Tensor, mask_BT: Tensor) -> Tensor:
    """Σ over action tokens of each sequence's token log-probs: log π(y | x), shape (B,)."""
    keep = _check_mask(mask_BT, ("logprobs_BT", logprobs_BT))
    return torch.where(keep, logprobs_BT, 0.0).sum(-1)


def spin_loss(
    policy_target_logps_B: Tensor,
    policy_generated_logps_B: Tensor,
    ref_target_logps_B: Tensor,
    ref_generated_logps_B: Tensor,
    *,
    beta: float = 0.1,
    num_pairs_global: int | None = None,
) -> tuple[Tensor, Diagnostics]:
    """SPIN's loss: the target sequence against the previous iterate's own generation.

    loss_i = ℓ(β [log π(y_i)/π_ref(y_i) − log π(y'_i)/π_ref(y'_i)]), ℓ(t) = log(1 + e^−t),
    where y is the target (real) sequence, y' the one the previous iterate π_ref generated
    for the same context (Chen et al. 2024, eq. 4.7, with λ called β as in DPO).

    Args:
        policy_target_logps_B: log π(y | x) of the targets (e.g. `sequence_logprobs`), with grad.
        policy_generated_logps_B: log π(y' | x) of the generated sequences, with grad.
        ref_target_logps_B, ref_generated_logps_B: the same under the previous iterate.
        beta: λ > 0, the inverse temperature of the implicit reward.
        num_pairs_global: pairs in the global batch (default: this micro-batch's B).

    Returns:
        (loss, diagnostics): `reward_target`, `reward_generated` (β × log-ratio, means),
        `margin` (mean of their difference), `accuracy` (share of pairs with margin > 0).
    """
    shapes = {
        tuple(t.shape)
        for t in (
            policy_target_logps_B,
            policy_generated_logps_B,
            ref_target_logps_B,
            ref_generated_logps_B,
        )
    }
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise InputError(
            f"spin_loss: the four log-prob tensors must be (B,) of one length, got {sorted(shapes)}"
        )
    if not beta > 0:
        raise InputError(f"spin_loss: beta must be > 0, got {beta}")
    reward_target = beta * (policy_target_logps_B - ref_target_logps_B.detach())
    reward_generated = beta * (policy_generated_logps_B - ref_generated_logps_B.detach())
    margin = reward_target - reward_generated
    # softplus(−t) = log(1 + e^−t), stable for large |t|.
    losses = torch.nn.functional.softplus(-margin)
    denominator = num_pairs_global if num_pairs_global is not None else max(losses.shape[0], 1)
    loss = losses.sum() / denominator
    with torch.no_grad():
        diag = {
            "reward_target": reward_target.detach().mean(),
            "reward_generated": reward_generated.detach().mean(),
            "margin": margin.detach().mean(),
            "accuracy": (margin.detach() > 0).to(margin.dtype).mean(),
        }
    return loss, diag
