"""The conformance check behind `opd envs check`: does an env keep the contract of `base`?

`check_env(env_or_id) -> list[str]` returns the problems found, one line each (empty: the env
conforms). It never raises for a broken env (an exception in a check is a problem), only for an
unknown id (`InputError`). What it checks, in order:

1. **Spaces**: Gymnasium spaces; a `Text` action space must admit non-ASCII text (a stock
   `Text` rejects any character outside its charset: use `UnicodeText`).
2. **Gymnasium's own `check_env`** (render checks skipped), with its warnings about
   observations outside the space, non-float rewards and non-bool flags promoted to problems.
   It also covers reset-seed determinism, one-step determinism and fresh objects per call.
3. **Reset**: returns `(observation, info)` with a text observation (a `str` or a list of
   message dicts) and `info["privileged"]` a `str`; the same seed gives the same observation
   and privileged context on a fresh env (the basis of groups of G samples per task).
4. **Oracle** (when `env.unwrapped.oracle_action()` returns text): an episode played by the
   oracle earns a return of 1 and ends correct, for each seed.
5. **Wrong answers**: an episode of wrong answers (`wrong_action()`, else a generic wrong
   text) ends within `max_steps` steps; when the env defines an oracle or a wrong action, the
   return is 0 and every checked step has non-empty feedback. Replaying it with the same seed
   gives the same observations and rewards.
6. **Bad actions**: empty text, 1 MB of garbage, non-Latin scripts and emoji, broken tool-call
   JSON, an unknown tool, wrong argument types: no exception, well-typed results, feedback on
   a failed check.
7. **Random actions** (from the action space) end an episode within `max_steps` steps.

Not covered: how good the env's tasks are, or whether its verifier is right beyond the oracle
and the wrong answer (the verifiers' tests do that).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from opd_selfplay.errors import InputError
from opd_selfplay.verifiers.verdict import Verdict

__all__ = ["BAD_ACTIONS", "GENERIC_WRONG_ACTION", "check_env", "make_env"]

#: Used as a wrong answer when an env does not provide `wrong_action()`.
GENERIC_WRONG_ACTION = "I do not know."

_UNICODE_PROBE = "Grüße, мир, 世界, مرحبا, ∑x² 🙂"


def _garbage(n_bytes: int, seed: int = 0) -> str:
    raw = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    return raw.decode("utf-8", "replace")


#: (name, action) pairs the bad-action check plays, one per episode.
BAD_ACTIONS: tuple[tuple[str, str], ...] = (
    ("empty text", ""),
    ("whitespace", " \n\t "),
    ("1 MB of garbage", _garbage(1 << 20)),
    ("non-Latin text", "答案是四十二。 Ответ: сорок два. الجواب ٤٢ 🙂🙂"),
    ("control characters", "\x00\x01\x1b[31m\ufffd\u202e"),
    ("broken tool call JSON", '<tool_call>{"name": "calculator", "arguments": {"expr</tool_call>'),
    ("unknown tool", '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>'),
    ("wrong argument types", '{"name": "calculator", "arguments": {"expression": [1, {"a": 2}]}}'),
    ("unclosed code fence", "```python\ndef f(:\n    return ((("),
)

_PROMOTED_WARNINGS = (
    "not within the observation space",
    "reward returned by `step()` must be",
    "signal to be a boolean",
    "reward is a NaN",
    "reward is an inf",
)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """`gymnasium.make(env_id, **kwargs)` with Gymnasium's passive checker off, after loading
    this package's envs and plugins; an unknown id raises `InputError` (one line)."""
    import opd_selfplay.envs  # noqa: F401  (registers ids, loads plugins)

    try:
        return gym.make(env_id, disable_env_checker=True, **kwargs)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound) as exc:
        raise InputError(
            f"unknown env id {env_id!r} ({_one_line(exc)}); run 'opd envs list'"
        ) from None
    except gym.error.UnregisteredEnv as exc:
        raise InputError(f"unknown env id {env_id!r}: {_one_line(exc)}") from None
    except ModuleNotFoundError as exc:
        if ":" in env_id:
            raise InputError(f"env id {env_id!r}: cannot import its module ({exc})") from None
        raise


def _is_message_list(obs: Any) -> bool:
    return (
        isinstance(obs, list)
        and len(obs) > 0
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in obs
        )
    )


def _obs_problem(obs: Any, where: str) -> str | None:
    if isinstance(obs, str) or _is_message_list(obs):
        return None
    return (
        f"{where}: observation must be a str or a list of {{'role', 'content'}} dicts, "
        f"got {type(obs).__name__}"
    )


