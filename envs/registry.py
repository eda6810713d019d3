"""Registration of the built-in `opd/...` envs, plugin discovery, and the env listing.

Built-in envs are rows of `BUILTIN_ENVS`: adding one is one line, `EnvEntry(id, "module:Class",
description)`. `register_builtin()` registers a row with `gymnasium.register` only when its
module imports and defines the class; a row whose module is missing or broken is skipped with a
debug log (so the tree works while an env is being written), and `skipped_builtin()` says why.

Plugins are distributions that declare an entry point in the group **`opd_selfplay.envs`**:

```toml
[project.entry-points."opd_selfplay.envs"]
my_envs = "my_package.envs"            # a module: importing it registers its envs
other = "my_package.envs:register"     # or a zero-argument callable that registers them
```

`load_plugins()` loads each entry point once; a plugin that fails is logged (warning) and
reported by `plugin_errors()`, never raised, so one broken plugin cannot break the others or
the command line. Importing `opd_selfplay.envs` calls both functions.

`list_envs()` gives every registered id except Gymnasium's own (CartPole and friends), each with
a one-line description: ours from the table, others' from the env class's
`metadata["description"]` or the first line of its docstring.

`gymnasium.make("module:Id")` needs nothing from here: Gymnasium imports `module` (which
registers `Id`) and makes the env.

Not covered: the conformance check (`opd_selfplay.envs.check`) and the command line
(`opd_selfplay.cli.envs`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import gymnasium as gym

__all__ = [
    "BUILTIN_ENVS",
    "ENTRY_POINT_GROUP",
    "EnvEntry",
    "EnvListing",
    "describe_env",
    "list_envs",
    "load_plugins",
    "plugin_errors",
    "register_builtin",
    "skipped_builtin",
]

logger = logging.getLogger(__name__)

#: The entry-point group plugins declare.
ENTRY_POINT_GROUP = "opd_selfplay.envs"


@dataclass(frozen=True)
class EnvEntry:
    """One built-in env: its id, where its class lives, and what it is."""

    id: str
    """The Gymnasium id, `opd/Name-vN`."""
    entry_point: str
    """`"module:Attribute"`, the env class (or a factory returning an env)."""
    description: str
    """One line for `opd envs list`."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Default constructor arguments (`gymnasium.make(id, **overrides)` overrides them)."""


#: The built-in envs. One row per id; the rows of modules that are not there are skipped.
BUILTIN_ENVS: tuple[EnvEntry, ...] = (
    EnvEntry(
        "opd/Arithmetic-v0",
        "opd_selfplay.envs.arithmetic:ArithmeticEnv",
        "procedural integer arithmetic ('12+7='), retries with too-high/too-low feedback",
    ),
    EnvEntry(
        "opd/Math-v0",
        "opd_selfplay.envs.math_env:MathEnv",
        "free-text math problems (equations, fractions, systems, word problems), MathVerifier",
    ),
    EnvEntry(
        "opd/Code-v0",
        "opd_selfplay.envs.code_env:CodeEnv",
        "write a Python function, graded on hidden tests in the sandbox",
    ),
    EnvEntry(
        "opd/ToolUse-v0",
        "opd_selfplay.envs.tool_env:ToolUseEnv",
        "multi-step tasks solved by calling tools (calculator, Python, lookups, units)",
    ),
    EnvEntry(
        "opd/TicTacToe-v0",
        "opd_selfplay.envs.selfplay:TicTacToeEnv",
        "two-player tic-tac-toe, both seats played by policies",
    ),
    EnvEntry(
        "opd/Nim-v0",
        "opd_selfplay.envs.selfplay:NimEnv",
        "two-player Nim, both seats played by policies",
    ),
    EnvEntry(
        "opd/ProposeSolve-v0",
        "opd_selfplay.envs.propose_solve:ProposeSolveEnv",
        "proposer-solver self-play with a learnability reward for proposals",
    ),
    EnvEntry(
        "opd/ReasoningGym-v0",
        "opd_selfplay.envs.reasoning_gym_env:ReasoningGymEnv",
        "any reasoning-gym dataset (task=NAME), scored by its own score_answer",
    ),
)

_BY_ID = {e.id: e for e in BUILTIN_ENVS}
_skipped: dict[str, str] = {}
_plugin_errors: dict[str, str] = {}
_plugin_packages: dict[str, str] = {}  # top-level package -> distribution name
_plugins_loaded = False


