"""The rollout engine: policies play Gymnasium text environments, turn by turn, in batches.

This is the only place that renders chat templates, joins turns and builds action masks.

How a conversation becomes tokens. The first context is the chat template's render of the
environment's first observation, with the generation prompt, tokenized once. Each action is
appended as the token ids the policy sampled (never re-tokenized). After the environment
replies, the engine renders the whole conversation as text, checks that it extends the
previous render plus the action text (the template is *prefix-consistent*), and tokenizes
only the new suffix: the end of the assistant turn, the new messages and the next generation
prompt. When the policy's last tokens were the template's end-of-turn marker (e.g. EOS
`<|end|>`), the marker is not repeated. So every turn's context extends the previous
context + action exactly, the sampled tokens stay as sampled, and `action_mask` is 1 exactly
on them.

Batching: N tasks × G samples run at once; every turn, all live episodes are generated in ONE
policy call, then their environments step (in a small thread pool, since verifiers may run
sandboxed subprocesses). An environment that raises ends its own episode (`env_error`); the
others go on. Limits: turns, tokens per turn, total context tokens (the episode is truncated
with `max_tokens`), and wall time per episode (`timeout`).

Not covered: templates that are not prefix-consistent (for example ones that drop earlier
reasoning from the history); they raise `TemplateError` with the turn that broke.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gymnasium as gym

from opd_selfplay.agents.base import Policy, Sample, SamplingParams
from opd_selfplay.errors import InputError
from opd_selfplay.types import JSON, Message, StopReason, Trajectory, Turn, Verdict, json_safe

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

EnvFactory = Callable[[], gym.Env]


class TemplateError(RuntimeError):
    """The chat template is not prefix-consistent, so tokens cannot be extended turn by turn."""


@dataclass(frozen=True)
class RolloutConfig:
    """Limits and sampling settings of a batch of episodes."""

    max_turns: int = 4
    """Most policy actions per episode; reaching it truncates the episode (`max_turns`)."""
    max_new_tokens: int = 64
    """Most tokens per action."""
    max_context_tokens: int = 2048
    """Most tokens in a whole episode (prompt, actions, replies); exceeding it truncates the
    episode (`max_tokens`)."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    stop: tuple[str, ...] = ()
    """Stop strings for every action."""
    seed: int | None = 0
    """Seed of the sampling; turn k of a batch uses `seed + k`. None: not seeded."""
    episode_timeout_s: float | None = None
    """Wall-clock limit per episode (stop reason `timeout`); None: no limit."""
    env_workers: int = 4
    """Threads that step environments concurrently (1 = in the calling thread)."""

    def __post_init__(self) -> None:
        for name in ("max_turns", "max_new_tokens", "max_context_tokens", "env_workers"):
            if getattr(self, name) < 1:
                raise InputError(f"RolloutConfig.{name} must be >= 1, got {getattr(self, name)}")
        # Validates temperature and top_p with SamplingParams' own checks.
        try:
            SamplingParams(temperature=self.temperature, top_p=self.top_p)
        except ValueError as exc:
            raise InputError(f"RolloutConfig: {exc}") from None


@dataclass
class _Episode:
    """Mutable state of one running episode (internal)."""

    env: gym.Env
    env_id: str
    seed: int | None
    group: int
    messages: list[Message] = field(default_factory=list)
    rendered: str = ""  # the template render that `num_tokens` tokens correspond to
    num_tokens: int = 0
    pending_context: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    tail: list[int] = field(default_factory=list)
    info: dict[str, JSON] = field(default_factory=dict)
    privileged: str = ""
    done: bool = False
    terminated: bool = False
    truncated: bool = False
    stop_reason: StopReason = StopReason.COMPLETED
    error: str = ""
    started: float = field(default_factory=time.monotonic)

    def finish(self, reason: StopReason, *, terminated: bool = False, error: str = "") -> None:
        self.done = True
        self.stop_reason = reason
        self.terminated = terminated
        self.truncated = not terminated and reason is not StopReason.ENV_ERROR
        self.error = error

    def to_trajectory(self) -> Trajectory:
        return Trajectory(
            env_id=self.env_id,
            seed=self.seed,
            group=self.group,
            messages=tuple(self.messages),
            turns=tuple(self.turns),
            tail_ids=tuple(self.tail),
            reward=float(sum(t.reward for t in self.turns)),
            terminated=self.terminated,
            truncated=self.truncated,
            stop_reason=self.stop_reason,
            error=self.error,
            privileged=self.privileged,
            info=self.info,
        )


