"""The rollout engine: token bookkeeping, masks, log-probs, errors and limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toyenvs import Countdown, Exploding, Scripted, ScriptedPolicy

from opd_selfplay.errors import InputError
from opd_selfplay.rollout import RolloutConfig, RolloutEngine, TemplateError
from opd_selfplay.types import Message, StopReason, Trajectory

# Text that models and environments produce: any printable Unicode, newlines, markup-ish
# characters (surrogates excluded: they cannot be encoded).
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=0,
    max_size=30,
)
_message = st.one_of(
    _text.map(lambda t: t),  # a bare string: one user message
    st.builds(lambda c: [{"role": "tool", "content": c, "name": "calc"}], _text),
    st.builds(
        lambda a, b: [{"role": "tool", "content": a}, {"role": "user", "content": b}], _text, _text
    ),
)


def _check_bookkeeping(engine: RolloutEngine, traj: Trajectory) -> None:
    tok = engine.tokenizer
    ids, mask = traj.token_ids, traj.action_mask
    assert len(ids) == len(mask) == len(traj.logprobs)
    assert sum(mask) == traj.num_action_tokens
    pos = 0
    for turn in traj.turns:
        pos += len(turn.context_ids)
        segment = ids[pos : pos + len(turn.action_ids)]
        assert segment == turn.action_ids
        assert all(mask[pos : pos + len(turn.action_ids)])
        assert tok.decode(list(segment), skip_special_tokens=True) == turn.action_text
        pos += len(turn.action_ids)
    assert not any(mask[pos:])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=_text.filter(bool),
    observations=st.lists(_message, min_size=0, max_size=4),
    actions=st.lists(_text, min_size=1, max_size=5),
    eos=st.booleans(),
)
def test_tokens_equal_the_template_render_of_the_conversation(
    tiny_policy, first, observations, actions, eos
):
    """Prefix consistency: the engine's incremental tokens are exactly the tokens of the chat
    template's render of the whole conversation (tool messages included), whether or not the
    policy emitted the end-of-turn token itself."""
    policy = ScriptedPolicy(tiny_policy.tokenizer, actions, eos=eos)
    engine = RolloutEngine(policy, RolloutConfig(max_turns=6, max_new_tokens=200, env_workers=1))
    [traj] = engine.run(lambda: Scripted(observations, first=first), seeds=[0])
    rendered = engine.render(list(traj.messages), add_generation_prompt=False)
    assert traj.token_ids == tuple(engine.encode(rendered))
    _check_bookkeeping(engine, traj)
    # Every turn's context extends the previous context + action.
    assert traj.messages[0] == Message(role="user", content=first)
    assert len(traj.turns) == min(len(observations) + 1, 6)


def test_tiny_model_multi_turn_logprobs_match_one_training_forward(tiny_policy):
    """The sampling log-probs stored in the trajectory equal those of a single forward pass over
    the whole multi-turn token sequence (what the trainer computes) within 1e-4."""
    for temperature in (1.0, 0.7):
        engine = RolloutEngine(
            tiny_policy,
            RolloutConfig(max_turns=3, max_new_tokens=12, temperature=temperature, seed=5),
        )
        trajs = engine.run(lambda: Countdown(turns=3), seeds=[0, 1], group_size=2)
        scored = tiny_policy.score([t.token_ids for t in trajs], temperature=temperature)
        for traj, row in zip(trajs, scored):
            _check_bookkeeping(engine, traj)
            assert len(traj.turns) == 3
            for lp, ref, m in zip(traj.logprobs, row, traj.action_mask):
                if m:
                    assert abs(lp - ref) < 1e-4


def test_group_members_share_the_task_and_differ_in_samples(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=1, max_new_tokens=16, seed=0))
    trajs = engine.run(lambda: Countdown(turns=1), seeds=[7, 8], group_size=3)
    assert [t.group for t in trajs] == [0, 0, 0, 1, 1, 1]
    assert [t.seed for t in trajs] == [7, 7, 7, 8, 8, 8]
    assert len({t.turns[0].context_ids for t in trajs[:3]}) == 1  # same prompt
    assert len({t.turns[0].action_ids for t in trajs[:3]}) > 1  # different samples


def test_same_seed_same_rollout(tiny_policy):
    cfg = RolloutConfig(max_turns=2, max_new_tokens=10, seed=3)
    a = RolloutEngine(tiny_policy, cfg).run(Countdown, seeds=[1, 2])
    b = RolloutEngine(tiny_policy, cfg).run(Countdown, seeds=[1, 2])
    assert [t.token_ids for t in a] == [t.token_ids for t in b]


def test_env_that_raises_ends_only_its_episode(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=4, max_new_tokens=4))
    envs = iter([Exploding(at=2), Countdown(turns=4), Exploding(at=0)])
    trajs = engine.run(lambda: next(envs), seeds=[0, 1, 2])
    broken, healthy, broken_reset = trajs
    assert broken.stop_reason is StopReason.ENV_ERROR
    assert broken.error == "RuntimeError: boom second line"
    assert len(broken.turns) == 2 and not broken.terminated
    _check_bookkeeping(engine, broken)
    assert healthy.stop_reason is StopReason.COMPLETED and healthy.terminated
    assert len(healthy.turns) == 4
    assert broken_reset.stop_reason is StopReason.ENV_ERROR and broken_reset.turns == ()
    assert "boom in reset" in broken_reset.error


def test_plain_gymnasium_env_by_id(tiny_policy):
    """An env registered with Gymnasium that knows nothing of this project."""
    import gymnasium as gym

    gym.register("toy/CountdownById-v0", entry_point=Countdown)
    try:
        engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=5, max_new_tokens=4))
        trajs = engine.run("toy/CountdownById-v0", seeds=[0], env_kwargs={"turns": 2})
    finally:
        del gym.registry["toy/CountdownById-v0"]  # keep the registry the library's for other tests
    assert trajs[0].env_id == "toy/CountdownById-v0"
    assert len(trajs[0].turns) == 2 and trajs[0].terminated
    assert trajs[0].messages[0].content == "count 2"


def test_turn_limit_truncates(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=2, max_new_tokens=4))
    [traj] = engine.run(lambda: Countdown(turns=10), seeds=[0])
    assert traj.stop_reason is StopReason.MAX_TURNS
    assert traj.truncated and not traj.terminated and len(traj.turns) == 2


def test_context_limit_truncates_with_max_tokens(tiny_policy):
    limit = 80
    engine = RolloutEngine(
        tiny_policy, RolloutConfig(max_turns=20, max_new_tokens=30, max_context_tokens=limit)
    )
    [traj] = engine.run(lambda: Countdown(turns=50), seeds=[0])
    assert traj.stop_reason is StopReason.MAX_TOKENS and traj.truncated
    assert len(traj.token_ids) - len(traj.tail_ids) <= limit
    _check_bookkeeping(engine, traj)


def test_verdicts_and_privileged_context_are_recorded(tiny_policy):
    policy = ScriptedPolicy(tiny_policy.tokenizer, ["a", "b"])
    engine = RolloutEngine(policy, RolloutConfig(max_turns=4))
    [traj] = engine.run(lambda: Scripted(["x"]), seeds=[4])
    assert [v.feedback for v in traj.verdicts] == ["no", "ok"]
    assert traj.success and traj.reward == 1.0
    assert traj.privileged == "step 2"
    assert Trajectory.from_json(traj.to_json()) == traj


def test_template_that_is_not_prefix_consistent_is_refused(tiny_policy):
    import copy

    tok = copy.deepcopy(tiny_policy.tokenizer)
    # Trims message content, as some templates do: the render no longer extends the action.
    tok.chat_template = tok.chat_template.replace(
        "{{ message.content }}", "{{ message.content | trim }}"
    )
    policy = ScriptedPolicy(tok, ["  padded answer  "])
    engine = RolloutEngine(policy, RolloutConfig(max_turns=2))
    with pytest.raises(TemplateError, match="not prefix-consistent at turn 0"):
        engine.run(lambda: Scripted(["again"]), seeds=[0])


def test_config_errors_name_the_field():
    with pytest.raises(InputError, match="max_turns"):
        RolloutConfig(max_turns=0)
    with pytest.raises(InputError, match="top_p"):
        RolloutConfig(top_p=1.5)


def test_unknown_env_id_is_an_input_error(tiny_policy):
    engine = RolloutEngine(tiny_policy)
    with pytest.raises(InputError, match="unknown env 'nope/Nothing-v0'"):
        engine.run("nope/Nothing-v0", seeds=[0])


def test_logprobs_are_finite(tiny_policy):
    engine = RolloutEngine(
        tiny_policy, RolloutConfig(max_turns=1, max_new_tokens=8, temperature=2.0)
    )
    [traj] = engine.run(Countdown, seeds=[0])
    assert all(math.isfinite(x) and x <= 0 for x in traj.turns[0].action_logprobs)
