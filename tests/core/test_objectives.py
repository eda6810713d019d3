"""Objectives: global-token normalisation under any micro-batch split, group advantages,
discounted returns, importance-ratio clipping, the hybrid advantage and SPIN on hand cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_selfplay.advantages import discounted_returns, group_advantages
from opd_selfplay.chunking import LinearHead
from opd_selfplay.divergences import divergence, entropy
from opd_selfplay.errors import InputError
from opd_selfplay.objectives import (
    hybrid_loss,
    outcome_loss,
    policy_gradient_loss,
    sequence_level_loss,
    sequence_logprobs,
    spin_loss,
    teacher_confidence_weighting,
    token_level_loss,
    token_level_topk_loss,
)

F64 = torch.float64


def _batch(seed: int, b=6, t=5, v=13):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(b, t, v, generator=gen, dtype=F64)
    teacher = torch.randn(b, t, v, generator=gen, dtype=F64)
    mask = torch.rand(b, t, generator=gen) > 0.35
    mask[0] = False  # a sequence with no action tokens at all
    return student, teacher, mask


# --------------------------------------------------------------------------------------------
# Token level
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("splits", [[6], [1, 5], [2, 2, 2], [3, 1, 2], [1, 1, 1, 1, 1, 1]])
def test_token_level_normalisation_is_invariant_to_micro_batching(splits):
    student, teacher, mask = _batch(1)
    n_global = int(mask.sum())
    full = student.clone().requires_grad_(True)
    want, _ = token_level_loss(full, teacher, mask, n_global, divergence="jsd", beta=0.3)
    (want_grad,) = torch.autograd.grad(want, full)
    # The value is the mean over the batch's action tokens.
    manual = divergence("jsd", student, teacher, mask=mask, beta=0.3).sum() / n_global
    torch.testing.assert_close(want.detach(), manual)

    accumulated = student.clone().requires_grad_(True)
    total = torch.zeros((), dtype=F64)
    start = 0
    for size in splits:
        sl = slice(start, start + size)
        loss, diag = token_level_loss(
            accumulated[sl], teacher[sl], mask[sl], n_global, divergence="jsd", beta=0.3
        )
        loss.backward()  # gradient accumulation
        total = total + loss.detach()
        assert diag["num_tokens"].item() == mask[sl].sum().item()
        start += size
    torch.testing.assert_close(total, want.detach())
    torch.testing.assert_close(accumulated.grad, want_grad)


def test_token_level_fused_head_equals_logits_and_reports_diagnostics():
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(3, 4, 5, generator=gen, dtype=F64, requires_grad=True)
    weight = torch.randn(17, 5, generator=gen, dtype=F64, requires_grad=True)
    teacher = torch.randn(3, 4, 17, generator=gen, dtype=F64)
    mask = torch.rand(3, 4, generator=gen) > 0.3
    n = int(mask.sum())
    fused, diag = token_level_loss(LinearHead(hidden, weight), teacher, mask, n, chunk_size=2)
    plain, _ = token_level_loss(hidden @ weight.T, teacher, mask, n)
    torch.testing.assert_close(fused, plain)
    g1 = torch.autograd.grad(fused, (hidden, weight))
    g2 = torch.autograd.grad(plain, (hidden, weight))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b)
    logits = (hidden @ weight.T).detach()
    torch.testing.assert_close(diag["entropy"], entropy(logits)[mask].mean())
    torch.testing.assert_close(diag["teacher_entropy"], entropy(teacher)[mask].mean())
    torch.testing.assert_close(
        diag["token_divergence"], divergence("reverse_kl", logits, teacher)[mask].mean()
    )
    _, lean = token_level_loss(hidden @ weight.T, teacher, mask, n, with_entropy=False)
    assert set(lean) == {"token_divergence", "num_tokens"}


def test_token_level_confidence_weighting_equals_explicit_weights():
    student, teacher, mask = _batch(3)
    n = int(mask.sum())
    weighting = teacher_confidence_weighting(scale=2.0, floor=0.1)
    weights = torch.exp(-entropy(teacher) / 2.0).clamp(min=0.1)
    a, _ = token_level_loss(
        student, teacher, mask, n, weighting=weighting, divergence="entropy_gated_kl"
    )
    b, _ = token_level_loss(
        student, teacher, mask, n, weights_BT=weights, divergence="entropy_gated_kl"
    )
    torch.testing.assert_close(a, b)
    assert a < token_level_loss(student, teacher, mask, n, divergence="entropy_gated_kl")[0]


def test_token_level_topk_with_full_support_equals_full_and_is_split_invariant():
    student, teacher, mask = _batch(4)
    n = int(mask.sum())
    ids = teacher.topk(13, -1).indices
    lp = torch.log_softmax(teacher, -1).gather(-1, ids)
    got, diag = token_level_topk_loss(student, lp, ids, mask, n, divergence="forward_kl")
    want, _ = token_level_loss(student, teacher, mask, n, divergence="forward_kl")
    torch.testing.assert_close(got, want)
    assert diag["topk_overlap"].item() == pytest.approx(1.0)
    halves = sum(
        token_level_topk_loss(student[sl], lp[sl], ids[sl], mask[sl], n, divergence="forward_kl")[0]
        for sl in (slice(0, 2), slice(2, 6))
    )
    torch.testing.assert_close(halves, got)


def test_token_level_errors():
    student, teacher, mask = _batch(5)
    with pytest.raises(InputError, match="num_tokens_global=2 is smaller"):
        token_level_loss(student, teacher, mask, 2)
    with pytest.raises(InputError, match="do not match mask_BT"):
        token_level_loss(student, teacher, mask[:, :3], 100)


# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    rewards=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=24),
    data=st.data(),
    normalize_std=st.booleans(),
    leave_one_out=st.booleans(),
)
def test_group_advantages_sum_to_zero_per_group(rewards, data, normalize_std, leave_one_out):
    groups = data.draw(st.lists(st.integers(0, 4), min_size=len(rewards), max_size=len(rewards)))
    r = torch.tensor(rewards, dtype=F64)
    g = torch.tensor(groups)
    adv = group_advantages(r, g, normalize_std=normalize_std, leave_one_out=leave_one_out)
    for gid in g.unique():
        members = adv[g == gid]
        scale = 1.0 if not normalize_std else 1.0 + members.abs().max().item()
        assert abs(members.sum().item()) < 1e-9 * scale * 100
        if members.numel() == 1:
            assert members.item() == 0.0


def test_group_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 5.0, 2.0, 2.0])
    g = torch.tensor([7, 7, 3, 3, 3, 9, 4, 4])
    grpo = group_advantages(r, g, eps=0.0)
    # Group 7: mean ½, unbiased std √½ → ±1/√2. Group 3: mean ⅔, std 1/√3.
    torch.testing.assert_close(grpo[:2], torch.tensor([1, -1]) / math.sqrt(2))
    torch.testing.assert_close(grpo[2:5], torch.tensor([1 / 3, 1 / 3, -2 / 3]) * math.sqrt(3))
    assert grpo[5].item() == 0.0  # alone in its group
    assert grpo[6:].tolist() == [0.0, 0.0]  # identical rewards
    raw = group_advantages(r, g, normalize_std=False)
    torch.testing.assert_close(raw[2:5], torch.tensor([1 / 3, 1 / 3, -2 / 3]))
    loo = group_advantages(r, g, normalize_std=False, leave_one_out=True)
    # RLOO: r_i minus the mean of the others.
    torch.testing.assert_close(loo[2:5], torch.tensor([1 - 0.5, 1 - 0.5, 0 - 1.0]))


def test_discounted_returns_skip_context_tokens():
    rewards = torch.tensor([[1.0, 9.0, 2.0, 3.0, 9.0]])
    mask = torch.tensor([[1, 0, 1, 1, 0]])
    torch.testing.assert_close(
        discounted_returns(rewards, mask, 0.0), torch.tensor([[1.0, 0, 2, 3, 0]])
    )
    torch.testing.assert_close(
        discounted_returns(rewards, mask, 1.0), torch.tensor([[6.0, 0, 5, 3, 0]])
    )
    # γ = ½: 1 + ½·2 + ¼·3 = 2.75 (the context token adds no discount step).
    torch.testing.assert_close(
        discounted_returns(rewards, mask, 0.5), torch.tensor([[2.75, 0, 3.5, 3, 0]])
    )
    with pytest.raises(InputError, match="discount"):
        discounted_returns(rewards, mask, 1.5)


# --------------------------------------------------------------------------------------------
# Policy gradient: clipping, sequence level, outcome, hybrid
# --------------------------------------------------------------------------------------------


def test_importance_ratio_clipping_hand_cases():
    # Four tokens, ρ = 1.5, 1.5, 0.5, 0.5 and A = +1, −1, +1, −1, ε = 0.2.
    sampler = torch.zeros(1, 4, dtype=F64)
    logprobs = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]], dtype=F64)).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=F64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, diag = policy_gradient_loss(logprobs, adv, mask, 4, sampler_logprobs_BT=sampler)
    # per token: max(−Aρ, −A clip(ρ)): −1.2 (clipped), 1.5, −0.5, 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    (grad,) = torch.autograd.grad(loss, logprobs)
    # Clipped tokens get no gradient; the others −A ρ / N.
    torch.testing.assert_close(grad, torch.tensor([[0.0, 1.5 / 4, -0.5 / 4, 0.0]], dtype=F64))
    assert diag["clip_fraction"].item() == 0.5
    assert diag["ratio_max"].item() == pytest.approx(1.5)
    lr = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5], dtype=F64))
    assert diag["approx_kl"].item() == pytest.approx((lr.exp() - 1 - lr).mean().item())
    # Unclipped: plain importance weighting.
    loss, diag = policy_gradient_loss(
        logprobs, adv, mask, 4, sampler_logprobs_BT=sampler, clip_low=None, clip_high=None
    )
    assert loss.item() == pytest.approx((-1.5 + 1.5 - 0.5 + 0.5) / 4)
    assert diag["clip_fraction"].item() == 0.0


def test_on_policy_gradient_is_reinforce():
    gen = torch.Generator().manual_seed(6)
    logprobs = torch.randn(2, 3, generator=gen, dtype=F64, requires_grad=True)
    adv = torch.randn(2, 3, generator=gen, dtype=F64)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    loss, diag = policy_gradient_loss(logprobs, adv, mask, 10)
    (grad,) = torch.autograd.grad(loss, logprobs)
    torch.testing.assert_close(grad, -adv * mask / 10)
    assert diag["ratio_mean"].item() == 1.0 and diag["clip_fraction"].item() == 0.0


def test_sequence_level_advantage_is_the_reverse_kl_reward():
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(2, 4, generator=gen, dtype=F64, requires_grad=True)
    teacher = torch.randn(2, 4, generator=gen, dtype=F64)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 0]])
    loss, diag = sequence_level_loss(student, teacher, mask, 4, kl_coef=2.0)
    (grad,) = torch.autograd.grad(loss, student)
    reward = -2.0 * (student.detach() - teacher)
    torch.testing.assert_close(grad, -reward * mask / 4)
    torch.testing.assert_close(
        diag["teacher_kl_k1"], (student.detach() - teacher)[mask.bool()].mean()
    )
    # With discount the advantage is the return over future action tokens.
    loss, _ = sequence_level_loss(student, teacher, mask, 4, discount=1.0)
    (grad,) = torch.autograd.grad(loss, student)
    returns = discounted_returns(-(student.detach() - teacher), mask, 1.0)
    torch.testing.assert_close(grad, -returns * mask / 4)


def test_outcome_and_hybrid_losses():
    gen = torch.Generator().manual_seed(8)
    logprobs = torch.randn(4, 3, generator=gen, dtype=F64, requires_grad=True)
    teacher = torch.randn(4, 3, generator=gen, dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 0]])
    adv_B = group_advantages(
        torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=F64), torch.tensor([0, 0, 1, 1])
    )
    out, _ = outcome_loss(logprobs, adv_B, mask, 8)
    (g_out,) = torch.autograd.grad(out, logprobs)
    torch.testing.assert_close(g_out, -adv_B[:, None] * mask / 8)
    hyb, diag = hybrid_loss(logprobs, teacher, adv_B, mask, 8, kd_weight=0.5, outcome_weight=2.0)
    (g_hyb,) = torch.autograd.grad(hyb, logprobs)
    kd = -(logprobs.detach() - teacher)
    torch.testing.assert_close(g_hyb, -(0.5 * kd + 2.0 * adv_B[:, None]) * mask / 8)
    assert set(diag) >= {
        "teacher_kl_k1",
        "kd_advantage_mean",
        "outcome_advantage_mean",
        "clip_fraction",
    }
    with pytest.raises(InputError, match="must be \\(B,\\)"):
        outcome_loss(logprobs, adv_B[:2], mask, 8)


# --------------------------------------------------------------------------------------------
# SPIN
# --------------------------------------------------------------------------------------------


def test_spin_loss_hand_case():
    target = torch.tensor([-1.0, -4.0], dtype=F64, requires_grad=True)
    generated = torch.tensor([-3.0, -1.0], dtype=F64, requires_grad=True)
    ref_target = torch.tensor([-2.0, -4.0], dtype=F64)
    ref_generated = torch.tensor([-1.0, -1.0], dtype=F64)
    loss, diag = spin_loss(target, generated, ref_target, ref_generated, beta=0.5)
    # Pair 0: rewards 0.5·(−1+2)=0.5 and 0.5·(−3+1)=−1 → margin 1.5. Pair 1: margin 0.
    want = (math.log1p(math.exp(-1.5)) + math.log(2.0)) / 2
    assert loss.item() == pytest.approx(want)
    assert diag["accuracy"].item() == 0.5
    assert diag["margin"].item() == pytest.approx(0.75)
    assert diag["reward_target"].item() == pytest.approx(0.25)
    g_target, g_generated = torch.autograd.grad(loss, (target, generated))
    # Raising the target's likelihood lowers the loss; raising the generated one's raises it.
    assert torch.all(g_target < 0) and torch.all(g_generated > 0)
    sigma = 1 / (1 + math.exp(1.5))  # σ(−margin) for pair 0
    assert g_target[0].item() == pytest.approx(-0.5 * sigma / 2)
    # Normalised by the global number of pairs when given.
    half, _ = spin_loss(target, generated, ref_target, ref_generated, beta=0.5, num_pairs_global=4)
    assert half.item() == pytest.approx(want / 2)


def test_sequence_logprobs_sums_action_tokens():
    lp = torch.tensor([[-1.0, float("nan"), -2.0]])
    assert sequence_logprobs(lp, torch.tensor([[1, 0, 1]])).item() == -3.0
