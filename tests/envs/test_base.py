"""The base class contract: spaces, reward rule, end flags, info keys, guards, options."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces.utils import flatten, unflatten

from opd_selfplay.envs.base import ChatObservation, Reply, TextTaskEnv, UnicodeText, message_text
from opd_selfplay.envs.tasks import ProceduralSource, Task, TaskList
from opd_selfplay.verifiers.verdict import Verdict

WORDS = ["alpha", "beta", "gamma", "δέλτα", "эпсилон", "中文", "🙂ok"]


def word_task(rng: np.random.Generator, difficulty: int) -> Task:
    w = WORDS[int(rng.integers(len(WORDS)))]
    return Task(prompt=f"Echo {w}", reference=w, id=f"echo-{w}", metadata={"n": [1, 2]})


class EchoEnv(TextTaskEnv):
    """Echo the word: score 1 for it, 0.5 for it in upper case, 0 otherwise."""

    def __init__(self, max_attempts: int = 3, **kw):
        super().__init__(ProceduralSource(word_task), max_attempts=max_attempts, **kw)

    def verify(self, action: str, task: Task) -> Verdict:
        if action == task.reference:
            return Verdict(1.0, True, "right")
        if action == str(task.reference).upper():
            return Verdict(0.5, False, "wrong case")
        return Verdict(0.0, False, "wrong word", {"parse_error": action == ""})

    def oracle_action(self):
        return str(self.task.reference)


class ToolishEnv(EchoEnv):
    """Actions starting with 'tool:' are not answers (no verdict); a turn limit of 3."""

    def __init__(self):
        super().__init__(max_attempts=2, max_turns=3)

    def respond(self, action: str) -> Reply:
        if action.startswith("tool:"):
            return Reply(observation=[{"role": "tool", "content": "result", "name": "t"}])
        return super().respond(action)


def test_unicode_text_contains_any_text_but_only_text():
    s = UnicodeText(10)
    assert s.contains("")
    assert s.contains("中文🙂\x00é")
    assert not s.contains("x" * 11)
    assert not s.contains(b"abc")
    assert not s.contains(3)
    stock = gym.spaces.Text(10)
    assert not stock.contains("中文")  # the pitfall UnicodeText exists for


def test_unicode_text_samples_short_text_and_flattens_round_trip():
    s = UnicodeText(1 << 20, seed=0)
    samples = [s.sample() for _ in range(50)]
    assert all(len(x) <= 64 for x in samples)
    assert len(set(samples)) > 40
    small = UnicodeText(16)
    for text in ["", "abc", "中文🙂\x00é", "\ud800x"]:  # a lone surrogate too
        flat = flatten(small, text)
        assert flat.dtype == np.int32 and flat.shape == (16,)
        assert unflatten(small, flat) == text
    with pytest.raises(ValueError, match="does not fit"):
        flatten(small, "x" * 17)


class UnicodeObsEnv(gym.Env):
    """Plain env emitting non-ASCII observations, for the shared-memory round trip."""

    def __init__(self):
        self.observation_space = UnicodeText(32)
        self.action_space = UnicodeText(32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return f"héllo 中文 🙂 {int(self.np_random.integers(100))}", {}

    def step(self, action):
        return f"got {action} ✓", 0.0, True, False, {}


def test_async_vector_env_with_shared_memory_round_trips_unicode():
    envs = gym.vector.AsyncVectorEnv([UnicodeObsEnv, UnicodeObsEnv], shared_memory=True)
    try:
        obs, _ = envs.reset(seed=[1, 2])
        assert all(o.startswith("héllo 中文 🙂 ") for o in obs)
        direct = [UnicodeObsEnv().reset(seed=s)[0] for s in (1, 2)]
        assert list(obs) == direct
        obs, *_ = envs.step(("π", "жж"))
        assert list(obs) == ["got π ✓", "got жж ✓"]
    finally:
        envs.close()


def test_chat_observation_space():
    s = ChatObservation(100)
    assert s.contains("text")
    assert s.contains([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert s.contains([{"role": "tool", "content": "r", "tool_call_id": "1", "name": "calc"}])
    assert not s.contains([])
    assert not s.contains([{"role": "robot", "content": "x"}])
    assert not s.contains([{"role": "user", "content": 3}])
    assert not s.contains([{"role": "user", "content": "x", "name": 5}])
    assert not s.contains([{"role": "user", "content": "x" * 101}])
    assert isinstance(s.sample(), str)


def test_reward_is_paid_once_on_the_last_step():
    env = EchoEnv(max_attempts=3)
    _, info = env.reset(options={"task": Task("Echo alpha", "alpha")})
    ref = info["reference"]
    obs, r1, term, trunc, info1 = env.step(ref.upper())  # partial score, not final
    assert (r1, term, trunc) == (0.0, False, False)
    assert info1["verdict"].score == 0.5 and info1["feedback"] == "wrong case"
    assert "wrong case" in obs and "2 attempts left" in obs
    obs, r2, term, trunc, info2 = env.step(ref)
    assert (r2, term, trunc) == (1.0, True, False)
    assert info2["attempts"] == 2 and info2["turn"] == 2


def test_last_attempt_terminates_with_its_score():
    env = EchoEnv(max_attempts=2)
    _, info = env.reset(options={"task": Task("Echo beta", "beta")})
    env.step("nope")
    obs, r, term, trunc, info = env.step(info["reference"].upper())
    assert (r, term, trunc) == (0.5, True, False)
    assert obs == "wrong case"
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("again")


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="before reset"):
        EchoEnv().step("x")


def test_turn_limit_truncates_and_unchecked_steps_cost_no_attempt():
    env = ToolishEnv()
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step("tool: look")
    assert obs == [{"role": "tool", "content": "result", "name": "t"}]
    assert "verdict" not in info and info["attempts"] == 0
    assert (r, term, trunc) == (0.0, False, False)
    env.step("wrong")
    obs, r, term, trunc, info = env.step("tool: again")
    assert (term, trunc) == (False, True)
    assert r == 0.0 and info["attempts"] == 1


def test_verifier_exception_and_bad_return_become_zero_with_feedback():
    class Raising(EchoEnv):
        def verify(self, action, task):
            raise ZeroDivisionError("boom")

    class Weird(EchoEnv):
        def verify(self, action, task):
            return 1.0

    for cls, err in ((Raising, "verifier_exception"), (Weird, "verifier_bad_return")):
        env = cls(max_attempts=1)
        env.reset(seed=0)
        obs, r, term, _trunc, info = env.step("x")
        assert (r, term) == (0.0, True)
        assert info["verdict"].details["error"] == err
        assert "could not be checked" in info["verdict"].feedback
        assert "could not be checked" in obs


@pytest.mark.parametrize(
    "action",
    ["", "x" * (1 << 20), "\x00\x1b[0m\ufffd", "答案 🙂", b"\xff\xfebytes"],
    ids=["empty", "1MB", "control", "unicode", "bytes"],
)
def test_bad_actions_get_feedback_and_never_crash(action):
    env = EchoEnv(max_attempts=2, max_action_chars=1000)
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(action)
    assert r == 0.0 and not term and not trunc
    assert info["verdict"].feedback
    assert isinstance(obs, str) and obs
    if isinstance(action, str) and len(action) > 1000:
        assert info["verdict"].details["error"] == "too_long"
        assert "too long (1048576 characters; the limit is 1000)" in obs


def test_non_text_action_is_a_type_error():
    env = EchoEnv()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="action must be str"):
        env.step(42)


def test_parse_error_stop_reason_only_when_the_episode_ends_on_it():
    env = EchoEnv(max_attempts=2)
    env.reset(seed=0)
    *_, info = env.step("")
    assert "stop_reason" not in info
    *_, term, _, info = env.step("")
    assert term and info["stop_reason"] == "parse_error"


def test_same_seed_same_task_and_unseeded_reset_moves_on():
    a, b = EchoEnv(), EchoEnv()
    tasks_a = [a.reset(seed=s)[1]["task_id"] for s in range(20)]
    tasks_b = [b.reset(seed=s)[1]["task_id"] for s in range(20)]
    assert tasks_a == tasks_b and len(set(tasks_a)) > 3
    a.reset(seed=5)
    following = [a.reset()[1]["task_id"] for _ in range(10)]
    assert len(set(following)) > 1  # no seed: the RNG continues, new tasks come


def test_global_rng_is_untouched():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    env = EchoEnv()
    for s in range(5):
        env.reset(seed=s)
        env.step("x")
    assert np.random.random() == expected


def test_info_keys_and_privileged_context():
    env = EchoEnv()
    _, info = env.reset(seed=1)
    assert set(info) == {
        "privileged",
        "reference",
        "solution",
        "feedback",
        "attempts",
        "max_attempts",
        "turn",
        "task_id",
        "task_metadata",
    }
    assert info["privileged"] == f"Reference answer: {info['reference']}"
    *_, info2 = env.step("bad")
    assert info2["privileged"].endswith("Feedback on the last answer: wrong word")
    info2["task_metadata"]["n"].append(3)  # callers may mutate what they get
    _, info3 = env.reset(seed=1)
    assert info3["task_metadata"] == {"n": [1, 2]}


def test_reset_options_pick_tasks():
    tasks = TaskList([Task("p0", "a"), Task("p1", "b", id="t1")])

    class ListEnv(EchoEnv):
        def __init__(self):
            TextTaskEnv.__init__(self, tasks, max_attempts=1)

    env = ListEnv()
    assert env.reset(options={"task_index": 1})[0] == "p1"
    assert env.reset(options={"task": {"prompt": "given", "reference": "z"}})[0] == "given"
    assert env.reset(options={"task": Task("obj", "y")})[1]["reference"] == "y"
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        env.reset(options={"bogus": 1})
    with pytest.raises(IndexError, match="out of range"):
        env.reset(options={"task_index": 7})
    with pytest.raises(ValueError, match="needs a finite task list"):
        EchoEnv().reset(options={"task_index": 0})


def test_system_prompt_gives_messages_and_chat_space():
    env = EchoEnv(system_prompt="Be brief.")
    obs, _ = env.reset(seed=0)
    assert obs[0] == {"role": "system", "content": "Be brief."}
    assert obs[1]["role"] == "user" and obs[1]["content"].startswith("Echo ")
    assert isinstance(env.observation_space, ChatObservation)
    assert env.observation_space.contains(obs)
    assert message_text(obs).startswith("Be brief.\nEcho ")


def test_render_ansi_transcript_and_bad_render_mode():
    env = EchoEnv(render_mode="ansi")
    env.reset(seed=0)
    env.step("wrong")
    text = env.render()
    assert text.startswith("[user] Echo ") and "[assistant] wrong" in text
    assert EchoEnv().render() is None
    with pytest.raises(ValueError, match="render_mode"):
        EchoEnv(render_mode="human")


def test_constructor_validation():
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        EchoEnv(max_attempts=0)
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        EchoEnv(max_turns=0)
