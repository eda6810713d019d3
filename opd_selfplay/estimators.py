"""Estimators of the teacher–student divergence, by what the teacher exposes, and the
memory-bounded full-vocabulary path.

Which estimator a run can use depends on the teacher's access level (the survey's second
axis, arXiv 2604.00626):

| estimator | teacher access | tensors the teacher source delivers | bias |
| --- | --- | --- | --- |
| `full` | white-box | full logits (or hidden states + lm_head) | exact |
| `topk` tail="bucket" | grey-box | top-k log-probs + ids | ≤ the exact value (see below) |
| `topk` tail="renormalize" | grey-box | top-k log-probs + ids | either sign; exact when k = V |
| `k1` | black-box | log-prob of each sampled token | unbiased for reverse KL, high variance, can be < 0 |
| `k2` | black-box | log-prob of each sampled token | biased (second order in log r), ≥ 0 |
| `k3` | black-box | log-prob of each sampled token | unbiased for reverse KL, ≥ 0, lower variance |
| `reinforce` | black-box | log-prob of each sampled token | unbiased gradient of the per-token reverse KL |

`ESTIMATORS` holds these declarations for configuration checks and documentation.

Full vocabulary, chunked (`chunked_divergence`). The exact per-position divergence of
`opd_selfplay.divergences`, computed over blocks of positions so that nothing of size
positions × vocabulary is ever allocated besides the caller's own tensors: with the logits
projection fused in (`LinearHead`: hidden states and the lm_head weight), peak memory is
O(chunk × V) for the values and the gradient. The gradient is computed chunk by chunk during
the forward pass (the loss is a weighted sum, so its gradient is known up to the scalar that
backward brings) and kept at the size of the inputs: no recomputation, unlike
checkpointing, so the time stays that of one forward and one backward. This is the approach
of fused linear cross-entropy kernels (e.g. Liger-Kernel), here for any registered divergence.

Top-k (`topk_divergence`). Grey-box teachers (an inference server) return the k most likely
tokens' log-probs. Over the support `ids` (the teacher's top-k, or the student's top-k scored
by the teacher), both distributions are either
- coarsened with a tail bucket holding the rest of each one's mass, log(1 − Σ_k p): the
  divergence of the coarsened pair, which by the data-processing inequality is ≤ the true
  f-divergence (equality when p and q are proportional on the tail); or
- renormalised over the k tokens: the divergence between the two conditionals on the
  support, which ignores the tail and can be above or below the true value.
With k = V both are the full divergence (tested). Diagnostics after verl's top-k distillation
loss, which logs the teacher-top-k mass of each model: `topk_diagnostics`.

Sampled-token estimators (Schulman 2020, "Approximating KL Divergence"): with y ~ q and
r = p(y)/q(y), k1 = −log r = log q − log p, k2 = ½ (log r)², k3 = (r − 1) − log r. They are
*values*: for logging, and as rewards. Differentiated directly they do not give the
divergence's gradient, because y was sampled from q: E_q[∇ k1] = E_q[∇ log q] = 0, and
E_q[∇ k3] = ∇ KL(p‖q) (the forward KL's gradient, not the reverse KL's). To train on
sampled tokens use the score-function (REINFORCE) form, `reinforce_surrogate`, or the
sequence-level objective in `opd_selfplay.objectives`.

Not covered here: losses and their normalisation over a batch (`opd_selfplay.objectives`),
fetching the teacher's tensors (teacher sources).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from opd_selfplay.divergences import (
    LOG_FLOOR,
    divergence_from_log_probs,
    get_divergence,
    log_probs,
    log_probs_value_and_grad,
)
from opd_selfplay.errors import InputError

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "ESTIMATORS",
    "ChunkedDivergence",
    "EstimatorInfo",
    "LinearHead",
    "TeacherAccess",
    "TokenWeighting",
    "chunked_divergence",
    "gather_log_probs",
    "k1",
    "k2",
    "k3",
    "reinforce_surrogate",
    "student_topk_ids",
    "topk_diagnostics",
    "topk_divergence",
]


class TeacherAccess(str, Enum):
    """What a teacher exposes (the survey's teacher-access axis)."""

    WHITE_BOX = "white_box"
    """Full logits over the shared vocabulary (a local model)."""
    GREY_BOX = "grey_box"
    """The top-k log-probs at each position (an inference server)."""
    BLACK_BOX = "black_box"
    """Only the log-prob of the token the student sampled (or only text)."""


@dataclass(frozen=True)
class EstimatorInfo:
    """The declaration of an estimator: what it needs and how it errs."""

    name: str
    """The name configurations use."""
    access: TeacherAccess
    """The least teacher access it needs (a white-box teacher can feed every estimator)."""
    estimates: str
    """What it estimates."""
    bias: str
    """Its bias, in one sentence."""


ESTIMATORS: Mapping[str, EstimatorInfo] = MappingProxyType(
    {
        e.name: e
        for e in (
            EstimatorInfo("full", TeacherAccess.WHITE_BOX, "any registered divergence", "exact"),
            EstimatorInfo(
                "topk_bucket",
                TeacherAccess.GREY_BOX,
                "the divergence of the distributions coarsened to k tokens + a tail bucket",
                "never above the exact f-divergence (data processing); exact when k = V",
            ),
            EstimatorInfo(
                "topk_renormalize",
                TeacherAccess.GREY_BOX,
                "the divergence of the two distributions conditioned on the k tokens",
                "either sign, ignores the tail's mass; exact when k = V",
            ),
            EstimatorInfo(
                "k1",
                TeacherAccess.BLACK_BOX,
                "reverse KL, from the sampled token",
                "unbiased, high variance, negative on some samples",
            ),
            EstimatorInfo(
                "k2",
                TeacherAccess.BLACK_BOX,
                "reverse KL, from the sampled token",
                "biased (exact to second order in log r), non-negative, low variance",
            ),
            EstimatorInfo(
                "k3",
                TeacherAccess.BLACK_BOX,
                "reverse KL, from the sampled token",
                "unbiased, non-negative, lower variance than k1",
            ),
            EstimatorInfo(
                "reinforce",
                TeacherAccess.BLACK_BOX,
                "the gradient of the per-token reverse KL (score function)",
                "unbiased for the gradient at on-policy samples; needs IS weights off-policy",
            ),
        )
    }
)
"""Every estimator, by name."""

DEFAULT_CHUNK_ELEMENTS = 1 << 22
"""Default chunk: positions per block = max(1, this // V), i.e. 16 MiB per float32 block of
logits (27 positions at V = 151,936). Smaller blocks save memory and cost little time, as
long as a block is large enough for the matrix products (see benchmarks/divergence_memory)."""


# --------------------------------------------------------------------------------------------
# Full vocabulary, chunked
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearHead:
    """Logits given lazily as hidden states times the lm_head: hidden @ weight.T + bias.

    Passing this instead of logits lets `chunked_divergence` project block by block, so the
    positions × vocabulary logits are never materialised. Gradients flow to every tensor here
    that requires grad (student side); a teacher's head is used without gradient.
    """

    hidden: Tensor
    """Shape (..., H): the final hidden states at the positions to score."""
    weight: Tensor
    """Shape (V, H): the output embedding (lm_head) weight."""
    bias: Tensor | None = None
    """Shape (V,), when the head has one."""

    @property
    def vocab_size(self) -> int:
        """V."""
        return int(self.weight.shape[0])

    def logits(self) -> Tensor:
        """The materialised logits, shape (..., V): for small inputs and tests."""
        return F.linear(self.hidden, self.weight, self.bias)


class ChunkedDivergence(NamedTuple):
    """What `chunked_divergence` returns."""

    loss: Tensor
    """Scalar: Σ weights · divergence over the kept positions; differentiable."""
    values: Tensor
    """Shape (...): the divergence at each position (0 where masked); no gradient."""
    student_entropy: Tensor | None
    """Shape (...): the student's entropy (nats) when asked for, else None; no gradient."""
    teacher_entropy: Tensor | None
    """Shape (...): the teacher's entropy (nats) when asked for, else None; no gradient."""


TokenWeighting = Callable[[Tensor], Tensor]
"""Maps the teacher's entropy (nats) at each position, shape (N,), to a loss weight (N,)
(no gradient): the plug-in point for uncertainty-aware weighting, e.g.
`opd_selfplay.objectives.teacher_confidence_weighting`."""


@dataclass(frozen=True)
class _ChunkConfig:
    name: str
    params: tuple[tuple[str, float], ...]
    temperature: float
    chunk_rows: int
    with_entropy: bool
    weighting: TokenWeighting | None


def _split(x: Tensor | LinearHead) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(rows (N, F), weight or None, bias or None) with the leading axes flattened."""
    if isinstance(x, LinearHead):
        h = x.hidden
        return h.reshape(-1, h.shape[-1]), x.weight, x.bias
    return x.reshape(-1, x.shape[-1]), None, None


def _chunk_loop(
    cfg: _ChunkConfig,
    s_x: Tensor,
    s_w: Tensor | None,
    s_b: Tensor | None,
    t_x: Tensor,
    t_w: Tensor | None,
    t_b: Tensor | None,
    weights_N: Tensor,
    index_K: Tensor,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[Tensor | None, Tensor | None, Tensor | None]]:
    """The loss, per-row values and entropies, and the gradients of the loss w.r.t. the
    student's (rows, weight, bias), computed block by block over the kept rows `index_K`."""
    params = dict(cfg.params)
    spec = get_divergence(cfg.name, params)
    n = s_x.shape[0]
    cdtype = torch.promote_types(s_x.dtype, torch.float32)
    values = torch.zeros(n, dtype=cdtype, device=s_x.device)
    ent_s = torch.zeros(n if cfg.with_entropy else 0, dtype=cdtype, device=s_x.device)
    ent_t = torch.zeros_like(ent_s)
    loss = torch.zeros((), dtype=cdtype, device=s_x.device)
    grad_x = torch.zeros_like(s_x) if need[0] else None
    # Accumulate the head's gradient in float32 at least; cast back in backward.
    grad_w = torch.zeros(s_w.shape, dtype=cdtype, device=s_w.device) if need[1] else None
    grad_b = torch.zeros(s_b.shape, dtype=cdtype, device=s_b.device) if need[2] else None
    any_grad = any(need)
    # Without a mask the blocks are contiguous: take views instead of copies.
    contiguous = index_K.numel() == n
    for start in range(0, index_K.numel(), cfg.chunk_rows):
        idx = index_K[start : start + cfg.chunk_rows]
        rows = slice(start, start + idx.numel()) if contiguous else None

        def take(t: Tensor, idx: Tensor = idx, rows: slice | None = rows) -> Tensor:
            return t[rows] if rows is not None else t.index_select(0, idx)

        w_c = take(weights_N).to(cdtype)
        # Teacher first, so its logits are freed before the student's block exists.
        t_rows = take(t_x)
        log_p = log_probs(t_rows if t_w is None else F.linear(t_rows, t_w, t_b), cfg.temperature)
        x = take(s_x)
        log_q = log_probs(x if s_w is None else F.linear(x, s_w, s_b), cfg.temperature)
        if cfg.with_entropy or cfg.weighting is not None:
            h_t = -(log_p.exp() * log_p).sum(-1)
            if cfg.weighting is not None:
                w_c = w_c * cfg.weighting(h_t).to(cdtype)
            if cfg.with_entropy:
                ent_t.index_copy_(0, idx, h_t)
                ent_s.index_copy_(0, idx, -(log_q.exp() * log_q).sum(-1))
        # The divergence's closed-form gradient w.r.t. this block's logits (log_q is consumed);
        # the projection's gradient is applied by hand below, straight into the accumulators.
        vals, g = log_probs_value_and_grad(spec, log_q, log_p, cfg.temperature, params, any_grad)
        del log_q, log_p
        values.index_copy_(0, idx, vals)
        loss += (vals * w_c).sum()
        if g is None:
            continue
        g *= w_c.unsqueeze(-1)
        if s_w is None:
            if rows is not None:
                grad_x[rows] = g  # type: ignore[index]
            else:
                grad_x.index_copy_(0, idx, g.to(grad_x.dtype))  # type: ignore[union-attr]
            continue
        g = g.to(s_w.dtype)
        if need[0]:
            grad_x.index_copy_(0, idx, (g @ s_w).to(grad_x.dtype))  # type: ignore[union-attr]
        if need[1]:
            grad_w.addmm_(g.t().to(cdtype), x.to(cdtype))  # type: ignore[union-attr]
        if need[2]:
            grad_b += g.sum(0).to(cdtype)  # type: ignore[operator]
    return loss, values, ent_s, ent_t, (grad_x, grad_w, grad_b)


class _ChunkedDivergenceFn(torch.autograd.Function):
    """Forward computes the loss and, block by block, its gradient; backward scales it."""

    @staticmethod
    def forward(ctx, cfg, s_x, s_w, s_b, t_x, t_w, t_b, weights_N, index_K):  # type: ignore[override]
        need = tuple(bool(f) for f in ctx.needs_input_grad[1:4])
        with torch.no_grad():
            loss, values, ent_s, ent_t, grads = _chunk_loop(
                cfg,
                s_x,
                s_w,
                s_b,
                t_x,
                t_w,
                t_b,
                weights_N,
                index_K,
                need,  # type: ignore[arg-type]
            )
        ctx.save_for_backward(*grads)
        ctx.param_dtypes = (
            s_x.dtype,
            None if s_w is None else s_w.dtype,
            None if s_b is None else s_b.dtype,
        )
        ctx.mark_non_differentiable(values, ent_s, ent_t)
        return loss, values, ent_s, ent_t

    @staticmethod
    def backward(ctx, g_loss, *_unused):  # type: ignore[override]
        # A loss used as is (the usual case) brings g_loss = 1: skip a pass over the
        # (V, H) head gradient.
        unit = bool(g_loss == 1)
        out = []
        for g, dtype in zip(ctx.saved_tensors, ctx.param_dtypes, strict=True):
            if g is not None and not unit:
                g = g * g_loss.to(g.dtype)
            out.append(None if g is None else g.to(dtype))
        return (None, *out, None, None, None, None, None)


def chunked_divergence(
    name: str,
    student: Tensor | LinearHead,
    teacher: Tensor | LinearHead,
    *,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    with_entropy: bool = False,
    weighting: TokenWeighting | None = None,
    **params: float,
) -> ChunkedDivergence:
    """The full-vocabulary divergence at every position, in blocks of positions.

    Memory: besides the inputs (and the gradient of student logits when logits are given),
    O(chunk_size × V). Values and gradients equal those of `divergence` (tested).

    Args:
        name: a registered divergence (see `opd_selfplay.divergences`).
        student: logits (..., V), or a `LinearHead` whose hidden states are (..., H).
            Gradients flow to whichever of its tensors require grad.
        teacher: logits (..., V) or a `LinearHead`, same leading shape; no gradient.
        mask: (...) bool or 0/1; positions where it is false are skipped (value 0, gradient 0).
        weights: (...) per-position loss weights (no gradient), e.g. 1 / the global number
            of action tokens; default 1.
        temperature: T > 0, applied to both sides.
        chunk_size: positions per block; default max(1, DEFAULT_CHUNK_ELEMENTS // V).
        with_entropy: also return both entropies per position (one more pass per side).
        weighting: multiplies `weights` by weighting(teacher entropy) per position, computed
            block by block (the teacher's entropy is never held for all positions at once).
        **params: the divergence's parameters.

    Returns:
        `ChunkedDivergence(loss, values, student_entropy, teacher_entropy)`.
    """
    get_divergence(name, params)
    s_x, s_w, s_b = _split(student)
    t_x, t_w, t_b = _split(teacher)
    s_vocab = s_x.shape[-1] if s_w is None else s_w.shape[0]
    t_vocab = t_x.shape[-1] if t_w is None else t_w.shape[0]
    if s_vocab != t_vocab:
        raise InputError(
            f"student vocabulary {s_vocab} != teacher vocabulary {t_vocab}; "
            "use a teacher with the student's tokenizer or configure cross-tokenizer alignment"
        )
    lead = (student.hidden if isinstance(student, LinearHead) else student).shape[:-1]
    t_lead = (teacher.hidden if isinstance(teacher, LinearHead) else teacher).shape[:-1]
    if tuple(lead) != tuple(t_lead):
        raise InputError(f"student positions {tuple(lead)} != teacher positions {tuple(t_lead)}")
    n = s_x.shape[0]
    for label, t in (("mask", mask), ("weights", weights)):
        if t is not None and tuple(t.shape) != tuple(lead):
            raise InputError(
                f"{label} shape {tuple(t.shape)} must equal the positions' shape {tuple(lead)}"
            )
    if chunk_size is not None and chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // max(1, s_vocab))
    keep = (
        torch.ones(n, dtype=torch.bool, device=s_x.device)
        if mask is None
        else mask.reshape(-1).to(torch.bool)
    )
    index_K = keep.nonzero().squeeze(-1)
    weights_N = (
        torch.ones(n, device=s_x.device) if weights is None else weights.detach().reshape(-1)
    )
    cfg = _ChunkConfig(
        name, tuple(sorted(params.items())), float(temperature), rows, with_entropy, weighting
    )
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}; use 1.0 for none")
    t_args = (
        t_x.detach(),
        None if t_w is None else t_w.detach(),
        None if t_b is None else t_b.detach(),
    )
    s_tensors = [t for t in (s_x, s_w, s_b) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in s_tensors):
        loss, values, ent_s, ent_t = _ChunkedDivergenceFn.apply(
            cfg, s_x, s_w, s_b, *t_args, weights_N, index_K
        )
    else:
        with torch.no_grad():
            loss, values, ent_s, ent_t, _ = _chunk_loop(
                cfg, s_x, s_w, s_b, *t_args, weights_N, index_K, (False, False, False)
            )
    shape = tuple(lead)
    return ChunkedDivergence(
        loss=loss,
        values=values.reshape(shape),
        student_entropy=ent_s.reshape(shape) if with_entropy else None,
        teacher_entropy=ent_t.reshape(shape) if with_entropy else None,
    )


