"""The base class of multi-turn verifiable text tasks, and the text spaces every env uses.

An environment here is a plain `gymnasium.Env` whose observations and actions are text:

- `reset(seed=None, options=None) -> (observation, info)`
- `step(action: str) -> (observation, reward, terminated, truncated, info)`

The **observation** is either a `str` (one new user message) or a list of message dicts
`{"role": "system" | "user" | "tool", "content": str, ["tool_call_id": str], ["name": str]}`
(a reset may return a system message followed by the user message; a tool env returns tool
messages). The **action** is the assistant's text, exactly as the model wrote it.

`terminated` vs `truncated` (the one definition every env here follows, as in Gymnasium):

- `terminated=True`: the episode reached an end *that belongs to the task*: the answer was
  accepted, the agent used its last attempt (the attempt budget is a rule of the task, like
  the number of lives in a game: it is part of the state), the game was decided, or the env
  gave up on an action it could not parse. Nothing the agent could do would change the
  outcome; a value estimate of the final state is 0.
- `truncated=True`: the episode was cut by a limit *outside* the task's rules while the task
  was still open: `max_turns` steps taken (e.g. tool calls that never reach a final answer),
  or an external wrapper such as `gymnasium.wrappers.TimeLimit`. The task could have gone on.
- Never both. After either, call `reset()`; stepping a finished episode raises `RuntimeError`.

**Reward.** The return of an episode (the sum of its rewards) is the score in [0, 1] of the
last checked action: the reward is paid once, on the step that ends the episode, and every
earlier step pays 0 (its verdict is still in `info["verdict"]`). So an oracle episode earns
exactly 1, a wrong one 0, and a wrong try followed by a right one 1; partial scores (the
fraction of tests passed) never add up across attempts.

**`info` keys** (in reset's info and in every step's info unless said otherwise):

=================  ============================================================================
key                value
=================  ============================================================================
``privileged``     `str`: the privileged context a self-teacher may condition on (never shown
                   to the agent): the reference answer or solution and, after a checked step,
                   the verifier's feedback on the last action. Built by `render_privileged`.
``reference``      `str`: the reference answer as text (for structured references, their
                   readable form, e.g. the reference solution's code).
``solution``       `str`: a full worked response the verifier accepts ("" when the task has
                   none).
``feedback``       `str`: the verifier's feedback on the last checked action ("" before one).
``verdict``        `opd_selfplay.verifiers.Verdict` of this step's action; **step only**, and
                   only when the action was checked (a tool call, say, is not).
``attempts``       `int`: checked actions so far; ``max_attempts``: `int`, the budget.
``turn``           `int`: steps taken so far in this episode.
``task_id``        `str`: the task's id (stable across runs for file-backed tasks).
``task_metadata``  `dict`: a copy of the task's metadata (source, difficulty, category, ...).
``stop_reason``    `"parse_error"` only on the last step of an episode whose final action the
                   env could not parse (absent otherwise).
=================  ============================================================================

**Seeding and groups.** The only randomness is `self.np_random`, seeded by `reset(seed=...)`
(never the global `random`/`numpy` state). The task is drawn from it, so G envs reset with
the same seed get the same task: that is how a group of G samples of one task is made. A
`reset()` without a seed continues the RNG and draws the next task.

**Reset options**: `{"task": Task | mapping}` plays that exact task; `{"task_index": i}` plays
task `i` of a finite task source (the `TaskList` in `self.tasks`), e.g. to evaluate every task
once. Other keys raise `ValueError`.

**Oracle (optional).** `oracle_action()` returns, for the current state, an action that
earns full marks (the reference answer in the format the env accepts), or `None` when the env
cannot produce one; `wrong_action()` returns an action that surely scores 0. The conformance
checker (`opd_selfplay.envs.check`) and the tests use them through `env.unwrapped`; an env that
defines neither is still valid.

**Robustness.** Model output is hostile by accident: empty text, a megabyte of garbage, any
Unicode. The base class never crashes on an action: text longer than `max_action_chars` is a
failed attempt with feedback (not checked at all), and an exception raised by the verifier is
a zero score with feedback (`safe_verify`). Non-`str` actions are a caller bug (`TypeError`),
except `bytes`, which are decoded as UTF-8 with replacement.

**Spaces.** `UnicodeText` is a `gymnasium.spaces.Text` that admits *any* Unicode string up to
its length: Gymnasium's `Text.contains` rejects every character outside the charset, and no
finite charset covers what models emit. Its flatten and shared-memory functions store code
points, and reading the shared buffer gives a live view (`SharedTextView`), so
`AsyncVectorEnv(..., shared_memory=True)` round-trips any text. (With stock `Text`, Gymnasium
decodes the buffer once, when the vector env is built, and returns that snapshot, the empty
buffer, after every reset and step: the "zeros for strings" pitfall.) A text longer than the
space's `max_length` cannot go through shared memory at all: the worker raises; use
`shared_memory=False` or `SyncVectorEnv` for very long texts. `ChatObservation` admits a `str` or a list of message
dicts and cannot travel through shared memory (Gymnasium raises): use `shared_memory=False`.
The rollout engine of this project steps envs directly and needs none of that.

Not covered here: how tasks are stored and sampled (`opd_selfplay.envs.tasks`), the verifiers
themselves (`opd_selfplay.verifiers`), two-player turn-taking (the self-play module), tokens and
chat templates (the rollout engine's business).
"""

