"""`opd/ReasoningGym-v0`: answer extraction always; the env itself only where the optional
reasoning-gym package is installed (skipped with that reason otherwise), and the one-line
`InputError` where it is not."""

from __future__ import annotations

import importlib.util

import pytest

from opd_selfplay.envs.check import check_env
from opd_selfplay.envs.reasoning_gym_env import ReasoningGymEnv, extract_answer
from opd_selfplay.errors import InputError

HAVE_RG = importlib.util.find_spec("reasoning_gym") is not None
needs_rg = pytest.mark.skipif(
    not HAVE_RG, reason="reasoning-gym is not installed (pip install 'opd-selfplay[reasoning]')"
)


def test_extract_answer_prefers_the_last_tag_then_an_answer_line():
    assert extract_answer("think <answer>1</answer> no, <answer> 42 </answer>") == "42"
    assert extract_answer("work...\nAnswer: 17\n") == "17"
    assert extract_answer("<answer>a\nb</answer>\nAnswer: c") == "a\nb"
    assert extract_answer("just text") is None
    assert extract_answer("") is None


@pytest.mark.skipif(HAVE_RG, reason="reasoning-gym is installed here")
def test_missing_package_is_a_one_line_input_error():
    with pytest.raises(InputError) as err:
        ReasoningGymEnv("leg_counting")
    message = str(err.value)
    assert "\n" not in message and "pip install 'opd-selfplay[reasoning]'" in message


@needs_rg
def test_unknown_task_and_bad_config_are_input_errors():
    with pytest.raises(InputError, match="unknown reasoning-gym task 'leg_countin'"):
        ReasoningGymEnv("leg_countin")
    with pytest.raises(InputError, match="bad config"):
        ReasoningGymEnv("leg_counting", no_such_field=3)


@needs_rg
@pytest.mark.parametrize("task", ["leg_counting", "basic_arithmetic", "word_sorting"])
def test_oracle_earns_one_wrong_earns_zero(task):
    env = ReasoningGymEnv(task)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        assert "<answer>" in obs and info["task_metadata"]["dataset"] == task
        _, reward, terminated, _, info = env.step(env.oracle_action())
        assert (reward, terminated) == (1.0, True) and info["verdict"].correct
        env.reset(seed=seed)
        _, reward, terminated, _, info = env.step(env.wrong_action())
        assert reward == 0.0 and terminated and info["verdict"].feedback


@needs_rg
def test_the_score_is_the_datasets_own_score_answer():
    env = ReasoningGymEnv("leg_counting", max_attempts=2)
    env.reset(seed=0)
    entry = env.entry(env.task.metadata["index"])
    for reply in ("<answer>3</answer>", f"<answer>{entry['answer']} legs</answer>"):
        env.reset(seed=0)
        _, _, _, _, info = env.step(reply)
        expected = env.dataset.score_answer(answer=extract_answer(reply), entry=entry)
        assert info["verdict"].score == pytest.approx(min(1.0, max(0.0, expected)))
    env.reset(seed=0)
    _obs, reward, terminated, _, info = env.step("I think it is 12")  # no tags: parse error
    assert (reward, terminated) == (0.0, False) and "<answer>" in info["feedback"]


@needs_rg
def test_same_seed_same_entry():
    a, b = ReasoningGymEnv("basic_arithmetic"), ReasoningGymEnv("basic_arithmetic")
    for seed in range(4):
        assert a.reset(seed=seed) == b.reset(seed=seed)


@needs_rg
@pytest.mark.parametrize("action", ["", "x" * (1 << 20), "<answer>🙂 答案</answer>", "<answer>"])
def test_bad_actions_do_not_crash(action):
    env = ReasoningGymEnv("basic_arithmetic")
    env.reset(seed=0)
    _obs, reward, terminated, _truncated, info = env.step(action)
    assert reward == 0.0 and terminated and info["verdict"].feedback


@needs_rg
@pytest.mark.parametrize("task", ["leg_counting", "sudoku"])
def test_reasoning_gym_env_conforms(task):
    assert check_env(ReasoningGymEnv(task), seeds=(0, 1)) == []