def _step_problems(result: Any, where: str) -> list[str]:
    if not isinstance(result, tuple) or len(result) != 5:
        return [f"{where}: step() must return a 5-tuple, got {type(result).__name__}"]
    obs, reward, terminated, truncated, info = result
    out = []
    p = _obs_problem(obs, where)
    if p:
        out.append(p)
    if not isinstance(reward, (int, float, np.integer, np.floating)) or isinstance(reward, bool):
        out.append(f"{where}: reward must be a float, got {type(reward).__name__}")
    elif not math.isfinite(float(reward)):
        out.append(f"{where}: reward is {reward}")
    for name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, (bool, np.bool_)):
            out.append(f"{where}: {name} must be a bool, got {type(flag).__name__}")
    if terminated and truncated:
        out.append(f"{where}: terminated and truncated are both true (pick one, see base.py)")
    if not isinstance(info, dict):
        out.append(f"{where}: info must be a dict, got {type(info).__name__}")
    else:
        v = info.get("verdict")
        if v is not None and not isinstance(v, Verdict):
            out.append(f"{where}: info['verdict'] must be a Verdict, got {type(v).__name__}")
        if "privileged" in info and not isinstance(info["privileged"], str):
            out.append(f"{where}: info['privileged'] must be a str")
    return out


def _run_episode(
    env: gym.Env, seed: int, policy: Callable[[], str | None], max_steps: int, where: str
) -> tuple[list[str], list[Any], list[float], list[Verdict], bool]:
    """Play one episode; returns (problems, observations, rewards, verdicts, ended)."""
    problems: list[str] = []
    obs, _ = env.reset(seed=seed)
    observations, rewards, verdicts = [obs], [], []
    for t in range(max_steps):
        action = policy()
        if action is None:
            problems.append(f"{where}: the action source gave up at step {t}")
            return problems, observations, rewards, verdicts, False
        result = env.step(action)
        problems += _step_problems(result, f"{where} step {t}")
        if problems:
            return problems, observations, rewards, verdicts, False
        obs, reward, terminated, truncated, info = result
        observations.append(obs)
        rewards.append(float(reward))
        if isinstance(info.get("verdict"), Verdict):
            verdicts.append(info["verdict"])
        if terminated or truncated:
            return problems, observations, rewards, verdicts, True
    return problems, observations, rewards, verdicts, False


def _gymnasium_check(env: gym.Env) -> list[str]:
    from gymnasium.utils.env_checker import check_env as gym_check_env

    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gym_check_env(env.unwrapped, skip_render_check=True)
        except Exception as exc:
            problems.append(f"gymnasium check_env: {_one_line(exc)}")
    for w in caught:
        msg = str(w.message)
        if any(key in msg for key in _PROMOTED_WARNINGS):
            problems.append(f"gymnasium check_env: {msg.splitlines()[0][:300]}")
    return problems


