"""`opd/ToolUse-v0` and its tools: the safe calculator, units, the world, tool dispatch, the
episode protocol (tool messages, final answers, malformed calls), the oracle plan over every
template, determinism and conformance."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from opd_selfplay.envs.check import check_env
from opd_selfplay.envs.tool_env import N_DISTRACTORS, TEMPLATES, ToolUseEnv, generate_task
from opd_selfplay.envs.tools import (
    TOOLS,
    ExpressionError,
    World,
    call_tool,
    convert_units,
    format_number,
    safe_eval,
)

# ------------------------------------------------------------------------ calculator ---


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("1 + 2 * 3", 7),
        ("7 / 2", 3.5),
        ("2 ^ 10", 1024),
        ("-3 // 2", -2),
        ("(((((1)))))", 1),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(2.567, 2)", 2.57),
        ("12 × 3 ÷ 4", 9.0),
    ],
)
def test_safe_eval_computes(expr, value):
    assert safe_eval(expr) == pytest.approx(value)


def test_safe_eval_exact_mode_gives_rationals():
    assert safe_eval("1/3 + 1/6", exact=True) == Fraction(1, 2)
    assert safe_eval("0.1 + 0.2", exact=True) == Fraction(3, 10)
    assert safe_eval("6 / 3", exact=True) == 2 and isinstance(safe_eval("6/3", exact=True), int)
    with pytest.raises(ExpressionError):
        safe_eval("sqrt(2)", exact=True)


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("__import__('os').system('true')", "not allowed"),
        ("().__class__", "not allowed"),
        ("x + 1", "name 'x'"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 1000.0", "too large"),
        ("2 ** 5000", "too large"),
        ("1 / 0", "division by zero"),
        ("(-8) ** 0.5", "negative"),
        ("1e308 * 10", "finite"),
        ("1 +", "cannot parse"),
        ("(" * 300 + "1" + ")" * 300, "longer than"),
        ("+".join(["1"] * 240), "more than"),
        ("'a' * 3", "unsupported literal"),
        ("True + 1", "unsupported literal"),
    ],
)
def test_safe_eval_refuses_what_is_not_bounded_arithmetic(expr, why):
    with pytest.raises(ExpressionError, match=why):
        safe_eval(expr)


def test_format_number():
    assert format_number(42) == "42" and format_number(3.0) == "3"
    assert format_number(1 / 3) == "0.333333333333" and format_number(Fraction(7, 3)) == "7/3"


def test_convert_units():
    assert convert_units(1, "mi", "km") == pytest.approx(1.609344)
    assert convert_units(100, "C", "F") == pytest.approx(212)
    assert convert_units(32, "fahrenheit", "K") == pytest.approx(273.15)
    assert convert_units(2, "hours", "min") == pytest.approx(120)
    with pytest.raises(ValueError, match="cannot convert"):
        convert_units(1, "kg", "m")
    with pytest.raises(ValueError, match="unknown unit"):
        convert_units(1, "parsec", "m")


# ----------------------------------------------------------------------------- world ---


def test_world_is_seeded_and_round_trips_through_json():
    a = World.generate(np.random.default_rng(7))
    b = World.generate(np.random.default_rng(7))
    assert a.to_json() == b.to_json()
    assert a.to_json() != World.generate(np.random.default_rng(8)).to_json()
    c = World.from_json(a.to_json())
    c.accounts[next(iter(c.accounts))] += 1  # a copy, not a view
    assert c.to_json() != a.to_json()
    assert all(p["city"] in a.cities for p in a.people.values())


@pytest.mark.parametrize(
    ("name", "args", "needle"),
    [
        ("no_such_tool", {}, "unknown tool 'no_such_tool'"),
        ("calculator", {"expression": [1, {"a": 2}]}, "must be string"),
        ("calculator", {}, "expression"),
        ("calculator", {"expression": "1+1", "extra": 1}, "extra"),
        ("calculator", "1+1", "must be object"),
        ("convert_units", {"value": "ten", "from_unit": "m", "to_unit": "ft"}, "value"),
        ("get_city", {"name": "Atlantis"}, "no city named 'Atlantis'"),
        ("transfer", {"from_account": "x", "to_account": "y", "amount": 5}, "no account"),
        ("transfer", {"from_account": "A", "to_account": "B", "amount": -5}, "amount"),
        ("transfer", {"from_account": "A", "to_account": "B", "amount": 2.5}, "amount"),
        ("transfer", {"from_account": "A", "to_account": "B", "amount": 10**9}, "insufficient"),
        ("transfer", {"from_account": "A", "to_account": "A", "amount": 1}, "must differ"),
    ],
)
def test_tool_errors_are_results_not_exceptions(name, args, needle):
    world = World(accounts={"A": 100, "B": 0}, cities={"Oakhaven": {"population": 1}})
    result = call_tool(world, name, args, TOOLS)
    assert result.startswith("Error:") and needle in result, result
    assert world.accounts == {"A": 100, "B": 0}


def test_transfer_changes_the_world():
    world = World(accounts={"Ada Birch": 100, "Bram Crane": 5})
    out = call_tool(
        world,
        "transfer",
        {"from_account": "ada birch", "to_account": "Bram Crane", "amount": 40},
        TOOLS,
    )
    assert json.loads(out) == {"ok": True, "from_balance": 60}
    assert world.accounts == {"Ada Birch": 60, "Bram Crane": 45}
    assert world.transfers == [{"from": "Ada Birch", "to": "Bram Crane", "amount": 40}]


def test_python_tool_runs_in_the_sandbox():
    world = World()
    assert call_tool(world, "python", {"code": "print(2 ** 100)"}, TOOLS) == str(2**100)
    err = call_tool(world, "python", {"code": "raise ValueError('boom')"}, TOOLS)
    assert "exit status 1" in err and "ValueError: boom" in err
    quiet = call_tool(world, "python", {"code": "x = 1"}, TOOLS)
    assert "print()" in quiet


# ------------------------------------------------------------------------------- env ---


def _oracle_episode(env, seed):
    obs, info = env.reset(seed=seed)
    steps = []
    while True:
        action = env.oracle_action()
        obs, reward, terminated, truncated, info = env.step(action)
        steps.append((action, obs, reward))
        if terminated or truncated:
            return reward, info, steps


def test_every_template_is_generated_and_its_oracle_plan_earns_one():
    seen = set()
    for difficulty in (1, 2, 3):
        env = ToolUseEnv(difficulty=difficulty)
        for seed in range(12):
            reward, info, steps = _oracle_episode(env, seed)
            assert reward == 1.0 and info["verdict"].correct, (difficulty, seed, info["feedback"])
            seen.add(info["task_metadata"]["template"])
            plan = info["task_metadata"]["plan"]
            assert len(steps) == len(plan) + 1  # each planned call, then the answer
    assert seen == {t.__name__[3:] for level in TEMPLATES.values() for t in level}


def test_reset_lists_the_tools_and_tool_results_come_back_as_tool_messages():
    env = ToolUseEnv(difficulty=1, toolset="all")
    obs, info = env.reset(seed=0)
    assert [m["role"] for m in obs] == ["system", "user"]
    for name in TOOLS:
        assert f'"name":"{name}"' in obs[0]["content"]
    assert "Answer:" in obs[0]["content"] and "<tool_call>" in obs[0]["content"]
    city = next(iter(env.world.cities))
    two = (
        f'<tool_call>{{"name": "get_city", "arguments": {{"name": "{city}"}}}}</tool_call>\n'
        '<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>'
    )
    obs, reward, terminated, truncated, info = env.step(two)
    assert (reward, terminated, truncated) == (0.0, False, False) and "verdict" not in info
    assert [m["role"] for m in obs] == ["tool", "tool"]
    assert [m["name"] for m in obs] == ["get_city", "calculator"]
    assert obs[0]["tool_call_id"] != obs[1]["tool_call_id"]
    assert json.loads(obs[0]["content"])["name"] == city and obs[1]["content"] == "42"
    assert [r["name"] for r in info["tool_results"]] == ["get_city", "calculator"]


def test_each_task_offers_its_plan_tools_and_a_few_distractors():
    env = ToolUseEnv()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        needed = {step["name"] for step in env.task.metadata["plan"]}
        offered = env.task.metadata["tools"]
        assert needed <= set(offered) and len(offered) == len(needed) + N_DISTRACTORS
        assert list(env.tools) == offered
        for name in TOOLS:
            assert (f'"name":"{name}"' in obs[0]["content"]) == (name in offered)
        assert len(obs[0]["content"]) < 2000  # fits a small model's context with room to act
        missing = next(n for n in TOOLS if n not in offered)
        reply, *_ = env.step(f'<tool_call>{{"name": "{missing}", "arguments": {{}}}}</tool_call>')
        assert reply[0]["content"].startswith(f"Error: unknown tool '{missing}'")


def test_openai_style_calls_work():
    env = ToolUseEnv(difficulty=1, toolset="all")
    env.reset(seed=0)
    call = {
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": "2+2"})},
            }
        ]
    }
    obs, *_ = env.step(json.dumps(call))
    assert obs == [
        {"role": "tool", "content": "4", "tool_call_id": "call_abc", "name": "calculator"}
    ]


@pytest.mark.parametrize(
    ("action", "role", "needle"),
    [
        (
            '<tool_call>{"name": "calculator", "arguments": {"expr</tool_call>',
            "user",
            "could not be read",
        ),
        (
            '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>',
            "tool",
            "unknown tool",
        ),
        (
            '{"name": "calculator", "arguments": {"expression": [1, {"a": 2}]}}',
            "tool",
            "must be string",
        ),
        (
            '<tool_call>{"name": "convert_units", "arguments": {"value": "1"}}</tool_call>',
            "tool",
            "bad arguments",
        ),
        ("<tool_call>[1, 2, 3]</tool_call>", "user", "could not be read"),
    ],
)
def test_malformed_calls_get_feedback_and_the_episode_goes_on(action, role, needle):
    env = ToolUseEnv(difficulty=1, toolset="all")
    env.reset(seed=0)
    obs, reward, terminated, truncated, _info = env.step(action)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert obs[-1]["role"] == role and needle in obs[-1]["content"], obs
    _, reward, terminated, _, _ = env.step(env.task.solution)  # it can still answer
    assert (reward, terminated) == (1.0, True)


@pytest.mark.parametrize(
    "action",
    ["", "   ", "答案是四十二 🙂 Ответ", "\x00\x1b[31m\u202e", "x" * (1 << 20), "Answer: 🙂"],
)
def test_bad_final_answers_score_zero_with_feedback(action):
    env = ToolUseEnv()
    env.reset(seed=1)
    _obs, reward, terminated, truncated, info = env.step(action)
    assert reward == 0.0 and terminated and not truncated
    assert info["verdict"].feedback and not info["verdict"].correct


def test_wrong_answer_and_missing_transfer_are_caught():
    env = ToolUseEnv(difficulty=2)
    seed = next(
        s for s in range(50) if env.reset(seed=s)[1]["task_metadata"]["template"] == "transfer"
    )
    env.reset(seed=seed)
    # the right number without making the transfer: the state part fails
    _, reward, terminated, _, info = env.step(env.task.solution)
    assert terminated and reward == pytest.approx(0.5) and not info["verdict"].correct
    assert "state" in info["verdict"].feedback or "accounts" in info["verdict"].feedback
    env.reset(seed=seed)
    _, reward, _, _, info = env.step(env.wrong_action())
    assert reward == 0.0 and info["verdict"].feedback


def test_oracle_returns_to_the_plan_after_a_detour():
    env = ToolUseEnv(difficulty=1)
    env.reset(seed=0)
    env.step('<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}</tool_call>')
    plan = env.task.metadata["plan"]
    assert json.loads(env.oracle_action()[len("<tool_call>") : -len("</tool_call>")]) == plan[0]


def test_max_turns_truncates_an_episode_that_never_answers():
    env = ToolUseEnv(difficulty=1, max_turns=3, toolset="all")
    env.reset(seed=0)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}</tool_call>'
    flags = [env.step(call)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_more_calls_than_allowed_are_not_run():
    env = ToolUseEnv(difficulty=1, max_calls_per_turn=2, toolset="all")
    env.reset(seed=0)
    call = '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}</tool_call>'
    obs, *_ = env.step(call * 3)
    assert [m["content"].startswith("Error: not run") for m in obs] == [False, False, True]


def test_same_seed_same_task_and_privileged_context():
    a, b = ToolUseEnv(), ToolUseEnv()
    for seed in range(6):
        (oa, ia), (ob, ib) = a.reset(seed=seed), b.reset(seed=seed)
        assert oa == ob and ia["privileged"] == ib["privileged"]
        assert "Reference plan" in ia["privileged"] and "answer:" in ia["privileged"]
    assert len({generate_task(np.random.default_rng(s)).prompt for s in range(30)}) == 30


def test_a_task_replays_from_its_dict():
    env = ToolUseEnv()
    env.reset(seed=3)
    task = env.task.to_dict()
    other = ToolUseEnv()
    obs, _ = other.reset(options={"task": task})
    assert obs[1]["content"] == task["prompt"]
    assert other.world.to_json() == env.world.to_json()


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_tooluse_conforms_at_each_difficulty(difficulty):
    assert check_env(ToolUseEnv(difficulty=difficulty), seeds=(0, 1, 2)) == []
