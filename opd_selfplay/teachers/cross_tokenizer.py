"""Cross-tokenizer distillation: a local teacher whose tokenizer (and chat template) differs
from the student's scores the student's actions as TEXT, projected onto the student's tokens.

Two vocabularies share no support, so full-vocabulary and top-k divergences between the two
next-token distributions are undefined; what both models define is the probability of the
same string. The method (docs/cross_tokenizer.md; the chunks follow ALM, Minixhofer et al.
2025, "Cross-Tokenizer Distillation via Approximate Likelihood Matching", arXiv 2503.20083):

1. Text. Each action's context (the conversation before it, optionally with the privileged
   system message as the student's engine adds it) is rendered with the TEACHER's chat
   template by a rollout engine over the teacher's tokenizer; the action text is the
   student's tokens decoded, special tokens skipped. A student action that ends with one of
   its EOS ids gets the teacher's end-of-turn token (`end_of_turn_id`) as its own chunk.
2. The teacher tokenizes the text on its own (literal special-token strings stay text) after
   its context; one batched, no-grad forward over left-padded buckets that keeps only the
   last positions' logits gives each teacher action token's log-prob.
3. A token boundary at character c is valid when decoding the tokens up to it gives exactly
   `text[:c]` (`token_ends`): none lies inside a UTF-8 character; skipped special tokens
   are zero-width. Chunks are the maximal spans between boundaries valid on both sides
   (`align_chunks`); a chunk's teacher log-prob is the sum of its teacher tokens'.
4. `project_logprobs` splits each chunk's log-prob over its student tokens so that they sum
   to it: `last` (default) gives every token but the last the student's own sampling
   log-prob (k1 = 0) and the last the remainder; `uniform` spreads the chunk's k1 evenly.
   Either way Σ_t (log q_t − log p̂_t) = log q(tokens) − log p(text) exactly per action. A
   chunk without teacher tokens (zero-width tokens only) keeps the student's own log-probs.

The result is `TeacherSignal(logprobs_N=...)` in `action_rows` order and no logits, for the
sequence-level objective or sampled-token estimators; `check_objective` refuses the others.
`CrossTokenizerTeacher.diagnostics` holds the last batch's `AlignmentStats.metrics()`.

Not covered: byte-level probabilities marginalised over the teacher's tokenizations (the
teacher scores its canonical tokenization only); ALM's chunk-level loss (the chunk log-probs
feed this project's sampled-token objectives instead). Decoders that are not prefix-stable
(SentencePiece ones that strip a leading space, clean-up rules) make the fast boundary search
fall back to decoding every prefix: exact, quadratic in the action's length. Where a teacher's
tokenization does not round-trip the text, chunks merge up to the end.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from opd_selfplay.errors import InputError
from opd_selfplay.teachers.base import TeacherSignal, privileged_before
from opd_selfplay.types import Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

    from opd_selfplay.rollout import RolloutEngine

__all__ = [
    "AlignmentStats",
    "Chunk",
    "CrossTokenizerTeacher",
    "TurnAlignment",
    "align_action",
    "align_chunks",
    "check_objective",
    "end_of_turn_id",
    "project_logprobs",
    "same_vocabulary",
    "token_ends",
]

Projection = Literal["last", "uniform"]
Decode = Callable[[Sequence[int]], str]

SAMPLED_TOKEN_OBJECTIVES = ("sequence", "outcome")
SAMPLED_TOKEN_ESTIMATORS = ("k1", "k2", "k3", "reinforce")

# ---------------------------------------------------------------------------------------------
# Alignment: pure functions of plain lists (no torch), tested directly.
# ---------------------------------------------------------------------------------------------


def token_ends(ids: Sequence[int], text: str, decode: Decode) -> list[int | None]:
    """The character offset where each token ends, when that boundary is valid.

    Token k's boundary is valid when decoding `ids[:k + 1]` gives exactly `text[:c]`; then
    entry k is c, else None (for example a byte-level token that ends inside a multi-byte
    character). Valid offsets never decrease. The fast path decodes each token after the
    last valid boundary and checks it continues the text; it is verified against full
    prefix decodes at a few boundaries and at the end, and falls back to decoding every
    prefix (exact, quadratic) when the decoder is not prefix-stable.

    Args:
        ids: a tokenization of (ideally) `text`.
        text: the text the offsets refer to.
        decode: token ids -> text (special tokens skipped).
    Returns:
        One entry per token.
    """
    fast = _incremental_ends(ids, text, decode)
    if fast is not None:
        return fast
    return _prefix_ends(ids, text, decode)


def _prefix_ends(ids: Sequence[int], text: str, decode: Decode) -> list[int | None]:
    out: list[int | None] = []
    last = 0
    for k in range(1, len(ids) + 1):
        piece = decode(list(ids[:k]))
        if len(piece) >= last and text.startswith(piece):
            last = len(piece)
            out.append(last)
        else:
            out.append(None)
    return out


def _incremental_ends(ids: Sequence[int], text: str, decode: Decode) -> list[int | None] | None:
    """Boundaries found by decoding from the last valid one; None when they are not
    trustworthy (the end of the text is not reached, or a spot check disagrees)."""
    out: list[int | None] = []
    start, pos = 0, 0
    for k in range(1, len(ids) + 1):
        piece = decode(list(ids[start:k]))
        if text.startswith(piece, pos):
            pos += len(piece)
            out.append(pos)
            start = k
        else:
            out.append(None)
    if ids and (out[-1] != len(text) or decode(list(ids)) != text):
        return None
    valid = [k for k, e in enumerate(out) if e is not None]
    # Spot checks against the definition (full prefix decodes), a few evenly spaced ones.
    for k in valid[:: max(1, len(valid) // 8)]:
        if decode(list(ids[: k + 1])) != text[: out[k]]:
            return None
    return out


@dataclass(frozen=True)
class Chunk:
    """A span of the text that both tokenizations cover with whole tokens."""

    student: tuple[int, int]
    """The student's tokens of the chunk: `[start, stop)` indices into its action tokens."""
    teacher: tuple[int, int]
    """The teacher's tokens of the chunk: `[start, stop)` indices into its action tokens."""
    chars: tuple[int, int]
    """The characters `[start, stop)` of the text it covers (empty for an end marker)."""