def check_env(
    env: str | gym.Env,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    max_steps: int = 100,
    bad_actions: bool = True,
    require_privileged: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Check that an env keeps the contract of `opd_selfplay.envs.base`.

    Args:
        env: A registered id (also `"module:Id"`) or an env instance. With an id, fresh envs
            are made for the determinism checks; with an instance, it is reset and reused.
        seeds: Seeds of the oracle, wrong-answer and determinism episodes.
        max_steps: An episode must end within this many steps.
        bad_actions: Play the bad actions of `BAD_ACTIONS` (the 1 MB one costs what the
            verifier spends on it).
        require_privileged: `info["privileged"]` must be a `str` (this project's contract;
            turn off for a plain Gymnasium text env).
        env_kwargs: Constructor arguments when `env` is an id.

    Returns:
        The problems found, one line each; empty when the env conforms.

    Raises:
        InputError: `env` is an id that is not registered (or whose module does not import).
    """
    kwargs = dict(env_kwargs or {})
    if isinstance(env, str):
        env_id = env
        first = make_env(env_id, **kwargs)

        def fresh() -> gym.Env:
            return make_env(env_id, **kwargs)

    else:
        first = env

        def fresh() -> gym.Env:
            return first

    problems: list[str] = []

    def guarded(name: str, fn: Callable[[], list[str]]) -> None:
        try:
            problems.extend(fn())
        except Exception as exc:
            problems.append(f"{name}: raised {_one_line(exc)}")

    # 1. spaces
    def spaces_check() -> list[str]:
        out = []
        for name in ("action_space", "observation_space"):
            if not isinstance(getattr(first, name, None), gym.spaces.Space):
                out.append(f"{name} is not a gymnasium Space")
        aspace = first.action_space
        if isinstance(aspace, gym.spaces.Text) and not aspace.contains(_UNICODE_PROBE):
            out.append(
                "action_space rejects non-ASCII text (Text.contains checks its charset); "
                "use opd_selfplay.envs.base.UnicodeText"
            )
        return out

    guarded("spaces", spaces_check)

    # 2. Gymnasium's checker
    guarded("gymnasium check_env", lambda: _gymnasium_check(first))

    # 3. reset contract and seed determinism
    def reset_check() -> list[str]:
        out = []
        for s in seeds:
            result = first.reset(seed=s)
            if not isinstance(result, tuple) or len(result) != 2:
                return [f"reset(seed={s}) must return (observation, info)"]
            obs, info = result
            p = _obs_problem(obs, f"reset(seed={s})")
            if p:
                out.append(p)
            if not isinstance(info, dict):
                out.append(f"reset(seed={s}): info must be a dict")
                continue
            if require_privileged and not isinstance(info.get("privileged"), str):
                out.append(f"reset(seed={s}): info['privileged'] must be a str (see base.py)")
            obs2, info2 = fresh().reset(seed=s)
            if obs2 != obs or info2.get("privileged") != info.get("privileged"):
                out.append(
                    f"reset(seed={s}) twice gave different tasks: same seed must give same task"
                )
        return out

    guarded("reset", reset_check)

    unwrapped = first.unwrapped
    has_oracle = callable(getattr(unwrapped, "oracle_action", None))
    has_wrong = callable(getattr(unwrapped, "wrong_action", None))

    # 4. oracle episodes
    def oracle_check() -> list[str]:
        out = []
        for s in seeds:
            first.reset(seed=s)
            if unwrapped.oracle_action() is None:
                continue  # this env cannot produce a reference action here
            where = f"oracle episode (seed {s})"
            probs, _, rewards, verdicts, ended = _run_episode(
                first, s, unwrapped.oracle_action, max_steps, where
            )
            out += probs
            if probs:
                continue
            total = sum(rewards)
            if not ended:
                out.append(f"{where}: did not end within {max_steps} steps")
            elif abs(total - 1.0) > 1e-6:
                fb = verdicts[-1].feedback if verdicts else "no verdict"
                out.append(f"{where}: earned {total:g}, expected 1 (last feedback: {fb[:200]!r})")
            elif verdicts and not verdicts[-1].correct:
                out.append(f"{where}: reward 1 but the last verdict is not correct")
        return out

    if has_oracle:
        guarded("oracle", oracle_check)

    # 5. wrong answers: end, score 0, feedback, replay determinism
    def wrong_check() -> list[str]:
        out = []

        def wrong_policy(e: gym.Env) -> Callable[[], str]:
            def act() -> str:
                w = e.unwrapped.wrong_action() if has_wrong else None
                return GENERIC_WRONG_ACTION if w is None else w

            return act

        strict = has_oracle or has_wrong
        for s in seeds:
            where = f"wrong-answer episode (seed {s})"
            probs, obs_a, rew_a, verdicts, ended = _run_episode(
                first, s, wrong_policy(first), max_steps, where
            )
            out += probs
            if probs:
                continue
            if not ended:
                out.append(f"{where}: did not end within {max_steps} steps")
                continue
            if strict and abs(sum(rew_a)) > 1e-9:
                out.append(f"{where}: earned {sum(rew_a):g}, expected 0")
            if strict and not verdicts:
                out.append(f"{where}: no step reported info['verdict']")
            if any(not v.feedback.strip() for v in verdicts if not v.correct):
                out.append(f"{where}: a wrong answer got empty feedback")
            other = fresh()
            _, obs_b, rew_b, _, _ = _run_episode(
                other, s, wrong_policy(other), max_steps, where + " replay"
            )
            if obs_a != obs_b or rew_a != rew_b:
                out.append(f"{where}: replaying the same seed and actions gave different results")
        return out

    guarded("wrong answers", wrong_check)

    # 6. bad actions
    def bad_check() -> list[str]:
        out = []
        for name, action in BAD_ACTIONS:
            first.reset(seed=seeds[0] if seeds else 0)
            try:
                result = first.step(action)
            except Exception as exc:
                out.append(f"bad action ({name}): step raised {_one_line(exc)}")
                continue
            probs = _step_problems(result, f"bad action ({name})")
            out += probs
            if probs:
                continue
            v = result[4].get("verdict")
            if isinstance(v, Verdict) and not v.correct and not v.feedback.strip():
                out.append(f"bad action ({name}): failed check with empty feedback")
        return out

    if bad_actions:
        guarded("bad actions", bad_check)

    # 7. random actions end the episode
    def random_check() -> list[str]:
        first.action_space.seed(0)
        where = "random-action episode"
        probs, _, _, _, ended = _run_episode(
            first, seeds[0] if seeds else 0, first.action_space.sample, max_steps, where
        )
        if probs:
            return probs
        return [] if ended else [f"{where}: did not end within {max_steps} steps"]

    guarded("random actions", random_check)

    try:
        first.close()
    except Exception as exc:
        problems.append(f"close(): raised {_one_line(exc)}")
    return problems
