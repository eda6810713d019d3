"""Gymnasium environments for verifiable multi-turn text tasks (installed as opd_selfplay.envs).

Importing this package registers the built-in `opd/...` ids with Gymnasium and loads the env
plugins of the entry-point group `opd_selfplay.envs`, so that after `import opd_selfplay.envs`,
`gymnasium.make("opd/Arithmetic-v0")` works (and so does
`gymnasium.make("opd_selfplay.envs:opd/Arithmetic-v0")` without importing anything first).

Where to look:
- `base`: the env contract (observations, actions, `info` keys, `terminated`/`truncated`) and
  `TextTaskEnv`, the base class of multi-turn verifiable tasks; the text spaces.
- `tasks`: `Task` and task sources (procedural, JSONL, Hugging Face `datasets`).
- `registry`: the table of built-in ids, plugin discovery, `list_envs()`.
- `check`: `check_env(env_or_id) -> list[str]`, the conformance check behind `opd envs check`.
- one module per env family (`arithmetic`, `math_env`, ...).

Writing an env or a plugin: see docs/plugins.md. This package imports neither torch nor
transformers; heavy dependencies (sympy, the sandbox) load when an env first needs them.
"""

from __future__ import annotations

from .base import ChatObservation, Reply, TextTaskEnv, UnicodeText
from .registry import list_envs, load_plugins, plugin_errors, register_builtin
from .tasks import ProceduralSource, Task, TaskList, TaskSource, load_hf_dataset, load_jsonl

__all__ = [
    "ChatObservation",
    "ProceduralSource",
    "Reply",
    "Task",
    "TaskList",
    "TaskSource",
    "TextTaskEnv",
    "UnicodeText",
    "check_env",
    "list_envs",
    "load_hf_dataset",
    "load_jsonl",
    "load_plugins",
    "plugin_errors",
    "register_builtin",
]


def check_env(env: object, **kwargs: object) -> list[str]:
    """The conformance check; see `opd_selfplay.envs.check.check_env`."""
    from .check import check_env as _check_env

    return _check_env(env, **kwargs)  # type: ignore[arg-type]


register_builtin()
load_plugins()