def _effective_ends(ends: Sequence[int | None], n_chars: int) -> list[int]:
    """Each token's end, or for a token without a valid boundary the next valid one; the
    last token always ends the text."""
    out = [0] * len(ends)
    nxt = n_chars
    for i in range(len(ends) - 1, -1, -1):
        if i < len(ends) - 1 and ends[i] is not None:
            nxt = min(int(ends[i]), nxt)  # type: ignore[arg-type]
        out[i] = nxt
    return out


def align_chunks(
    student_ends: Sequence[int | None], teacher_ends: Sequence[int | None], n_chars: int
) -> list[Chunk]:
    """Split two tokenizations of the same text into chunks at their common valid boundaries.

    Args:
        student_ends: `token_ends` of the student's tokens.
        teacher_ends: `token_ends` of the teacher's tokens.
        n_chars: the length of the text (both tokenizations end there).
    Returns:
        Chunks in text order, covering every token of both sides once. A side with no tokens
        is allowed only for an empty text (then one chunk holds the other side's tokens).
    Raises:
        ValueError: one side has no tokens while the text is not empty.
    """
    if not student_ends and not teacher_ends:
        return []
    if n_chars > 0 and (not student_ends or not teacher_ends):
        raise ValueError(
            f"text of {n_chars} characters has {len(student_ends)} student and "
            f"{len(teacher_ends)} teacher tokens; both must cover it"
        )
    s_eff = _effective_ends(student_ends, n_chars)
    t_eff = _effective_ends(teacher_ends, n_chars)
    common = sorted((set(s_eff) & set(t_eff)) | {n_chars})
    chunks: list[Chunk] = []
    i = j = 0
    prev = 0
    for c in common:
        i0, j0 = i, j
        while i < len(s_eff) and s_eff[i] <= c:
            i += 1
        while j < len(t_eff) and t_eff[j] <= c:
            j += 1
        if i > i0 or j > j0:
            chunks.append(Chunk((i0, i), (j0, j), (prev, c)))
            prev = c
    return chunks


