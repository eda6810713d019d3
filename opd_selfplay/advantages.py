"""Advantages: per-task group baselines for outcome rewards, and discounted per-token returns.

Pure tensor functions, shared by the objectives in `opd_selfplay.objectives`.

- `group_advantages` follows GRPO (Shao et al. 2024, "DeepSeekMath", §4.1.2): each
  trajectory's outcome reward minus the mean of its task group (the G samples of one task),
  divided by the group's standard deviation. Options, each from a paper that argued for it:
  `normalize_std=False` drops the division (Dr. GRPO, Liu et al. 2025: the division
  over-weights groups that are nearly all right or all wrong); `leave_one_out=True` uses the
  mean of the *other* samples as the baseline (RLOO, Ahmadian et al. 2024), which makes the
  baseline independent of the sample it scores. Departures: the standard deviation is the
  unbiased one (n − 1, as TRL and the DeepSeekMath code compute it); a group of one sample,
  or of identical rewards, gets advantage 0 (no comparison, no signal) instead of a division
  by zero. Every variant sums to zero over each group.
- `discounted_returns` turns per-token rewards into reward-to-go over the *action* tokens
  of each sequence: context tokens (prompts, environment replies in multi-turn trajectories)
  neither earn reward nor count as a step of discount, so turn boundaries are transparent.
  discount = 0 is the per-token reward itself (tinker's on-policy distillation); discount = 1
  is the undiscounted sum over future tokens (MiniLLM's single-step decomposition credits
  the whole future).

Not covered: value functions and GAE (no critic here), KL penalties (the objectives add them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from opd_selfplay.errors import InputError

__all__ = ["discounted_returns", "group_advantages"]


def group_advantages(
    rewards_B: Tensor,
    group_ids_B: Tensor,
    *,
    normalize_std: bool = True,
    leave_one_out: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """Group-normalised advantages of outcome rewards (GRPO-style), per task group.

    Compute them over the whole batch (all micro-batches and ranks that hold a group), then
    hand each micro-batch its slice: a group split across micro-batches would otherwise get
    two different baselines.

    Args:
        rewards_B: (B,) one outcome reward per trajectory.
        group_ids_B: (B,) integer task-group id of each trajectory (any values; equal ids
            share a baseline).
        normalize_std: divide by the group's (unbiased) standard deviation + eps.
        leave_one_out: baseline = mean of the other members of the group (RLOO), i.e.
            A = n/(n − 1) · (r − mean); else the group mean including the sample.
        eps: added to the standard deviation.

    Returns:
        (B,) advantages, float32 at least; each group's advantages sum to 0.
    """
    if rewards_B.ndim != 1 or group_ids_B.shape != rewards_B.shape:
        raise InputError(
            f"rewards_B {tuple(rewards_B.shape)} and group_ids_B {tuple(group_ids_B.shape)} "
            "must both be 1-D of the same length"
        )
    r = rewards_B.detach().to(torch.promote_types(rewards_B.dtype, torch.float32))
    _, inverse = torch.unique(group_ids_B, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(n_groups, dtype=r.dtype, device=r.device).scatter_add_(
        0, inverse, torch.ones_like(r)
    )
    total = torch.zeros_like(count).scatter_add_(0, inverse, r)
    n = count[inverse]
    centred = r - (total / count)[inverse]
    # A group of one has nothing to compare against: advantage 0.
    single = n < 2
    if leave_one_out:
        centred = centred * n / torch.where(single, 1.0, n - 1.0)
    centred = torch.where(single, 0.0, centred)
    if not normalize_std:
        return centred
    # Unbiased variance of the rewards (not of the LOO-scaled values) per group.
    dev = r - (total / count)[inverse]
    var = torch.zeros_like(count).scatter_add_(0, inverse, dev * dev) / (count - 1.0).clamp(min=1.0)
    std = var.sqrt()[inverse]
    # Identical rewards (std 0) carry no signal: 0, whatever eps is.
    return torch.where(std > 0, centred / (std + eps), 0.0)


def discounted_returns(rewards_BT: Tensor, mask_BT: Tensor, discount: float) -> Tensor:
    """Reward-to-go over each sequence's action tokens: G_t = Σ_{s ≥ t} γ^{k(s) − k(t)} r_s.

    k(s) counts action tokens, so context tokens between turns add no discount; rewards on
    context tokens are ignored.

    Args:
        rewards_BT: (B, T) per-token rewards.
        mask_BT: (B, T) 1 on action tokens.
        discount: γ ∈ [0, 1].

    Returns:
        (B, T) returns (0 on context tokens), no gradient.
    """
    if not 0.0 <= discount <= 1.0:
        raise InputError(f"discount must be in [0, 1], got {discount}")
    if rewards_BT.shape != mask_BT.shape or rewards_BT.ndim != 2:
        raise InputError(
            f"rewards_BT {tuple(rewards_BT.shape)} and mask_BT {tuple(mask_BT.shape)} must both be (B, T)"
        )
    keep = mask_BT.to(torch.bool)
    r = torch.where(keep, rewards_BT.detach(), 0.0)
    if discount == 0.0:
        return r
    if discount == 1.0:
        return torch.where(keep, r.flip(-1).cumsum(-1).flip(-1), 0.0)
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        # Context tokens pass the running return through unchanged (no discount step).
        running = torch.where(keep[:, t], r[:, t] + discount * running, running)
        out[:, t] = running
    return torch.where(keep, out, 0.0)
