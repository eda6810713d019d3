"""Tasks and where they come from: procedural generators, JSONL files, Hugging Face datasets.

A `Task` is one problem: the prompt the agent sees, the reference its answers are checked
against, an optional full solution, and metadata. Envs draw tasks from a `TaskSource`:

- `ProceduralSource(generate, difficulty)`: an endless, seeded generator. `generate(rng,
  difficulty) -> Task` must draw every random choice from `rng` (a `numpy.random.Generator`),
  so the same RNG state gives the same task.
- `TaskList`: a finite list of tasks; `sample(rng)` picks one uniformly, `[i]` picks task i.
  Built in code, from JSONL (`load_jsonl`) or from Hugging Face `datasets`
  (`load_hf_dataset`).

**JSONL format** (`load_jsonl` without a `transform`), one JSON object per line; blank lines
and lines starting with `//` are skipped:

=============  ==========  ====================================================================
field          type        meaning
=============  ==========  ====================================================================
``prompt``     str, req.   What the agent is asked (the first user message).
``reference``  JSON, req.  What answers are checked against: the answer text for math, a
                           tests object for code, expected calls/state for tool use.
``id``         str         A stable id; default ``"<file stem>-<line number>"``.
``solution``   str         A full response the env's verifier accepts (worked steps ending in
                           the answer): the oracle action and a supervised target.
``metadata``   object      Anything else (source, category, difficulty); carried into
                           ``info["task_metadata"]``.
=============  ==========  ====================================================================

Other formats (GSM8K, MATH, HumanEval) are read by passing a `transform(row, index) -> Task`
to `load_jsonl` or `load_hf_dataset`; the envs that need them ship their transforms.

Not covered: the reasoning-gym adapter (its own env module, with `reasoning-gym` an optional
dependency), and verification (the envs' business).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from opd_selfplay.verifiers.verdict import JSON

__all__ = [
    "ProceduralSource",
    "Task",
    "TaskList",
    "TaskSource",
    "load_hf_dataset",
    "load_jsonl",
]


@dataclass(frozen=True)
class Task:
    """One problem an env poses. Frozen: envs share tasks between episodes, never edit them."""

    prompt: str
    """What the agent is asked: the text of the first user message (envs may add a format
    instruction around it)."""
    reference: JSON
    """What answers are checked against, in the form the env's verifier takes: the answer text
    (math, arithmetic), a tests object (code), expected tool calls or final state (tool use)."""
    id: str = ""
    """A stable identifier (file stem and line, dataset row, or generator parameters)."""
    solution: str = ""
    """A full response that the env's verifier accepts: the oracle action, a supervised
    warm-start target, and part of the privileged context. "" when the task has none."""
    metadata: Mapping[str, JSON] = field(default_factory=dict)
    """Anything else, JSON-serialisable (source, category, difficulty). Treat as read-only."""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"Task.prompt must be str, got {type(self.prompt).__name__}")
        if not isinstance(self.solution, str):
            raise TypeError(f"Task.solution must be str, got {type(self.solution).__name__}")

    def to_dict(self) -> dict[str, JSON]:
        """The JSONL form (see the module docstring)."""
        out: dict[str, JSON] = {"id": self.id, "prompt": self.prompt, "reference": self.reference}
        if self.solution:
            out["solution"] = self.solution
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, default_id: str = "") -> Task:
        """A task from its JSONL form; raises `ValueError` naming a missing or mistyped field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a task must be a JSON object, got {type(data).__name__}")
        for key in ("prompt", "reference"):
            if key not in data:
                raise ValueError(f"task is missing the required field {key!r}")
        if not isinstance(data["prompt"], str):
            raise ValueError(f"task field 'prompt' must be a string, got {data['prompt']!r:.60}")
        solution = data.get("solution", "") or ""
        if not isinstance(solution, str):
            raise ValueError("task field 'solution' must be a string")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise ValueError("task field 'metadata' must be an object")
        return cls(
            prompt=data["prompt"],
            reference=data["reference"],
            id=str(data.get("id") or default_id),
            solution=solution,
            metadata=dict(metadata),
        )


@runtime_checkable
class TaskSource(Protocol):
    """Anything that draws a task from a NumPy RNG; the same RNG state must give the same task."""

    def sample(self, rng: np.random.Generator) -> Task:
        """One task, all randomness drawn from `rng`."""
        ...


#: A procedural generator: `(rng, difficulty) -> Task`, all randomness from `rng`.
TaskGenerator = Callable[[np.random.Generator, int], Task]


@dataclass(frozen=True)
class ProceduralSource:
    """An endless seeded task generator with a difficulty knob.

    Args:
        generate: `(rng, difficulty) -> Task`; must draw every random choice from `rng`.
        difficulty: Passed to `generate`; what it means is the generator's business (for
            arithmetic: digits and operators). Higher is harder.
    """

    generate: TaskGenerator
    difficulty: int = 1

    def sample(self, rng: np.random.Generator) -> Task:
        return self.generate(rng, self.difficulty)

    def take(self, n: int, seed: int = 0) -> TaskList:
        """`n` tasks drawn from a fresh RNG seeded with `seed` (e.g. a fixed evaluation set)."""
        rng = np.random.default_rng(seed)
        return TaskList([self.sample(rng) for _ in range(n)])