from __future__ import annotations

import copy
import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.spaces.utils import flatten, unflatten
from gymnasium.vector.utils.shared_memory import read_from_shared_memory

from opd_selfplay.verifiers.verdict import Verdict

from .tasks import Task, TaskList, TaskSource

__all__ = [
    "INFO_KEYS",
    "ChatObservation",
    "Observation",
    "Reply",
    "TextTaskEnv",
    "UnicodeText",
]

logger = logging.getLogger(__name__)

#: What an env returns as an observation: one user message as text, or a list of messages.
Observation = str | list[dict[str, str]]

#: The documented `info` keys (see the module docstring).
INFO_KEYS = (
    "privileged",
    "reference",
    "solution",
    "feedback",
    "verdict",
    "attempts",
    "max_attempts",
    "turn",
    "task_id",
    "task_metadata",
    "stop_reason",
)

_MESSAGE_ROLES = frozenset({"system", "user", "tool", "assistant"})

#: Characters `UnicodeText.sample` draws from: printable ASCII plus a few non-ASCII letters,
#: symbols and an emoji, so random actions also exercise non-ASCII paths.
DEFAULT_SAMPLE_CHARSET = (
    string.ascii_letters + string.digits + string.punctuation + " \n" + "éüßπ√∞Ωжя中文数学🙂"
)


class UnicodeText(spaces.Text):
    """A `Text` space that contains every `str` of length in `[min_length, max_length]`.

    `charset` only shapes `sample()` (and is what `Text.character_set` reports); `contains`
    admits any character. `sample()` draws lengths up to `sample_max_length` (default 64) so
    that checkers and tests do not build megabyte strings; pass `mask=(length, None)` for a
    specific length.

    Args:
        max_length: Longest admitted text, in characters (Python `str` length).
        min_length: Shortest admitted text (default 0: the empty string is a valid action).
        charset: Characters that `sample()` draws from.
        sample_max_length: Longest text `sample()` draws when no length is given.
        seed: Seed of the space's own sampling RNG.
    """

    def __init__(
        self,
        max_length: int,
        *,
        min_length: int = 0,
        charset: str | frozenset[str] = DEFAULT_SAMPLE_CHARSET,
        sample_max_length: int = 64,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=charset, seed=seed)
        self.sample_max_length = int(min(max(sample_max_length, min_length), max_length))

    def contains(self, x: Any) -> bool:
        """Whether `x` is a `str` of admitted length (any characters)."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random text from the sampling charset (see the class docstring for lengths)."""
        if mask is None and probability is None:
            length = int(self.np_random.integers(self.min_length, self.sample_max_length + 1))
            mask = (length, None)
        return super().sample(mask=mask, probability=probability)

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length}, any characters)"

    def __eq__(self, other: object, /) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    __hash__ = None  # type: ignore[assignment]  # mutable RNG inside, like every Space


