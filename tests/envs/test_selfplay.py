"""Self-play envs: the game rules, the two-player API, the fixed-opponent wrapper, and the
proposer-solver env with its learnability reward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from opd_selfplay.envs.check import check_env
from opd_selfplay.envs.games import (
    IllegalMove,
    Nim,
    NimState,
    OpponentView,
    TicTacToe,
    TTTState,
    _ttt_puzzles,
    _ttt_value,
    extract_move_text,
    random_opponent,
)
from opd_selfplay.envs.propose_solve import ProposeSolveEnv, check_answer, learnability_reward
from opd_selfplay.envs.selfplay import (
    NimEnv,
    TicTacToeEnv,
    VsOpponent,
    nim_vs_opponent,
    tictactoe_vs_opponent,
)
from opd_selfplay.verifiers.verdict import Verdict

TTT, NIM = TicTacToe(), Nim()


# ------------------------------------------------------------------------------ rules ---


def test_tictactoe_outcomes_and_best_moves():
    assert TTT.outcome(TTTState("XXXOO....")) == (1.0, 0.0)
    assert TTT.outcome(TTTState("XOXXOOOXX")) == (0.5, 0.5)
    assert TTT.outcome(TTTState("OOOXX.X..")) == (0.0, 1.0)
    assert TTT.outcome(TTTState("X........")) is None
    # X to move: 3 wins at once; nothing else is as good.
    assert TTT.best_moves(TTTState("XX.OO....")) == ["3"]
    # O to move must block X's column 1-4-7 at 7.
    assert TTT.best_moves(TTTState("XO.X.....")) == ["7"]
    assert _ttt_value("." * 9) == 0  # perfect play draws


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_tictactoe_puzzles_are_forced_wins_of_the_right_length(difficulty):
    puzzles = _ttt_puzzles(difficulty)
    assert len(puzzles) > 50
    for board in puzzles[:: max(1, len(puzzles) // 40)]:
        assert TTT.outcome(TTTState(board)) is None
        empties_at_win = _ttt_value(board) - 1
        assert board.count(".") - empties_at_win == 2 * difficulty - 1


def test_move_parsing_reads_the_last_move_line_and_rejects_the_rest():
    state = TTTState("X........")
    assert TTT.parse_move(state, extract_move_text("I think... Move: 5")) == "5"
    assert TTT.parse_move(state, extract_move_text("Move: 2\nno wait\nMove: 9")) == "9"
    assert TTT.parse_move(state, extract_move_text("  7 ")) == "7"
    with pytest.raises(IllegalMove) as taken:
        TTT.parse_move(state, extract_move_text("Move: 1"))
    assert not taken.value.unreadable and "taken" in str(taken.value)
    for text in ("", "Move: ten", "🙂", "x" * 100_000):
        with pytest.raises(IllegalMove) as bad:
            TTT.parse_move(state, extract_move_text(text))
        assert bad.value.unreadable
    nim = NimState((3, 0, 5))
    assert NIM.parse_move(nim, extract_move_text("Move: 3 2")) == "3 2"
    assert NIM.parse_move(nim, extract_move_text("take 2 from heap 1")) == "1 2"  # heap first
    for text, needle in (("Move: 2 1", "empty"), ("Move: 4 1", "no heap"), ("Move: 1 4", "has 3")):
        with pytest.raises(IllegalMove, match=needle):
            NIM.parse_move(nim, extract_move_text(text))


def test_nim_best_moves_leave_a_zero_nim_sum():
    rng = np.random.default_rng(0)
    for _ in range(50):
        state = NIM.start(rng, "puzzle", 3)
        assert np.bitwise_xor.reduce(state.heaps) != 0
        for move in NIM.best_moves(state):
            after = NIM.apply(state, move)
            assert np.bitwise_xor.reduce(after.heaps) == 0
            assert after.player == 1 - state.player
    assert NIM.outcome(NimState((0, 0), player=1)) == (1.0, 0.0)  # player 0 took the last


# ------------------------------------------------------------------- two-player API ---


def _play(env, policy_by_player, seed, max_steps=60):
    obs, info = env.reset(seed=seed)
    trace = [(obs, info["player"])]
    for _ in range(max_steps):
        action = policy_by_player[info["player"]](env)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs, reward, terminated, truncated, info["player"], info.get("mover")))
        if terminated or truncated:
            return reward, info, trace
    raise AssertionError("the game did not end")


@pytest.mark.parametrize("env_cls", [TicTacToeEnv, NimEnv])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_perfect_play_from_a_puzzle_wins_for_the_first_mover(env_cls, difficulty):
    env = env_cls(difficulty=difficulty)
    oracle = {0: lambda e: e.oracle_action(), 1: lambda e: e.oracle_action()}
    for seed in range(4):
        _, info0 = env.reset(seed=seed)
        first = info0["player"]
        reward, info, trace = _play(env, oracle, seed)
        assert reward == 1.0
        assert info["rewards"][first] == 1.0 and info["rewards"][1 - first] == 0.0
        assert info["mover"] == first  # the winner made the last move
        assert info["verdict"].correct and "wins" in info["verdict"].feedback
        # players alternate, and every non-final step pays 0
        movers = [t[5] for t in trace[1:]]
        assert all(a != b for a, b in itertools.pairwise(movers))
        assert all(t[1] == 0.0 for t in trace[1:-1])


def test_observations_are_addressed_to_the_player_to_move():
    env = TicTacToeEnv(start="initial")
    obs, info = env.reset(seed=0)
    assert info["player"] == 0 and "You play X" in obs and info["rewards"] == [0.0, 0.0]
    obs, reward, terminated, _, info = env.step("Move: 5")
    assert (reward, terminated, info["player"], info["mover"]) == (0.0, False, 1, 0)
    assert "X played 5" in obs and "You play O" in obs
    assert "5" not in info["legal_moves"] and len(info["legal_moves"]) == 8
    assert "Best moves for O" in info["privileged"]


def test_a_draw_pays_half_to_each_player():
    env = TicTacToeEnv(start="initial")
    both = {0: lambda e: e.oracle_action(), 1: lambda e: e.oracle_action()}
    reward, info, _ = _play(env, both, seed=0)
    assert reward == 0.5 and info["rewards"] == [0.5, 0.5]
    assert not info["verdict"].correct


def test_illegal_move_loses_by_default():
    env = NimEnv()
    _, info = env.reset(seed=3)
    mover = info["player"]
    _obs, reward, terminated, truncated, info = env.step("Move: 9 9")
    assert (reward, terminated, truncated) == (0.0, True, False)
    assert info["rewards"][mover] == 0.0 and info["rewards"][1 - mover] == 1.0
    assert "Illegal move" in info["verdict"].feedback and "loses" in info["verdict"].feedback
    assert "stop_reason" not in info  # readable, just illegal
    env.reset(seed=3)
    *_, info = env.step("no idea")
    assert info["stop_reason"] == "parse_error"


def test_illegal_moves_with_retry_get_feedback_then_lose():
    env = TicTacToeEnv(illegal="retry", max_illegal=2, start="initial")
    env.reset(seed=0)
    env.step("Move: 5")  # X
    for left in (2, 1):
        obs, reward, terminated, _, info = env.step("Move: 5")  # O tries a taken cell
        assert not terminated and reward == 0.0 and info["player"] == 1
        assert "already taken" in obs and f"{left} more illegal" in obs
        assert "verdict" not in info
    obs, reward, terminated, _, info = env.step("")  # third illegal move: O loses
    assert terminated and reward == 0.0 and info["rewards"] == [1.0, 0.0]


@pytest.mark.parametrize(
    "action",
    ["", " ", "x" * (1 << 20), "答案是五 🙂", "\x00\x1b[31m", '<tool_call>{"name":</tool_call>'],
)
def test_bad_actions_never_crash_a_game(action):
    for env in (TicTacToeEnv(), NimEnv(illegal="retry")):
        env.reset(seed=1)
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and obs and reward == 0.0 and not truncated
        if terminated:
            assert info["verdict"].feedback


def test_same_seed_same_game_and_replay():
    a, b = NimEnv(start="initial", difficulty=3), NimEnv(start="initial", difficulty=3)
    rnd = {p: (lambda e: random_opponent(_view(e))) for p in (0, 1)}
    for seed in range(3):
        ra, ia, ta = _play(a, rnd, seed)
        rb, ib, tb = _play(b, rnd, seed)
        assert ta == tb and ra == rb and ia["rewards"] == ib["rewards"]
    starts = {a.reset(seed=s)[0] for s in range(10)}
    assert len(starts) > 5  # seeds give different positions


def _view(env):
    return OpponentView(env.game, env.state, "", env.np_random)


# ------------------------------------------------------------------ fixed opponents ---


@pytest.mark.parametrize("make", [tictactoe_vs_opponent, nim_vs_opponent])
def test_the_oracle_beats_the_optimal_opponent(make):
    env = make("optimal", difficulty=2)
    for seed in range(5):
        _, info = env.reset(seed=seed)
        assert info["player"] == info["seat"]
        while True:
            _obs, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
            if terminated or truncated:
                break
            assert info["player"] == info["seat"]  # the agent only sees its own turns
        assert reward == 1.0 and info["verdict"].correct


def test_a_blunder_against_the_optimal_opponent_loses():
    env = nim_vs_opponent("optimal", difficulty=2)
    env.reset(seed=0)
    inner = env.unwrapped
    blunder = next(m for m in NIM.legal_moves(inner.state) if m not in NIM.best_moves(inner.state))
    _, reward, terminated, truncated, info = env.step(f"Move: {blunder}")
    while not (terminated or truncated):
        # any play after a blunder loses against perfect play
        _obs, reward, terminated, truncated, info = env.step(
            f"Move: {NIM.legal_moves(inner.state)[0]}"
        )
    assert reward == 0.0 and info["rewards"][info["seat"]] == 0.0
    assert isinstance(info["verdict"], Verdict) and not info["verdict"].correct
    assert "lose" in info["verdict"].feedback.lower()


def test_the_opponent_moves_first_when_the_agent_takes_the_second_seat():
    env = tictactoe_vs_opponent("random", seat=1, start="initial")
    obs, info = env.reset(seed=4)
    assert info["seat"] == 1 and info["player"] == 1
    assert env.unwrapped.state.board.count("X") == 1 and "You play O" in obs


def test_opponent_policy_can_be_any_callable():
    calls = []

    def first_legal(view):
        calls.append(view.observation)
        return "Move: " + view.game.legal_moves(view.state)[0]

    env = VsOpponent(TicTacToeEnv(start="initial"), first_legal)
    env.reset(seed=0)
    env.step("Move: 5")
    assert len(calls) == 1 and "You play O" in calls[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: TicTacToeEnv(illegal="retry", difficulty=2),
        lambda: NimEnv(start="initial", illegal="retry"),
        lambda: tictactoe_vs_opponent("optimal", difficulty=3),
        lambda: nim_vs_opponent("random"),
    ],
)
def test_variants_conform(make):
    assert check_env(make(), seeds=(0, 1, 2)) == []


# ------------------------------------------------------------------- proposer-solver ---


def test_learnability_reward_is_absolute_zeros():
    assert learnability_reward([True] * 4) == 0.0
    assert learnability_reward([False] * 4) == 0.0
    assert learnability_reward([]) == 0.0
    assert learnability_reward([True, False, False, False]) == pytest.approx(0.75)
    assert learnability_reward([True, True, True, False]) == pytest.approx(0.25)


def _proposal(env, text):
    env.reset(seed=0)
    return env.step(text)


def test_oracle_solver_earns_one_and_the_trivial_proposal_earns_nothing():
    env = ProposeSolveEnv("arithmetic", n_solves=3)
    obs, info = env.reset(seed=5)
    assert info["role"] == "proposer" and "Expression:" in obs
    rewards = []
    while True:
        obs, reward, terminated, truncated, info = env.step(env.oracle_action())
        rewards.append(reward)
        if terminated or truncated:
            break
        assert info["role"] == "solver"
    assert rewards == [0.0, 0.0, 0.0, 1.0]
    assert info["rewards"] == {"proposer": 0.0, "solver": 1.0}
    assert info["verdict"].correct and info["solver_results"] == [True] * 3


def test_a_learnable_proposal_earns_one_minus_the_success_rate():
    env = ProposeSolveEnv("arithmetic", n_solves=4, reward_role="proposer")
    obs, _, _, _, info = _proposal(env, "Expression: (17 * 23) - 4 * (9 + 3)")
    assert "Compute the exact value of (17 * 23) - 4 * (9 + 3)" in obs
    assert info["privileged"].endswith("343")
    for answer in ("343", "342", "Answer: 343", "three hundred"):
        obs, reward, terminated, _, info = env.step(answer)
    assert terminated and info["solver_results"] == [True, False, True, False]
    assert reward == pytest.approx(0.5) and info["rewards"]["proposer"] == pytest.approx(0.5)
    assert info["verdict"].correct  # learnable


def test_python_proposals_run_in_the_sandbox():
    env = ProposeSolveEnv("python", n_solves=2)
    code = (
        "```python\ndef f(xs, k):\n    return [x * k for x in xs][::-1]\n```\nInput: [1, 2, 3], 2"
    )
    obs, _, terminated, _, info = _proposal(env, code)
    assert not terminated and "What does `f([1, 2, 3], 2)` return?" in obs
    assert info["privileged"].endswith("[6, 4, 2]")
    obs, reward, terminated, _, info = env.step("Answer: (6, 4, 2)")  # a tuple reads as a list
    obs, reward, terminated, _, info = env.step("Answer: [6, 4, 2]")
    assert terminated and reward == 1.0


@pytest.mark.parametrize(
    ("kind", "text", "why"),
    [
        ("arithmetic", "I propose nothing", "no `Expression"),
        ("arithmetic", "Expression: 7", "at least 2 operators"),
        ("arithmetic", "Expression: 1 / (3 - 3) + 1", "division by zero"),
        ("arithmetic", "Expression: __import__('os').system('x') + 1 + 2", "not allowed"),
        ("arithmetic", "Expression: 10 ** 99 + 1 + 1", "larger than"),
        (
            "python",
            "```python\ndef g(x):\n    return x\n```\nInput: 1",
            "define a top-level function `f`",
        ),
        ("python", "```python\ndef f(x):\n    return x\n```", "no `Input"),
        (
            "python",
            "```python\ndef f(x):\n    return x\n```\nInput: os.getcwd()",
            "not a list of Python literals",
        ),
        ("python", "```python\ndef f(x):\n    while True: pass\n```\nInput: 1", "running f failed"),
        (
            "python",
            "```python\nimport random\ndef f(x):\n    return random.random()\n```\nInput: 1",
            "not deterministic",
        ),
        ("python", "```python\ndef f(x):\n    return {1, 2}\n```\nInput: 1", "running f failed"),
        ("python", "```python\ndef f(x):\n    return 1/x\n```\nInput: 0", "ZeroDivisionError"),
    ],
)
def test_invalid_proposals_end_with_zero_and_say_why(kind, text, why):
    env = ProposeSolveEnv(kind)
    _obs, reward, terminated, truncated, info = _proposal(env, text)
    assert terminated and not truncated and reward == 0.0
    assert info["rewards"] == {"proposer": 0.0, "solver": 0.0}
    assert why in info["verdict"].feedback, info["verdict"].feedback


def test_garbage_from_the_solver_is_a_failed_try():
    env = ProposeSolveEnv("arithmetic", n_solves=3)
    _proposal(env, "Expression: 2 * 3 + 6")
    for reply in ("x" * (1 << 20), "", "Answer: 12"):
        *_, terminated, _, info = env.step(reply)
    assert terminated and info["solver_results"] == [False, False, True]
    assert info["rewards"]["proposer"] == pytest.approx(2 / 3)


def test_a_forged_result_line_is_not_read():
    env = ProposeSolveEnv("python", n_solves=1)
    forged = (
        '```python\nimport os, sys\ndef f(x):\n    print(\'\\nabc["1", "1"]\')\n'
        "    sys.stdout.flush()\n    os._exit(0)\n```\nInput: 1"
    )
    *_, info = _proposal(env, forged)
    assert info["verdict"].details.get("invalid")  # the nonce line never came


def test_independent_solver_callable_pays_the_proposer():
    replies = iter(["Answer: 12", "Answer: 13", "Answer: 12", "Answer: 12"])
    env = ProposeSolveEnv("arithmetic", n_solves=4, solver=lambda q: next(replies))
    _obs, reward, terminated, _, info = _proposal(env, "Expression: 2 * 3 + 6")
    assert terminated and info["solver_results"] == [True, False, True, True]
    assert reward == pytest.approx(0.25) and info["rewards"]["solver"] == pytest.approx(0.75)


def test_solver_answers_are_compared_by_value():
    from opd_selfplay.envs.propose_solve import _parse_arithmetic

    third = _parse_arithmetic("Expression: 1 / 3 + 2", min_ops=2)
    for ok in ("Answer: 7/3", "Answer: 2.3333333333333", "7/3."):
        assert check_answer(third, ok), ok
    for bad in ("Answer: 2.33", "Answer: 7/4", "", "Answer: " + "9" * 5000):
        assert not check_answer(third, bad), bad


@pytest.mark.parametrize("kind", ["arithmetic", "python"])
def test_propose_solve_variants_conform(kind):
    assert check_env(ProposeSolveEnv(kind, n_solves=2), seeds=(0, 1, 2)) == []
