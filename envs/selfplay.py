"""Self-play envs: two-player games whose seats are both played by policies, and a wrapper that
plays one seat with a fixed opponent.

**Two-player API** (`TwoPlayerEnv`, registered as `opd/TicTacToe-v0` and `opd/Nim-v0`). A
single-agent rollout engine drives it unchanged: each `step(action)` is the move of the player
whose turn it is, and the observation it returns is addressed to the player who moves next.

- `info["player"]`: the player (0 or 1) to move next, whom the observation addresses (in
  reset's info: who moves first). `info["mover"]`: who made this step's move (step only).
- `info["rewards"]`: `[reward of player 0, reward of player 1]`: `[0, 0]` while the game goes
  on; at the end 1 for a win, 0.5 each for a draw, 0 for a loss.
- The step reward is the **mover's** reward, paid on the step that ends the game (0 before),
  with the mover's `Verdict` in `info["verdict"]`. So the episode return is the outcome of the
  player who made the last move: the winner's 1 in a decided game (the winner moves last in
  both games), 0.5 in a draw, 0 when the last move was illegal. A trainer that credits each
  seat reads `info["rewards"]` and `info["mover"]` of each turn.
- Illegal moves (`illegal=`): `"loss"` (default): the mover loses at once; `"retry"`: the
  mover gets feedback and moves again, and loses at its `max_illegal + 1`-th illegal move.
- Start positions (`start=`): `"puzzle"` (default): a seeded position where the player to
  move can force a win (`difficulty` makes the win longer), so perfect play earns 1 and the
  oracle check is meaningful; `"initial"`: the usual opening (Nim: random heaps), for open
  self-play.
- `info["privileged"]`: the best moves in the current position and their game value, plus the
  feedback on the last move (a self-teacher's context; never shown to the players).
- `oracle_action()`: a best move for the player to move (perfect play); `wrong_action()`: a
  reply that names no move (an illegal move).

**Against a fixed opponent** (`VsOpponent`): a `gymnasium.Wrapper` that plays every turn of
the other seat with an opponent callable (`random_opponent`, `optimal_opponent`, or any
`(OpponentView) -> text`, e.g. a frozen policy), so the agent sees only its own turns; its
reward is its own outcome. `tictactoe_vs_opponent(...)`/`nim_vs_opponent(...)` build one (they
are factories `gymnasium.register` can point at).

Not covered: simultaneous-move games, more than two players, Elo or league bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

from opd_selfplay.verifiers.verdict import Verdict

from .base import Observation, Reply, TextTaskEnv
from .games import (
    Game,
    IllegalMove,
    Nim,
    Opponent,
    OpponentView,
    TicTacToe,
    extract_move_text,
    optimal_opponent,
    random_opponent,
)
from .tasks import ProceduralSource, Task

__all__ = [
    "NimEnv",
    "TicTacToeEnv",
    "TwoPlayerEnv",
    "VsOpponent",
    "nim_vs_opponent",
    "optimal_opponent",
    "random_opponent",
    "tictactoe_vs_opponent",
]

IllegalRule = Literal["loss", "retry"]


def _value_word(game: Game, state: object) -> str:
    best = game.best_moves(state)
    if not best:
        return "the game is over"
    after = game.apply(state, best[0])
    # Play the line out with perfect play on both sides to name the value.
    while game.outcome(after) is None:
        after = game.apply(after, game.best_moves(after)[0])
    outcome = game.outcome(after)
    assert outcome is not None
    mine = outcome[game.to_move(state)]
    return {1.0: "a win", 0.5: "a draw", 0.0: "a loss"}[mine] + " with perfect play"


class TwoPlayerEnv(TextTaskEnv):
    """A two-player game where each step is the move of the player to move (see the module
    docstring for `info`, rewards and the illegal-move rules).

    Args:
        game: The rules (`games.TicTacToe()`, `games.Nim()`, or any `games.Game`).
        start: `"puzzle"` (the player to move can force a win) or `"initial"`.
        difficulty: Puzzle length (tic-tac-toe: moves to the forced win, 1-3; Nim: heap count
            and size).
        illegal: `"loss"` or `"retry"`.
        max_illegal: With `"retry"`, illegal moves forgiven per player before the next loses.
        max_turns: Steps before truncation (None: the game's own length bounds the episode).
        render_mode: None or "ansi".
    """

    def __init__(
        self,
        game: Game,
        *,
        start: Literal["puzzle", "initial"] = "puzzle",
        difficulty: int = 1,
        illegal: IllegalRule = "loss",
        max_illegal: int = 2,
        max_turns: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        if start not in ("puzzle", "initial"):
            raise ValueError(f"start must be 'puzzle' or 'initial', got {start!r}")
        if illegal not in ("loss", "retry"):
            raise ValueError(f"illegal must be 'loss' or 'retry', got {illegal!r}")
        if int(max_illegal) < 0:
            raise ValueError(f"max_illegal must be >= 0, got {max_illegal!r}")
        self.game = game
        self.start = start
        self.illegal = illegal
        self.max_illegal = int(max_illegal)
        # Actions over 1 MB are still parsed (only their tail is read), so that an oversized
        # reply is an illegal move with the game's rules rather than the base class's
        # "too long" failure, which would not know whose loss it is.
        super().__init__(
            ProceduralSource(self._generate, int(difficulty)),
            max_attempts=1,
            max_turns=max_turns,
            max_action_chars=1 << 21,
            render_mode=render_mode,
        )
        self._state: object | None = None
        self._illegal_count = [0, 0]
        self._rewards = [0.0, 0.0]
        self._mover: int | None = None

    # ----------------------------------------------------------------------- tasks ---
    def _generate(self, rng: np.random.Generator, difficulty: int) -> Task:
        state = self.game.start(rng, self.start, difficulty)
        best = self.game.best_moves(state)
        encoded = self.game.encode(state)
        key = "-".join(str(v) for v in encoded.values()).replace(" ", "")
        return Task(
            prompt=self.game.rules(),
            reference={"best_moves": best},
            id=f"{self.game.name}-{self.start}-{key}",
            solution=f"Move: {best[0]}",
            metadata={
                "game": self.game.name,
                "start": self.start,
                "difficulty": difficulty,
                "state": encoded,
            },
        )

    @property
    def state(self) -> object:
        """The current position (decoded from the task at the start of an episode)."""
        if self._state is None:
            assert self.task is not None, "call reset() first"
            self._state = self.game.decode(dict(self.task.metadata["state"]))
        return self._state

    @property
    def to_move(self) -> int:
        """The player whose turn it is."""
        return self.game.to_move(self.state)

    # -------------------------------------------------------------------- TextTaskEnv ---
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        self._state = None
        self._illegal_count = [0, 0]
        self._rewards = [0.0, 0.0]
        self._mover = None
        return super().reset(seed=seed, options=options)

    def render_prompt(self, task: Task) -> str:
        state = self.game.decode(dict(task.metadata["state"]))
        player = self.game.to_move(state)
        return f"{self.game.rules()}\n\n{self.game.render(state, player)}\nYour move."

    def reference_text(self, task: Task) -> str:
        moves = task.reference.get("best_moves", []) if isinstance(task.reference, dict) else []
        return "best first moves: " + ", ".join(str(m) for m in moves)

    def render_privileged(self, task: Task, feedback: str) -> str:
        state = self.state
        name = self.game.seat_names[self.game.to_move(state)]
        if self.game.outcome(state) is None:
            moves = ", ".join(self.game.best_moves(state))
            text = f"Best moves for {name} here: {moves} ({_value_word(self.game, state)})."
        else:
            text = "The game is over."
        if feedback:
            text += f"\nFeedback on the last move: {feedback}"
        return text

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        info["player"] = self.to_move
        info["rewards"] = list(self._rewards)
        info["legal_moves"] = self.game.legal_moves(self.state)
        if self._mover is not None:
            info["mover"] = self._mover
        return info

    def respond(self, action: str) -> Reply:
        game, state = self.game, self.state
        player = game.to_move(state)
        self._mover = player
        try:
            move = game.parse_move(state, extract_move_text(action))
        except IllegalMove as exc:
            return self._illegal_move(player, str(exc), exc.unreadable)
        state = game.apply(state, move)
        self._state = state
        me, other = game.seat_names[player], game.seat_names[1 - player]
        outcome = game.outcome(state)
        if outcome is not None:
            self._rewards = list(outcome)
            score = outcome[player]
            word = {1.0: "wins", 0.5: "draws", 0.0: "loses"}[score]
            verdict = Verdict(
                score=score,
                correct=score == 1.0,
                feedback=f"{me} played {move} and {word} the game.",
                details={"move": move, "rewards": list(outcome), "mover": player},
            )
            final = f"{me} played {move}.\n{game.render(state, player)}\nGame over: {me} {word}."
            return Reply(verdict=verdict, observation=final, done=True)
        nxt = game.to_move(state)
        return Reply(
            observation=f"{me} played {move}.\n{game.render(state, nxt)}\nYour move ({other})."
        )

    def _illegal_move(self, player: int, reason: str, unreadable: bool) -> Reply:
        self._illegal_count[player] += 1
        name = self.game.seat_names[player]
        if self.illegal == "retry" and self._illegal_count[player] <= self.max_illegal:
            left = self.max_illegal - self._illegal_count[player] + 1
            return Reply(
                observation=(
                    f"Illegal move: {reason}. {name}, move again ({left} more illegal "
                    f"move{'s' if left != 1 else ''} lose{'s' if left == 1 else ''} the game).\n"
                    f"{self.game.render(self.state, player)}"
                )
            )
        self._rewards = [0.0, 0.0]
        self._rewards[1 - player] = 1.0
        verdict = Verdict.fail(
            f"Illegal move: {reason}. {name} loses the game.",
            illegal=True,
            rewards=list(self._rewards),
            mover=player,
            parse_error=unreadable,
        )
        return Reply(verdict=verdict, done=True, parse_error=unreadable)

    def oracle_action(self) -> str | None:
        """A best move for the player to move, as `Move: ...` (None once the game is over)."""
        if self.task is None or self._done:
            return None
        best = self.game.best_moves(self.state)
        return f"Move: {best[0]}" if best else None

    def wrong_action(self) -> str | None:
        """A reply that names no move: an illegal move, which loses (or, with `"retry"`,
        loses once the forgiven ones are spent)."""
        return "I pass this turn."


class TicTacToeEnv(TwoPlayerEnv):
    """Two-player tic-tac-toe, both seats played by policies (`opd/TicTacToe-v0`).

    Args: as `TwoPlayerEnv`, without `game`. Default start: a puzzle where the player to move
    wins in one move (`difficulty=2`: a fork; 3: three moves).
    """

    metadata = {"render_modes": ["ansi"], "description": "two-player tic-tac-toe"}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(TicTacToe(), **kwargs)


class NimEnv(TwoPlayerEnv):
    """Two-player Nim (normal play), both seats played by policies (`opd/Nim-v0`).

    Args: as `TwoPlayerEnv`, without `game`. `difficulty` sets the heaps: 1 + difficulty heaps
    (at most 5) of up to 3 + 2 * difficulty objects.
    """

    metadata = {"render_modes": ["ansi"], "description": "two-player Nim"}  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Nim(), **kwargs)


class VsOpponent(gym.Wrapper):
    """One seat of a `TwoPlayerEnv` played by a fixed opponent; the agent plays the other.

    The opponent's moves happen inside `reset` (when it moves first) and `step`; the agent
    sees only observations addressed to it. Reward: the agent's outcome (1 win, 0.5 draw, 0
    loss) on the step that ends the game. `info["verdict"]` at the end is from the agent's
    side, also when the opponent made the last move. `env.unwrapped.oracle_action()` is a best
    move for the agent, since it is always the agent's turn between steps.

    Args:
        env: The two-player env.
        opponent: `(OpponentView) -> move text`; draws randomness from `view.rng`, the env's
            seeded generator, so episodes are reproducible.
        seat: The agent's seat: 0, 1, or `"first"` (whoever moves first; the default, which
            with puzzle starts gives the agent the forced win).
    """

    def __init__(
        self,
        env: TwoPlayerEnv,
        opponent: Opponent = optimal_opponent,
        seat: int | Literal["first"] = "first",
    ) -> None:
        super().__init__(env)
        if not isinstance(env.unwrapped, TwoPlayerEnv):
            raise TypeError(f"VsOpponent needs a TwoPlayerEnv, got {type(env.unwrapped).__name__}")
        if seat not in (0, 1, "first"):
            raise ValueError(f"seat must be 0, 1 or 'first', got {seat!r}")
        self.opponent = opponent
        self.seat_option = seat
        self.seat = 0

    def _opponent_turns(
        self, obs: Observation, info: dict[str, Any]
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        inner: TwoPlayerEnv = self.env.unwrapped  # type: ignore[assignment]
        terminated = truncated = False
        reward: SupportsFloat = 0.0
        while not (terminated or truncated) and inner.to_move != self.seat:
            view = OpponentView(
                game=inner.game,
                state=inner.state,
                observation=obs if isinstance(obs, str) else str(obs),
                rng=inner.np_random,
            )
            obs, reward, terminated, truncated, info = self.env.step(self.opponent(view))
        return obs, float(reward), terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        inner: TwoPlayerEnv = self.env.unwrapped  # type: ignore[assignment]
        self.seat = inner.to_move if self.seat_option == "first" else int(self.seat_option)
        obs, _, terminated, truncated, info = self._opponent_turns(obs, info)
        if terminated or truncated:
            raise RuntimeError(
                "VsOpponent.reset: the game ended before the agent's first move (the opponent "
                "made an illegal opening move); fix the opponent callable"
            )
        info["seat"] = self.seat
        return obs, info

    def step(self, action: str) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = self.env.step(action)
        if not (terminated or truncated):
            obs, _, terminated, truncated, info = self._opponent_turns(obs, info)
        reward = 0.0
        if terminated:
            reward = float(info["rewards"][self.seat])
            if info.get("mover") != self.seat:
                info["verdict"] = _agent_verdict(reward, info.get("verdict"))
        info["seat"] = self.seat
        return obs, reward, terminated, truncated, info


def _agent_verdict(reward: float, opponent_verdict: object) -> Verdict:
    """The agent's verdict when the opponent's move ended the game."""
    why = opponent_verdict.feedback if isinstance(opponent_verdict, Verdict) else ""
    word = {1.0: "You win", 0.5: "Draw", 0.0: "You lose"}.get(reward, "Game over")
    return Verdict(
        score=reward,
        correct=reward == 1.0,
        feedback=f"{word}: the opponent's last move ended the game. {why}".strip(),
        details={"opponent_last": True},
    )


_OPPONENTS: Mapping[str, Opponent] = {"optimal": optimal_opponent, "random": random_opponent}


def _opponent(opponent: str | Opponent) -> Opponent:
    if callable(opponent):
        return opponent
    if opponent not in _OPPONENTS:
        raise ValueError(
            f"opponent must be a callable or one of {list(_OPPONENTS)}, got {opponent!r}"
        )
    return _OPPONENTS[opponent]


def tictactoe_vs_opponent(
    opponent: str | Opponent = "optimal", seat: int | Literal["first"] = "first", **kwargs: Any
) -> VsOpponent:
    """Tic-tac-toe against a fixed opponent (`"optimal"`, `"random"` or a callable).

    Args:
        opponent: the opponent policy.
        seat: the agent's seat (see `VsOpponent`).
        **kwargs: passed to `TicTacToeEnv`.

    Returns:
        The wrapped env.
    """
    return VsOpponent(TicTacToeEnv(**kwargs), _opponent(opponent), seat)


def nim_vs_opponent(
    opponent: str | Opponent = "optimal", seat: int | Literal["first"] = "first", **kwargs: Any
) -> VsOpponent:
    """Nim against a fixed opponent (`"optimal"`, `"random"` or a callable); see
    `tictactoe_vs_opponent`."""
    return VsOpponent(NimEnv(**kwargs), _opponent(opponent), seat)
