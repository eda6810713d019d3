"""`MathVerifier`: is the final answer of a response equivalent to the reference answer?

The pipeline, cheapest first:

1. find answer candidates in the response and in the reference (`math_extract`: last
   `\\boxed{}`, "final answer is", "Answer:", the last formula or number);
2. normalise them and read their structure (`math_answer`);
3. **fast path**, in the caller's process and without sympy: identical text, or plain numbers
   (integers, decimals, fractions, percentages) in any structure (lists, tuples, intervals,
   `x = 3`). A trivial arithmetic answer costs some tens of microseconds;
4. otherwise the comparison runs with sympy (`math_compare`, `math_sympy`) in a worker
   process under a wall-time and memory limit (`limits`), so `9^{9^{9^9}}`, 200 nested
   brackets or a 200 kB response return a zero-score verdict within `time_limit_s`, from
   any thread.

The score is 1 or 0. `feedback` says what was read and why it does or does not match; it
names the reference only with `reveal_reference=True` (see `Verdict.feedback`).

Not covered: partial credit for partly correct lists, units conversion (units are dropped),
and complex-number semantics of `i`. How equivalence is decided is documented in
`math_compare`; how answers are found in `math_extract`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from . import limits
from .math_answer import compact, normalize, parse_answer
from .math_compare import Comparer, NeedsSympy, Settings, compare_job
from .math_extract import SOURCES, Candidate, extract_candidates
from .verdict import Verdict

_WORKER_MODULES = ("opd_selfplay.verifiers.math_sympy",)
_MAX_SHOWN = 80
_cache_epoch = 0


def clear_caches() -> None:
    """Forget cached reference extractions and sympy conversions, here and in the workers
    (benchmarks use it to measure cold comparisons)."""
    global _cache_epoch
    _cache_epoch += 1


# One of each shape the LaTeX grammar predicts differently: its parser builds its prediction
# tables lazily, per process, and the first parse of each shape costs up to a second.
_WARM_UP = (
    ("\\sqrt{2}", "\\frac{2}{\\sqrt{2}}"),
    ("(x+1)^{2}", "x^2+2x+1"),
    ("\\sin^2(y)+\\cos(x)", "\\tan^2(y)+1"),
    (
        "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}",
        "\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}",
    ),
    ("f(x_{1})", "f(y)"),
    ("\\text{E}", "e"),
    ("2 \\le |z| \\le 3", "[2, 3]"),
)


def _warm_worker(_: object = None) -> bool:
    """Run in a new worker so that the first real comparisons are not slowed by lazy set-up
    (imports, the parser's prediction tables); leaves its conversion cache empty."""
    for answer, reference in _WARM_UP:
        compare_job(((answer,), (reference,), (6, True, False), -1))
    compare_job(((), (), (6, True, False), _cache_epoch))  # empties the cache
    return True


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


@dataclass(frozen=True)
class _Prepared:
    """One pair after extraction: what the fast path and the worker need."""

    answers: tuple[str, ...]
    references: tuple[str, ...]
    sources: tuple[str, ...]
    verdict: Verdict | None  # decided without sympy


class MathVerifier:
    """Checks math answers against references: symbolic and numeric equivalence."""

    def __init__(
        self,
        time_limit_s: float = 5.0,
        memory_limit_mb: float = 512.0,
        precision: int = 6,
        strict: bool = True,
        allow_set_relation_comp: bool = False,
        answer_sources: Sequence[str] = SOURCES,
        reveal_reference: bool = False,
        reference_cache_size: int = 1024,
    ) -> None:
        """
        Args:
            time_limit_s: wall-time limit of the sympy comparison of one pair.
            memory_limit_mb: memory the comparison may allocate beyond the worker's baseline.
            precision: decimal places to which a number written as a decimal must agree with
                the reference (`1/3` matches `0.333333`, not `0.33`, at 6).
            strict: variable names matter (`f(x)` does not match `f(y)`).
            allow_set_relation_comp: an inequality answer (`-2 \\le x \\le 7`) may match an
                interval reference (`[-2, 7]`); the reverse always holds.
            answer_sources: where to look for the response's answer, a subset of
                `math_extract.SOURCES` ("boxed", "final_answer", "answer", "bare", "math",
                "number"); e.g. `("boxed",)` to accept only boxed answers.
            reveal_reference: name the reference answer in `feedback` ("expected 1/3").
            reference_cache_size: references whose extraction is remembered (a group of
                samples shares one reference).
        """
        if not time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive, got {time_limit_s!r}")
        if not memory_limit_mb >= 64:
            raise ValueError(f"memory_limit_mb must be at least 64, got {memory_limit_mb!r}")
        if not 0 <= precision <= 30:
            raise ValueError(
                f"precision must be between 0 and 30 decimal places, got {precision!r}"
            )
        unknown = [s for s in answer_sources if s not in SOURCES]
        if unknown or not answer_sources:
            raise ValueError(
                f"answer_sources {list(answer_sources)!r}: use a non-empty subset "
                f"of {list(SOURCES)}"
            )
        self.time_limit_s = float(time_limit_s)
        self.memory_limit_mb = float(memory_limit_mb)
        self.settings = Settings(precision, strict, allow_set_relation_comp)
        self.answer_sources = tuple(answer_sources)
        self.reveal_reference = reveal_reference
        self.reference_cache_size = reference_cache_size
        self._references: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._epoch = _cache_epoch
        self._lock = threading.Lock()  # verify() may be called from several threads

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_references"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- public API -----------------------------------------------------------------------

    def verify(self, response: str, reference: object) -> Verdict:
        """Score one response against its reference answer.

        Args:
            response: the model's text (a worked solution or a bare answer).
            reference: the reference answer or solution (text, or a number).

        Returns:
            A `Verdict` with score 1.0 when the final answer is equivalent, else 0.0.

        Raises:
            TypeError: `response` is not text or `reference` is not text or a number.
            ValueError: the reference contains no answer.
        """
        started = time.perf_counter()
        prepared = self._prepare(response, reference)
        if prepared.verdict is not None:
            return _timed(prepared.verdict, started)
        result = self._pool().run(
            compare_job,
            self._job(prepared),
            timeout_s=self.time_limit_s,
            memory_mb=self.memory_limit_mb,
        )
        return _timed(self._from_worker(prepared, result), started)

    def verify_batch(
        self, pairs: Iterable[tuple[str, object]], processes: int | None = None
    ) -> list[Verdict]:
        """Score many (response, reference) pairs; sympy comparisons run on a process pool.

        Args:
            pairs: `(response, reference)` tuples.
            processes: worker processes used at once (default: the number of CPUs).

        Returns:
            One verdict per pair, in order.

        Raises:
            TypeError, ValueError: as `verify`, for the first bad pair.
        """
        prepared = [self._prepare(response, reference) for response, reference in pairs]
        pending = [k for k, p in enumerate(prepared) if p.verdict is None]
        verdicts: list[Verdict | None] = [p.verdict for p in prepared]
        if pending:
            pool = self._pool()
            results = pool.map(
                compare_job,
                [self._job(prepared[k]) for k in pending],
                timeout_s=self.time_limit_s,
                memory_mb=self.memory_limit_mb,
                processes=processes or min(len(pending), pool.max_workers),
            )
            for k, result in zip(pending, results):
                verdicts[k] = self._from_worker(prepared[k], result)
        return [v for v in verdicts if v is not None]

    def validate(self, references: Iterable[object]) -> list[str]:
        """Check, with no model, that each reference scores 1.0 against itself.

        Args:
            references: reference answers or solutions.

        Returns:
            One line per reference that fails (empty when all pass).
        """
        refs = list(references)
        problems: list[str] = []
        for k, (ref, verdict) in enumerate(
            zip(refs, self.verify_batch([(str(r), r) for r in refs]))
        ):
            if verdict.score != 1.0:
                problems.append(f"reference {k} ({_shorten(str(ref))!r}): {verdict.feedback}")
        return problems

    def warm(self, processes: int = 1) -> None:
        """Start workers and import sympy in them now, so that the first comparisons are not
        slowed by it (a worker replaced after a timeout starts in the background).

        Args:
            processes: how many workers to start (at most the pool's size).
        """
        pool = self._pool()
        pool.map(
            _warm_worker,
            range(processes),
            timeout_s=max(self.time_limit_s, 60.0),
            processes=processes,
        )

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _pool() -> limits.LimitedPool:
        pool = limits.default_pool()
        pool.preload(_WORKER_MODULES)
        return pool

    def _reference_candidates(self, reference: object) -> tuple[str, ...]:
        if isinstance(reference, bool) or not isinstance(
            reference, (str, int, float, Fraction, Decimal)
        ):
            raise TypeError(f"reference must be text or a number, got {type(reference).__name__}")
        text = str(reference)
        with self._lock:
            if self._epoch != _cache_epoch:
                self._references.clear()
                self._epoch = _cache_epoch
            cached = self._references.get(text)
            if cached is not None:
                self._references.move_to_end(text)
                return cached
        found = tuple(
            dict.fromkeys(
                n for n in (normalize(c.text, c.plain) for c in extract_candidates(text)) if n
            )
        )
        if not found:
            raise ValueError(
                f"reference {_shorten(text)!r} contains no answer; pass the final "
                f"answer, e.g. '42' or '\\frac{{1}}{{3}}'"
            )
        with self._lock:
            self._references[text] = found
            while len(self._references) > self.reference_cache_size:
                self._references.popitem(last=False)
        return found

    def _prepare(self, response: str, reference: object) -> _Prepared:
        if not isinstance(response, str):
            raise TypeError(f"response must be text, got {type(response).__name__}")
        references = self._reference_candidates(reference)
        candidates: list[Candidate] = extract_candidates(response, self.answer_sources)
        answers, sources = [], []
        for cand in candidates:
            text = normalize(cand.text, cand.plain)
            if text and text not in answers:
                answers.append(text)
                sources.append(cand.source)
        if not answers:
            verdict = Verdict.fail(
                "no final answer found: put it in \\boxed{} or after 'Answer:'",
                answer=None,
                reason="no_answer",
            )
            return _Prepared((), references, (), verdict)
        prepared = _Prepared(tuple(answers), references, tuple(sources), None)
        verdict = self._fast_verdict(prepared)
        if verdict is None:
            return prepared
        return _Prepared(prepared.answers, references, prepared.sources, verdict)

    def _fast_verdict(self, prepared: _Prepared) -> Verdict | None:
        """The verdict when no sympy is needed (same text, plain numbers), else None."""
        answer, reference = prepared.answers[0], prepared.references[0]
        if compact(answer) == compact(reference):
            return self._verdict(True, prepared, 0, 0, "text")
        try:
            same = Comparer(self.settings, use_sympy=False).equal(
                parse_answer(reference), parse_answer(answer)
            )
        except NeedsSympy:
            return None
        except RecursionError:
            return None
        return self._verdict(same, prepared, 0, 0, "numeric")

    def _job(
        self, prepared: _Prepared
    ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, bool, bool], int]:
        s = self.settings
        settings = (s.precision, s.strict, s.allow_set_relation_comp)
        return prepared.answers, prepared.references, settings, _cache_epoch

    def _from_worker(self, prepared: _Prepared, result: limits.LimitedResult) -> Verdict:
        answer = _shorten(_display(prepared.answers[0]))
        if result.status == "timeout":
            return Verdict.fail(
                f"read {answer}, but could not check it within {self.time_limit_s:g} s; "
                "counted as wrong",
                answer=answer,
                reason="timeout",
            )
        if result.status in ("memory", "crashed"):
            return Verdict.fail(
                f"read {answer}, which is too large to check; counted as wrong",
                answer=answer,
                reason=result.status,
            )
        if result.status == "error":
            return Verdict.fail(
                f"read {answer}, which could not be checked; counted as wrong",
                answer=answer,
                reason="error",
                error=result.message,
            )
        outcome, pi, gi, method = result.value
        if outcome == "unparsed_response":
            return Verdict.fail(
                f"read {answer}, which is not a math expression I can parse",
                answer=answer,
                reason="unparsed",
            )
        if outcome == "unparsed_reference":
            return Verdict.fail(
                "the reference answer could not be parsed; counted as wrong",
                answer=answer,
                reason="bad_reference",
            )
        return self._verdict(outcome == "equal", prepared, pi, gi, method)

    def _verdict(self, same: bool, prepared: _Prepared, pi: int, gi: int, method: str) -> Verdict:
        answer = _shorten(_display(prepared.answers[pi]))
        expected = _shorten(_display(prepared.references[gi]))
        details = {
            "answer": answer,
            "reference_answer": expected,
            "method": method,
            "source": prepared.sources[pi] if pi < len(prepared.sources) else None,
        }
        if same:
            return Verdict(1.0, True, f"correct: read {answer}", details)
        feedback = f"read {answer}, " + (
            f"expected {expected}"
            if self.reveal_reference
            else "which does not match the reference answer"
        )
        return Verdict(0.0, False, feedback, {**details, "reason": "mismatch"})


def _display(normalized: str) -> str:
    """The answer as shown in feedback: its normalised spelling, shortened."""
    return _shorten(normalized)


def _timed(verdict: Verdict, started: float) -> Verdict:
    details = dict(verdict.details)
    details["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return Verdict(verdict.score, verdict.correct, verdict.feedback, details)
