"""Black-box teachers: text in, text out, nothing else (no logits, no log-probs).

A black-box teacher cannot score the student's tokens, so it is used in one of two ways
(survey axis "teacher access", black-box row):

- **imitate** (`TextTeacher.targets`): for every action turn the student played, the teacher
  writes its own answer for the same conversation; the student is trained on that text in
  its own context (sequence-level KD, Kim & Rush 2016, on the student's on-policy contexts
  as in DAgger: the teacher answers the conversations the student actually reached, feedback
  and earlier attempts included). With `privileged=True` the teacher sees the env's
  privileged context (reference answer, verifier feedback) and the student does not.
- **judge** (`TextTeacher.rewards`): the teacher reads the conversation and the student's
  final answer and replies with a score 0–10, used as a reward for outcome advantages
  (RLAIF-style). The reply is untrusted text: only its first 200 characters are searched for
  the score, and a reply without one scores 0 and is counted.

The teacher is reached through a `Responder`: `policy_responder` renders with a local or
served policy's own chat template (any tokenizer: black-box distillation works across
tokenizers, since only text crosses over), `chat_responder` sends OpenAI chat messages to a
server (`/v1/chat/completions`: vLLM, `opd serve`, any hosted API).

Departures: teacher text is cut to `max_new_tokens` student tokens (a rambling teacher must
not blow up the batch) and ended with the student's EOS, the same ending a demonstration has.
"""

from __future__ import annotations

import concurrent.futures as futures
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from opd_selfplay.agents.base import SamplingParams
from opd_selfplay.rollout import messages_before_action, with_privileged
from opd_selfplay.teachers.base import privileged_before
from opd_selfplay.types import Message, Trajectory

if TYPE_CHECKING:  # pragma: no cover
    from opd_selfplay.rollout import RolloutEngine

Responder = Callable[[Sequence[Sequence[Message]], int], list[str]]
"""`respond(conversations, seed) -> one reply text per conversation` (batched)."""

JUDGE_SYSTEM = (
    "You grade an assistant's final answer to a task. Reply with one line: 'Score: N', "
    "N an integer from 0 (wrong) to 10 (fully correct)."
)
_SCORE = re.compile(
    r"(?i)score\s*[:=]?\s*(\d{1,2}(?:\.\d+)?)|^\s*(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10)?"
)


def policy_responder(policy, params: SamplingParams) -> Responder:
    """A `Responder` over any `Policy` (HFPolicy, VLLMPolicy, OpenAIPolicy): conversations are
    rendered with the policy's own tokenizer and chat template, then sampled in one batch."""

    def respond(conversations: Sequence[Sequence[Message]], seed: int) -> list[str]:
        tok = policy.tokenizer
        prompts = [
            list(
                tok(
                    tok.apply_chat_template(
                        [m.to_dict() for m in conv], tokenize=False, add_generation_prompt=True
                    ),
                    add_special_tokens=False,
                )["input_ids"]
            )
            for conv in conversations
        ]
        if not prompts:
            return []
        samples = policy.generate(prompts, _seeded(params, seed))
        return [s.text for s in samples]

    return respond


def chat_responder(client, params: SamplingParams, concurrency: int = 8) -> Responder:
    """A `Responder` over an OpenAI-compatible chat API (`OpenAIPolicy.chat`): the server
    renders with its own template; requests run `concurrency` at a time."""

    def respond(conversations: Sequence[Sequence[Message]], seed: int) -> list[str]:
        def one(i: int) -> str:
            messages = [m.to_dict() for m in conversations[i]]
            return client.chat(messages, _seeded(params, seed + i)).text

        with futures.ThreadPoolExecutor(max(1, min(concurrency, len(conversations)))) as pool:
            return list(pool.map(one, range(len(conversations))))

    return respond


def parse_score(text: str, scale: float = 10.0) -> float | None:
    """The judge's score in [0, 1], or None when the reply has none (first 200 characters
    only: the reply is untrusted text)."""
    match = _SCORE.search(text[:200])
    if match is None:
        return None
    value = float(match.group(1) or match.group(2))
    return min(max(value / scale, 0.0), 1.0)


