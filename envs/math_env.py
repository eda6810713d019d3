r"""`opd/Math-v0`: math problems answered in free text, checked by `MathVerifier`, with retries.

An episode: the problem plus an instruction to put the final answer in `\boxed{}`; the agent
answers in free text; `MathVerifier` finds the final answer and compares it with the reference
(symbolically and numerically). A wrong answer gets the verifier's feedback ("read 0.5,
expected a different value", "no final answer found") and another try, up to `max_attempts`.

Task sets:
- default: `data/math_tasks.jsonl`, 370 problems this project generates with sympy and
  verifies twice (`python -m opd_selfplay.envs.make_math_tasks`): linear and quadratic
  equations, fractions, simplification, 2x2 systems, word problems. `category=` picks some.
- any JSONL file through `tasks=PATH`, in one of three formats (`task_format=`, default
  `"auto"`, which looks at the first row's fields):
  - `"opd"`: this project's format (`prompt`, `reference`, ...; see `tasks`);
  - `"gsm8k"`: `{"question", "answer"}` with the final answer after `####` in `answer`
    (GSM8K's convention; `<<48/2=24>>` calculator notes are dropped from the solution);
  - `"math"`: `{"problem", "solution"}` with the answer in the solution's last `\boxed{}`
    (the MATH dataset; `level` and `type` go to the metadata).
- a `TaskList` built in code (e.g. with `opd_selfplay.envs.tasks.load_hf_dataset` and the
  row transforms `gsm8k_row_to_task` / `math_row_to_task` of this module).

The verifier is imported on first use, so making the env does not load sympy.

Not covered: answer extraction and equivalence rules (`opd_selfplay.verifiers.math`), proofs
and other answers a verifier cannot check.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from opd_selfplay.verifiers.verdict import Verdict

from .base import Observation, TextTaskEnv
from .tasks import Task, TaskList, load_jsonl

__all__ = [
    "DEFAULT_INSTRUCTION",
    "SHIPPED_TASKS",
    "MathEnv",
    "gsm8k_row_to_task",
    "last_boxed",
    "load_math_tasks",
    "math_row_to_task",
]

#: The shipped task set.
SHIPPED_TASKS = Path(__file__).with_name("data") / "math_tasks.jsonl"

#: Appended to every problem (set `instruction=""` to drop it).
DEFAULT_INSTRUCTION = "Put your final answer in \\boxed{}."

TaskFormat = Literal["auto", "opd", "gsm8k", "math"]


def last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, braces balanced;
    None when there is none or it is not closed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


_CALC_NOTE = re.compile(r"<<[^<>]*>>")


def gsm8k_row_to_task(row: Mapping[str, Any], index: int) -> Task:
    """A GSM8K row `{"question", "answer": "...#### 72"}` as a task (reference `"72"`)."""
    question, answer = row["question"], row["answer"]
    if not isinstance(question, str) or not isinstance(answer, str) or "####" not in answer:
        raise ValueError("a GSM8K row needs string 'question' and 'answer' with '#### <answer>'")
    reasoning, _, final = answer.rpartition("####")
    reference = final.strip().replace(",", "")
    if not reference:
        raise ValueError("empty answer after '####'")
    steps = _CALC_NOTE.sub("", reasoning).strip()
    solution = (steps + "\n" if steps else "") + f"The answer is \\boxed{{{reference}}}."
    return Task(
        prompt=question.strip(),
        reference=reference,
        id=str(row.get("id") or f"gsm8k-{index}"),
        solution=solution,
        metadata={"source": "gsm8k"},
    )


def math_row_to_task(row: Mapping[str, Any], index: int) -> Task:
    r"""A MATH row `{"problem", "solution": "...\boxed{x}", ["level"], ["type"]}` as a task."""
    problem, solution = row["problem"], row["solution"]
    if not isinstance(problem, str) or not isinstance(solution, str):
        raise ValueError("a MATH row needs string 'problem' and 'solution'")
    reference = row.get("answer") or last_boxed(solution)
    if not reference:
        raise ValueError("no \\boxed{} answer in 'solution' (and no 'answer' field)")
    meta = {"source": "math"}
    meta.update({k: str(row[k]) for k in ("level", "type", "subject") if k in row})
    return Task(
        prompt=problem.strip(),
        reference=str(reference),
        id=str(row.get("unique_id") or row.get("id") or f"math-{index}"),
        solution=solution.strip(),
        metadata=meta,
    )


def _detect_format(path: Path) -> TaskFormat:
    import json

    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and not line.lstrip().startswith("//"):
                try:
                    keys = set(json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    return "opd"  # let the loader report the line
                if {"question", "answer"} <= keys:
                    return "gsm8k"
                if {"problem", "solution"} <= keys:
                    return "math"
                return "opd"
    return "opd"


def load_math_tasks(
    path: str | Path, task_format: TaskFormat = "auto", limit: int | None = None
) -> TaskList:
    """Read math tasks from JSONL in this project's, GSM8K's or MATH's format.

    Args:
        path: The JSONL file.
        task_format: `"opd"`, `"gsm8k"`, `"math"`, or `"auto"` (from the first row's fields).
        limit: Read at most this many tasks.

    Returns:
        The tasks.
    """
    path = Path(path)
    fmt = _detect_format(path) if task_format == "auto" else task_format
    transforms = {"opd": None, "gsm8k": gsm8k_row_to_task, "math": math_row_to_task}
    if fmt not in transforms:
        raise ValueError(f"task_format must be one of auto, {', '.join(transforms)}; got {fmt!r}")
    return load_jsonl(path, transform=transforms[fmt], limit=limit)


@functools.lru_cache(maxsize=4)
def _cached(path: str, task_format: str) -> TaskList:
    return load_math_tasks(path, task_format)  # type: ignore[arg-type]


class MathEnv(TextTaskEnv):
    """Free-text math problems checked by `MathVerifier`; a wrong answer gets feedback and
    another try.

    Args:
        tasks: None (the shipped set), a JSONL path, or a `TaskList`.
        task_format: Format of a JSONL `tasks` file (see the module docstring).
        category: Keep only tasks whose `metadata["category"]` is this (or one of these).
        instruction: Appended to each problem on a new line ("" for none).
        max_attempts: Answers allowed per episode (default 2).
        verifier_kwargs: Passed to `MathVerifier(...)` (e.g. `time_limit_s`).
        system_prompt: When set, reset returns `[system, user]` messages.
        render_mode: None or "ansi".
    """

    metadata = {  # noqa: RUF012  (Gymnasium's convention: a class-level dict)
        "render_modes": ["ansi"],
        "description": "free-text math problems checked by MathVerifier, with retries",
    }

    def __init__(
        self,
        tasks: str | Path | TaskList | None = None,
        *,
        task_format: TaskFormat = "auto",
        category: str | Sequence[str] | None = None,
        instruction: str = DEFAULT_INSTRUCTION,
        max_attempts: int = 2,
        verifier_kwargs: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if tasks is None:
            task_list = _cached(str(SHIPPED_TASKS), "opd")
        elif isinstance(tasks, TaskList):
            task_list = tasks
        else:
            task_list = _cached(str(Path(tasks).resolve()), task_format)
        if category is not None:
            wanted = {category} if isinstance(category, str) else set(category)
            task_list = task_list.filter(lambda t: t.metadata.get("category") in wanted)
        super().__init__(
            task_list,
            max_attempts=max_attempts,
            system_prompt=system_prompt,
            render_mode=render_mode,
        )
        self.instruction = instruction
        self.verifier_kwargs = dict(verifier_kwargs or {})
        self._verifier: Any = None

    @property
    def verifier(self) -> Any:
        """The `MathVerifier`, made on first use (imports sympy)."""
        if self._verifier is None:
            from opd_selfplay.verifiers import MathVerifier

            self._verifier = MathVerifier(**self.verifier_kwargs)
        return self._verifier

    def render_prompt(self, task: Task) -> str:
        return f"{task.prompt}\n{self.instruction}" if self.instruction else task.prompt

    def verify(self, action: str, task: Task) -> Verdict:
        verdict = self.verifier.verify(action, str(task.reference))
        # The verifier's timing varies run to run; dropping it keeps `info` a function of the
        # seed and the actions (Gymnasium's checker compares step infos).
        if "elapsed_ms" not in verdict.details:
            return verdict
        details = {k: v for k, v in verdict.details.items() if k != "elapsed_ms"}
        return Verdict(verdict.score, verdict.correct, verdict.feedback, details)

    def render_retry(self, verdict: Verdict, attempts_left: int) -> Observation:
        fb = verdict.feedback or "That is not correct."
        return f"{fb}\nTry again."

    def is_parse_error(self, verdict: Verdict) -> bool:
        """No final answer found, or one that is not a math expression (MathVerifier's
        `details["reason"]` of `no_answer` / `unparsed`)."""
        d = verdict.details
        return bool(d.get("parse_error")) or d.get("reason") in ("no_answer", "unparsed")

    def oracle_action(self) -> str | None:
        if self.task is None:
            return None
        if self.task.solution and last_boxed(self.task.solution) is not None:
            return self.task.solution
        return f"The answer is \\boxed{{{self.task.reference}}}."

    def wrong_action(self) -> str | None:
        return None if self.task is None else "The answer is \\boxed{-987654321}."