def align_action(
    student_ends: Sequence[int | None],
    teacher_ends: Sequence[int | None],
    n_chars: int,
    end_marker: bool,
) -> list[Chunk]:
    """`align_chunks` of an action's text, plus the chunk that pairs the student's end-of-turn
    token with the teacher's when the action ended with one (each side's token after its
    text tokens)."""
    chunks = align_chunks(student_ends, teacher_ends, n_chars)
    if end_marker:
        ns, nt = len(student_ends), len(teacher_ends)
        chunks.append(Chunk((ns, ns + 1), (nt, nt + 1), (n_chars, n_chars)))
    return chunks


def project_logprobs(
    chunks: Sequence[Chunk],
    student_logprobs: Sequence[float],
    teacher_logprobs: Sequence[float],
    projection: Projection = "last",
) -> list[float]:
    """Per-student-token teacher log-probs whose sum over each chunk is the teacher's chunk
    log-prob (see the module docstring for the two projections).

    Args:
        chunks: from `align_chunks` / `align_action`.
        student_logprobs: the student's own (sampling) log-prob of each of its tokens.
        teacher_logprobs: the teacher's log-prob of each of its tokens.
        projection: `last` or `uniform`.
    Returns:
        One value per student token.
    """
    if projection not in ("last", "uniform"):
        raise InputError(f"projection must be 'last' or 'uniform', got {projection!r}")
    out = [float(x) for x in student_logprobs]
    for ch in chunks:
        (s0, s1), (t0, t1) = ch.student, ch.teacher
        if t1 == t0 or s1 == s0:
            continue  # no teacher tokens: no opinion, own log-probs (k1 = 0)
        total = sum(teacher_logprobs[t0:t1]) if t1 - t0 > 1 else float(teacher_logprobs[t0])
        if s1 - s0 == 1:
            out[s0] = total
        elif projection == "last":
            out[s1 - 1] = total - sum(out[s0 : s1 - 1])
        else:
            share = (sum(out[s0:s1]) - total) / (s1 - s0)
            for k in range(s0, s1):
                out[k] -= share
    return out


@dataclass(frozen=True)
class AlignmentStats:
    """How finely two tokenizations of a batch's actions align."""

    student_tokens: int
    """Student action tokens."""
    teacher_tokens: int
    """Teacher action tokens (end-of-turn markers included)."""
    chunks: int
    """Chunks, end-of-turn chunks included."""
    scored_chunks: int
    """Chunks with tokens on both sides: each has one chunk-final student token that carries
    the chunk's signal (with the `last` projection)."""
    one_to_one: int
    """Chunks of exactly one student and one teacher token (an exact per-token signal)."""
    unscored: int
    """Student tokens in chunks without teacher tokens (own log-prob, no signal)."""

    @classmethod
    def of(cls, alignments: Sequence[Sequence[Chunk]]) -> AlignmentStats:
        """The statistics of some actions' chunks."""
        chunks = [c for a in alignments for c in a]
        sizes = [(c.student[1] - c.student[0], c.teacher[1] - c.teacher[0]) for c in chunks]
        return cls(
            student_tokens=sum(s for s, _ in sizes),
            teacher_tokens=sum(t for _, t in sizes),
            chunks=len(chunks),
            scored_chunks=sum(s > 0 and t > 0 for s, t in sizes),
            one_to_one=sum(s == 1 and t == 1 for s, t in sizes),
            unscored=sum(s for s, t in sizes if t == 0),
        )

    def metrics(self) -> dict[str, float]:
        """Per student token, for the run's logs."""
        n = max(self.student_tokens, 1)
        return {
            "xtok/chunks_per_token": self.chunks / n,
            "xtok/chunk_final_share": self.scored_chunks / n,
            "xtok/one_to_one_share": self.one_to_one / n,
            "xtok/unscored_share": self.unscored / n,
            "xtok/teacher_tokens_per_token": self.teacher_tokens / n,
        }


