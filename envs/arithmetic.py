"""`opd/Arithmetic-v0`: procedural integer arithmetic, with retries and feedback.

The demo's environment: a ~1M-parameter character-level model learns it on a CPU in minutes,
so everything the model reads is short plain ASCII. An episode:

    user:       12+7=
    assistant:  21
    user:       too high, try again
    assistant:  19                      -> reward 1 (the return is the last answer's score)

Difficulty levels (`difficulty=`; `digits=`, `ops=`, `operands=` override a level's parts):

=====  ===========  =========  =============================
level  digits       operators  example
=====  ===========  =========  =============================
1      1            ``+``      ``3+5=``
2      1-2          ``+``      ``47+8=``
3      1-3          ``+``      ``512+36=``   (the default)
4      1-3          ``+-``     ``512-36=``
5      2-4          ``+-``     ``4120-377=``
6      1-3          ``+-*``    ``12*34=``
7      2-5          ``+-*``    ``40211*77=``
=====  ===========  =========  =============================

An operand's digit count is drawn uniformly first, then its value uniformly among numbers of
that many digits, so short and long operands are equally common. Expressions follow the usual
precedence (`*` before `+`/`-`); results are non-negative unless `allow_negative=True`.

Answers are parsed tolerantly: the last integer in the text (`parse="first"` for the first),
ASCII digits with an optional minus and `1,234`-style separators, so `12+7=19` and `It is 19.`
both read 19. Checking is a plain integer comparison (microseconds). Feedback levels:
`"direction"` (default: `too high` / `too low`) or `"wrong"`.

`info["privileged"]` is compact too: `answer 19` then, after a wrong try, `; last: too high`.

Not covered: division (integer division's rounding would be one more thing to learn), word
problems (see `opd/Math-v0`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from opd_selfplay.verifiers.verdict import Verdict

from .base import Observation, TextTaskEnv
from .tasks import Task

__all__ = ["LEVELS", "ArithmeticEnv", "ArithmeticTasks", "check_integer_answer", "parse_integer"]

#: difficulty level -> (min digits, max digits, operators)
LEVELS: dict[int, tuple[int, int, str]] = {
    1: (1, 1, "+"),
    2: (1, 2, "+"),
    3: (1, 3, "+"),
    4: (1, 3, "+-"),
    5: (2, 4, "+-"),
    6: (1, 3, "+-*"),
    7: (2, 5, "+-*"),
}

_INT = re.compile(r"(?<![0-9])-?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)")
_MAX_DIGITS = 40  # longer "answers" are garbage; int() of 4,300+ digits even raises


def parse_integer(text: str, which: Literal["first", "last"] = "last") -> int | str:
    """The first or last integer in `text`, or a short reason (`str`) why there is none.

    Args:
        text: Any text (the model's answer).
        which: Take the first or the last integer.

    Returns:
        The integer, or `"no number found"` / `"number too long"`.
    """
    if which == "first":
        m = _INT.search(text)
    else:
        m = None
        for m in _INT.finditer(text):  # noqa: B007  (we want the last match)
            pass
    if m is None:
        return "no number found"
    digits = m.group().replace(",", "")
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        return "number too long"
    return int(digits)


def check_integer_answer(
    text: str,
    expected: int,
    *,
    feedback: Literal["direction", "wrong"] = "direction",
    which: Literal["first", "last"] = "last",
) -> Verdict:
    """Score `text` against `expected`: 1 if its integer equals it, else 0 with feedback.

    Returns:
        A `Verdict` with `details = {"parsed": int | None, "parse_error": bool}`.
    """
    got = parse_integer(text, which)
    if isinstance(got, str):
        return Verdict(0.0, False, got, {"parsed": None, "parse_error": True})
    if got == expected:
        return Verdict(1.0, True, "correct", {"parsed": got, "parse_error": False})
    if feedback == "direction":
        fb = "too high" if got > expected else "too low"
    else:
        fb = "wrong"
    return Verdict(0.0, False, fb, {"parsed": got, "parse_error": False})


def _evaluate(numbers: list[int], ops: list[str]) -> int:
    """`numbers[0] ops[0] numbers[1] ...` with `*` binding tighter than `+` and `-`."""
    total, term, sign = 0, numbers[0], 1
    for op, n in zip(ops, numbers[1:]):
        if op == "*":
            term *= n
        else:
            total += sign * term
            term, sign = n, (1 if op == "+" else -1)
    return total + sign * term


@dataclass(frozen=True)
class ArithmeticTasks:
    """The procedural task source of `opd/Arithmetic-v0` (a `TaskSource`).

    Args:
        min_digits: Fewest digits of an operand (>= 1).
        max_digits: Most digits of an operand.
        ops: The operators to draw from, a string over `+-*`.
        operands: Numbers per expression (>= 2).
        allow_negative: Allow negative results (otherwise redrawn / operands swapped).
        prompt_format: `"compact"` (`12+7=`) or `"words"` (`What is 12 + 7?`).
    """

    min_digits: int = 1
    max_digits: int = 3
    ops: str = "+"
    operands: int = 2
    allow_negative: bool = False
    prompt_format: Literal["compact", "words"] = "compact"

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits <= 18:
            raise ValueError(
                f"digits must satisfy 1 <= min <= max <= 18, got {self.min_digits}..{self.max_digits}"
            )
        if not self.ops or set(self.ops) - set("+-*"):
            raise ValueError(f"ops must be a non-empty string over '+-*', got {self.ops!r}")
        if self.operands < 2:
            raise ValueError(f"operands must be >= 2, got {self.operands}")
        if self.prompt_format not in ("compact", "words"):
            raise ValueError(
                f"prompt_format must be 'compact' or 'words', got {self.prompt_format!r}"
            )

    @classmethod
    def from_level(cls, difficulty: int, **overrides: Any) -> ArithmeticTasks:
        """The tasks of a difficulty level (see the module docstring), with overrides."""
        if difficulty not in LEVELS:
            raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {difficulty!r}")
        lo, hi, ops = LEVELS[difficulty]
        base: dict[str, Any] = {"min_digits": lo, "max_digits": hi, "ops": ops}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def _number(self, rng: np.random.Generator) -> int:
        d = int(rng.integers(self.min_digits, self.max_digits + 1))
        lo = 0 if d == 1 else 10 ** (d - 1)
        return int(rng.integers(lo, 10**d))

    def sample(self, rng: np.random.Generator) -> Task:
        """One expression and its value, all randomness from `rng`."""
        for _ in range(100):
            numbers = [self._number(rng) for _ in range(self.operands)]
            ops = [self.ops[int(rng.integers(len(self.ops)))] for _ in range(self.operands - 1)]
            value = _evaluate(numbers, ops)
            if value < 0 and not self.allow_negative and self.operands == 2:
                numbers.reverse()  # a - b < 0  =>  b - a > 0
                value = _evaluate(numbers, ops)
            if value >= 0 or self.allow_negative:
                break
        sep = " " if self.prompt_format == "words" else ""
        expr = str(numbers[0]) + "".join(f"{sep}{o}{sep}{n}" for o, n in zip(ops, numbers[1:]))
        prompt = f"{expr}=" if self.prompt_format == "compact" else f"What is {expr}?"
        return Task(
            prompt=prompt,
            reference=str(value),
            id=f"arith:{expr.replace(' ', '')}",
            solution=str(value),
            metadata={"expression": expr.replace(" ", ""), "ops": "".join(ops)},
        )


class ArithmeticEnv(TextTaskEnv):
    """Procedural integer arithmetic ('12+7='); a wrong answer gets feedback and another try.

    Args:
        difficulty: A level of `LEVELS` (default 3: 1-3 digit addition).
        digits: `(min, max)` digits per operand, overriding the level's.
        ops: Operators over `+-*`, overriding the level's.
        operands: Numbers per expression (default 2).
        allow_negative: Allow negative results.
        prompt_format: `"compact"` (`12+7=`, default) or `"words"` (`What is 12 + 7?`).
        max_attempts: Answers allowed per episode (default 2).
        feedback: `"direction"` (`too high`/`too low`, default) or `"wrong"`.
        parse: Read the `"last"` (default) or `"first"` integer of an answer.
        system_prompt: When set, reset returns `[system, user]` messages.
        render_mode: None or "ansi".
    """

    metadata = {  # noqa: RUF012  (Gymnasium's convention: a class-level dict)
        "render_modes": ["ansi"],
        "description": "procedural integer arithmetic with retries and feedback",
    }

    def __init__(
        self,
        difficulty: int = 3,
        *,
        digits: tuple[int, int] | None = None,
        ops: str | None = None,
        operands: int | None = None,
        allow_negative: bool = False,
        prompt_format: Literal["compact", "words"] = "compact",
        max_attempts: int = 2,
        feedback: Literal["direction", "wrong"] = "direction",
        parse: Literal["first", "last"] = "last",
        system_prompt: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if feedback not in ("direction", "wrong"):
            raise ValueError(f"feedback must be 'direction' or 'wrong', got {feedback!r}")
        if parse not in ("first", "last"):
            raise ValueError(f"parse must be 'first' or 'last', got {parse!r}")
        lo, hi = digits if digits is not None else (None, None)
        tasks = ArithmeticTasks.from_level(
            difficulty,
            min_digits=lo,
            max_digits=hi,
            ops=ops,
            operands=operands,
            allow_negative=allow_negative,
            prompt_format=prompt_format,
        )
        super().__init__(
            tasks,
            max_attempts=max_attempts,
            max_action_chars=1 << 20,  # parsing is a linear regex scan: 1 MB is fine
            system_prompt=system_prompt,
            render_mode=render_mode,
        )
        self.feedback = feedback
        self.parse = parse
        self.words = prompt_format == "words"

    def verify(self, action: str, task: Task) -> Verdict:
        return check_integer_answer(
            action, int(str(task.reference)), feedback=self.feedback, which=self.parse
        )

    def render_retry(self, verdict: Verdict, attempts_left: int) -> Observation:
        if self.words:
            return f"{verdict.feedback.capitalize()}. Try again."
        return f"{verdict.feedback}, try again"

    def render_privileged(self, task: Task, feedback: str) -> str:
        return f"answer {task.reference}" + (f"; last: {feedback}" if feedback else "")

    def oracle_action(self) -> str | None:
        return None if self.task is None else str(self.task.reference)

    def wrong_action(self) -> str | None:
        return None if self.task is None else str(int(str(self.task.reference)) + 1)
