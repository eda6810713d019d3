"""Core types: messages, turns and trajectories, as the rollout engine records them.

These are plain frozen dataclasses with no torch in them, so that environments, verifiers,
the command line and the trainer can all share them. Token sequences are tuples of ints and
log-probs tuples of floats; the trainer turns them into tensors. Every type round-trips
through JSON (`to_dict` / `from_dict`), which is the line format of `opd rollout`.

Not covered here: tensors and batching (the objectives' business) and the verdict type, which
lives with the verifiers (`opd_selfplay.verifiers.Verdict`) because verifiers sit below the
core and must not import it; it is re-exported here for convenience.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from opd_selfplay.verifiers.verdict import JSON, Verdict

__all__ = [
    "JSON",
    "Message",
    "Role",
    "StopReason",
    "ToolCall",
    "Trajectory",
    "Turn",
    "Verdict",
]

Role = Literal["system", "user", "assistant", "tool"]
_ROLES = ("system", "user", "assistant", "tool")


class StopReason(str, Enum):
    """Why an episode ended."""

    COMPLETED = "completed"
    """The environment terminated the episode (task over: answer accepted or final)."""
    MAX_TURNS = "max_turns"
    """The rollout's turn limit was reached, or the environment truncated the episode."""
    MAX_TOKENS = "max_tokens"
    """The context would exceed the token budget (prompt + all turns), so the episode stopped."""
    PARSE_ERROR = "parse_error"
    """The environment could not parse the action and ended the episode."""
    ENV_ERROR = "env_error"
    """The environment (or its verifier) raised; this episode ended, the others went on."""
    TIMEOUT = "timeout"
    """A wall-clock limit for the episode was hit."""


@dataclass(frozen=True)
class ToolCall:
    """A function call that an assistant message makes (OpenAI `tool_calls` shape)."""

    name: str
    """The tool's name."""
    arguments: str
    """The arguments as the model wrote them: a JSON string, not parsed (it may be malformed)."""
    id: str = ""
    """The call id that a `tool` message answers, when the format has one."""

    def to_dict(self) -> dict[str, JSON]:
        """The OpenAI chat shape: `{"id", "type": "function", "function": {"name", "arguments"}}`."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ToolCall:
        """Accepts the OpenAI shape or a flat `{"name", "arguments", "id"}`."""
        fn = data.get("function", data)
        if not isinstance(fn, Mapping):
            raise ValueError(f"tool call must be an object, got {fn!r}")
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            args = json.dumps(args)
        return cls(name=str(fn.get("name", "")), arguments=args, id=str(data.get("id", "") or ""))


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    """`system`, `user`, `assistant` or `tool`."""
    content: str
    """The message text."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Calls made by an assistant message (empty otherwise)."""
    tool_call_id: str = ""
    """For a `tool` message: the id of the call it answers, if any."""
    name: str = ""
    """For a `tool` message: the tool's name, if known."""

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"Message.role must be one of {_ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"Message.content must be str, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, JSON]:
        """The chat-template / OpenAI shape; optional fields only when set."""
        out: dict[str, JSON] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Message:
        """Inverse of `to_dict`; also accepts any mapping with `role` and `content`."""
        calls = data.get("tool_calls") or ()
        return cls(
            role=data["role"],  # type: ignore[arg-type]
            content=str(data.get("content") or ""),
            tool_calls=tuple(ToolCall.from_dict(c) for c in calls),  # type: ignore[union-attr]
            tool_call_id=str(data.get("tool_call_id", "") or ""),
            name=str(data.get("name", "") or ""),
        )

    @classmethod
    def coerce(
        cls, obj: Message | Mapping[str, object] | str, default_role: Role = "user"
    ) -> Message:
        """A `Message` from a message, a mapping, or bare text (taken as `default_role`)."""
        if isinstance(obj, Message):
            return obj
        if isinstance(obj, str):
            return cls(role=default_role, content=obj)
        if isinstance(obj, Mapping):
            return cls.from_dict(obj)
        raise TypeError(f"expected a Message, a mapping or a str, got {type(obj).__name__}")


