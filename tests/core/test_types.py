"""Core types: validation, derived token views, JSON round trip."""

from __future__ import annotations

import json

import pytest

from opd_selfplay.types import Message, StopReason, ToolCall, Trajectory, Turn, Verdict, json_safe


def _traj() -> Trajectory:
    t1 = Turn(
        context_ids=(1, 2, 3),
        action_ids=(4, 5),
        action_logprobs=(-0.1, -0.2),
        action_text="ab",
        finish_reason="stop",
        reward=0.0,
        observation=(Message("tool", "42", tool_call_id="c1"),),
        verdict=Verdict(0.0, False, "no"),
        info={"k": [1, 2]},
    )
    t2 = Turn(
        context_ids=(6,),
        action_ids=(7,),
        action_logprobs=(-0.3,),
        action_text="c",
        finish_reason="length",
        reward=1.0,
        verdict=Verdict(1.0, True, "yes"),
    )
    return Trajectory(
        env_id="opd/Arithmetic-v0",
        seed=3,
        group=1,
        messages=(
            Message("user", "q"),
            Message("assistant", "ab", tool_calls=(ToolCall("calc", '{"x": 1}', "c1"),)),
            Message("tool", "42", tool_call_id="c1"),
            Message("assistant", "c"),
        ),
        turns=(t1, t2),
        tail_ids=(8, 9),
        reward=1.0,
        terminated=True,
        stop_reason=StopReason.COMPLETED,
        privileged="answer 42",
    )


def test_derived_views():
    t = _traj()
    assert t.token_ids == (1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert t.action_mask == (0, 0, 0, 1, 1, 0, 1, 0, 0)
    assert t.logprobs == (0.0, 0.0, 0.0, -0.1, -0.2, 0.0, -0.3, 0.0, 0.0)
    assert t.num_action_tokens == 3
    assert [v.correct for v in t.verdicts] == [False, True] and t.success


def test_json_round_trip_is_exact():
    t = _traj()
    line = t.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data["token_ids"] == list(t.token_ids) and data["action_mask"] == list(t.action_mask)
    assert data["stop_reason"] == "completed"
    assert Trajectory.from_json(line) == t


def test_validation_messages_name_the_problem():
    with pytest.raises(ValueError, match="Message.role must be one of"):
        Message("robot", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 action ids but 1 log-probs"):
        Turn(
            context_ids=(),
            action_ids=(1, 2),
            action_logprobs=(0.0,),
            action_text="",
            finish_reason="stop",
        )
    with pytest.raises(ValueError, match=r"score must lie in \[0, 1\]"):
        Verdict(1.5, True)


def test_message_coercion_and_tool_call_shapes():
    assert Message.coerce("hi") == Message("user", "hi")
    m = Message.coerce(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
            ],
        }
    )
    assert m.content == "" and m.tool_calls == (ToolCall("f", '{"x": 1}', "a"),)
    assert Message.from_dict(m.to_dict()) == m


def test_json_safe_handles_foreign_values():
    import numpy as np

    out = json_safe(
        {"a": np.int64(3), "b": (1.5, np.float32(2.0)), "c": object, "v": Verdict(1, True)}
    )
    json.dumps(out)
    assert out["a"] == 3 and out["b"] == [1.5, 2.0] and out["v"]["correct"] is True
