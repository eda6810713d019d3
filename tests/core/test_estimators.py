"""Estimators, and the chunked full-vocabulary path of opd_selfplay.chunking: chunked equals
the plain divergence (values and gradients), top-k with k = V equals the full divergence, the
bucket estimator never exceeds it, and the sampled-token estimators are unbiased for what
their docstrings say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from opd_selfplay.chunking import LinearHead, chunked_divergence
from opd_selfplay.divergences import divergence, entropy
from opd_selfplay.errors import InputError
from opd_selfplay.estimators import (
    ESTIMATORS,
    TeacherAccess,
    gather_log_probs,
    k1,
    k2,
    k3,
    reinforce_surrogate,
    student_topk_ids,
    topk_diagnostics,
    topk_divergence,
)

F64 = torch.float64


def _heads(seed: int, b=2, t=5, h=6, v=40, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=gen, dtype=F64, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, dtype=F64, requires_grad=True)
    b_ = torch.randn(v, generator=gen, dtype=F64, requires_grad=True) if bias else None
    t_hidden = torch.randn(b, t, 2 * h, generator=gen, dtype=F64)
    t_weight = torch.randn(v, 2 * h, generator=gen, dtype=F64)
    return hidden, weight, b_, t_hidden, t_weight


# --------------------------------------------------------------------------------------------
# Chunked full vocabulary
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["jsd", "reverse_kl", "forward_kl", "tv", "skew_reverse_kl"])
@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_chunked_fused_head_equals_unchunked(name, chunk):
    hidden, weight, bias, t_hidden, t_weight = _heads(1)
    gen = torch.Generator().manual_seed(2)
    mask = torch.rand(2, 5, generator=gen) > 0.3
    weights = torch.rand(2, 5, generator=gen, dtype=F64)
    plain = divergence(name, hidden @ weight.T + bias, t_hidden @ t_weight.T, 1.5, mask=mask)
    want_grads = torch.autograd.grad((plain * weights).sum(), (hidden, weight, bias))
    got = chunked_divergence(
        name,
        LinearHead(hidden, weight, bias),
        LinearHead(t_hidden, t_weight),
        mask=mask,
        weights=weights,
        temperature=1.5,
        chunk_size=chunk,
    )
    torch.testing.assert_close(got.values, plain.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.loss, (plain * weights).sum().detach(), rtol=1e-12, atol=1e-12)
    # Backward with a non-unit upstream gradient (the loss scaled by 3).
    got_grads = torch.autograd.grad(3.0 * got.loss, (hidden, weight, bias))
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, 3.0 * w, rtol=1e-10, atol=1e-12)


def test_chunked_logits_input_equals_unchunked():
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(3, 4, 30, generator=gen, dtype=F64, requires_grad=True)
    teacher = torch.randn(3, 4, 30, generator=gen, dtype=F64)
    mask = torch.rand(3, 4, generator=gen) > 0.5
    got = chunked_divergence("jsd", student, teacher, mask=mask, chunk_size=2, beta=0.3)
    (g_got,) = torch.autograd.grad(got.loss, student)
    plain = divergence("jsd", student, teacher, mask=mask, beta=0.3)
    (g_want,) = torch.autograd.grad(plain.sum(), student)
    torch.testing.assert_close(got.values, plain.detach())
    torch.testing.assert_close(g_got, g_want)
    assert torch.all(g_got[~mask] == 0)


def test_chunked_only_student_weight_requires_grad_and_no_grad_mode():
    hidden, weight, _, t_hidden, t_weight = _heads(4, bias=False)
    frozen_hidden = hidden.detach()
    got = chunked_divergence(
        "reverse_kl",
        LinearHead(frozen_hidden, weight),
        LinearHead(t_hidden, t_weight),
        chunk_size=4,
    )
    (g_w,) = torch.autograd.grad(got.loss, weight)
    plain = divergence("reverse_kl", frozen_hidden @ weight.T, t_hidden @ t_weight.T)
    (want,) = torch.autograd.grad(plain.sum(), weight)
    torch.testing.assert_close(g_w, want)
    with torch.no_grad():
        again = chunked_divergence(
            "reverse_kl", LinearHead(hidden, weight), LinearHead(t_hidden, t_weight)
        )
    assert not again.loss.requires_grad
    torch.testing.assert_close(again.values, plain.detach())


def test_chunked_entropies_and_weighting():
    gen = torch.Generator().manual_seed(5)
    student = torch.randn(2, 3, 20, generator=gen, dtype=F64, requires_grad=True)
    teacher = torch.randn(2, 3, 20, generator=gen, dtype=F64) * 3
    got = chunked_divergence("forward_kl", student, teacher, with_entropy=True, chunk_size=4)
    torch.testing.assert_close(got.student_entropy, entropy(student).detach())
    torch.testing.assert_close(got.teacher_entropy, entropy(teacher))
    weighted = chunked_divergence(
        "forward_kl", student, teacher, weighting=lambda h: torch.exp(-h), chunk_size=4
    )
    manual = (divergence("forward_kl", student, teacher) * torch.exp(-entropy(teacher))).sum()
    torch.testing.assert_close(weighted.loss, manual.detach())
    (g1,) = torch.autograd.grad(weighted.loss, student)
    (g2,) = torch.autograd.grad(manual, student)
    torch.testing.assert_close(g1, g2)


def test_chunked_low_precision_head():
    gen = torch.Generator().manual_seed(6)
    hidden = torch.randn(8, 16, generator=gen).to(torch.bfloat16).requires_grad_(True)
    weight = torch.randn(64, 16, generator=gen).to(torch.bfloat16).requires_grad_(True)
    teacher = torch.randn(8, 64, generator=gen)
    got = chunked_divergence("jsd", LinearHead(hidden, weight), teacher, chunk_size=3)
    got.loss.backward()
    assert got.values.dtype == torch.float32
    assert hidden.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16
    want = divergence("jsd", (hidden @ weight.T).detach(), teacher)
    torch.testing.assert_close(got.values, want)


def test_chunked_errors():
    x = torch.zeros(2, 5)
    with pytest.raises(InputError, match="student vocabulary 5 != teacher vocabulary 7"):
        chunked_divergence("jsd", x, torch.zeros(2, 7))
    with pytest.raises(InputError, match="mask shape"):
        chunked_divergence("jsd", x, x, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(InputError, match="unknown parameter"):
        chunked_divergence("jsd", x, x, alpha=0.1)
    with pytest.raises(InputError, match="chunk_size"):
        chunked_divergence("jsd", x, x, chunk_size=0)


# --------------------------------------------------------------------------------------------
# Top-k
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("support", ["teacher", "student"])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "tv", "skew_forward_kl"])
def test_topk_with_k_equal_v_equals_full(tail, support, name):
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(2, 3, 25, generator=gen, dtype=F64, requires_grad=True)
    teacher = torch.randn(2, 3, 25, generator=gen, dtype=F64)
    ids = teacher.topk(25, -1).indices if support == "teacher" else student_topk_ids(student, 25)
    teacher_lp = torch.log_softmax(teacher, -1).gather(-1, ids)
    got = topk_divergence(name, student, teacher_lp, ids, tail=tail)
    want = divergence(name, student, teacher)
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got.sum(), student)
    (g_want,) = torch.autograd.grad(want.sum(), student)
    torch.testing.assert_close(g_got, g_want)


def _coarse_reference(student, teacher, ids, tail):
    q = torch.softmax(student.double(), -1)
    p = torch.softmax(teacher.double(), -1)
    qk, pk = q.gather(-1, ids), p.gather(-1, ids)
    if tail == "bucket":
        qk = torch.cat([qk, 1 - qk.sum(-1, keepdim=True)], -1)
        pk = torch.cat([pk, 1 - pk.sum(-1, keepdim=True)], -1)
    else:
        qk, pk = qk / qk.sum(-1, keepdim=True), pk / pk.sum(-1, keepdim=True)
    return qk, pk


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_topk_matches_reference_and_bucket_never_exceeds_full(tail):
    gen = torch.Generator().manual_seed(8)
    student = torch.randn(4, 6, 200, generator=gen) * 2
    teacher = torch.randn(4, 6, 200, generator=gen) * 2
    ids = teacher.topk(10, -1).indices
    teacher_lp = torch.log_softmax(teacher, -1).gather(-1, ids)
    qk, pk = _coarse_reference(student, teacher, ids, tail)
    for name in ("forward_kl", "reverse_kl", "jsd", "tv", "skew_reverse_kl"):
        got = topk_divergence(name, student, teacher_lp, ids, tail=tail)
        want = divergence(name, qk.log(), pk.log())
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        if tail == "bucket":  # data-processing inequality
            assert torch.all(got <= divergence(name, student, teacher) + 1e-5)


def test_topk_renormalize_with_temperature_and_errors():
    gen = torch.Generator().manual_seed(9)
    student = torch.randn(3, 50, generator=gen, dtype=F64)
    teacher = torch.randn(3, 50, generator=gen, dtype=F64)
    ids = teacher.topk(8, -1).indices
    lp = torch.log_softmax(teacher, -1).gather(-1, ids)
    got = topk_divergence("reverse_kl", student, lp, ids, tail="renormalize", temperature=2.0)
    want = divergence("reverse_kl", student.gather(-1, ids), teacher.gather(-1, ids), 2.0)
    torch.testing.assert_close(got, want)
    with pytest.raises(InputError, match="tail='bucket' needs temperature=1.0"):
        topk_divergence("reverse_kl", student, lp, ids, temperature=2.0)
    with pytest.raises(InputError, match="tail must be"):
        topk_divergence("reverse_kl", student, lp, ids, tail="drop")
    with pytest.raises(InputError, match="must both be"):
        topk_divergence("reverse_kl", student, lp[:, :3], ids)


def test_topk_mask_and_gather():
    gen = torch.Generator().manual_seed(10)
    student = torch.randn(2, 4, 30, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 4, 30, generator=gen)
    ids = teacher.topk(5, -1).indices
    lp = torch.log_softmax(teacher, -1).gather(-1, ids)
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    got = topk_divergence("jsd", student, lp, ids, mask=mask)
    got.sum().backward()
    assert torch.all(got[~mask] == 0) and torch.all(student.grad[~mask] == 0)
    torch.testing.assert_close(
        got[mask], topk_divergence("jsd", student.detach()[mask], lp[mask], ids[mask])
    )
    torch.testing.assert_close(
        gather_log_probs(student, ids, 2.0), torch.log_softmax(student / 2.0, -1).gather(-1, ids)
    )


def test_topk_diagnostics():
    logits = torch.tensor([[[4.0, 3.0, 0.0, -1.0]]])
    ids = logits.topk(2, -1).indices
    lp = torch.log_softmax(logits, -1).gather(-1, ids)
    same = topk_diagnostics(logits, lp, ids)
    mass = torch.softmax(logits, -1)[0, 0, :2].sum()
    torch.testing.assert_close(same["teacher_topk_mass"], mass)
    torch.testing.assert_close(same["student_mass_on_teacher_topk"], mass)
    torch.testing.assert_close(same["student_topk_mass"], mass)
    assert same["topk_overlap"].item() == 1.0
    # A student whose top-2 shares one token with the teacher's.
    student = torch.tensor([[[4.0, -5.0, 3.0, -1.0]]])
    diag = topk_diagnostics(student, lp, ids)
    assert diag["topk_overlap"].item() == 0.5
    q = torch.softmax(student, -1)[0, 0]
    torch.testing.assert_close(diag["student_mass_on_teacher_topk"], q[0] + q[1])


# --------------------------------------------------------------------------------------------
# Sampled-token estimators
# --------------------------------------------------------------------------------------------


def test_k1_k3_are_unbiased_and_k2_k3_non_negative():
    gen = torch.Generator().manual_seed(11)
    s, t = torch.randn(6, generator=gen, dtype=F64), torch.randn(6, generator=gen, dtype=F64)
    lq, lp = torch.log_softmax(s, -1), torch.log_softmax(t, -1)
    exact = divergence("reverse_kl", s, t).item()
    # Exact expectations over the 6 tokens.
    q = lq.exp()
    assert math.isclose((q * k1(lq, lp)).sum().item(), exact, rel_tol=1e-12)
    assert math.isclose((q * k3(lq, lp)).sum().item(), exact, rel_tol=1e-12)
    assert (q * k2(lq, lp)).sum().item() != pytest.approx(exact, rel=1e-3)
    assert torch.all(k3(lq, lp) >= 0) and torch.all(k2(lq, lp) >= 0)
    assert torch.any(k1(lq, lp) < 0)
    # Monte Carlo: 200k samples land within 5 standard errors.
    y = torch.multinomial(q, 200_000, replacement=True, generator=gen)
    for est in (k1, k3):
        samples = est(lq[y], lp[y])
        se = samples.std().item() / math.sqrt(samples.numel())
        assert abs(samples.mean().item() - exact) < 5 * se
    # k3 keeps its precision when r ≈ 1.
    tiny = k3(torch.tensor([-1.0], dtype=F64), torch.tensor([-1.0 + 1e-9], dtype=F64))
    assert math.isclose(tiny.item(), 0.5e-18, rel_tol=1e-6)


def test_reinforce_gradient_is_unbiased_and_direct_gradients_are_not():
    gen = torch.Generator().manual_seed(12)
    s = torch.randn(7, generator=gen, dtype=F64, requires_grad=True)
    t = torch.randn(7, generator=gen, dtype=F64)
    lp = torch.log_softmax(t, -1)

    def expected_grad(estimator):
        # E_{y~q}[∇ estimator(y)] with q held fixed, over all 7 tokens.
        lq = torch.log_softmax(s, -1)
        (g,) = torch.autograd.grad((lq.exp().detach() * estimator(lq, lp)).sum(), s)
        return g

    (rkl_grad,) = torch.autograd.grad(divergence("reverse_kl", s, t), s)
    (fkl_grad,) = torch.autograd.grad(divergence("forward_kl", s, t), s)
    torch.testing.assert_close(expected_grad(reinforce_surrogate), rkl_grad)
    torch.testing.assert_close(expected_grad(k1), torch.zeros(7, dtype=F64))
    torch.testing.assert_close(expected_grad(k3), fkl_grad)


def test_estimator_declarations():
    assert ESTIMATORS["full"].access is TeacherAccess.WHITE_BOX
    assert ESTIMATORS["topk_bucket"].access is TeacherAccess.GREY_BOX
    assert {ESTIMATORS[n].access for n in ("k1", "k2", "k3", "reinforce")} == {
        TeacherAccess.BLACK_BOX
    }
    assert all(e.bias for e in ESTIMATORS.values())


def test_chunked_50k_vocab_matches_reference():
    # One realistic vocabulary: float32, chunked, against float64.
    gen = torch.Generator().manual_seed(13)
    student = torch.randn(6, 50_000, generator=gen) * 2
    teacher = torch.randn(6, 50_000, generator=gen) * 2
    got = chunked_divergence("jsd", student, teacher, chunk_size=4).values
    want = divergence("jsd", student.double(), teacher.double())
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-5)


def test_chunked_with_nothing_kept_is_zero():
    student = torch.randn(2, 3, 5, requires_grad=True)
    nothing = torch.zeros(2, 3, dtype=torch.bool)
    got = chunked_divergence("jsd", student, torch.randn(2, 3, 5), mask=nothing)
    got.loss.backward()
    assert got.loss.item() == 0.0 and torch.all(got.values == 0)
    assert torch.all(student.grad == 0)