class TextTeacher:
    """A black-box teacher (see the module docstring).

    Args:
        respond: the teacher (`policy_responder`, `chat_responder`, or any callable).
        engine: the student's rollout engine (its tokenizer encodes the teacher's text).
        mode: `imitate` (write targets) or `judge` (score the student's answers).
        privileged: show the teacher the env's privileged context.
        max_new_tokens: cut teacher text to this many student tokens.
    """

    def __init__(
        self,
        respond: Responder,
        engine: RolloutEngine,
        mode: Literal["imitate", "judge"] = "imitate",
        privileged: bool = False,
        max_new_tokens: int = 64,
    ) -> None:
        if mode not in ("imitate", "judge"):
            raise ValueError(f"black-box teacher mode must be imitate or judge; got {mode!r}")
        self.respond = respond
        self.engine = engine
        self.mode = mode
        self.privileged = privileged
        self.max_new_tokens = max_new_tokens
        self.calls = 0
        self.unparsed = 0
        """Judge replies that carried no score (they count as 0)."""

    @property
    def name(self) -> str:
        return f"black-box {self.mode}{' (privileged)' if self.privileged else ''}"

    def _teacher_view(self, traj: Trajectory, turn: int) -> list[Message]:
        messages = messages_before_action(traj, turn)
        hint = privileged_before(traj, turn) if self.privileged else ""
        return with_privileged(messages, hint) if hint else messages

    def targets(self, trajectories: Sequence[Trajectory]) -> list[tuple[list[int], list[int]]]:
        """One target per action turn the student played: the student's own context for that
        turn, then the teacher's answer in student tokens (ended with EOS).

        Returns:
            `(token_ids, target_positions)` pairs, as `teacher_sequences` returns them.
        """
        places = [(t, k) for t in trajectories for k, turn in enumerate(t.turns) if turn.action_ids]
        replies = self.respond([self._teacher_view(t, k) for t, k in places], self._seed())
        eos = self.engine.tokenizer.eos_token_id
        out = []
        for (traj, k), text in zip(places, replies, strict=True):
            context = self.engine.turn_context_ids(traj, k)
            answer = self.engine.encode(text)[: self.max_new_tokens]
            if eos is not None:
                answer.append(eos)
            ids = context + answer
            out.append((ids, list(range(len(context), len(ids)))))
        return out

    def rewards(self, trajectories: Sequence[Trajectory]) -> list[float]:
        """The judge's score in [0, 1] of each trajectory's final answer."""
        convs = []
        for traj in trajectories:
            if not any(turn.action_ids for turn in traj.turns):
                convs.append(None)
                continue
            last = max(k for k, turn in enumerate(traj.turns) if turn.action_ids)
            task = "\n".join(f"{m.role}: {m.content}" for m in messages_before_action(traj, last))
            answer = traj.turns[last].action_text
            hint = privileged_before(traj, last) if self.privileged else ""
            body = f"Conversation:\n{task}\n\nFinal answer:\n{answer}"
            if hint:
                body += f"\n\nReference (hidden from the assistant):\n{hint}"
            convs.append([Message("system", JUDGE_SYSTEM), Message("user", body)])
        asked = [c for c in convs if c is not None]
        replies = iter(self.respond(asked, self._seed()) if asked else [])
        out = []
        for conv in convs:
            if conv is None:
                out.append(0.0)
                continue
            score = parse_score(next(replies))
            if score is None:
                self.unparsed += 1
            out.append(score or 0.0)
        return out

    def _seed(self) -> int:
        self.calls += 1
        return int(self.engine.config.seed or 0) * 1009 + self.calls

    def after_step(self, student, step: int) -> None:
        """A black-box teacher does not follow the student."""

    def state_dict(self) -> dict[str, object]:
        return {"calls": self.calls, "unparsed": self.unparsed}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.calls = int(state.get("calls", 0))  # type: ignore[arg-type]
        self.unparsed = int(state.get("unparsed", 0))  # type: ignore[arg-type]


def _seeded(params: SamplingParams, seed: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, seed=seed)
