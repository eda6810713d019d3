"""`opd/ProposeSolve-v0`: one role proposes a problem with a verifiable answer, the other solves it.

**Roles and turns.** An episode starts with the *proposer*'s turn, then `n_solves` *solver*
turns (`info["role"]` names the role of the next action; a single-agent engine drives both
roles, as in the two-player games):

1. The proposer writes a problem of the kind the task asks for:
   - arithmetic: `Expression: <integers, + - * / ( )>` with at least `difficulty + 1`
     operators; its exact value (a rational) is computed by `tools.safe_eval` (no `eval`);
   - Python: a fenced ```python block defining `f`, and a line `Input: <Python literals>`
     (the arguments, comma-separated); the output `f(*input)` is computed **in the code
     sandbox** (`opd_selfplay.verifiers.sandbox`), twice, and must be the same JSON-like
     value both times (deterministic) within 2 s.
   An invalid proposal ends the episode with reward 0 and feedback saying why.
2. Each solver turn gets the problem ("what is the value of ...", "what does f(...) return?")
   and answers `Answer: <value>`; it is checked against the computed value (rationals exactly
   or within 1e-9 relative; Python values as literals, tuples read as lists, floats within
   1e-9). The solver is not told whether a try was right until the episode ends.

**Rewards** (`info["rewards"]` at the end, in [0, 1]):
- solver: its success rate `p` over the `n_solves` tries;
- proposer (the learnability reward `r_propose` of Absolute Zero, Zhao et al. 2025, "Absolute
  Zero: Reinforced Self-play Reasoning with Zero Data", arXiv 2505.03335): `1 - p` when
  `0 < p < 1`, else 0: a problem the solver always solves is trivial, one it never solves is
  impossible (or wrong), and neither teaches anything. An invalid proposal earns 0 (AZR uses negative format penalties;
  rewards here stay in [0, 1]).
The env's scalar reward is paid once, on the last step (as in `base`): the reward of
`reward_role` ("solver" by default, so an oracle episode earns 1; "proposer" to train
proposals).

**Independent tries.** Solver tries within one conversation see the earlier tries, so they are
not independent samples. Pass `solver=` (a callable `question -> reply`, e.g. a frozen policy
sampled at temperature > 0) to have the env draw the `n_solves` tries itself, independently:
the episode is then the proposal alone and the reward the proposer's.

**Oracle.** For the proposer, the task's `solution`: a valid proposal drawn from seeded
templates; for the solver, `Answer: <the computed value>`. `wrong_action()` is an invalid
proposal (or a wrong answer in a solver turn).

Departures from AZR: one task family per episode rather than deduction/abduction/induction
triplets; no reference buffer of earlier proposals in the prompt; rewards in [0, 1].
Not covered: checking that a proposal is new, or "interesting" beyond learnability. A
proposer's program could print a value other than `f`'s output; the value is read from a
line marked with a random nonce, and a forged value is unsolvable for an honest solver, so it
earns 0.
"""

from __future__ import annotations

import ast
import json
import math
import re
import secrets
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from opd_selfplay.verifiers.verdict import Verdict

from .base import Observation, Reply, TextTaskEnv
from .tasks import ProceduralSource, Task
from .tools import ExpressionError, format_number, safe_eval, sandbox_output

__all__ = ["ProposeSolveEnv", "learnability_reward"]

Kind = Literal["arithmetic", "python", "any"]
Role = Literal["proposer", "solver"]

_MAX_CODE_CHARS = 3000
_MAX_INPUT_CHARS = 500
_MAX_ANSWER_CHARS = 2000
_MAX_VALUE = 10**12
_EXPR_RE = re.compile(r"(?im)^\s*expression\s*:\s*(.+?)\s*$")
_INPUT_RE = re.compile(r"(?im)^\s*input\s*:\s*(.+?)\s*$")
_FENCE_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_ANSWER_RE = re.compile(r"(?im)answer\s*:\s*(.+?)\s*$")


def learnability_reward(successes: list[bool] | list[float]) -> float:
    """Absolute Zero's proposer reward: `1 - mean` when the mean is strictly between 0 and 1.

    Args:
        successes: the solver's results (True/1 solved) over several tries.

    Returns:
        The reward in [0, 1); 0 for no tries, all solved, or none solved.
    """
    if not successes:
        return 0.0
    p = sum(float(s) for s in successes) / len(successes)
    return 1.0 - p if 0.0 < p < 1.0 else 0.0


# ------------------------------------------------------------------------------ proposals ---

_OPS = ("+", "-", "*", "/")