def _resolve(entry_point: str) -> Any:
    module_name, _, attr = entry_point.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def register_builtin() -> list[str]:
    """Register every row of `BUILTIN_ENVS` whose module imports; return the ids registered.

    Idempotent: ids already in Gymnasium's registry are left as they are.
    """
    done = []
    for entry in BUILTIN_ENVS:
        if entry.id in gym.registry:
            done.append(entry.id)
            continue
        try:
            _resolve(entry.entry_point)
        except Exception as exc:  # missing or half-written module: skip, say why on demand
            _skipped[entry.id] = f"{entry.entry_point}: {type(exc).__name__}: {exc}"
            logger.debug("not registering %s: %s", entry.id, _skipped[entry.id])
            continue
        _skipped.pop(entry.id, None)
        gym.register(id=entry.id, entry_point=entry.entry_point, kwargs=dict(entry.kwargs))
        done.append(entry.id)
    return done


def skipped_builtin() -> dict[str, str]:
    """Built-in ids not registered, with the reason (module missing or failing to import)."""
    return dict(_skipped)


def load_plugins(*, reload: bool = False) -> dict[str, list[str]]:
    """Load every entry point of the group `opd_selfplay.envs` (once; again with `reload`).

    An entry point that names a module is imported; one that names a callable is called with no
    arguments. Either registers envs with `gymnasium.register`.

    Returns:
        Plugin (distribution name) → the registered ids whose env class lives in the top-level
        package of one of its entry points.
    """
    global _plugins_loaded
    if not _plugins_loaded or reload:
        _plugins_loaded = True  # first: a plugin importing opd_selfplay.envs must not recurse
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            label = f"{ep.name} = {ep.value}"
            try:
                obj = ep.load()
                if callable(obj):  # a module is not callable: importing it was the point
                    obj()
            except Exception as exc:  # one broken plugin must not break the rest
                _plugin_errors[label] = f"{type(exc).__name__}: {exc}"
                logger.warning("env plugin %s failed to load: %s", label, _plugin_errors[label])
                continue
            _plugin_errors.pop(label, None)
            dist = getattr(ep, "dist", None)
            _plugin_packages[ep.module.partition(".")[0]] = dist.name if dist else ep.name
    by_package: dict[str, list[str]] = {}
    for env_id, spec in gym.registry.items():
        package = _entry_module(spec).partition(".")[0]
        if package in _plugin_packages:
            by_package.setdefault(package, []).append(env_id)
    return {name: sorted(by_package.get(package, [])) for package, name in _plugin_packages.items()}


def plugin_errors() -> dict[str, str]:
    """Plugins that failed to load: `"name = value"` → the error, one line."""
    return dict(_plugin_errors)


@dataclass(frozen=True)
class EnvListing:
    """One line of `opd envs list`."""

    id: str
    """The Gymnasium id."""
    description: str
    """One line (may be empty when the env documents nothing)."""
    source: str
    """`builtin`, `plugin:<distribution name>`, or `registered` (by other code)."""


def _first_line(text: str | None) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def describe_env(env_id: str) -> str:
    """A one-line description of a registered id (see the module docstring for the order).

    Imports the env's module when the description has to come from its class.
    """
    if env_id in _BY_ID:
        return _BY_ID[env_id].description
    spec = gym.spec(env_id)
    target: Any = spec.entry_point
    if isinstance(target, str):
        try:
            target = _resolve(target)
        except Exception as exc:
            return f"(cannot import {spec.entry_point}: {type(exc).__name__})"
    meta = getattr(target, "metadata", None)
    if isinstance(meta, Mapping) and isinstance(meta.get("description"), str):
        return _first_line(meta["description"])
    return _first_line(getattr(target, "__doc__", None))


def _entry_module(spec: gym.envs.registration.EnvSpec) -> str:
    ep = spec.entry_point if spec.entry_point is not None else spec.vector_entry_point
    if isinstance(ep, str):
        return ep.partition(":")[0]
    return getattr(ep, "__module__", "") or ""


def _is_gymnasium_own(spec: gym.envs.registration.EnvSpec) -> bool:
    return _entry_module(spec).startswith(("gymnasium.", "shimmy."))


def list_envs(*, include_gymnasium: bool = False) -> list[EnvListing]:
    """Every registered id (plugins loaded first), sorted, with a one-line description.

    Args:
        include_gymnasium: Also list Gymnasium's own envs (CartPole, ...), which are not text
            envs.
    """
    by_plugin = {i: name for name, ids in load_plugins().items() for i in ids}
    out = []
    for env_id in sorted(gym.registry):
        spec = gym.registry[env_id]
        if not include_gymnasium and _is_gymnasium_own(spec):
            continue
        if env_id in _BY_ID:
            source = "builtin"
        elif env_id in by_plugin:
            source = f"plugin:{by_plugin[env_id]}"
        else:
            source = "registered"
        out.append(EnvListing(env_id, describe_env(env_id), source))
    return out
