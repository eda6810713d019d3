"""Divergences against an independent float64 reference, gradients against finite differences,
and the properties every divergence must have (zero on identical inputs, non-negative, masked
positions inert, the jsd_normalized endpoints)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_selfplay.divergences import (
    LOG_FLOOR,
    available_divergences,
    divergence,
    entropy,
    f_divergence,
    masked_mean,
    register_divergence,
)
from opd_selfplay.errors import InputError

# --------------------------------------------------------------------------------------------
# The reference: plain formulas in float64 numpy, written from the definitions.
# --------------------------------------------------------------------------------------------


def _softmax64(logits: np.ndarray, temperature: float) -> np.ndarray:
    x = logits.astype(np.float64) / temperature
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Σ a log(a/b), with 0 log 0 = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * (np.log(a) - np.log(b)), 0.0)
    return terms.sum(-1)


def reference(
    name: str, student: np.ndarray, teacher: np.ndarray, temperature: float, **kw
) -> np.ndarray:
    p = _softmax64(teacher, temperature)
    q = _softmax64(student, temperature)
    if name == "forward_kl":
        return _kl(p, q)
    if name == "reverse_kl":
        return _kl(q, p)
    if name in ("jsd", "jsd_normalized"):
        b = kw.get("beta", 0.5)
        if name == "jsd_normalized" and b == 0.0:
            return _kl(p, q)
        if name == "jsd_normalized" and b == 1.0:
            return _kl(q, p)
        m = b * p + (1 - b) * q
        j = b * _kl(p, m) + (1 - b) * _kl(q, m)
        return j if name == "jsd" else j / (b * (1 - b))
    if name == "tv":
        return 0.5 * np.abs(p - q).sum(-1)
    if name == "skew_forward_kl":
        a = kw.get("alpha", 0.1)
        return _kl(p, a * p + (1 - a) * q)
    if name == "skew_reverse_kl":
        a = kw.get("alpha", 0.1)
        return _kl(q, a * q + (1 - a) * p)
    if name == "entropy_gated_kl":
        h = -(p * np.log(p)).sum(-1)
        gate = 1.0 / (1.0 + np.exp(-(h - kw.get("threshold", 1.0)) / kw.get("scale", 0.25)))
        return gate * _kl(p, q) + (1 - gate) * _kl(q, p)
    raise AssertionError(name)


CASES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {}),
    ("jsd", {"beta": 0.1}),
    ("jsd", {"beta": 0.9}),
    ("jsd_normalized", {}),
    ("jsd_normalized", {"beta": 1e-4}),
    ("jsd_normalized", {"beta": 1 - 1e-4}),
    ("jsd_normalized", {"beta": 0.0}),
    ("jsd_normalized", {"beta": 1.0}),
    ("tv", {}),
    ("skew_forward_kl", {}),
    ("skew_forward_kl", {"alpha": 0.5}),
    ("skew_reverse_kl", {}),
    ("skew_reverse_kl", {"alpha": 0.5}),
    ("entropy_gated_kl", {}),
    ("entropy_gated_kl", {"threshold": 3.0, "scale": 1.0}),
]


def test_every_builtin_is_covered_by_the_reference_cases():
    registered = {name for name in available_divergences() if not name.startswith("test_")}
    assert {name for name, _ in CASES} == registered


@pytest.mark.parametrize("vocab", [7, 1000, 50_000])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize(("name", "kw"), CASES)
def test_matches_float64_reference(name, kw, vocab, temperature):
    gen = torch.Generator().manual_seed(vocab + int(temperature))
    rows = 2 if vocab == 50_000 else 6
    student = torch.randn(rows, vocab, generator=gen) * 2.0
    teacher = torch.randn(rows, vocab, generator=gen) * 2.0
    got = divergence(name, student, teacher, temperature, **kw)
    assert got.dtype == torch.float32 and got.shape == (rows,)
    want = reference(name, student.numpy(), teacher.numpy(), temperature, **kw)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=0)


def test_low_precision_inputs_are_upcast():
    gen = torch.Generator().manual_seed(1)
    student = (torch.randn(3, 500, generator=gen) * 2).to(torch.bfloat16)
    teacher = (torch.randn(3, 500, generator=gen) * 2).to(torch.float16)
    got = divergence("jsd", student, teacher)
    assert got.dtype == torch.float32
    want = reference("jsd", student.float().numpy(), teacher.float().numpy(), 1.0)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5)


def test_float64_inputs_stay_float64():
    x = torch.randn(2, 5, dtype=torch.float64)
    assert divergence("tv", x, x.flip(-1)).dtype == torch.float64


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw"), [*CASES, ("jsd", {"beta": 0.01}), ("skew_forward_kl", {"alpha": 0.0})]
)
def test_gradients_match_finite_differences(name, kw):
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(2, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: divergence(name, s, teacher, 1.5, **kw), (student,))


def test_gradients_with_mask_match_finite_differences():
    gen = torch.Generator().manual_seed(4)
    student = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.autograd.gradcheck(lambda s: divergence("jsd", s, teacher, mask=mask), (student,))


def test_registered_divergence_gets_autograd_gradients_and_matches_reference():
    register_divergence("test_chi2", f_divergence(lambda t: (t - 1.0) ** 2), replace=True)
    register_divergence(
        "test_hellinger", f_divergence(lambda t: (t.sqrt() - 1.0) ** 2), replace=True
    )
    gen = torch.Generator().manual_seed(5)
    s = torch.randn(4, 30, generator=gen, dtype=torch.float64)
    t = torch.randn(4, 30, generator=gen, dtype=torch.float64)
    p, q = _softmax64(t.numpy(), 1.0), _softmax64(s.numpy(), 1.0)
    np.testing.assert_allclose(
        divergence("test_chi2", s, t).numpy(), ((p - q) ** 2 / q).sum(-1), rtol=1e-10
    )
    np.testing.assert_allclose(
        divergence("test_hellinger", s, t).numpy(),
        ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(-1),
        rtol=1e-10,
    )
    # t log t and −log t give back the KLs.
    register_divergence("test_fkl", f_divergence(lambda t: t * torch.log(t)), replace=True)
    torch.testing.assert_close(divergence("test_fkl", s, t), divergence("forward_kl", s, t))
    small = s[:2, :6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: divergence("test_chi2", x, t[:2, :6]), (small,))


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

logit_rows = st.integers(min_value=2, max_value=40).flatmap(
    lambda v: st.lists(
        st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=v, max_size=v),
        min_size=1,
        max_size=4,
    )
)


@settings(max_examples=15, deadline=None)
@given(rows=logit_rows, temperature=st.sampled_from([0.5, 1.0, 2.0]))
def test_identical_inputs_give_zero(rows, temperature):
    x = torch.tensor(rows)
    for name, kw in CASES:
        value = divergence(name, x, x.clone(), temperature, **kw)
        assert torch.all(value.abs() <= 1e-6), (name, kw, value)


@settings(max_examples=15, deadline=None)
@given(rows=logit_rows, seed=st.integers(0, 2**16))
def test_values_are_non_negative(rows, seed):
    s = torch.tensor(rows)
    t = s[..., torch.randperm(s.shape[-1], generator=torch.Generator().manual_seed(seed))]
    for name, kw in CASES:
        value = divergence(name, s, t, **kw)
        assert torch.all(value >= -1e-6), (name, kw, value)
        assert torch.all(torch.isfinite(value))


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_masked_positions_contribute_nothing(name, kw):
    gen = torch.Generator().manual_seed(6)
    student = torch.randn(3, 5, 9, generator=gen)
    teacher = torch.randn(3, 5, 9, generator=gen)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    # Garbage where the mask is off: NaN, inf, all −inf rows.
    student[~mask] = float("nan")
    teacher[0, 1] = -float("inf")
    student.requires_grad_(True)
    value = divergence(name, student, teacher, mask=mask, **kw)
    assert torch.all(value[~mask] == 0)
    value.sum().backward()
    assert torch.all(student.grad[~mask] == 0)
    assert torch.all(torch.isfinite(student.grad))
    kept = divergence(name, student.detach()[mask], teacher[mask], **kw)
    torch.testing.assert_close(value[mask], kept)


def test_jsd_normalized_reaches_its_limits():
    gen = torch.Generator().manual_seed(7)
    s = torch.randn(4, 300, generator=gen) * 2
    t = torch.randn(4, 300, generator=gen) * 2
    fkl, rkl = divergence("forward_kl", s, t), divergence("reverse_kl", s, t)
    assert torch.equal(divergence("jsd_normalized", s, t, beta=0.0), fkl)
    assert torch.equal(divergence("jsd_normalized", s, t, beta=1.0), rkl)
    gaps_f, gaps_r = [], []
    for eps in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        gaps_f.append(
            ((divergence("jsd_normalized", s, t, beta=eps) - fkl) / fkl).abs().max().item()
        )
        gaps_r.append(
            ((divergence("jsd_normalized", s, t, beta=1 - eps) - rkl) / rkl).abs().max().item()
        )
    # The gap is O(β) (O(1 − β)): near the endpoint it shrinks ~10× per decade, down to the
    # smallest β tried, with no cancellation blow-up on the way.
    for gaps in (gaps_f, gaps_r):
        assert all(8 < a / b < 12 for a, b in itertools.pairwise(gaps[-3:])), gaps
        assert gaps[-1] < 2e-4
    # Near the endpoints float32 still agrees with float64.
    for beta in (1e-6, 1 - 1e-6):
        got = divergence("jsd_normalized", s, t, beta=beta).double()
        want = divergence("jsd_normalized", s.double(), t.double(), beta=beta)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def test_jsd_weights_the_teacher_by_beta():
    # A swapped mixture (m = (1 − β) p + β q) would pass symmetric tests; the hand value not.
    p = torch.tensor([0.9, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.8], dtype=torch.float64)
    beta = 0.25
    m = beta * p + (1 - beta) * q
    want = beta * (p * (p / m).log()).sum() + (1 - beta) * (q * (q / m).log()).sum()
    got = divergence("jsd", q.log(), p.log(), beta=beta)
    torch.testing.assert_close(got, want)


def test_underflow_gives_no_nan():
    student = torch.tensor(
        [[0.0, -float("inf"), 3.0, -1e4], [1.0, 2.0, 3.0, 4.0]], requires_grad=True
    )
    one_hot = torch.full((2, 4), -float("inf"))
    one_hot[:, 2] = 0.0
    cases = [torch.tensor([[-1e4, 0.0, -float("inf"), 5.0], [-1e9, 0.0, 1.0, -1e30]]), one_hot]
    for name, kw in CASES:
        for teacher in cases:
            value = divergence(name, student, teacher, **kw)
            (grad,) = torch.autograd.grad(value.sum(), student)
            assert torch.all(torch.isfinite(value)) and torch.all(value >= -1e-6), (name, value)
            assert torch.all(torch.isfinite(grad)), (name, grad)
    # Same one-hot on both sides: exactly zero.
    for name, kw in CASES:
        assert torch.all(divergence(name, one_hot, one_hot, **kw).abs() <= 1e-6)


def test_infinite_divergence_is_large_and_finite():
    student = torch.tensor([[0.0, -float("inf")]])
    teacher = torch.tensor([[0.0, 0.0]])
    value = divergence("forward_kl", student, teacher)
    assert torch.isfinite(value) and value > 1e5 and value < -LOG_FLOOR


# --------------------------------------------------------------------------------------------
# Errors and helpers
# --------------------------------------------------------------------------------------------


def test_errors_name_the_input():
    x = torch.zeros(2, 5)
    with pytest.raises(InputError, match="unknown divergence 'nope'.*forward_kl"):
        divergence("nope", x, x)
    with pytest.raises(InputError, match="unknown parameter.*alpha.*takes beta"):
        divergence("jsd", x, x, alpha=0.3)
    with pytest.raises(InputError, match="beta must be in \\(0, 1\\).*jsd_normalized"):
        divergence("jsd", x, x, beta=1.0)
    with pytest.raises(InputError, match="V=5.*V=7"):
        divergence("forward_kl", x, torch.zeros(2, 7))
    with pytest.raises(InputError, match="temperature must be > 0"):
        divergence("tv", x, x, 0.0)
    with pytest.raises(InputError, match="mask shape"):
        divergence("tv", x, x, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(InputError, match="already registered"):
        register_divergence("jsd", lambda log_q, log_p: log_q.sum(-1))
    with pytest.raises(InputError, match="needs a default"):
        register_divergence("bad", lambda log_q, log_p, beta: log_q.sum(-1))
    with pytest.raises(InputError, match="f\\(1\\) must be 0"):
        f_divergence(lambda t: t)


def test_entropy_and_masked_mean():
    one_hot = torch.tensor([[-float("inf"), 0.0, -float("inf")]])
    assert entropy(one_hot).item() == 0.0
    assert math.isclose(entropy(torch.zeros(1, 8)).item(), math.log(8), rel_tol=1e-6)
    values = torch.tensor([1.0, float("nan"), 3.0], requires_grad=True)
    mask = torch.tensor([1, 0, 1])
    out = masked_mean(values, mask)
    assert out.item() == 2.0
    out.backward()
    assert values.grad.tolist() == [0.5, 0.0, 0.5]
    assert masked_mean(values, mask, denominator=4).item() == 1.0
    assert masked_mean(values, torch.zeros(3)).item() == 0.0
