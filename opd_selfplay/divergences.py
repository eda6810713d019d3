"""Divergences between the teacher's and the student's next-token distributions.

Every logit-based signal of on-policy distillation is an f-divergence between the teacher's
distribution p and the student's q at each position the student sampled (the survey "A Survey
of On-Policy Distillation for Large Language Models", arXiv 2604.00626, section on logit-based
feedback). This module computes them exactly over the full vocabulary, one value per position:

    divergence(name, student_logits, teacher_logits, temperature=1.0, mask=None, **params)

with p = softmax(teacher_logits / T), q = softmax(student_logits / T), natural logs, and the
vocabulary (last) axis reduced away:

- `forward_kl`        KL(p‖q) = Σ p (log p − log q)                (mass-covering)
- `reverse_kl`        KL(q‖p) = Σ q (log q − log p)                (mode-seeking; tinker, MiniLLM)
- `jsd` (beta=0.5)    m = β p + (1 − β) q;  β KL(p‖m) + (1 − β) KL(q‖m)
                      the generalized JSD of GKD (Agarwal et al. 2024, "On-Policy Distillation of
                      Language Models: Learning from Self-Generated Mistakes", eq. 1); β ∈ (0, 1).
- `jsd_normalized` (beta=0.5)  jsd / (β (1 − β)); tends to `forward_kl` as β → 0 and to
                      `reverse_kl` as β → 1 (see below), and is *defined* by those limits at
                      β = 0 and β = 1, so the family is continuous on [0, 1].
- `tv`                ½ Σ |p − q|
- `skew_forward_kl` (alpha=0.1)  KL(p ‖ α p + (1 − α) q)   (DistiLLM's SKL, Ko et al. 2024,
                      "DistiLLM: Towards Streamlined Distillation for Large Language Models")
- `skew_reverse_kl` (alpha=0.1)  KL(q ‖ α q + (1 − α) p)   (DistiLLM's SRKL)
- `entropy_gated_kl` (threshold=1.0, scale=0.25)  λ KL(p‖q) + (1 − λ) KL(q‖p) with the gate
                      λ = sigmoid((H(p) − threshold) / scale) of the teacher's entropy (nats):
                      where the teacher is unsure, cover its modes (forward KL); where it is
                      sure, seek its mode (reverse KL). An uncertainty-aware weighting the survey
                      names as open; related in spirit to AKL (Wu et al. 2024), which mixes the
                      two KLs per token from head/tail gaps. λ carries no gradient.
- your own: `register_divergence(name, fn)` with any `fn(log_q, log_p, **params)`, e.g. one made
  by `f_divergence(f)` from a convex f with f(1) = 0: D_f(p‖q) = Σ q f(p / q).

The limits of `jsd_normalized`. With m = q + β (p − q), KL(q‖m) = O(β²) and KL(p‖m) → KL(p‖q),
so jsd / (β (1 − β)) = KL(p‖m)/(1 − β) + KL(q‖m)/β → KL(p‖q) + 0 as β → 0; symmetrically it
tends to KL(q‖p) as β → 1. Near the endpoints the second term is a ratio of two small numbers;
we compute log(m/q) = log1p(β·expm1(log p − log q)) directly from the log-ratio (never as the
difference of two logs), so the division by β amplifies no rounding error and β = 1e-6 gives
forward KL to float32 precision.

How it is computed, and the peers' bugs it avoids:
- Log space, in float32 at least (bf16/fp16 inputs are upcast; float64 stays float64).
- Mixtures: log m is built from the log-ratio d = log p − log q as log(w e^d + 1 − w), via
  log1p/expm1 for |d| ≤ 1 and logaddexp of the logs otherwise: never the log of a mixture
  formed from exponentiated logs, and never a mixture of log-probabilities (a "log-space mix"
  β log p + (1 − β) log q is a different, unnormalised distribution).
- β weights p in m = β p + (1 − β) q, and the KL to m of each side carries the same weight as
  that side in the mixture; a test compares with a plain float64 reference, which catches a
  swapped β.
- No special case at the endpoints of `jsd`: β must lie in (0, 1) (an endpoint makes it zero);
  the family whose endpoints are the two KLs is `jsd_normalized`, continuous on [0, 1]. A peer
  that returns the full forward KL at β = 0 but the unnormalised JSD at β = 0.01 makes the loss
  shrink by ~100× between two neighbouring settings.
- Masks are honoured on every path, the chunked and fused one included: masked positions are
  never computed at all (garbage, NaN or −inf rows there are harmless), their value is
  exactly 0 and so is their gradient.
- Precision: float32 results agree with a float64 reference to ~1e-6 absolute (the rounding
  of the softmax normaliser, ~ulp(log V), shifts every log-prob of a row alike), i.e. better
  than 1e-5 relative for divergences above ~0.1 (tested up to V = 50,000).
- No NaN when probabilities underflow (−inf logits, one-hot teachers): log-probs are floored
  at `LOG_FLOOR` (−1e6), so 0 · log 0 terms are 0 · finite = 0. A divergence that is truly
  infinite (the teacher puts mass where the student has a −inf logit) comes out large
  (~1e6 per unit of mass) and finite, with a finite gradient.
- Gradients: each built-in has its gradient w.r.t. the student log-probs in closed form (the
  softmax's Jacobian is applied in closed form too), checked against finite differences with
  gradcheck. The autograd op saves that one (positions × V) gradient and nothing else, which
  is several times less memory and time than autograd through a dozen elementwise ops. A
  divergence you register gets its gradient from autograd through your function.

No T² factor is applied for temperatures ≠ 1 (Hinton et al.'s gradient rescaling): scale the
loss yourself if you want it. Not covered here: estimators that see only part of the
teacher's distribution (top-k, sampled tokens) and the memory-bounded chunked path, which are
in `opd_selfplay.estimators`; losses and their normalisation, in `opd_selfplay.objectives`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from opd_selfplay.errors import InputError

__all__ = [
    "LOG_FLOOR",
    "DivergenceFn",
    "DivergenceSpec",
    "ValueAndGradFn",
    "available_divergences",
    "divergence",
    "divergence_from_log_probs",
    "entropy",
    "f_divergence",
    "get_divergence",
    "log_probs",
    "log_probs_value_and_grad",
    "logits_value_and_grad",
    "masked_mean",
    "register_divergence",
]

LOG_FLOOR = -1e6
"""Log-probabilities are clamped from below at this finite value so that products such as
0 · log 0 evaluate to 0 (not NaN) in values and gradients. e^-1e6 is 0 in every float format,
so only tokens of probability exactly 0 are affected (−inf logits and masking sentinels such as
−1e9 or finfo.min); a truly infinite divergence (mass where the other side has none) then comes
out of order 1e6 per unit of mass, with gradients of that order: large, finite, and still
usable after gradient-norm clipping (a floor near finfo.min would overflow the norm)."""

DivergenceFn = Callable[..., Tensor]
"""`fn(log_q, log_p, **params) -> Tensor`, differentiable by autograd: log_q (student) and
log_p (teacher) are normalised log-probabilities of shape (..., V), floored at `LOG_FLOOR`;
returns shape (...). What `register_divergence` takes."""

ValueAndGradFn = Callable[..., tuple[Tensor, Tensor | None]]
"""`fn(log_q, log_p, need_grad, **params) -> (values, g)`, run without autograd: values of
shape (...) and, when `need_grad`, g = ∂(Σ values)/∂log_q of shape (..., V), the log-probs taken
as independent variables (the softmax's Jacobian is applied by the caller)."""


@dataclass(frozen=True)
class DivergenceSpec:
    """A registered divergence: how to compute it and the keyword parameters it accepts."""

    name: str
    """The registry name, as passed to `divergence`."""
    value_and_grad: ValueAndGradFn
    """Values and their gradient w.r.t. the student log-probs (see `ValueAndGradFn`): the
    closed form for the built-ins, autograd through the user's `fn` otherwise."""
    defaults: Mapping[str, float]
    """Each keyword parameter accepted, with its default value."""


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / T) over the last axis, in float32 at least, floored at `LOG_FLOOR`.

    Args:
        logits: shape (..., V), any floating dtype (bf16/fp16 are upcast to float32).
        temperature: T > 0.

    Returns:
        Log-probabilities with the same shape, dtype float32 (float64 for float64 inputs).
    """
    _check_temperature(temperature)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    x = logits.to(dtype)
    if temperature != 1.0:
        x = x / temperature
    # The floor replaces −inf (from −inf logits) by a finite value; the clamped entries have
    # probability exactly 0.
    out = torch.log_softmax(x, dim=-1)
    return out.clamp(min=LOG_FLOOR) if out.requires_grad else out.clamp_(min=LOG_FLOOR)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}; use 1.0 for none")


def _log_mix(d: Tensor, w: float) -> Tensor:
    """log(w·e^d + 1 − w) for a mixture weight w ∈ [0, 1], stably.

    With d = log a − log b this is log((w a + (1 − w) b) / b): the log-ratio of a mixture to one
    of its components, computed without forming either probability. For |d| ≤ 1 the result is
    near 0 (and, for small w, ~w·expm1(d)), so we use log1p(w·expm1(d)), which keeps its
    relative precision; for |d| > 1 the two logs are far apart and logaddexp is exact. Both
    branches are evaluated everywhere and are finite for every finite d (the near branch sees d
    clipped to [−1, 1]).
    """
    if w <= 0.0:
        return torch.zeros_like(d)
    if w >= 1.0:
        return d.clone()
    out = torch.logaddexp(d + math.log(w), d.new_tensor(math.log1p(-w)))
    near = d.clamp(-1.0, 1.0).expm1_().mul_(w).log1p_()
    return torch.where(d.abs() <= 1.0, near, out, out=out)


def _mix_logs(log_q: Tensor, log_p: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """(log(m/p), log(m/q)) for m = β p + (1 − β) q, via d = log p − log q.

    Only the ratio whose weight is small is computed with `_log_mix`; the other follows from
    log(m/p) = log(m/q) − d, whose rounding is harmless because its weight is ≥ ½.
    """
    d = log_p - log_q
    if beta <= 0.5:
        lmq = _log_mix(d, beta)
        return d.neg_().add_(lmq), lmq
    lmp = _log_mix(d.neg_(), 1.0 - beta)
    return lmp, d.neg_().add_(lmp)


def _check_unit(name: str, key: str, value: float, low: str, high: str) -> None:
    ok_low = value >= 0 if low == "[" else value > 0
    ok_high = value <= 1 if high == "]" else value < 1
    if not (ok_low and ok_high):
        hint = " (jsd_normalized has the two KLs as its endpoints)" if name == "jsd" else ""
        raise InputError(
            f"divergence {name!r}: {key} must be in {low}0, 1{high}, got {value}{hint}"
        )


# --------------------------------------------------------------------------------------------
# The built-ins, in closed form: (log_q, log_p, need_grad, **params) -> (values, ∂/∂log_q).
# log_q is the student's, log_p the teacher's. Each gradient is differentiated by hand from the
# value's formula, then checked against finite differences (tests/core/test_divergences.py).
# --------------------------------------------------------------------------------------------


def _forward_kl(log_q: Tensor, log_p: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    # KL(p‖q) = Σ p (log p − log q);  ∂/∂log q = −p.
    p = log_p.exp()
    values = (p * (log_p - log_q)).sum(-1)
    return values, (p.neg_() if need_grad else None)


def _reverse_kl(log_q: Tensor, log_p: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    # KL(q‖p) = Σ q (log q − log p);  ∂/∂log q = q (log q − log p + 1).
    q = log_q.exp()
    r = log_q - log_p
    values = (q * r).sum(-1)
    return values, (r.add_(1.0).mul_(q) if need_grad else None)


def _jsd(
    log_q: Tensor, log_p: Tensor, need_grad: bool, beta: float = 0.5
) -> tuple[Tensor, Tensor | None]:
    # GKD eq. (1): β KL(p‖m) + (1 − β) KL(q‖m), m = β p + (1 − β) q
    #   = −β Σ p log(m/p) − (1 − β) Σ q log(m/q).
    # ∂/∂log q: the terms through m cancel (Σ of β p + (1 − β) q over m is 1), leaving
    #   (1 − β) q (log q − log m) = −(1 − β) q log(m/q).
    _check_unit("jsd", "beta", beta, "(", ")")
    lmp, lmq = _mix_logs(log_q, log_p, beta)
    q = log_q.exp()
    kl_q_m = -(q * lmq).sum(-1)
    kl_p_m = -(log_p.exp() * lmp).sum(-1)
    values = beta * kl_p_m + (1.0 - beta) * kl_q_m
    return values, (q.mul_(lmq).mul_(beta - 1.0) if need_grad else None)


def _jsd_normalized(
    log_q: Tensor, log_p: Tensor, need_grad: bool, beta: float = 0.5
) -> tuple[Tensor, Tensor | None]:
    # jsd / (β (1 − β)) = KL(p‖m)/(1 − β) + KL(q‖m)/β; gradient = jsd's / (β (1 − β)).
    # β = 0 and β = 1 are the limits, forward and reverse KL (module docstring).
    _check_unit("jsd_normalized", "beta", beta, "[", "]")
    if beta == 0.0:
        return _forward_kl(log_q, log_p, need_grad)
    if beta == 1.0:
        return _reverse_kl(log_q, log_p, need_grad)
    lmp, lmq = _mix_logs(log_q, log_p, beta)
    q = log_q.exp()
    values = -(log_p.exp() * lmp).sum(-1) / (1.0 - beta) - (q * lmq).sum(-1) / beta
    return values, (q.mul_(lmq).mul_(-1.0 / beta) if need_grad else None)


def _tv(log_q: Tensor, log_p: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    # ½ Σ |p − q| (the f-divergence of f(t) = ½|t − 1|);  ∂/∂log q = ½ sign(q − p) q.
    q = log_q.exp()
    diff = q - log_p.exp()
    values = 0.5 * diff.abs().sum(-1)
    return values, (diff.sign_().mul_(q).mul_(0.5) if need_grad else None)


def _skew_forward_kl(
    log_q: Tensor, log_p: Tensor, need_grad: bool, alpha: float = 0.1
) -> tuple[Tensor, Tensor | None]:
    # DistiLLM SKL: KL(p ‖ m), m = α p + (1 − α) q: −Σ p log(m/p), log(m/p) = _log_mix(−d, 1 − α).
    # ∂/∂log q = −(1 − α) p q / m = −(1 − α) e^{log q − log(m/p)}; the exponent is
    # log(p·q/m) ≤ log(1/(1 − α)), so it never overflows (even at α = 0, where q may be 0).
    _check_unit("skew_forward_kl", "alpha", alpha, "[", ")")
    lmp = _log_mix(log_q - log_p, 1.0 - alpha)
    values = -(log_p.exp() * lmp).sum(-1)
    if not need_grad:
        return values, None
    return values, lmp.neg_().add_(log_q).exp_().mul_(alpha - 1.0)


def _skew_reverse_kl(
    log_q: Tensor, log_p: Tensor, need_grad: bool, alpha: float = 0.1
) -> tuple[Tensor, Tensor | None]:
    # DistiLLM SRKL: KL(q ‖ m), m = α q + (1 − α) p: −Σ q log(m/q), log(m/q) = _log_mix(d, 1 − α).
    # ∂/∂log q = q (log q − log m) + q (1 − α q/m) = q (−log(m/q) + (1 − α) p/m), and
    # p/m = e^{d − log(m/q)} ≤ 1/(1 − α), so nothing overflows.
    _check_unit("skew_reverse_kl", "alpha", alpha, "[", ")")
    d = log_p - log_q
    lmq = _log_mix(d, 1.0 - alpha)
    q = log_q.exp()
    values = -(q * lmq).sum(-1)
    if not need_grad:
        return values, None
    return values, d.sub_(lmq).exp_().mul_(1.0 - alpha).sub_(lmq).mul_(q)


def _entropy_gated_kl(
    log_q: Tensor, log_p: Tensor, need_grad: bool, threshold: float = 1.0, scale: float = 0.25
) -> tuple[Tensor, Tensor | None]:
    # λ KL(p‖q) + (1 − λ) KL(q‖p), λ = sigmoid((H(p) − threshold) / scale), a constant weight
    # (a function of the teacher only); scale = 0 is a hard step.
    if scale < 0:
        raise InputError(f"divergence 'entropy_gated_kl': scale must be >= 0, got {scale}")
    h_p = -(log_p.exp() * log_p).sum(-1)
    gate = (
        torch.sigmoid((h_p - threshold) / scale) if scale > 0 else (h_p > threshold).to(h_p.dtype)
    )
    fwd, g_fwd = _forward_kl(log_q, log_p, need_grad)
    rev, g_rev = _reverse_kl(log_q, log_p, need_grad)
    values = gate * fwd + (1.0 - gate) * rev
    if not need_grad:
        return values, None
    gate = gate.unsqueeze(-1)
    return values, g_fwd.mul_(gate).add_(g_rev.mul_(1.0 - gate))  # type: ignore[union-attr]


def f_divergence(f: Callable[[Tensor], Tensor], *, max_log_ratio: float = 20.0) -> DivergenceFn:
    """A divergence function D_f(p‖q) = Σ q f(p/q) from a convex f with f(1) = 0.

    Examples: f(t) = t log t is forward KL, −log t reverse KL, ½|t − 1| total variation,
    (t − 1)² Pearson χ², (√t − 1)² squared Hellinger (×2).

    Args:
        f: elementwise, convex on (0, ∞), f(1) = 0; receives the ratio t = p/q as a tensor.
        max_log_ratio: the log-ratio log(p/q) is clipped to ±this before f sees it, so that
            f never receives 0 or ∞. This is exact wherever neither distribution has more
            than e^max_log_ratio times the other's mass on a token; beyond that (disjoint
            supports) the term is underestimated. Use the built-ins when supports differ.

    Returns:
        `fn(log_q, log_p)` to pass to `register_divergence` (gradients by autograd).
    """
    one = float(f(torch.ones((), dtype=torch.float64)))
    if abs(one) > 1e-9:
        raise InputError(f"f_divergence: f(1) must be 0 so that identical inputs give 0; got {one}")

    def fn(log_q: Tensor, log_p: Tensor) -> Tensor:
        t = (log_p - log_q).clamp(-max_log_ratio, max_log_ratio).exp()
        return (log_q.exp() * f(t)).sum(-1)

    fn.__doc__ = f"D_f(p‖q) = Σ q f(p/q) for f = {getattr(f, '__name__', repr(f))}"
    return fn


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, DivergenceSpec] = {}


def _keyword_defaults(name: str, fn: Callable[..., object], n_positional: int) -> dict[str, float]:
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < n_positional:
        raise InputError(f"divergence {name!r}: fn must take (log_q, log_p, **params)")
    defaults: dict[str, float] = {}
    for p in params[n_positional:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is inspect.Parameter.empty:
            raise InputError(
                f"divergence {name!r}: parameter {p.name!r} needs a default value "
                "(fn(log_q, log_p, name=default, ...))"
            )
        defaults[p.name] = p.default
    return defaults


def _autograd_value_and_grad(fn: DivergenceFn) -> ValueAndGradFn:
    def value_and_grad(
        log_q: Tensor, log_p: Tensor, need_grad: bool, **params: float
    ) -> tuple[Tensor, Tensor | None]:
        if not need_grad:
            return fn(log_q, log_p, **params), None
        with torch.enable_grad():
            x = log_q.detach().requires_grad_(True)
            values = fn(x, log_p, **params)
            (g,) = torch.autograd.grad(values.sum(), x)
        return values.detach(), g

    return value_and_grad


def register_divergence(name: str, fn: DivergenceFn, *, replace: bool = False) -> DivergenceSpec:
    """Add a divergence to the registry under `name`; gradients come from autograd.

    Args:
        name: the name `divergence(name, ...)` will accept.
        fn: `fn(log_q, log_p, **params) -> Tensor`: two positional log-prob tensors of shape
            (..., V) (student first), then keyword parameters that all have float defaults;
            returns shape (...). See `f_divergence` to build one from a convex f.
        replace: allow replacing an existing entry (else registering a name twice is an error).

    Returns:
        The registered spec.
    """
    if name in _REGISTRY and not replace:
        raise InputError(
            f"divergence {name!r} is already registered; pass replace=True to override"
        )
    defaults = _keyword_defaults(name, fn, 2)
    spec = DivergenceSpec(name, _autograd_value_and_grad(fn), MappingProxyType(defaults))
    _REGISTRY[name] = spec
    return spec


def _register_builtin(name: str, value_and_grad: ValueAndGradFn) -> None:
    defaults = _keyword_defaults(name, value_and_grad, 3)
    _REGISTRY[name] = DivergenceSpec(name, value_and_grad, MappingProxyType(defaults))


for _name, _vg in (
    ("forward_kl", _forward_kl),
    ("reverse_kl", _reverse_kl),
    ("jsd", _jsd),
    ("jsd_normalized", _jsd_normalized),
    ("tv", _tv),
    ("skew_forward_kl", _skew_forward_kl),
    ("skew_reverse_kl", _skew_reverse_kl),
    ("entropy_gated_kl", _entropy_gated_kl),
):
    _register_builtin(_name, _vg)


def available_divergences() -> tuple[str, ...]:
    """The registered names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_divergence(name: str, params: Mapping[str, float] | None = None) -> DivergenceSpec:
    """The spec registered under `name`, after checking that it accepts `params`.

    Raises:
        InputError: no such name (the message lists the names), or an unknown parameter.
    """
    try:
        spec = _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown divergence {name!r}; choose one of {', '.join(available_divergences())} "
            "or register_divergence() your own"
        ) from None
    unknown = sorted(set(params or ()) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(spec.defaults) or "no parameters"
        raise InputError(
            f"divergence {name!r} got unknown parameter(s) {', '.join(unknown)}; it takes {accepted}"
        )
    return spec


# --------------------------------------------------------------------------------------------
# Autograd wrappers: the closed-form gradient, saved once, as the backward
# --------------------------------------------------------------------------------------------


def log_probs_value_and_grad(
    spec: DivergenceSpec,
    log_q: Tensor,
    log_p: Tensor,
    temperature: float,
    params: Mapping[str, float],
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Values and ∂(Σ values)/∂student_logits from the two sides' log-probs, without autograd.

    The softmax's Jacobian is applied in closed form: with g = ∂/∂log q,
    ∂/∂z = (g − q Σ_v g) / T. `log_q` is consumed (overwritten) to save memory.

    Args:
        spec: from `get_divergence`.
        log_q, log_p: from `log_probs(student_logits, T)` and `log_probs(teacher_logits, T)`.
        temperature: the T used for them.
        params: the divergence's parameters.
        need_grad: also compute the gradient.

    Returns:
        (values (...), the logits' gradient (..., V), float32 at least, or None).
    """
    with torch.no_grad():
        values, g = spec.value_and_grad(log_q, log_p, need_grad, **params)
        if g is None:
            return values, None
        q = log_q.exp_()
        g -= q.mul_(g.sum(-1, keepdim=True))
        if temperature != 1.0:
            g /= temperature
        return values, g


def logits_value_and_grad(
    spec: DivergenceSpec,
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    params: Mapping[str, float],
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """`log_probs_value_and_grad` from logits: values and the logits' gradient, no autograd."""
    with torch.no_grad():
        log_p = log_probs(teacher_logits, temperature)
        log_q = log_probs(student_logits, temperature)
    return log_probs_value_and_grad(spec, log_q, log_p, temperature, params, need_grad)


class _LogitsDivergence(torch.autograd.Function):
    """divergence(student_logits, teacher_logits): saves only the logits' gradient."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, spec, temperature, params):  # type: ignore[override]
        need = bool(ctx.needs_input_grad[0])
        values, dz = logits_value_and_grad(
            spec, student_logits, teacher_logits, temperature, params, need
        )
        if dz is not None:
            ctx.save_for_backward(dz)
            ctx.in_dtype = student_logits.dtype
        return values

    @staticmethod
    def backward(ctx, grad_values):  # type: ignore[override]
        (dz,) = ctx.saved_tensors
        return (dz * grad_values.unsqueeze(-1)).to(ctx.in_dtype), None, None, None, None


class _LogProbDivergence(torch.autograd.Function):
    """divergence(log_q, log_p) for callers that hold log-probs (e.g. top-k categories)."""

    @staticmethod
    def forward(ctx, log_q, log_p, spec, params):  # type: ignore[override]
        values, g = spec.value_and_grad(log_q, log_p, bool(ctx.needs_input_grad[0]), **params)
        if g is not None:
            ctx.save_for_backward(g)
        return values

    @staticmethod
    def backward(ctx, grad_values):  # type: ignore[override]
        (g,) = ctx.saved_tensors
        return g * grad_values.unsqueeze(-1), None, None, None


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def divergence_from_log_probs(name: str, log_q: Tensor, log_p: Tensor, **params: float) -> Tensor:
    """The registered divergence on log-probabilities that are already normalised.

    For callers that hold log-probs (the top-k estimator); gradients flow to `log_q`. Inputs
    must be floored like `log_probs` does; no mask, no temperature.

    Args:
        name: a registered divergence name.
        log_q: student log-probs, shape (..., V).
        log_p: teacher log-probs, same shape (no gradient).
        **params: the divergence's parameters (e.g. beta=0.5).

    Returns:
        Shape (...).
    """
    spec = get_divergence(name, params)
    return _LogProbDivergence.apply(log_q, log_p.detach(), spec, params)


def divergence(
    name: str,
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    mask: Tensor | None = None,
    **params: float,
) -> Tensor:
    """The divergence `name` between teacher p and student q at every position.

    Args:
        name: one of `available_divergences()` (see the module docstring for the formulas).
        student_logits: shape (..., V); gradients flow to it.
        teacher_logits: same shape as `student_logits` (a different vocabulary is an error);
            no gradient flows to it (the teacher is a fixed target).
        temperature: T > 0; both distributions are softmax(logits / T). No T² rescaling.
        mask: optional, shape (...), bool or 0/1: positions where it is false are not computed
            at all; their value is exactly 0 and so is their gradient.
        **params: the divergence's parameters (beta for the JSDs, alpha for the skew KLs, ...).

    Returns:
        Shape (...): one value per position, float32 (float64 for float64 inputs).
    """
    spec = get_divergence(name, params)
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise InputError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape; the vocabularies must match "
            f"(student V={student_logits.shape[-1]}, teacher V={teacher_logits.shape[-1]})"
        )
    teacher_logits = teacher_logits.detach()
    if mask is None:
        return _LogitsDivergence.apply(student_logits, teacher_logits, spec, temperature, params)
    lead = student_logits.shape[:-1]
    if tuple(mask.shape) != tuple(lead):
        raise InputError(
            f"mask shape {tuple(mask.shape)} must equal the logits' leading shape {tuple(lead)}"
        )
    vocab = student_logits.shape[-1]
    index = mask.reshape(-1).nonzero().squeeze(-1)
    # Compute only the kept rows; index_select's backward scatters, so masked rows get an
    # exact zero gradient whatever they contain.
    values = _LogitsDivergence.apply(
        student_logits.reshape(-1, vocab).index_select(0, index),
        teacher_logits.reshape(-1, vocab).index_select(0, index),
        spec,
        temperature,
        params,
    )
    out = values.new_zeros(lead.numel()).index_put((index,), values)
    return out.reshape(lead)


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy (nats) of softmax(logits / T) at every position.

    Args:
        logits: shape (..., V).
        temperature: T > 0.

    Returns:
        Shape (...), float32 at least; 0 for a one-hot distribution (no NaN).
    """
    lp = log_probs(logits, temperature)
    return -(lp.exp() * lp).sum(-1)


def masked_mean(values: Tensor, mask: Tensor, denominator: float | Tensor | None = None) -> Tensor:
    """Σ values over kept positions / (the number of kept positions, or `denominator`).

    Values at masked positions are ignored even when they are NaN or inf (selected away with
    `where`, not multiplied by 0), and so are their gradients.

    Args:
        values: any shape.
        mask: same shape, bool or 0/1.
        denominator: divide by this instead of the local count, e.g. the number of action
            tokens in the global batch, so that micro-batches add up to the batch's mean.

    Returns:
        A scalar tensor; 0 when nothing is kept and no denominator is given.
    """
    keep = mask.to(torch.bool)
    total = torch.where(
        keep, values, torch.zeros((), dtype=values.dtype, device=values.device)
    ).sum()
    if denominator is None:
        denominator = keep.sum().clamp(min=1)
    return total / denominator