# --------------------------------------------------------------------------------------------
# Top-k (grey-box)
# --------------------------------------------------------------------------------------------


def gather_log_probs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / T) at `ids`, without materialising the (..., V) log-probs.

    Args:
        logits: (..., V).
        ids: (..., K) int64 token ids (K = 1 for sampled tokens).
        temperature: T > 0.

    Returns:
        (..., K) log-probs, float32 at least, floored at `LOG_FLOOR`; differentiable.
    """
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}; use 1.0 for none")
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        x = x / temperature
    return (x.gather(-1, ids) - torch.logsumexp(x, dim=-1, keepdim=True)).clamp(min=LOG_FLOOR)


def student_topk_ids(student_logits: Tensor, k: int) -> Tensor:
    """The student's k most likely token ids at each position (no gradient): the support of
    the top-k estimator over the student's support (the teacher then scores these ids)."""
    return student_logits.detach().topk(k, dim=-1).indices


def _log1mexp(a: Tensor) -> Tensor:
    """log(1 − e^a) for a ≤ 0, accurate on both sides of −log 2 (Mächler 2012), floored:
    a mass that rounds to ≥ 1 gives an empty tail (LOG_FLOOR), not NaN."""
    a = a.clamp(max=0.0)
    tail = torch.where(
        a > -0.6931471805599453,
        torch.log(torch.clamp(-torch.expm1(a), min=torch.finfo(a.dtype).tiny)),
        torch.log1p(-torch.exp(a.clamp(max=-0.6931471805599453))),
    )
    return tail.clamp(min=LOG_FLOOR)