def _random_expression(rng: np.random.Generator, n_ops: int) -> str:
    expr = str(int(rng.integers(2, 20)))
    for _ in range(n_ops):
        op = _OPS[int(rng.integers(3 if n_ops < 3 else 4))]
        term = str(int(rng.integers(2, 13)))
        expr = f"({expr}) {op} {term}" if rng.random() < 0.4 else f"{expr} {op} {term}"
    return expr


_PY_TEMPLATES = (
    ("def f(xs):\n    return sorted(x * {a} % {m} for x in xs)", "xs"),
    (
        "def f(n):\n    total = 0\n    for i in range(n):\n        if i % {a} == {b}:\n"
        "            total += i * i\n    return total",
        "n",
    ),
    ("def f(s):\n    return ''.join(c for i, c in enumerate(s) if i % {k} != 1)", "s"),
    (
        "def f(n):\n    a, b = {a}, {b}\n    for _ in range(n):\n        a, b = b, (a + b) % {m}\n"
        "    return a",
        "n",
    ),
    ("def f(xs):\n    return [sum(xs[: i + 1]) % {m} for i in range(len(xs))]", "xs"),
)
_WORDS = ("banana", "proposal", "solver", "sandbox", "learnable", "mississippi", "teacher")


def _random_python(rng: np.random.Generator) -> str:
    template, arg = _PY_TEMPLATES[int(rng.integers(len(_PY_TEMPLATES)))]
    a, b = int(rng.integers(2, 7)), int(rng.integers(0, 2))
    code = template.format(a=a, b=b, m=int(rng.integers(5, 30)), k=int(rng.integers(2, 4)))
    if arg == "xs":
        value = repr([int(v) for v in rng.integers(-9, 30, size=int(rng.integers(3, 7)))])
    elif arg == "n":
        value = str(int(rng.integers(5, 25)))
    else:
        value = repr(str(_WORDS[int(rng.integers(len(_WORDS)))]))
    return f"```python\n{code}\n```\nInput: {value}"


def _generate(kind: Kind) -> Callable[[np.random.Generator, int], Task]:
    def generate(rng: np.random.Generator, difficulty: int) -> Task:
        chosen = kind if kind != "any" else ("arithmetic", "python")[int(rng.integers(2))]
        min_ops = max(1, int(difficulty)) + 1
        if chosen == "arithmetic":
            example = f"Expression: {_random_expression(rng, min_ops + int(rng.integers(0, 3)))}"
            prompt = (
                "You are the proposer. Propose an arithmetic problem for a solver: an expression "
                f"over integers with + - * / and parentheses, with at least {min_ops} operators "
                f"and a value of at most {_MAX_VALUE:.0e} in size. Make it hard enough that the "
                "solver does not always get it right, but solvable. Reply with one line "
                "`Expression: ...`."
            )
        else:
            example = _random_python(rng)
            prompt = (
                "You are the proposer. Propose a Python puzzle for a solver: a deterministic "
                "function `f` (standard library only, no I/O, runs in well under a second) in a "
                "```python block, and the arguments to call it with on a line `Input: ...` "
                "(Python literals, comma-separated). The solver must predict what `f` returns "
                "(a number, string, bool, None, or list/dict of those). Make it hard enough "
                "that the solver does not always get it right, but solvable."
            )
        return Task(
            prompt=prompt,
            reference={"kind": chosen, "min_ops": min_ops},
            id=f"propose-{chosen}-{int(rng.integers(1 << 30)):09d}",
            solution=example,
            metadata={"kind": chosen, "difficulty": int(difficulty), "min_ops": min_ops},
        )

    return generate


def _count_ops(tree: ast.AST) -> int:
    return sum(isinstance(n, ast.BinOp) for n in ast.walk(tree))


class _Problem:
    """A validated proposal: the solver's question and the value it must give."""

    def __init__(self, kind: str, question: str, value: Any, shown: str) -> None:
        self.kind = kind
        self.question = question
        self.value = value
        self.shown = shown


def _parse_arithmetic(text: str, min_ops: int) -> _Problem:
    found = _EXPR_RE.findall(text[-20_000:])
    if not found:
        raise ValueError("no `Expression: ...` line found")
    expr = found[-1].strip().rstrip(".")
    try:
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(f"cannot parse {expr[:60]!r} as arithmetic") from None
    if _count_ops(tree) < min_ops:
        raise ValueError(f"the expression needs at least {min_ops} operators")
    try:
        value = safe_eval(expr, exact=True)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None
    if abs(value) > _MAX_VALUE:
        raise ValueError(f"the value is larger than {_MAX_VALUE:.0e}")
    question = (
        f"Compute the exact value of {expr}\nGive the result as an integer or a fraction "
        "(e.g. 7/3), as `Answer: <value>`."
    )
    return _Problem("arithmetic", question, Fraction(value), format_number(value))