# Flattening (and so AsyncVectorEnv's shared memory, which writes through `flatten`) stores
# code points, padded with -1, instead of indexes into the charset.
@flatten.register(UnicodeText)
def _flatten_unicode_text(space: UnicodeText, x: str) -> np.ndarray:
    if len(x) > space.max_length:
        raise ValueError(
            f"text of {len(x)} characters does not fit UnicodeText(max_length={space.max_length})"
        )
    arr = np.full((space.max_length,), -1, dtype=np.int32)
    arr[: len(x)] = np.frombuffer(x.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    return arr


def _codepoints_to_text(values: np.ndarray) -> str:
    kept = np.asarray(values)[np.asarray(values) >= 0].astype("<u4")
    return kept.tobytes().decode("utf-32-le", "surrogatepass")


@unflatten.register(UnicodeText)
def _unflatten_unicode_text(space: UnicodeText, x: np.ndarray) -> str:
    return _codepoints_to_text(x)


class SharedTextView(Sequence):
    """The texts of a vector env's shared observation buffer, decoded on access.

    Gymnasium's `AsyncVectorEnv` reads its shared buffer once, when it is built, and relies on
    the result being a live view (true of NumPy arrays). A tuple of strings is a snapshot, which
    is why stock `Text` observations come back as the empty buffer forever. This view decodes
    the current buffer whenever it is read; a `deepcopy` (what `AsyncVectorEnv` returns by
    default, `copy=True`) is a plain tuple of the texts at that moment.
    """

    def __init__(self, space: UnicodeText, shared_memory: Any, n: int) -> None:
        self._rows = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape(
            (n, space.max_length)
        )

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(_codepoints_to_text(row) for row in self._rows[index])
        return _codepoints_to_text(self._rows[index])

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SharedTextView({tuple(self)!r})"


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_text(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTextView:
    return SharedTextView(space, shared_memory, n)


class ChatObservation(spaces.Space):
    """Observations that are one text or a list of chat messages.

    Contains a `str` of at most `max_length` characters, or a non-empty list of dicts, each with
    a `role` in system/user/tool/assistant and a `str` `content` (plus optional `str`
    `tool_call_id` and `name`), of at most `max_length` characters in all. `sample()` returns a
    short text. Not flattenable and not for shared memory (see the module docstring).

    Args:
        max_length: Longest admitted text (total over the messages), in characters.
        seed: Seed of the space's sampling RNG.
    """

    def __init__(self, max_length: int = 1 << 20, seed: int | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_length = int(max_length)
        self._text = UnicodeText(self.max_length, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return self._text.sample()

    def seed(self, seed: int | None = None) -> Any:
        return self._text.seed(seed)

    def contains(self, x: Any) -> bool:
        if isinstance(x, str):
            return len(x) <= self.max_length
        if not isinstance(x, list) or not x:
            return False
        total = 0
        for m in x:
            if not isinstance(m, dict) or m.get("role") not in _MESSAGE_ROLES:
                return False
            if not isinstance(m.get("content"), str):
                return False
            if any(not isinstance(m.get(k, ""), str) for k in ("tool_call_id", "name")):
                return False
            total += len(m["content"])
        return total <= self.max_length

    def __repr__(self) -> str:
        return f"ChatObservation(max_length={self.max_length})"

    def __eq__(self, other: object, /) -> bool:
        return isinstance(other, ChatObservation) and other.max_length == self.max_length

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Reply:
    """What a subclass's `respond(action)` decides about one action.

    The base class turns it into the 5-tuple: it counts attempts, applies the limits, computes
    the reward and fills `info`.
    """

    verdict: Verdict | None = None
    """The verdict on the action, or None when the action was not an answer to check (a tool
    call, a move that only changes state). A verdict consumes one attempt."""
    observation: Observation | None = None
    """The env's next message. None: the base class renders feedback from the verdict
    (`render_retry` while attempts remain, `render_final` at the end)."""
    done: bool = False
    """The task is over whatever the verdict says (a game decided, a final answer given in an
    env that allows one): the episode terminates."""
    parse_error: bool = False
    """The env could not parse the action (also read from `verdict.details["parse_error"]`)."""


class TextTaskEnv(gym.Env):
    """Base class of multi-turn verifiable text tasks: a task, attempts, feedback, a verifier.

    A subclass provides a task source and a `verify(action, task) -> Verdict` (or overrides
    `respond` for actions that are not answers), and may override the `render_*` hooks and
    `oracle_action`/`wrong_action`. Everything else (seeding, the attempt and turn limits,
    the reward rule, the `info` keys, the guards against bad actions) lives here. See the module
    docstring for the contract.

    Args:
        tasks: Where tasks come from: a `TaskSource` (procedural or a `TaskList`).
        max_attempts: Checked actions allowed per episode (>= 1). A correct one ends the
            episode earlier.
        max_turns: Steps allowed per episode, counting unchecked ones; hitting it truncates.
            None: no limit beyond the attempts.
        max_action_chars: Longer actions are rejected with feedback (a failed attempt) without
            being checked. Also the action space's `max_length`.
        system_prompt: When set, reset returns `[system, user]` messages instead of a text.
        render_mode: None or "ansi" (`render()` returns the episode's transcript as text).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    #: Keys `reset(options=...)` accepts; subclasses may extend the tuple.
    reset_options: ClassVar[tuple[str, ...]] = ("task", "task_index")

    def __init__(
        self,
        tasks: TaskSource,
        *,
        max_attempts: int = 1,
        max_turns: int | None = None,
        max_action_chars: int = 1 << 16,
        system_prompt: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if int(max_attempts) < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if max_turns is not None and int(max_turns) < 1:
            raise ValueError(f"max_turns must be >= 1 or None, got {max_turns!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        self.tasks = tasks
        self.max_attempts = int(max_attempts)
        self.max_turns = None if max_turns is None else int(max_turns)
        self.max_action_chars = int(max_action_chars)
        self.system_prompt = system_prompt
        self.render_mode = render_mode
        self.action_space = UnicodeText(self.max_action_chars)
        self.observation_space: spaces.Space = (
            UnicodeText(1 << 20) if system_prompt is None else ChatObservation(1 << 20)
        )
        self.task: Task | None = None
        self._attempts = 0
        self._turn = 0
        self._done = False
        self._feedback = ""
        self._last_score = 0.0
        self._transcript: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ subclass hooks ---
    def verify(self, action: str, task: Task) -> Verdict:
        """Check `action` against `task`'s reference. Subclasses implement this (it may raise:
        `safe_verify` turns an exception into a zero score)."""
        raise NotImplementedError(f"{type(self).__name__} must implement verify(action, task)")

    def respond(self, action: str) -> Reply:
        """Decide what `action` does. Default: it is an answer, checked by `verify`."""
        assert self.task is not None
        return Reply(verdict=self.safe_verify(self.verify, action, self.task))

    def render_prompt(self, task: Task) -> str:
        """The first user message of an episode. Default: `task.prompt`."""
        return task.prompt

    def render_retry(self, verdict: Verdict, attempts_left: int) -> Observation:
        """The message after a wrong answer while attempts remain."""
        fb = verdict.feedback or "That is not correct."
        return f"{fb}\nTry again ({attempts_left} attempt{'s' if attempts_left != 1 else ''} left)."

    def render_final(self, verdict: Verdict | None) -> Observation:
        """The message on the step that ends the episode (the engine may ignore it)."""
        if verdict is None:
            return "The episode is over."
        return verdict.feedback or ("Correct." if verdict.correct else "Not correct.")

    def reference_text(self, task: Task) -> str:
        """The reference as readable text (`info["reference"]`). Default: a `str` reference
        as is, anything else as compact JSON."""
        ref = task.reference
        if isinstance(ref, str):
            return ref
        import json

        return json.dumps(ref, ensure_ascii=False, sort_keys=True)

    def render_privileged(self, task: Task, feedback: str) -> str:
        """`info["privileged"]`: what a self-teacher may see that the agent does not."""
        parts = [f"Reference answer: {self.reference_text(task)}"]
        if task.solution and task.solution.strip() != self.reference_text(task).strip():
            parts.append(f"Reference solution:\n{task.solution}")
        if feedback:
            parts.append(f"Feedback on the last answer: {feedback}")
        return "\n".join(parts)

    def is_parse_error(self, verdict: Verdict) -> bool:
        """Whether `verdict` says the action could not be parsed. Default: its
        `details["parse_error"]` is true."""
        return bool(verdict.details.get("parse_error"))

    def oracle_action(self) -> str | None:
        """An action that earns full marks in the current state, or None. Default: the task's
        `solution`, when it has one."""
        return self.task.solution if self.task is not None and self.task.solution else None

    def wrong_action(self) -> str | None:
        """An action that surely scores 0 in the current state, or None (the checker then
        tries a generic wrong answer)."""
        return None

    # ---------------------------------------------------------------------- helpers ---
    def safe_verify(self, fn: Any, *args: Any) -> Verdict:
        """Call a verifier; an exception or a non-`Verdict` result becomes a zero score with
        feedback (logged), never a crash of the episode."""
        try:
            verdict = fn(*args)
        except Exception as exc:  # a verifier bug must not kill the episode
            logger.warning("%s: verifier raised %s", type(self).__name__, repr(exc)[:300])
            return Verdict.fail(
                "Your answer could not be checked (the checker failed on it), so it scores 0.",
                error="verifier_exception",
                exception=repr(exc)[:500],
            )
        if not isinstance(verdict, Verdict):
            logger.warning("%s: verifier returned %r", type(self).__name__, type(verdict))
            return Verdict.fail(
                "Your answer could not be checked, so it scores 0.",
                error="verifier_bad_return",
            )
        return verdict

    @property
    def attempts_left(self) -> int:
        """Checked actions still allowed in this episode."""
        return self.max_attempts - self._attempts

    def _select_task(self, options: Mapping[str, Any] | None) -> Task:
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.reset_options))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.reset: unknown option(s) {unknown}; "
                f"known: {list(self.reset_options)}"
            )
        if "task" in options:
            task = options["task"]
            return task if isinstance(task, Task) else Task.from_dict(task)
        if "task_index" in options:
            if not isinstance(self.tasks, TaskList):
                raise ValueError(
                    f"{type(self).__name__}.reset: option 'task_index' needs a finite task "
                    f"list, this env draws tasks from {type(self.tasks).__name__}"
                )
            return self.tasks[int(options["task_index"])]
        return self.tasks.sample(self.np_random)

    def _info(self) -> dict[str, Any]:
        assert self.task is not None
        return {
            "privileged": self.render_privileged(self.task, self._feedback),
            "reference": self.reference_text(self.task),
            "solution": self.task.solution,
            "feedback": self._feedback,
            "attempts": self._attempts,
            "max_attempts": self.max_attempts,
            "turn": self._turn,
            "task_id": self.task.id,
            "task_metadata": copy.deepcopy(dict(self.task.metadata)),
        }

    # ---------------------------------------------------------------- Gymnasium API ---
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Start an episode on a task drawn with `self.np_random` (see the module docstring)."""
        super().reset(seed=seed)
        self.task = self._select_task(options)
        self._attempts = 0
        self._turn = 0
        self._done = False
        self._feedback = ""
        self._last_score = 0.0
        prompt = self.render_prompt(self.task)
        self._transcript = [("user", prompt)]
        if self.system_prompt is None:
            obs: Observation = prompt
        else:
            obs = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ]
        return obs, self._info()

    def step(self, action: str) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Apply one action; see the module docstring for the reward and the end flags."""
        if self.task is None or self._done:
            raise RuntimeError(
                f"{type(self).__name__}.step() called "
                + ("before reset()" if self.task is None else "after the episode ended")
                + "; call reset() first"
            )
        if isinstance(action, (bytes, bytearray)):
            action = bytes(action).decode("utf-8", "replace")
        if not isinstance(action, str):
            raise TypeError(f"{type(self).__name__}.step: action must be str, got {type(action)}")
        self._turn += 1
        self._transcript.append(("assistant", action[:2000]))

        if len(action) > self.max_action_chars:
            reply = Reply(
                verdict=Verdict.fail(
                    f"Your answer is too long ({len(action)} characters; the limit is "
                    f"{self.max_action_chars}). It was not checked.",
                    error="too_long",
                    length=len(action),
                )
            )
        else:
            reply = self.respond(action)

        verdict = reply.verdict
        parse_error = reply.parse_error
        if verdict is not None:
            self._attempts += 1
            self._feedback = verdict.feedback
            self._last_score = float(verdict.score)
            parse_error = parse_error or self.is_parse_error(verdict)

        terminated = bool(
            reply.done
            or (verdict is not None and (verdict.correct or self._attempts >= self.max_attempts))
        )
        truncated = bool(
            not terminated and self.max_turns is not None and self._turn >= self.max_turns
        )
        self._done = terminated or truncated

        if reply.observation is not None:
            obs = reply.observation
        elif self._done:
            obs = self.render_final(verdict)
        else:
            assert verdict is not None, "respond() returned no verdict and no observation"
            obs = self.render_retry(verdict, self.attempts_left)
        self._transcript.append(("env", obs if isinstance(obs, str) else repr(obs)[:2000]))

        reward = self._last_score if self._done else 0.0
        info = self._info()
        if verdict is not None:
            info["verdict"] = verdict
        if self._done and parse_error:
            info["stop_reason"] = "parse_error"
        return obs, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        """With `render_mode="ansi"`: the episode so far as text (actions cut at 2,000 chars)."""
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{role}] {text}" for role, text in self._transcript)


def message_text(obs: Observation | Sequence[Mapping[str, str]]) -> str:
    """The text of an observation: the `str` itself, or the messages' contents joined by
    newlines (handy in tests and for logging)."""
    if isinstance(obs, str):
        return obs
    return "\n".join(str(m.get("content", "")) for m in obs)
