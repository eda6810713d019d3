"""The full-vocabulary divergence computed over blocks of positions, with the logits
projection optionally fused in: the memory-bounded path of the `full` (white-box) estimator.

`chunked_divergence` returns Σ_n w_n · D(p_n, q_n) over the kept positions n (and the
per-position values), for any divergence registered in `opd_selfplay.divergences`, with the
same values and gradients as `divergence` on the whole block (tested), but nothing of size
positions × vocabulary is ever allocated besides the caller's own tensors:

- the student is given as logits (N, V), or as a `LinearHead` (hidden states (N, H) and the
  lm_head weight (V, H)), in which case each block's logits are projected, used and dropped,
  and the logits never exist in full; the teacher likewise;
- peak memory is then O(chunk × V) for the values and the gradient, plus the gradients of the
  inputs themselves (N × H and V × H with a `LinearHead`);
- the gradient is computed block by block during the forward pass, from the divergence's
  closed-form gradient and, for a head, two matrix products accumulated in place: the loss is
  a weighted sum, so its gradient is known up to the scalar that backward brings. Nothing is
  recomputed (unlike activation checkpointing), so the work is one forward and one backward.

This is the approach of fused linear cross-entropy kernels (e.g. Liger-Kernel's), here for
any registered divergence and on any device PyTorch runs on. Not covered: top-k and
sampled-token estimators (`opd_selfplay.estimators`), loss normalisation over a batch
(`opd_selfplay.objectives`), gradients w.r.t. the teacher (it is a fixed target) or the
weights (they are constants), and double backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor

from opd_selfplay.divergences import get_divergence, log_probs, log_probs_value_and_grad
from opd_selfplay.errors import InputError

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "ChunkedDivergence",
    "LinearHead",
    "TokenWeighting",
    "chunked_divergence",
    "token_logprobs",
]

DEFAULT_CHUNK_ELEMENTS = 1 << 22
"""Default block: max(1, this // V) positions, i.e. 16 MiB per float32 block of logits (27
positions at V = 151,936). With a fused `LinearHead` the block has at least H/2 positions
too: every block reads the (V, H) head twice (projection, input gradient) and updates its
gradient once, which costs as much as the block's own work unless the block has on the order
of H positions (benchmarks/divergence_memory.py on CPU, 1,024 positions, H = 256: blocks of
27 positions made the fused step ~1.4× slower than the unchunked one, blocks of 128 ~1.1×)."""


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
    forward_kl: Tensor | None = None
    """Shape (...): KL(p‖q), exact, when the entropies were asked for (one more elementwise
    pass per block, no projection), else None; no gradient. A diagnostic for any divergence."""


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
    fkl = torch.zeros_like(ent_s)
    loss = torch.zeros((), dtype=cdtype, device=s_x.device)
    any_grad = any(need)
    # Without a mask the blocks are contiguous and cover every row: take views instead of
    # copies, and leave the input gradient uninitialised (every row gets written).
    contiguous = index_K.numel() == n
    grad_x = None
    if need[0]:
        grad_x = torch.empty_like(s_x) if contiguous else torch.zeros_like(s_x)
    # Accumulate the head's gradient in float32 at least; cast back in backward.
    grad_w = torch.zeros(s_w.shape, dtype=cdtype, device=s_w.device) if need[1] else None
    grad_b = torch.zeros(s_b.shape, dtype=cdtype, device=s_b.device) if need[2] else None
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
            p_t = log_p.exp()  # once per block: each pass over (rows × V) costs
            h_t = -(p_t * log_p).sum(-1)
            if cfg.weighting is not None:
                w_c = w_c * cfg.weighting(h_t).to(cdtype)
            if cfg.with_entropy:
                ent_t.index_copy_(0, idx, h_t)
                ent_s.index_copy_(0, idx, -(log_q.exp() * log_q).sum(-1))
                # KL(p‖q) = Σ p log p − Σ p log q = −H(p) − Σ p log q.
                fkl.index_copy_(0, idx, -h_t - (p_t * log_q).sum(-1))
            del p_t
        # The divergence's closed-form gradient w.r.t. this block's logits (log_q is consumed);
        # the projection's gradient is applied by hand below, straight into the accumulators.
        vals, g = log_probs_value_and_grad(spec, log_q, log_p, cfg.temperature, params, any_grad)
        del log_q, log_p
        values.index_copy_(0, idx, vals)
        loss += (vals * w_c).sum()
        if g is None:
            continue
        if s_w is None and rows is not None:
            # Weight and store in one pass, straight into the gradient's rows.
            torch.mul(g, w_c.unsqueeze(-1), out=grad_x[rows])  # type: ignore[index]
            continue
        g *= w_c.unsqueeze(-1)
        if s_w is None:
            grad_x.index_copy_(0, idx, g.to(grad_x.dtype))  # type: ignore[union-attr]
            continue
        g = g.to(s_w.dtype)
        if need[0]:
            grad_x.index_copy_(0, idx, (g @ s_w).to(grad_x.dtype))  # type: ignore[union-attr]
        if need[1]:
            grad_w.addmm_(g.t().to(cdtype), x.to(cdtype))  # type: ignore[union-attr]
        if need[2]:
            grad_b += g.sum(0).to(cdtype)  # type: ignore[operator]
    return loss, values, ent_s, ent_t, fkl, (grad_x, grad_w, grad_b)


class _ChunkedDivergenceFn(torch.autograd.Function):
    """Forward computes the loss and, block by block, its gradient; backward scales it."""

    @staticmethod
    def forward(ctx, cfg, s_x, s_w, s_b, t_x, t_w, t_b, weights_N, index_K):  # type: ignore[override]
        need = tuple(bool(f) for f in ctx.needs_input_grad[1:4])
        with torch.no_grad():
            loss, values, ent_s, ent_t, fkl, grads = _chunk_loop(
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
        ctx.mark_non_differentiable(values, ent_s, ent_t, fkl)
        return loss, values, ent_s, ent_t, fkl

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
        chunk_size: positions per block; default max(1, DEFAULT_CHUNK_ELEMENTS // V), and at
            least H/2 for a student `LinearHead` (see `DEFAULT_CHUNK_ELEMENTS`).
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
    if chunk_size is None and s_w is not None:
        rows = max(rows, s_w.shape[1] // 2)
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
        loss, values, ent_s, ent_t, fkl = _ChunkedDivergenceFn.apply(
            cfg, s_x, s_w, s_b, *t_args, weights_N, index_K
        )
    else:
        with torch.no_grad():
            loss, values, ent_s, ent_t, fkl, _ = _chunk_loop(
                cfg, s_x, s_w, s_b, *t_args, weights_N, index_K, (False, False, False)
            )
    shape = tuple(lead)
    return ChunkedDivergence(
        loss=loss,
        values=values.reshape(shape),
        student_entropy=ent_s.reshape(shape) if with_entropy else None,
        teacher_entropy=ent_t.reshape(shape) if with_entropy else None,
        forward_kl=fkl.reshape(shape) if with_entropy else None,
    )


def token_logprobs(
    student: Tensor | LinearHead,
    ids: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """log softmax(logits / T) at one id per row, rows (N, ...) → (N,), in blocks of rows.

    With a `LinearHead`, each block's logits are projected, used and dropped; when gradients
    are needed each block is recomputed in backward (activation checkpointing), so memory
    stays O(chunk × V) instead of O(N × V), for one extra projection per block. With logits,
    this is `estimators.gather_log_probs`.

    Args:
        student: logits (N, V) or `LinearHead` with hidden (N, H).
        ids: (N,) int64 token ids.
        temperature: T > 0.
        chunk_size: rows per block (default: 16 MiB of float32 logits).
    """
    from opd_selfplay.estimators import gather_log_probs

    if not isinstance(student, LinearHead):
        return gather_log_probs(student, ids[:, None], temperature).squeeze(-1)
    h, w, b = student.hidden, student.weight, student.bias
    if h.shape[:-1] != ids.shape:
        raise InputError(f"ids {tuple(ids.shape)} must match the rows {tuple(h.shape[:-1])}")
    # Small blocks (16 MiB of logits): unlike `chunked_divergence`, no head gradient is
    # accumulated per block, so small blocks cost little, and log-softmax's temporaries
    # (a few blocks' worth) would otherwise set the step's peak at large vocabularies.
    rows = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // w.shape[0])

    def block(hc: Tensor, wc: Tensor, bc: Tensor | None, idc: Tensor) -> Tensor:
        return gather_log_probs(F.linear(hc, wc, bc), idc[:, None], temperature).squeeze(-1)

    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, w, b))
    pieces = []
    for start in range(0, h.shape[0], rows):
        args = (h[start : start + rows], w, b, ids[start : start + rows])
        if grad:
            pieces.append(torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False))
        else:
            pieces.append(block(*args))
    if not pieces:
        return h.new_zeros((0,), dtype=torch.promote_types(h.dtype, torch.float32))
    return torch.cat(pieces)


# --------------------------------------------------------------------------------------------
# Top-k (grey-box)