def _parse_python_parts(text: str) -> tuple[str, tuple[Any, ...], str]:
    blocks = _FENCE_RE.findall(text[-50_000:])
    if not blocks:
        raise ValueError("no ```python block with the function f found")
    code = blocks[-1].strip("\n")
    if len(code) > _MAX_CODE_CHARS:
        raise ValueError(f"the code is longer than {_MAX_CODE_CHARS} characters")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ValueError(f"the code does not parse: {str(exc)[:80]}") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "f" for n in tree.body):
        raise ValueError("the code must define a top-level function `f`")
    found = _INPUT_RE.findall(text[-50_000:])
    if not found:
        raise ValueError("no `Input: ...` line found")
    raw = found[-1].strip()
    if len(raw) > _MAX_INPUT_CHARS:
        raise ValueError(f"the input is longer than {_MAX_INPUT_CHARS} characters")
    try:
        args = ast.literal_eval(f"({raw},)")
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        raise ValueError(f"the input {raw[:60]!r} is not a list of Python literals") from None
    return code, args, raw


def _run_python_proposal(code: str, args: tuple[Any, ...]) -> Any:
    """Runs `f(*args)` twice in the sandbox; returns the JSON value, or raises ValueError."""
    from opd_selfplay.verifiers.sandbox import run_python  # the sandbox, only when needed

    nonce = secrets.token_hex(16)
    program = (
        f"{code}\n\n"
        "import json as _json\n"
        f"_args = {args!r}\n"
        "_a = _json.dumps(f(*_args), allow_nan=False)\n"
        "_b = _json.dumps(f(*_args), allow_nan=False)\n"
        f"print('\\n{nonce}' + _json.dumps([_a, _b]))\n"
    )
    result = run_python(program, time_limit_s=2.0, memory_limit_mb=256)
    marked = [line for line in result.stdout.splitlines() if line.startswith(nonce)]
    if not result.ok or not marked:
        tail = sandbox_output(result, limit=300).splitlines()
        raise ValueError("running f failed: " + (tail[-1] if tail else "no result"))
    first, second = json.loads(marked[-1][len(nonce) :])
    if first != second:
        raise ValueError("f is not deterministic: two calls gave different results")
    if len(first) > _MAX_ANSWER_CHARS:
        raise ValueError(f"the output is longer than {_MAX_ANSWER_CHARS} characters")
    return json.loads(first)


def _parse_python(text: str) -> _Problem:
    code, args, raw = _parse_python_parts(text)
    value = _run_python_proposal(code, args)
    question = (
        f"Here is a Python function:\n```python\n{code}\n```\nWhat does `f({raw})` return? "
        "Give the value as a Python literal, as `Answer: <value>`."
    )
    return _Problem("python", question, value, repr(value))


# ---------------------------------------------------------------------------- answers ---


def _answer_text(reply: str) -> str | None:
    found = _ANSWER_RE.findall(reply[-20_000:])
    if found:
        return found[-1].strip()
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want)
    return type(got) is type(want) and got == want


def check_answer(problem: _Problem, reply: str) -> bool:
    """Whether a solver reply gives the problem's value (see the module docstring)."""
    text = _answer_text(reply)
    if text is None or len(text) > _MAX_ANSWER_CHARS:
        return False
    if problem.kind == "arithmetic":
        try:
            got = safe_eval(text.rstrip("."), exact=True)
        except ExpressionError:
            return False
        want = problem.value
        return Fraction(got) == want or math.isclose(float(got), float(want), rel_tol=1e-9)
    try:
        got = _plain(ast.literal_eval(text))
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        got = text  # a bare string without quotes
    return _same(got, problem.value)


# -------------------------------------------------------------------------------- env ---