def topk_divergence(
    name: str,
    student_logits: Tensor,
    teacher_topk_logprobs: Tensor,
    ids: Tensor,
    *,
    tail: str = "bucket",
    temperature: float = 1.0,
    mask: Tensor | None = None,
    **params: float,
) -> Tensor:
    """A divergence estimated from the teacher's log-probs on a k-token support.

    Args:
        name: a registered divergence.
        student_logits: (..., V); gradients flow to it.
        teacher_topk_logprobs: (..., K): the teacher's normalised log-probs (over the full
            vocabulary, as a server returns them, at temperature 1) of the tokens `ids`.
        ids: (..., K) distinct token ids per position: the teacher's top-k (from the server),
            or `student_topk_ids(...)` scored by the teacher.
        tail: "bucket" adds a (K+1)-th category with each side's remaining mass;
            "renormalize" conditions both sides on the K tokens. With K = V the bucket is
            empty and omitted, and both equal the full divergence.
        temperature: T > 0. With "renormalize" both sides are tempered exactly; "bucket"
            needs the teacher's full normaliser at T, which k log-probs do not give, so it
            requires T = 1.
        mask: (...) bool or 0/1; masked positions give 0 and no gradient.
        **params: the divergence's parameters.

    Returns:
        (...) one value per position.
    """
    if tail not in ("bucket", "renormalize"):
        raise InputError(f"tail must be 'bucket' or 'renormalize', got {tail!r}")
    if teacher_topk_logprobs.shape != ids.shape or ids.shape[:-1] != student_logits.shape[:-1]:
        raise InputError(
            f"teacher_topk_logprobs {tuple(teacher_topk_logprobs.shape)} and ids {tuple(ids.shape)} "
            f"must both be (..., K) with the student's positions {tuple(student_logits.shape[:-1])}"
        )
    vocab, k = student_logits.shape[-1], ids.shape[-1]
    if k > vocab:
        raise InputError(f"top-k size {k} exceeds the vocabulary size {vocab}")
    with_bucket = tail == "bucket" and k < vocab
    if with_bucket and temperature != 1.0:
        raise InputError(
            "topk_divergence: tail='bucket' needs temperature=1.0 (the teacher's tempered tail "
            "mass is unknown from k log-probs); use tail='renormalize' for other temperatures"
        )
    lead = student_logits.shape[:-1]
    index = None
    if mask is not None:
        if tuple(mask.shape) != tuple(lead):
            raise InputError(
                f"mask shape {tuple(mask.shape)} must equal the positions' shape {tuple(lead)}"
            )
        index = mask.reshape(-1).nonzero().squeeze(-1)
        student_logits = student_logits.reshape(-1, vocab).index_select(0, index)
        teacher_topk_logprobs = teacher_topk_logprobs.reshape(-1, k).index_select(0, index)
        ids = ids.reshape(-1, k).index_select(0, index)
    lq = gather_log_probs(student_logits, ids, temperature)
    lp = teacher_topk_logprobs.detach().to(lq.dtype).clamp(min=LOG_FLOOR)
    if with_bucket:
        lq = torch.cat([lq, _log1mexp(torch.logsumexp(lq, -1, keepdim=True))], dim=-1)
        lp = torch.cat([lp, _log1mexp(torch.logsumexp(lp, -1, keepdim=True))], dim=-1)
    # Renormalise (a no-op up to rounding with the bucket, which already sums to 1).
    values = divergence_from_log_probs(
        name,
        torch.log_softmax(lq, -1).clamp(min=LOG_FLOOR),
        torch.log_softmax(lp if temperature == 1.0 else lp / temperature, -1).clamp(min=LOG_FLOOR),
        **params,
    )
    if index is None:
        return values
    return values.new_zeros(lead.numel()).index_put((index,), values).reshape(lead)


