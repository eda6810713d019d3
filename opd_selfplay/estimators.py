"""Estimators of the teacher–student divergence, by what the teacher exposes.

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

Full vocabulary: `divergence` (`opd_selfplay.divergences`), or its memory-bounded form
`chunked_divergence` (`opd_selfplay.chunking`, re-exported here), which never allocates a
positions × vocabulary block and can fuse the lm_head projection.

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
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import torch
from torch import Tensor

from opd_selfplay.chunking import (
    DEFAULT_CHUNK_ELEMENTS,
    ChunkedDivergence,
    LinearHead,
    TokenWeighting,
    chunked_divergence,
)
from opd_selfplay.divergences import LOG_FLOOR, divergence_from_log_probs, log_probs
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


_WHITE, _GREY, _BLACK = TeacherAccess.WHITE_BOX, TeacherAccess.GREY_BOX, TeacherAccess.BLACK_BOX
_RKL = "reverse KL, from the sampled token"
ESTIMATORS: Mapping[str, EstimatorInfo] = MappingProxyType(
    {
        e.name: e
        for e in (
            EstimatorInfo("full", _WHITE, "any registered divergence", "exact"),
            EstimatorInfo(
                "topk_bucket",
                _GREY,
                "the divergence of the distributions coarsened to k tokens + a tail bucket",
                "never above the exact f-divergence (data processing); exact when k = V",
            ),
            EstimatorInfo(
                "topk_renormalize",
                _GREY,
                "the divergence of the two distributions conditioned on the k tokens",
                "either sign, ignores the tail's mass; exact when k = V",
            ),
            EstimatorInfo("k1", _BLACK, _RKL, "unbiased, high variance, negative on some samples"),
            EstimatorInfo(
                "k2", _BLACK, _RKL, "biased (exact to 2nd order in log r), ≥ 0, low variance"
            ),
            EstimatorInfo("k3", _BLACK, _RKL, "unbiased, non-negative, lower variance than k1"),
            EstimatorInfo(
                "reinforce",
                _BLACK,
                "the gradient of the per-token reverse KL (score function)",
                "unbiased for the gradient at on-policy samples; needs IS weights off-policy",
            ),
        )
    }
)
"""Every estimator, by name."""

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