def observation_messages(obs: object) -> list[Message]:
    """The messages an observation adds: a str is one user message; a message or a mapping
    with `role`/`content` is itself; a list is several; None or "" adds nothing."""
    if obs is None or (isinstance(obs, str) and obs == ""):
        return []
    if isinstance(obs, (str, Message, Mapping)):
        return [Message.coerce(obs)]  # type: ignore[arg-type]
    if isinstance(obs, Sequence):
        return [Message.coerce(o) for o in obs]  # type: ignore[arg-type]
    raise TypeError(
        f"observation must be text, a message or a list of messages, got {type(obs).__name__}"
    )


def messages_before_action(traj: Trajectory, turn: int) -> list[Message]:
    """The conversation that action `turn` of `traj` answered (everything before its
    assistant message). Raises ValueError if the trajectory has no such action."""
    seen = -1
    for i, m in enumerate(traj.messages):
        if m.role == "assistant":
            seen += 1
            if seen == turn:
                return list(traj.messages[:i])
    raise ValueError(f"trajectory has no action {turn}")


def with_privileged(messages: Sequence[Message], privileged: str) -> list[Message]:
    """`messages` with the privileged context in the system message (prepended as one when
    there is none). The one format that privileged teachers and hinted warm starts share."""
    note = privileged
    if messages and messages[0].role == "system":
        first = messages[0]
        return [Message("system", f"{first.content}\n{note}"), *messages[1:]]
    return [Message("system", note), *messages]


def _close_all(episodes: Sequence[_Episode]) -> None:
    for ep in episodes:
        with contextlib.suppress(Exception):  # a failing close must not lose the batch
            ep.env.close()


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