def topk_diagnostics(
    student_logits: Tensor,
    teacher_topk_logprobs: Tensor,
    teacher_ids: Tensor,
    mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """How much of each distribution a top-k estimator sees, averaged over kept positions.

    After verl's top-k distillation loss, which logs the mass each model puts on the
    teacher's top-k; we add the student's own top-k mass and the overlap of the two sets.

    Args:
        student_logits: (..., V).
        teacher_topk_logprobs: (..., K) the teacher's log-probs of `teacher_ids`.
        teacher_ids: (..., K) the teacher's top-k ids.
        mask: (...) positions to average over; default all.

    Returns:
        0-dim tensors (no gradient): `teacher_topk_mass` (Σ p over the teacher's top-k),
        `student_mass_on_teacher_topk` (Σ q there), `student_topk_mass` (Σ q over the
        student's own top-k), `topk_overlap` (|student top-k ∩ teacher top-k| / K).
    """
    with torch.no_grad():
        k = teacher_ids.shape[-1]
        lq = log_probs(student_logits)
        s_ids = lq.topk(k, dim=-1).indices
        stats = {
            "teacher_topk_mass": teacher_topk_logprobs.to(lq.dtype).exp().sum(-1),
            "student_mass_on_teacher_topk": lq.gather(-1, teacher_ids).exp().sum(-1),
            "student_topk_mass": lq.gather(-1, s_ids).exp().sum(-1),
            "topk_overlap": (s_ids.unsqueeze(-1) == teacher_ids.unsqueeze(-2))
            .any(-1)
            .sum(-1)
            .to(lq.dtype)
            / k,
        }
        keep = (
            torch.ones(lq.shape[:-1], dtype=torch.bool, device=lq.device)
            if mask is None
            else mask.bool()
        )
        count = keep.sum().clamp(min=1)
        return {key: torch.where(keep, v, 0.0).sum() / count for key, v in stats.items()}


# --------------------------------------------------------------------------------------------
# Sampled-token estimators (black-box)
# --------------------------------------------------------------------------------------------


def k1(student_logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:
    """k1 = log q(y) − log p(y) per sampled token y ~ q: unbiased for KL(q‖p), can be < 0.

    Args:
        student_logprobs: (...) log q of the sampled tokens.
        teacher_logprobs: (...) log p of the same tokens.

    Returns:
        (...) per token; differentiable, but see the module docstring: its gradient has
        expectation 0 at on-policy samples.
    """
    return student_logprobs - teacher_logprobs


def k2(student_logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:
    """k2 = ½ (log p(y) − log q(y))² per sampled token: biased, ≥ 0, low variance."""
    return 0.5 * (teacher_logprobs - student_logprobs) ** 2


def k3(student_logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:
    """k3 = (r − 1) − log r with r = p(y)/q(y), per sampled token y ~ q.

    Unbiased for KL(q‖p) (E_q[r] = 1), ≥ 0 since log r ≤ r − 1 (Schulman 2020). Computed as
    expm1(log r) − log r, which keeps its precision when r ≈ 1. Its gradient at on-policy
    samples estimates the *forward* KL's gradient (module docstring).

    Returns:
        (...) per token.
    """
    log_r = teacher_logprobs - student_logprobs
    # Keep e^log_r finite when the sampled token was very unlikely under q (off-policy data).
    log_r = log_r.clamp(max=math.log(torch.finfo(log_r.dtype).max) - 1.0)
    return torch.expm1(log_r) - log_r


def reinforce_surrogate(student_logprobs: Tensor, teacher_logprobs: Tensor) -> Tensor:
    """Per-token surrogate whose gradient is the score-function estimate of ∇ KL(q‖p).

    sg(log q(y) − log p(y)) · log q(y): for y ~ q, E[∇] = Σ_y q (log q − log p) ∇ log q
    = ∇ KL(q‖p) (the "+1" of ∇ of q log q integrates to 0). This is the REINFORCE form with
    the per-token reward log p − log q; its value is not the divergence (use k1/k3 to log it).
    Sequence-level credit (future tokens) and importance weights are in
    `opd_selfplay.objectives.sequence_level_loss`.

    Args:
        student_logprobs: (...) log q of the sampled tokens, with gradient.
        teacher_logprobs: (...) log p of the same tokens.

    Returns:
        (...) per token.
    """
    return (student_logprobs - teacher_logprobs).detach() * student_logprobs