@dataclass(frozen=True)
class Turn:
    """One policy action and the environment's answer to it.

    Token bookkeeping: the full sequence of a trajectory is the concatenation, over its turns,
    of `context_ids` then `action_ids`, followed by the trajectory's `tail_ids`. `context_ids`
    are only the tokens added before this action (the first turn's include the whole prompt).
    """

    context_ids: tuple[int, ...]
    """Tokens rendered by the engine before this action (environment messages, turn markers,
    the generation prompt). Context: attended to, no loss."""
    action_ids: tuple[int, ...]
    """The tokens the policy sampled, exactly as sampled (never re-tokenized)."""
    action_logprobs: tuple[float, ...]
    """Log-prob of each action token under the sampling distribution (after temperature)."""
    action_text: str
    """`action_ids` decoded, special tokens skipped: what the environment received."""
    finish_reason: Literal["stop", "length"]
    """`stop`: the policy ended its message (EOS or a stop string); `length`: max new tokens."""
    reward: float = 0.0
    """The reward the environment returned for this action."""
    observation: tuple[Message, ...] = ()
    """The environment's reply (empty on the last turn of a finished episode)."""
    verdict: Verdict | None = None
    """The verifier's verdict on this action, when the environment reported one."""
    info: dict[str, JSON] = field(default_factory=dict)
    """The rest of the environment's `info` for this step, made JSON-safe."""

    def __post_init__(self) -> None:
        if len(self.action_ids) != len(self.action_logprobs):
            raise ValueError(
                f"Turn: {len(self.action_ids)} action ids but {len(self.action_logprobs)} log-probs"
            )

    def to_dict(self) -> dict[str, JSON]:
        return {
            "context_ids": list(self.context_ids),
            "action_ids": list(self.action_ids),
            "action_logprobs": list(self.action_logprobs),
            "action_text": self.action_text,
            "finish_reason": self.finish_reason,
            "reward": self.reward,
            "observation": [m.to_dict() for m in self.observation],
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Turn:
        verdict = data.get("verdict")
        return cls(
            context_ids=tuple(data["context_ids"]),  # type: ignore[arg-type]
            action_ids=tuple(data["action_ids"]),  # type: ignore[arg-type]
            action_logprobs=tuple(float(x) for x in data["action_logprobs"]),  # type: ignore[union-attr]
            action_text=str(data["action_text"]),
            finish_reason=data["finish_reason"],  # type: ignore[arg-type]
            reward=float(data.get("reward", 0.0)),  # type: ignore[arg-type]
            observation=tuple(Message.from_dict(m) for m in data.get("observation", ())),  # type: ignore[union-attr]
            verdict=Verdict.from_dict(verdict) if verdict else None,  # type: ignore[arg-type]
            info=dict(data.get("info") or {}),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Trajectory:
    """One episode: the conversation, its tokens with the loss mask, and its outcome."""

    env_id: str
    """The Gymnasium id of the environment (or the class name of an unregistered one)."""
    seed: int | None
    """The seed passed to `reset`; episodes of one group share it (same task)."""
    group: int
    """Index of the task group in the batch: the G samples of one task share it."""
    messages: tuple[Message, ...]
    """The whole conversation: the initial observation, every action (as an assistant message)
    and every environment reply. A teacher that re-renders the context starts from these."""
    turns: tuple[Turn, ...]
    """The policy's turns, in order."""
    tail_ids: tuple[int, ...] = ()
    """Context tokens after the last action that close the conversation (e.g. the end-of-turn
    marker when the policy stopped on a stop string). No loss."""
    reward: float = 0.0
    """The outcome reward: the sum of the turns' rewards."""
    terminated: bool = False
    """The environment ended the episode (the task is over)."""
    truncated: bool = False
    """A limit ended the episode (turns, tokens, time, or the environment's own)."""
    stop_reason: StopReason = StopReason.COMPLETED
    """Why the episode ended."""
    error: str = ""
    """For `env_error`: the exception, one line."""
    privileged: str = ""
    """The privileged context the environment exposes for a self-teacher (reference solution,
    feedback), from `info["privileged"]` at the end of the episode; empty when none."""
    info: dict[str, JSON] = field(default_factory=dict)
    """The environment's `info` from `reset`, made JSON-safe."""

    # -- derived token views (computed, not stored, so they cannot disagree) --------------
    @property
    def token_ids(self) -> tuple[int, ...]:
        """The full token sequence: each turn's context then action, then the tail."""
        out: list[int] = []
        for t in self.turns:
            out.extend(t.context_ids)
            out.extend(t.action_ids)
        out.extend(self.tail_ids)
        return tuple(out)

    @property
    def action_mask(self) -> tuple[int, ...]:
        """1 exactly on the tokens the policy generated, 0 on context; same length as
        `token_ids`."""
        out: list[int] = []
        for t in self.turns:
            out.extend([0] * len(t.context_ids))
            out.extend([1] * len(t.action_ids))
        out.extend([0] * len(self.tail_ids))
        return tuple(out)

    @property
    def logprobs(self) -> tuple[float, ...]:
        """Sampling log-probs aligned with `token_ids` (0.0 on context tokens)."""
        out: list[float] = []
        for t in self.turns:
            out.extend([0.0] * len(t.context_ids))
            out.extend(t.action_logprobs)
        out.extend([0.0] * len(self.tail_ids))
        return tuple(out)

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        """The verifier's verdicts, one per turn that had one."""
        return tuple(t.verdict for t in self.turns if t.verdict is not None)

    @property
    def success(self) -> bool:
        """Whether the last verdict was correct (False when there is none)."""
        v = self.verdicts
        return bool(v and v[-1].correct)

    @property
    def num_action_tokens(self) -> int:
        return sum(len(t.action_ids) for t in self.turns)

    def to_dict(self) -> dict[str, JSON]:
        """JSON-ready; includes the derived `token_ids` and `action_mask` for readers in other
        languages (ignored by `from_dict`, which recomputes them)."""
        return {
            "env_id": self.env_id,
            "seed": self.seed,
            "group": self.group,
            "messages": [m.to_dict() for m in self.messages],
            "turns": [t.to_dict() for t in self.turns],
            "tail_ids": list(self.tail_ids),
            "reward": self.reward,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "stop_reason": self.stop_reason.value,
            "error": self.error,
            "privileged": self.privileged,
            "info": dict(self.info),
            "token_ids": list(self.token_ids),
            "action_mask": list(self.action_mask),
            "success": self.success,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Trajectory:
        return cls(
            env_id=str(data["env_id"]),
            seed=data.get("seed"),  # type: ignore[arg-type]
            group=int(data.get("group", 0)),  # type: ignore[arg-type]
            messages=tuple(Message.from_dict(m) for m in data["messages"]),  # type: ignore[union-attr]
            turns=tuple(Turn.from_dict(t) for t in data["turns"]),  # type: ignore[union-attr]
            tail_ids=tuple(data.get("tail_ids", ())),  # type: ignore[arg-type]
            reward=float(data.get("reward", 0.0)),  # type: ignore[arg-type]
            terminated=bool(data.get("terminated", False)),
            truncated=bool(data.get("truncated", False)),
            stop_reason=StopReason(data.get("stop_reason", "completed")),
            error=str(data.get("error", "")),
            privileged=str(data.get("privileged", "")),
            info=dict(data.get("info") or {}),  # type: ignore[arg-type]
        )

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Trajectory:
        return cls.from_dict(json.loads(line))


def json_safe(value: object, _depth: int = 0) -> JSON:
    """A JSON-serialisable copy of `value` (numpy scalars, tuples, dataclasses with `to_dict`,
    anything else as its `repr`), so that arbitrary `info` dicts can be logged."""
    if _depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "to_dict"):
        return json_safe(value.to_dict(), _depth + 1)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [json_safe(v, _depth + 1) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return json_safe(item(), _depth + 1)
        except (TypeError, ValueError):
            pass
    return repr(value)