# ---------------------------------------------------------------------------------------------
# The teacher
# ---------------------------------------------------------------------------------------------


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map the same strings to the same ids (then a plain white-box
    teacher applies; otherwise cross-tokenizer alignment is needed)."""
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


def check_objective(kind: str, estimator: str | None = None) -> None:
    """Refuse objectives that need the teacher's distribution over the student's vocabulary.

    Args:
        kind: `objective.kind`.
        estimator: the estimator of the token-level term, when the config names one.
    Raises:
        InputError: for token-level or hybrid objectives with the full or top-k estimator.
    """
    if kind in SAMPLED_TOKEN_OBJECTIVES or estimator in SAMPLED_TOKEN_ESTIMATORS:
        return
    how = f" with estimator {estimator}" if estimator else ""
    raise InputError(
        f"objective.kind={kind}{how} needs teacher logits over the student's vocabulary, which "
        "a teacher with another tokenizer cannot give; use objective.kind=sequence (in code: "
        f"a sampled-token estimator, {', '.join(SAMPLED_TOKEN_ESTIMATORS)})"
    )


def _is_special(tokenizer: PreTrainedTokenizerBase, token_id: int) -> bool:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return token_id in set(tokenizer.all_special_ids) or bool(
        token_id in added and getattr(added[token_id], "special", False)
    )


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends an assistant message in `tokenizer`'s chat template: the first
    token the template writes after the message's content, when it is a special token (e.g.
    `<|im_end|>`, `<|eot_id|>`), else the tokenizer's EOS.

    Raises:
        InputError: when there is neither.
    """
    probe = "opd end-of-turn probe"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": probe}],
            tokenize=False,
            add_generation_prompt=False,
        )
    except Exception:  # no template, or one that rejects the probe: use the EOS below
        text = ""
    at = text.rfind(probe) if isinstance(text, str) else -1
    if at >= 0:
        after = text[at + len(probe) :]
        ids = list(tokenizer(after, add_special_tokens=False)["input_ids"]) if after else []
        if ids and _is_special(tokenizer, ids[0]):
            return int(ids[0])
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise InputError(
        "teacher tokenizer: its chat template ends assistant messages with no special token "
        "and it has no EOS; pass teacher_end_id to CrossTokenizerTeacher"
    )


@dataclass(frozen=True)
class TurnAlignment:
    """One action as the teacher sees it, and how its tokens align with the student's."""

    trajectory: int
    """Index of the trajectory in the scored batch."""
    turn: int
    """Index of the turn in the trajectory."""
    text: str
    """The action's text (student tokens decoded, special tokens skipped)."""
    context_ids: tuple[int, ...]
    """The teacher's tokens of the context (teacher template, generation prompt)."""
    teacher_ids: tuple[int, ...]
    """The teacher's tokens of the action: the text's, then its end-of-turn token when the
    student's action ended with its own."""
    chunks: tuple[Chunk, ...]
    """The alignment of the student's action tokens with `teacher_ids`."""