class ProposeSolveEnv(TextTaskEnv):
    """Proposer-solver self-play with a learnability reward (see the module docstring).

    Args:
        kind: "arithmetic", "python" or "any" (drawn per task).
        difficulty: Arithmetic proposals need at least `difficulty + 1` operators.
        n_solves: Solver tries per proposal (>= 1).
        reward_role: Whose reward the env pays as its scalar reward: "solver" or "proposer".
        solver: Optional `question -> reply` callable that makes the tries itself
            (independent samples); the episode is then the proposal alone, paid the
            proposer's reward.
        render_mode: None or "ansi".
    """

    metadata = {"render_modes": ["ansi"], "description": "proposer-solver self-play"}  # noqa: RUF012

    def __init__(
        self,
        kind: Kind = "any",
        *,
        difficulty: int = 1,
        n_solves: int = 4,
        reward_role: Role = "solver",
        solver: Callable[[str], str] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if kind not in ("arithmetic", "python", "any"):
            raise ValueError(f"kind must be 'arithmetic', 'python' or 'any', got {kind!r}")
        if int(n_solves) < 1:
            raise ValueError(f"n_solves must be >= 1, got {n_solves!r}")
        if reward_role not in ("solver", "proposer"):
            raise ValueError(f"reward_role must be 'solver' or 'proposer', got {reward_role!r}")
        self.kind = kind
        self.n_solves = int(n_solves)
        self.solver = solver
        self.reward_role: Role = "proposer" if solver is not None else reward_role
        # Long replies are read, not refused (only their tail matters), so that an oversized
        # solver reply is a failed try rather than the base class's episode-ending failure.
        super().__init__(
            ProceduralSource(_generate(kind), int(difficulty)),
            max_attempts=1,
            max_turns=None,
            max_action_chars=1 << 21,
            render_mode=render_mode,
        )
        self._problem: _Problem | None = None
        self._results: list[bool] = []
        self._rewards = {"proposer": 0.0, "solver": 0.0}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        self._problem = None
        self._results = []
        self._rewards = {"proposer": 0.0, "solver": 0.0}
        return super().reset(seed=seed, options=options)

    @property
    def role(self) -> Role:
        """The role of the next action."""
        return "proposer" if self._problem is None else "solver"

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        info["role"] = self.role
        info["rewards"] = dict(self._rewards)
        info["solver_results"] = list(self._results)
        if self._problem is not None:
            info["problem"] = self._problem.question
        return info

    def respond(self, action: str) -> Reply:
        assert self.task is not None
        if self._problem is None:
            return self._propose(action)
        self._results.append(check_answer(self._problem, action))
        if len(self._results) < self.n_solves:
            k = len(self._results) + 1
            return Reply(
                observation=f"Try {k} of {self.n_solves}, independently:\n{self._problem.question}"
            )
        return self._finish()

    def _propose(self, action: str) -> Reply:
        assert self.task is not None
        kind = str(self.task.metadata.get("kind"))
        try:
            if kind == "arithmetic":
                problem = _parse_arithmetic(action, int(self.task.metadata.get("min_ops", 2)))
            else:
                problem = _parse_python(action)
        except ValueError as exc:
            verdict = Verdict.fail(f"Invalid proposal: {exc}.", role="proposer", invalid=True)
            return Reply(verdict=verdict, done=True)
        self._problem = problem
        if self.solver is not None:
            for _ in range(self.n_solves):
                try:
                    reply = self.solver(problem.question)
                except Exception as exc:  # a broken solver is a failed try, not a crash
                    reply = f"(solver failed: {type(exc).__name__})"
                self._results.append(isinstance(reply, str) and check_answer(problem, reply))
            return self._finish()
        return Reply(
            observation=f"You are the solver. Try 1 of {self.n_solves}:\n{problem.question}"
        )

    def _finish(self) -> Reply:
        assert self._problem is not None
        solved = sum(self._results)
        p = solved / len(self._results)
        self._rewards = {"proposer": learnability_reward(self._results), "solver": p}
        score = self._rewards[self.reward_role]
        if self.reward_role == "solver":
            correct = solved == len(self._results)
        else:
            correct = score > 0.0
        feedback = (
            f"The solver solved {solved} of {len(self._results)} tries (the answer was "
            f"{self._problem.shown}); proposer reward {self._rewards['proposer']:.2f}."
        )
        details = {"solver_results": list(self._results), "rewards": dict(self._rewards)}
        return Reply(verdict=Verdict(score, correct, feedback, details), done=True)

    # ----------------------------------------------------------------- privileged ---
    def reference_text(self, task: Task) -> str:
        return f"a valid {task.metadata.get('kind')} proposal, e.g.\n{task.solution}"

    def render_privileged(self, task: Task, feedback: str) -> str:
        if self._problem is None:
            text = f"Example of a valid proposal:\n{task.solution}"
        else:
            text = f"The proposed problem's answer: {self._problem.shown}"
        if feedback:
            text += f"\nFeedback: {feedback}"
        return text

    def oracle_action(self) -> str | None:
        """The example proposal in the proposer's turn; the right answer in a solver's."""
        if self.task is None or self._done:
            return None
        if self._problem is None:
            return self.task.solution
        return f"Answer: {self._problem.shown}"

    def wrong_action(self) -> str | None:
        """An invalid proposal in the proposer's turn; a wrong answer in a solver's."""
        if self._problem is None:
            return "Here is my problem: none."
        return "Answer: not a value"