class RolloutEngine:
    """Runs batches of episodes of a policy on text environments.

    Args:
        policy: the policy that acts (its tokenizer's chat template renders the context).
        config: limits and sampling settings.
        tools: OpenAI tool schemas passed to the chat template, when the env uses tools and
            does not describe them in its own messages.
    """

    def __init__(
        self,
        policy: Policy,
        config: RolloutConfig | None = None,
        tools: Sequence[Mapping[str, object]] | None = None,
    ) -> None:
        self.policy = policy
        self.config = config or RolloutConfig()
        self.tools = list(tools) if tools else None

    # -- rendering (the only place chat templates are applied) -------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.policy.tokenizer

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        """The chat template's text for `messages`."""
        kwargs = {"tools": self.tools} if self.tools else {}
        return self.tokenizer.apply_chat_template(
            [m.to_dict() for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **kwargs,
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text (special tokens in it are recognised, none added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _suffix_after_action(self, ep: _Episode, action: Sample, new_text: str, turn: int) -> str:
        """The rendered text after the action, minus end-of-turn markers the policy emitted."""
        head = ep.rendered + action.text
        if not new_text.startswith(head):
            raise TemplateError(
                f"chat template is not prefix-consistent at turn {turn} of {ep.env_id}: the "
                "render of the longer conversation does not extend the previous render plus "
                "the action text (templates that trim content or drop earlier turns are not "
                "supported for multi-turn rollouts)"
            )
        suffix = new_text[len(head) :]
        emitted = self.tokenizer.decode(list(action.token_ids), skip_special_tokens=False)
        if emitted.startswith(action.text):
            marker = emitted[len(action.text) :]
            if marker and suffix.startswith(marker):
                suffix = suffix[len(marker) :]
        return suffix

    # -- the loop -----------------------------------------------------------------------
    def run(
        self,
        env: str | EnvFactory,
        seeds: Sequence[int],
        group_size: int = 1,
        env_kwargs: Mapping[str, object] | None = None,
        on_turn: Callable[[list[Trajectory] | None, int, int], None] | None = None,
    ) -> list[Trajectory]:
        """Play `len(seeds) × group_size` episodes; the G episodes of a seed share the task.

        Args:
            env: a registered Gymnasium id (`opd/Arithmetic-v0`, `module:Id`) or a factory.
            seeds: one reset seed per task group.
            group_size: samples per task (G).
            env_kwargs: keyword arguments for `gymnasium.make` (ids only).
            on_turn: called after each turn with (None, episodes finished, tokens generated),
                for progress bars.
        Returns:
            The trajectories, grouped: task 0's G samples first.
        """
        if group_size < 1:
            raise InputError(f"group_size must be >= 1, got {group_size}")
        factory, env_id = _factory(env, env_kwargs)
        episodes: list[_Episode] = []
        for g, seed in enumerate(seeds):
            for _ in range(group_size):
                episodes.append(_Episode(env=factory(), env_id=env_id, seed=seed, group=g))
        try:
            return self._play(episodes, on_turn, self._policy_actions)
        finally:
            _close_all(episodes)

    def _policy_actions(
        self, live: list[_Episode], params: SamplingParams, turn: int
    ) -> list[Sample]:
        return self.policy.generate([self._context_ids(ep) for ep in live], params)

    def _play(self, episodes: list[_Episode], on_turn, act) -> list[Trajectory]:
        cfg = self.config
        for ep in episodes:
            self._reset(ep)
        pool = futures.ThreadPoolExecutor(cfg.env_workers) if cfg.env_workers > 1 else None
        # Each turn's prompts extend the previous turn's: a policy that can keep its KV
        # cache between calls (HFPolicy.reuse_kv) prefills only the new tokens.
        reuse = getattr(self.policy, "reuse_kv", None)
        try:
            with reuse() if reuse is not None else contextlib.nullcontext():
                self._turns(episodes, on_turn, act, pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        for ep in episodes:
            if not ep.done:
                ep.finish(StopReason.MAX_TURNS)
        return [ep.to_trajectory() for ep in episodes]

    def _turns(self, episodes: list[_Episode], on_turn, act, pool) -> None:
        """The turn loop: one batched `act` call per turn for the live episodes."""
        cfg = self.config
        tokens_out = 0
        for turn in range(cfg.max_turns):
            live = [ep for ep in episodes if not ep.done]
            for ep in live:
                if cfg.episode_timeout_s is not None and (
                    time.monotonic() - ep.started > cfg.episode_timeout_s
                ):
                    ep.finish(StopReason.TIMEOUT)
                elif ep.num_tokens >= cfg.max_context_tokens:
                    ep.finish(StopReason.MAX_TOKENS)
            live = [ep for ep in live if not ep.done]
            if not live:
                break
            budget = max(cfg.max_context_tokens - ep.num_tokens for ep in live)
            params = SamplingParams(
                max_new_tokens=min(cfg.max_new_tokens, budget),
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                stop=cfg.stop,
                seed=None if cfg.seed is None else cfg.seed + turn,
            )
            samples = act(live, params, turn)
            samples = [self._fit(ep, s) for ep, s in zip(live, samples)]
            tokens_out += sum(len(s.token_ids) for s in samples)
            steps = pool.map(self._step, live, samples) if pool else map(self._step, live, samples)
            for ep, sample, result in zip(live, samples, steps):
                self._record(ep, sample, result, turn)
            if on_turn is not None:
                on_turn(None, sum(ep.done for ep in episodes), tokens_out)

    def demonstrate(
        self,
        env: str | EnvFactory,
        seeds: Sequence[int],
        choose: Callable[[gym.Env, int], str],
        env_kwargs: Mapping[str, object] | None = None,
    ) -> list[Trajectory]:
        """Play scripted actions instead of sampling, through the same rendering and
        bookkeeping (for supervised warm starts on an env's oracle answers).

        Args:
            env: env id or factory.
            seeds: one episode per seed.
            choose: `choose(env.unwrapped, turn) -> action text`; the action is tokenized
                canonically and ended with the tokenizer's EOS.
        Returns:
            Trajectories whose action log-probs are 0 (they were not sampled).
        """
        factory, env_id = _factory(env, env_kwargs)
        episodes = [
            _Episode(env=factory(), env_id=env_id, seed=s, group=g) for g, s in enumerate(seeds)
        ]
        eos = self.tokenizer.eos_token_id

        def act(live: list[_Episode], params: SamplingParams, turn: int) -> list[Sample]:
            out = []
            for ep in live:
                text = choose(ep.env.unwrapped, turn)
                ids = [*self.encode(text), *([eos] if eos is not None else [])]
                out.append(Sample(tuple(ids), (0.0,) * len(ids), text, "stop"))
            return out

        try:
            return self._play(episodes, None, act)
        finally:
            _close_all(episodes)

    def turn_context_ids(
        self, traj: Trajectory, turn: int, privileged: str | None = None
    ) -> list[int]:
        """The context of action `turn` of `traj`, re-rendered, optionally with privileged
        context added as a system message (what a privileged self-teacher conditions on).

        Without `privileged`, this equals the tokens that preceded the action in the rollout
        (for canonical tokenizations). The action tokens themselves are never re-rendered:
        a teacher scores `traj.turns[turn].action_ids` after these ids.
        """
        messages = messages_before_action(traj, turn)
        if privileged:
            messages = with_privileged(messages, privileged)
        return self.encode(self.render(messages, add_generation_prompt=True))

    def _context_ids(self, ep: _Episode) -> list[int]:
        ids: list[int] = []
        for t in ep.turns:
            ids.extend(t.context_ids)
            ids.extend(t.action_ids)
        ids.extend(ep.pending_context)
        return ids

    def _fit(self, ep: _Episode, sample: Sample) -> Sample:
        """Cut a sample that overruns this episode's context budget (the batch shares one
        max_new_tokens); the kept tokens are a valid prefix of what was sampled."""
        room = self.config.max_context_tokens - ep.num_tokens
        if len(sample.token_ids) <= room:
            return sample
        ids = sample.token_ids[:room]
        return Sample(
            token_ids=ids,
            logprobs=sample.logprobs[:room],
            text=self.tokenizer.decode(list(ids), skip_special_tokens=True),
            finish_reason="length",
        )

    def _reset(self, ep: _Episode) -> None:
        try:
            obs, info = ep.env.reset(seed=ep.seed)
            ep.messages = observation_messages(obs)
            if not ep.messages:
                raise ValueError("reset returned an empty observation")
        except Exception as exc:
            ep.finish(StopReason.ENV_ERROR, error=_one_line(exc))
            return
        ep.info = json_safe(info)  # type: ignore[assignment]
        ep.privileged = str(info.get("privileged", "") or "")
        ep.rendered = self.render(ep.messages, add_generation_prompt=True)
        ep.pending_context = self.encode(ep.rendered)
        ep.num_tokens = len(ep.pending_context)

    def _step(self, ep: _Episode, sample: Sample) -> tuple | BaseException:
        try:
            return ep.env.step(sample.text)
        except Exception as exc:
            return exc

    def _record(
        self, ep: _Episode, sample: Sample, result: tuple | BaseException, turn: int
    ) -> None:
        ep.messages.append(Message(role="assistant", content=sample.text))
        context = ep.pending_context
        ep.pending_context = []
        ep.num_tokens += len(sample.token_ids)
        if isinstance(result, BaseException):
            ep.turns.append(self._turn(context, sample, 0.0, (), None, {}))
            ep.finish(StopReason.ENV_ERROR, error=_one_line(result))
            self._close_tail(ep, sample, turn)
            return
        obs, reward, terminated, truncated, info = result
        verdict = info.get("verdict") if isinstance(info, Mapping) else None
        if not isinstance(verdict, Verdict):
            verdict = None
        info = info if isinstance(info, Mapping) else {}
        if "privileged" in info:
            ep.privileged = str(info.get("privileged") or "")
        try:
            new_messages = observation_messages(obs)
        except TypeError as exc:
            ep.turns.append(self._turn(context, sample, float(reward), (), verdict, info))
            ep.finish(StopReason.ENV_ERROR, error=_one_line(exc))
            self._close_tail(ep, sample, turn)
            return
        ep.turns.append(self._turn(context, sample, float(reward), new_messages, verdict, info))
        if terminated or truncated:
            reason = StopReason.COMPLETED if terminated else StopReason.MAX_TURNS
            if info.get("stop_reason") == StopReason.PARSE_ERROR.value:
                reason = StopReason.PARSE_ERROR
            ep.finish(reason, terminated=bool(terminated))
            self._close_tail(ep, sample, turn)
            return
        if turn + 1 >= self.config.max_turns:
            ep.finish(StopReason.MAX_TURNS)
            self._close_tail(ep, sample, turn)
            return
        full = [*ep.messages, *new_messages]
        text = self.render(full, add_generation_prompt=True)
        delta = self.encode(self._suffix_after_action(ep, sample, text, turn))
        if ep.num_tokens + len(delta) >= self.config.max_context_tokens:
            ep.finish(StopReason.MAX_TOKENS)
            self._close_tail(ep, sample, turn)
            return
        ep.messages = full
        ep.rendered = text
        ep.pending_context = delta
        ep.num_tokens += len(delta)

    def _close_tail(self, ep: _Episode, sample: Sample, turn: int) -> None:
        """Tokens that close the final assistant message (no loss), so the token sequence is
        the template's render of `messages`."""
        text = self.render(ep.messages, add_generation_prompt=False)
        ep.tail = self.encode(self._suffix_after_action(ep, sample, text, turn))

    @staticmethod
    def _turn(context, sample, reward, observation, verdict, info) -> Turn:
        extra = {k: v for k, v in info.items() if k not in ("verdict",)}
        return Turn(
            context_ids=tuple(context),
            action_ids=tuple(sample.token_ids),
            action_logprobs=tuple(sample.logprobs),
            action_text=sample.text,
            finish_reason=sample.finish_reason,
            reward=reward,
            observation=tuple(observation),
            verdict=verdict,
            info=json_safe(extra),  # type: ignore[arg-type]
        )


def _factory(
    env: str | EnvFactory, env_kwargs: Mapping[str, object] | None
) -> tuple[EnvFactory, str]:
    if callable(env) and not isinstance(env, str):
        if env_kwargs:
            raise InputError("env_kwargs apply to env ids only; bind them in your factory")
        probe_name = getattr(env, "__name__", type(env).__name__)
        return env, str(probe_name)
    env_id = str(env)
    resolve_env_id(env_id)
    kwargs = dict(env_kwargs or {})
    return (lambda: gym.make(env_id, disable_env_checker=True, **kwargs)), env_id


def resolve_env_id(env_id: str) -> None:
    """Check that `env_id` names a registered env (importing `module:` prefixes and the
    built-in and plugin registrations first).

    Raises:
        InputError: naming the id and how to list the known ones.
    """
    import importlib

    importlib.import_module("opd_selfplay.envs")  # registers the built-in and plugin ids
    try:
        module, sep, name = env_id.partition(":")
        if sep:  # `module:Id`, as gymnasium.make accepts: the module registers the id
            importlib.import_module(module)
        gym.spec(name if sep else env_id)
    except (gym.error.Error, ModuleNotFoundError, ImportError) as exc:
        raise InputError(
            f"unknown env {env_id!r} ({_one_line(exc)}); run 'opd envs list' for the registered ids"
        ) from None