class CrossTokenizerTeacher:
    """A local model with another tokenizer that scores the student's actions as text
    (sampled-token log-probs only; see the module docstring for the method).

    Args:
        policy: the teacher as a policy with `.model` (a causal LM) and `.tokenizer` (with a
            chat template), e.g. `load_policy(...)`'s `HFPolicy`.
        engine: the student's rollout engine (its tokenizer, EOS ids, tools and config).
        privileged: add the environment's privileged context to the teacher's system message.
        projection: `last` or `uniform` (how a chunk's log-prob is split over its tokens).
        teacher_end_id: the teacher's end-of-turn token; default `end_of_turn_id`.
        max_batch_tokens: most padded tokens in one teacher forward.
        max_logit_elements: most kept logits (rows × positions × vocabulary) in one forward.
    """

    def __init__(
        self,
        policy,
        engine: RolloutEngine,
        privileged: bool = False,
        projection: Projection = "last",
        teacher_end_id: int | None = None,
        max_batch_tokens: int = 16384,
        max_logit_elements: int = 2**27,
    ) -> None:
        from opd_selfplay.rollout import RolloutEngine

        if projection not in ("last", "uniform"):
            raise InputError(f"projection must be 'last' or 'uniform', got {projection!r}")
        self.policy = policy
        self.model = policy.model
        self.engine = engine
        # Only rollout engines render chat templates: this one renders the teacher's.
        self.teacher_engine = RolloutEngine(policy, engine.config, tools=engine.tools)
        self.privileged = privileged
        self.projection: Projection = projection
        self.max_batch_tokens = max_batch_tokens
        self.max_logit_elements = max_logit_elements
        tok = policy.tokenizer
        self.teacher_end_id = end_of_turn_id(tok) if teacher_end_id is None else teacher_end_id
        student_eos = getattr(engine.policy, "eos_token_ids", None) or {
            engine.tokenizer.eos_token_id
        }
        self.student_eos = frozenset(int(i) for i in student_eos if i is not None)
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.teacher_end_id
        self.pad_id = int(pad)
        forward = getattr(self.model, "get_base_model", lambda: self.model)().forward
        self._keep_logits = "logits_to_keep" in inspect.signature(forward).parameters
        self.diagnostics: dict[str, float] = {}
        """The last `score` call's alignment statistics (`AlignmentStats.metrics`)."""
        self.last_alignments: list[TurnAlignment] = []
        """The last `score` call's alignments, per scored action."""

    @property
    def name(self) -> str:
        return f"{'privileged ' if self.privileged else ''}cross-tokenizer white-box"

    @staticmethod
    def check_objective(kind: str, estimator: str | None = None) -> None:
        """See `check_objective` (module level)."""
        check_objective(kind, estimator)

    # -- alignment ---------------------------------------------------------------------------
    def _student_decode(self, ids: Sequence[int]) -> str:
        return self.engine.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _teacher_decode(self, ids: Sequence[int]) -> str:
        return self.policy.tokenizer.decode(list(ids), skip_special_tokens=True)

    def align(self, trajectories: Sequence[Trajectory]) -> list[TurnAlignment]:
        """The teacher's view of every action with tokens, in `action_rows` order.

        Returns:
            One `TurnAlignment` per turn with at least one action token.
        """
        out = []
        for b, traj in enumerate(trajectories):
            for k, turn in enumerate(traj.turns):
                if not turn.action_ids:
                    continue
                out.append(self._align_turn(b, traj, k))
        return out

    def _align_turn(self, b: int, traj: Trajectory, k: int) -> TurnAlignment:
        action = list(traj.turns[k].action_ids)
        end_marker = action[-1] in self.student_eos
        body = action[:-1] if end_marker else action
        text = self._student_decode(body)
        tok = self.policy.tokenizer
        # Literal special-token strings in the action are text here, not control tokens.
        t_ids = list(tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        chunks = align_action(
            token_ends(body, text, self._student_decode),
            token_ends(t_ids, text, self._teacher_decode),
            len(text),
            end_marker,
        )
        note = privileged_before(traj, k) if self.privileged else None
        context = self.teacher_engine.turn_context_ids(traj, k, note)
        if not context:
            raise ValueError(
                f"teacher chat template rendered an empty context for turn {k} of {traj.env_id}"
            )
        teacher_ids = [*t_ids, self.teacher_end_id] if end_marker else t_ids
        return TurnAlignment(b, k, text, tuple(context), tuple(teacher_ids), tuple(chunks))

    # -- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, trajectories: Sequence[Trajectory]) -> TeacherSignal:
        """The teacher's log-probs projected onto every student action token (no logits).

        Returns:
            `TeacherSignal(logprobs_N=...)`, rows in `action_rows` order.
        """
        alignments = self.align(trajectories)
        teacher_lps = self._teacher_logprobs(
            [([*a.context_ids, *a.teacher_ids], len(a.teacher_ids)) for a in alignments]
        )
        rows: list[float] = []
        for a, lps in zip(alignments, teacher_lps):
            own = trajectories[a.trajectory].turns[a.turn].action_logprobs
            rows.extend(project_logprobs(a.chunks, own, lps, self.projection))
        self.last_alignments = alignments
        self.diagnostics = AlignmentStats.of([a.chunks for a in alignments]).metrics()
        return TeacherSignal(logprobs_N=torch.tensor(rows, dtype=torch.float32))

    def _teacher_logprobs(self, seqs: Sequence[tuple[list[int], int]]) -> list[list[float]]:
        """Log-prob of the last n tokens of each sequence under the teacher, batched.

        Buckets of similar length are left-padded (with explicit position ids), so that every
        row's scored tokens end at the last position and only the last `max n + 1` positions'
        logits are computed (`logits_to_keep`), not the whole sequence's.
        """
        model = self.model
        device = next(model.parameters()).device
        vocab = int(model.get_output_embeddings().weight.shape[0])
        out: list[list[float]] = [[] for _ in seqs]
        order = sorted((i for i, (_, n) in enumerate(seqs) if n), key=lambda i: len(seqs[i][0]))
        was_training = model.training
        model.eval()
        try:
            start = 0
            while start < len(order):
                members = [order[start]]
                width, keep = len(seqs[members[0]][0]), seqs[members[0]][1] + 1
                for i in order[start + 1 :]:
                    w, kp = max(width, len(seqs[i][0])), max(keep, seqs[i][1] + 1)
                    rows = len(members) + 1
                    if (
                        rows * w > self.max_batch_tokens
                        or rows * kp * vocab > self.max_logit_elements
                    ):
                        break
                    members.append(i)
                    width, keep = w, kp
                start += len(members)
                ids = torch.full((len(members), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(members), width), dtype=torch.long)
                row_b, row_t, targets = [], [], []
                for r, i in enumerate(members):
                    seq, n = seqs[i]
                    ids[r, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
                    mask[r, width - len(seq) :] = 1
                    # Left padding: the n scored tokens are the row's last; the logits that
                    # predict them sit at kept positions keep - 1 - n ... keep - 2.
                    row_b.extend([r] * n)
                    row_t.extend(range(keep - 1 - n, keep - 1))
                    targets.extend(seq[-n:])
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                extra = {"logits_to_keep": keep} if self._keep_logits else {}
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    use_cache=False,
                    **extra,
                ).logits[:, -keep:]
                index = (torch.as_tensor(row_b), torch.as_tensor(row_t))
                picked = logits[index[0].to(logits.device), index[1].to(logits.device)].float()
                target = torch.as_tensor(targets, dtype=torch.long, device=picked.device)
                lp = (
                    picked.gather(-1, target[:, None]).squeeze(-1) - picked.logsumexp(-1)
                ).tolist()
                offset = 0
                for i in members:
                    n = seqs[i][1]
                    out[i] = lp[offset : offset + n]
                    offset += n
        finally:
            model.train(was_training)
        return out

    # -- the teacher protocol ----------------------------------------------------------------
    def after_step(self, student: torch.nn.Module, step: int) -> None:
        """A fixed teacher does not follow the student."""

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        pass