class TaskList(Sequence[Task]):
    """A finite, ordered list of tasks; `sample(rng)` draws one uniformly.

    Args:
        tasks: The tasks (at least one).
        name: Where they came from, for messages (a path, a dataset name).
    """

    def __init__(self, tasks: Iterable[Task], name: str = "tasks") -> None:
        self._tasks: tuple[Task, ...] = tuple(tasks)
        self.name = name
        if not self._tasks:
            raise ValueError(f"{name}: no tasks")

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, index: int) -> Task:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{self.name}: task index must be an int, got {type(index).__name__}")
        if not -len(self._tasks) <= index < len(self._tasks):
            raise IndexError(f"{self.name}: task index {index} out of range 0..{len(self) - 1}")
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def sample(self, rng: np.random.Generator) -> Task:
        return self._tasks[int(rng.integers(len(self._tasks)))]

    def filter(self, keep: Callable[[Task], bool]) -> TaskList:
        """The tasks for which `keep(task)` is true (e.g. one category)."""
        return TaskList([t for t in self._tasks if keep(t)], name=f"{self.name} (filtered)")

    def split(self, fraction: float, seed: int = 0) -> tuple[TaskList, TaskList]:
        """A seeded shuffle cut in two: (first `fraction` of the tasks, the rest), e.g. for
        train/held-out. Both parts are non-empty."""
        if not 0.0 < fraction < 1.0 or len(self) < 2:
            raise ValueError(f"{self.name}: cannot split {len(self)} tasks at {fraction}")
        order = np.random.default_rng(seed).permutation(len(self))
        cut = min(max(1, round(fraction * len(self))), len(self) - 1)
        return (
            TaskList([self._tasks[i] for i in order[:cut]], name=f"{self.name}[:{cut}]"),
            TaskList([self._tasks[i] for i in order[cut:]], name=f"{self.name}[{cut}:]"),
        )

    def __repr__(self) -> str:
        return f"TaskList({self.name!r}, {len(self)} tasks)"


#: A row converter for other formats: `(row, index) -> Task`.
Transform = Callable[[Mapping[str, Any], int], Task]


def load_jsonl(
    path: str | os.PathLike[str],
    *,
    transform: Transform | None = None,
    limit: int | None = None,
) -> TaskList:
    """Read tasks from a JSONL file.

    Args:
        path: The file; one JSON object per line (blank lines and `//` lines skipped).
        transform: Converts each row to a `Task` (for GSM8K, MATH, HumanEval, ...). Default:
            the format of the module docstring.
        limit: Read at most this many tasks.

    Returns:
        The tasks, in file order.

    Raises:
        ValueError: A line is not JSON or not a valid task; the message names `path:line`.
        FileNotFoundError: `path` does not exist.
    """
    path = Path(path)
    tasks: list[Task] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("//"):
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path}:{lineno}: not JSON ({exc.msg} at char {exc.pos})"
                ) from None
            try:
                if transform is None:
                    task = Task.from_dict(row, default_id=f"{path.stem}-{lineno}")
                else:
                    task = transform(row, len(tasks))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            tasks.append(task)
            if limit is not None and len(tasks) >= limit:
                break
    return TaskList(tasks, name=str(path))


def load_hf_dataset(
    path: str,
    *,
    split: str = "train",
    name: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    transform: Transform | None = None,
    limit: int | None = None,
    **load_kwargs: Any,
) -> TaskList:
    """Read tasks with Hugging Face `datasets` (an optional dependency: `pip install
    'opd-selfplay[datasets]'`).

    Works with Hub names (`"openai/gsm8k"`, with `name="main"`) and with local files through a
    builder name and `data_files` (`load_hf_dataset("json", data_files="train.jsonl")`, also
    `"parquet"`, `"csv"`). Offline use: set `HF_DATASETS_OFFLINE=1` and use local files or the
    local cache.

    Args:
        path: Dataset name on the Hub, a local dataset folder, or a builder (`json`, ...).
        split: The split to read.
        name: The dataset configuration (e.g. `"main"` for GSM8K).
        data_files: Local files for builder datasets.
        transform: `(row, index) -> Task`; default: rows in this module's JSONL format.
        limit: Read at most this many rows.
        **load_kwargs: Passed to `datasets.load_dataset` (e.g. `revision`, `cache_dir`).

    Returns:
        The tasks, in dataset order.

    Raises:
        ImportError: `datasets` is not installed (the message says how to install it).
        ValueError: A row is not a valid task (the message names the row).
    """
    try:
        import datasets  # lazy: an optional, heavy dependency
    except ImportError:
        raise ImportError(
            "load_hf_dataset needs the 'datasets' package: pip install 'opd-selfplay[datasets]'"
        ) from None
    ds = datasets.load_dataset(path, name=name, split=split, data_files=data_files, **load_kwargs)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    label = f"{path}[{split}]" if not data_files else f"{path}:{data_files}[{split}]"
    tasks = []
    for i, row in enumerate(ds):
        try:
            tasks.append(
                transform(row, i) if transform else Task.from_dict(row, default_id=f"{path}-{i}")
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{label} row {i}: {exc}") from None
    return TaskList(tasks, name=label)
