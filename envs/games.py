"""Two-player game rules for the self-play envs: tic-tac-toe and Nim, plus fixed opponents.

What: each game is pure logic over immutable states (no RNG inside, no text I/O beyond
rendering and parsing a move): who is to move, the legal moves, applying a move, the outcome,
the optimal moves (exact game-tree values), and seeded start positions, either the usual
opening or a *puzzle*: a position where the player to move can force a win. Opponents are
callables `(OpponentView) -> move text`: `random_opponent` and `optimal_opponent`.

Why separate from the env (`selfplay.py`): the env owns turns, illegal-move rules, rewards and
`info`; the rules here are reused by the opponents, the oracle and the tests.

Not covered: games with hidden information or chance, more than two players.

Move formats (what an agent writes; the last `Move: ...` wins, else the whole reply):
- tic-tac-toe: a cell number 1-9, numbered left to right, top to bottom (`Move: 5`).
- Nim: a heap number and how many objects to take from it (`Move: 2 3` takes 3 from heap 2).
  Normal play: whoever takes the last object wins.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "Game",
    "IllegalMove",
    "Nim",
    "NimState",
    "OpponentView",
    "TTTState",
    "TicTacToe",
    "extract_move_text",
    "optimal_opponent",
    "random_opponent",
]

_MOVE_RE = re.compile(r"(?i)\bmove\s*[:=]?\s*([^\n]{1,40})")


class IllegalMove(ValueError):
    """A reply that names no move (`unreadable`) or an illegal one; the message is one line
    for the player."""

    def __init__(self, message: str, *, unreadable: bool = False) -> None:
        super().__init__(message)
        self.unreadable = unreadable


def extract_move_text(action: str) -> str:
    """The part of a reply that names the move: after the last `Move:`, else the whole reply.

    Args:
        action: the model's reply (any text).

    Returns:
        A short string for the game's parser (at most 200 characters).
    """
    found = _MOVE_RE.findall(action[-20_000:])
    if found:
        return found[-1].strip()
    return action.strip()[-200:]


class Game(Protocol):
    """The rules a two-player env needs. States are immutable and hashable."""

    name: str
    """Short name, used in task ids and messages."""
    seat_names: tuple[str, str]
    """How the two players are called in messages (player 0 moves first in the opening)."""

    def start(self, rng: np.random.Generator, mode: str, difficulty: int) -> object:
        """A start position: `mode="initial"` (the usual opening, randomised where the game
        has parameters) or `"puzzle"` (the player to move can force a win; `difficulty` makes
        the win longer)."""
        ...

    def to_move(self, state: object) -> int:
        """0 or 1: the player whose turn it is."""
        ...

    def legal_moves(self, state: object) -> list[str]:
        """Canonical move strings, in a fixed order."""
        ...

    def parse_move(self, state: object, text: str) -> str:
        """The canonical move a reply names; raises `IllegalMove` with a one-line reason when
        it names none (`unreadable=True`) or an illegal one."""
        ...

    def apply(self, state: object, move: str) -> object:
        """The state after a legal canonical move."""
        ...

    def outcome(self, state: object) -> tuple[float, float] | None:
        """(score of player 0, score of player 1) in [0, 1] once over (1 win, 0.5 draw, 0
        loss); None while the game goes on."""
        ...

    def best_moves(self, state: object) -> list[str]:
        """The moves that keep the best game-theoretic value for the player to move."""
        ...

    def rules(self) -> str:
        """The rules and the reply format, for the first message."""
        ...

    def encode(self, state: object) -> dict:
        """The state as JSON (stored in a task's metadata)."""
        ...

    def decode(self, data: dict) -> object:
        """Inverse of `encode`; raises `ValueError` on a malformed state."""
        ...

    def render(self, state: object, player: int) -> str:
        """The position as text, addressed to `player`."""
        ...


# ---------------------------------------------------------------------------- tic-tac-toe ---

_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_MARKS = ("X", "O")


@dataclass(frozen=True)
class TTTState:
    """A tic-tac-toe position."""

    board: str
    """Nine characters, `X`, `O` or `.`, row by row."""

    @property
    def player(self) -> int:
        """X (player 0) moves when the counts are equal."""
        return 0 if self.board.count("X") == self.board.count("O") else 1


def _winner(board: str) -> str | None:
    for a, b, c in _LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return None


@functools.cache
def _ttt_value(board: str) -> int:
    """Exact minimax value for the player to move: a win is worth 1 + the empty cells left
    when it happens (so faster wins are worth more), a loss the negative of that, a draw 0."""
    if _winner(board) is not None:  # the previous player just won
        return -(1 + board.count("."))
    if "." not in board:
        return 0
    mark = "X" if board.count("X") == board.count("O") else "O"
    return max(
        -_ttt_value(board[:i] + mark + board[i + 1 :]) for i, c in enumerate(board) if c == "."
    )


class TicTacToe:
    """Tic-tac-toe on a 3x3 board; X (player 0) moves first."""

    name = "tictactoe"
    seat_names = ("X", "O")

    def start(self, rng: np.random.Generator, mode: str, difficulty: int) -> TTTState:
        if mode == "initial":
            return TTTState("." * 9)
        if mode != "puzzle":
            raise ValueError(f"tictactoe: start mode must be 'initial' or 'puzzle', got {mode!r}")
        pool = _ttt_puzzles(max(1, min(int(difficulty), 3)))
        return TTTState(pool[int(rng.integers(len(pool)))])

    def to_move(self, state: TTTState) -> int:
        return state.player

    def legal_moves(self, state: TTTState) -> list[str]:
        if self.outcome(state) is not None:
            return []
        return [str(i + 1) for i, c in enumerate(state.board) if c == "."]

    def parse_move(self, state: TTTState, text: str) -> str:
        m = re.fullmatch(r"\s*\(?\s*(?:cell\s*)?([1-9])\s*\)?\s*[.!]?\s*", text, re.IGNORECASE)
        if m is None:
            raise IllegalMove(
                f"could not read a cell number 1-9 from {text[:40]!r}", unreadable=True
            )
        cell = m.group(1)
        if state.board[int(cell) - 1] != ".":
            raise IllegalMove(f"cell {cell} is already taken")
        return cell

    def apply(self, state: TTTState, move: str) -> TTTState:
        i = int(move) - 1
        return TTTState(state.board[:i] + _MARKS[state.player] + state.board[i + 1 :])

    def outcome(self, state: TTTState) -> tuple[float, float] | None:
        w = _winner(state.board)
        if w == "X":
            return (1.0, 0.0)
        if w == "O":
            return (0.0, 1.0)
        if "." not in state.board:
            return (0.5, 0.5)
        return None

    def best_moves(self, state: TTTState) -> list[str]:
        moves = self.legal_moves(state)
        if not moves:
            return []
        values = {m: -_ttt_value(self.apply(state, m).board) for m in moves}
        top = max(values.values())
        return [m for m in moves if values[m] == top]

    def rules(self) -> str:
        return (
            "Tic-tac-toe. Players alternate placing their mark (X or O) in an empty cell; three "
            "in a row, column or diagonal wins. Cells are numbered 1-9, left to right, top to "
            "bottom. Reply with your move as `Move: N`."
        )

    def encode(self, state: TTTState) -> dict:
        return {"board": state.board}

    def decode(self, data: dict) -> TTTState:
        board = data.get("board") if isinstance(data, dict) else None
        if not isinstance(board, str) or len(board) != 9 or set(board) - set("XO."):
            raise ValueError(f"tictactoe: state must be {{'board': 9 of X/O/.}}, got {data!r:.80}")
        if board.count("X") - board.count("O") not in (0, 1):
            raise ValueError(f"tictactoe: impossible board {board!r} (X moves first)")
        return TTTState(board)

    def render(self, state: TTTState, player: int) -> str:
        rows = []
        for r in range(3):
            cells = [
                state.board[3 * r + c] if state.board[3 * r + c] != "." else str(3 * r + c + 1)
                for c in range(3)
            ]
            rows.append(" " + " | ".join(cells))
        board = "\n---+---+---\n".join(rows)
        return f"{board}\nYou play {_MARKS[player]}."


@functools.lru_cache(maxsize=4)
def _ttt_puzzles(difficulty: int) -> tuple[str, ...]:
    """Every reachable open position where the player to move forces a win with their
    `difficulty`-th own move at the latest against perfect defence (1: a win in one move;
    2: a fork or a threat that forces one), and no sooner."""
    seen: set[str] = set()
    out: list[str] = []
    frontier = ["." * 9]
    while frontier:
        nxt = []
        for board in frontier:
            if board in seen or _winner(board) is not None or "." not in board:
                continue
            seen.add(board)
            if _plies_to_forced_win(board) == 2 * difficulty - 1:
                out.append(board)
            mark = "X" if board.count("X") == board.count("O") else "O"
            nxt.extend(board[:i] + mark + board[i + 1 :] for i, c in enumerate(board) if c == ".")
        frontier = nxt
    return tuple(sorted(out))


def _plies_to_forced_win(board: str) -> int | None:
    """Plies (both players' moves) until the forced win, or None when there is none."""
    value = _ttt_value(board)
    if value <= 0:
        return None
    return board.count(".") - (value - 1)


# ------------------------------------------------------------------------------------ Nim ---


@dataclass(frozen=True)
class NimState:
    """A Nim position."""

    heaps: tuple[int, ...]
    """Objects left in each heap."""
    player: int = 0
    """The player to move."""


class Nim:
    """Nim, normal play: take one or more objects from one heap; taking the last object wins."""

    name = "nim"
    seat_names = ("player 1", "player 2")

    def start(self, rng: np.random.Generator, mode: str, difficulty: int) -> NimState:
        if mode not in ("initial", "puzzle"):
            raise ValueError(f"nim: start mode must be 'initial' or 'puzzle', got {mode!r}")
        n_heaps = 2 + max(0, min(int(difficulty), 4) - 1)  # 2..5 heaps
        top = 3 + 2 * max(1, int(difficulty))
        while True:
            heaps = tuple(int(h) for h in rng.integers(1, top + 1, size=n_heaps))
            if mode == "initial" or _xor(heaps) != 0:
                return NimState(heaps, 0)

    def to_move(self, state: NimState) -> int:
        return state.player

    def legal_moves(self, state: NimState) -> list[str]:
        return [f"{h + 1} {k}" for h, n in enumerate(state.heaps) for k in range(1, n + 1)]

    def parse_move(self, state: NimState, text: str) -> str:
        nums = re.findall(r"\d{1,6}", text)
        named = re.search(r"(?i)heap\s*#?\s*(\d{1,6})", text)
        if named is not None and len(nums) >= 2:  # "take 2 from heap 1": the heap is named
            rest = list(nums)
            rest.remove(named.group(1))
            nums = [named.group(1), rest[0]]
        if len(nums) < 2:
            raise IllegalMove(
                f"could not read `HEAP COUNT` (two numbers) from {text[:40]!r}; "
                "e.g. `Move: 2 3` takes 3 from heap 2",
                unreadable=True,
            )
        heap, count = int(nums[0]), int(nums[1])
        if not 1 <= heap <= len(state.heaps):
            raise IllegalMove(f"there is no heap {heap}; heaps are 1-{len(state.heaps)}")
        if state.heaps[heap - 1] == 0:
            raise IllegalMove(f"heap {heap} is empty")
        if not 1 <= count <= state.heaps[heap - 1]:
            raise IllegalMove(f"heap {heap} has {state.heaps[heap - 1]}; take 1 to that many")
        return f"{heap} {count}"

    def apply(self, state: NimState, move: str) -> NimState:
        heap, count = (int(x) for x in move.split())
        heaps = list(state.heaps)
        heaps[heap - 1] -= count
        return NimState(tuple(heaps), 1 - state.player)

    def outcome(self, state: NimState) -> tuple[float, float] | None:
        if any(state.heaps):
            return None
        # The previous player took the last object and won.
        return (1.0, 0.0) if state.player == 1 else (0.0, 1.0)

    def best_moves(self, state: NimState) -> list[str]:
        x = _xor(state.heaps)
        if x == 0:  # every move loses against perfect play: all are equally good
            return self.legal_moves(state)
        return [f"{h + 1} {n - (n ^ x)}" for h, n in enumerate(state.heaps) if n ^ x < n]

    def rules(self) -> str:
        return (
            "Nim. Players alternate taking one or more objects from a single heap; whoever "
            "takes the last object wins. Reply with your move as `Move: HEAP COUNT` "
            "(e.g. `Move: 2 3` takes 3 objects from heap 2)."
        )

    def encode(self, state: NimState) -> dict:
        return {"heaps": list(state.heaps), "player": state.player}

    def decode(self, data: dict) -> NimState:
        heaps = data.get("heaps") if isinstance(data, dict) else None
        player = data.get("player", 0) if isinstance(data, dict) else None
        if (
            not isinstance(heaps, list)
            or not heaps
            or not all(isinstance(h, int) and 0 <= h <= 10_000 for h in heaps)
            or player not in (0, 1)
        ):
            raise ValueError(
                f"nim: state must be {{'heaps': [ints >= 0], 'player': 0|1}}, got {data!r:.80}"
            )
        return NimState(tuple(heaps), player)

    def render(self, state: NimState, player: int) -> str:
        heaps = ", ".join(f"heap {i + 1}: {n}" for i, n in enumerate(state.heaps))
        return f"Heaps: {heaps}.\nYou are player {player + 1}."


def _xor(heaps: Sequence[int]) -> int:
    x = 0
    for h in heaps:
        x ^= h
    return x


# ------------------------------------------------------------------------------ opponents ---


@dataclass(frozen=True)
class OpponentView:
    """What a fixed opponent sees when it is its turn."""

    game: Game
    """The rules."""
    state: object
    """The position (the opponent is to move)."""
    observation: str
    """The position as text, addressed to the opponent (for text policies)."""
    rng: np.random.Generator
    """The env's generator: opponents draw their randomness from it (seeded at reset)."""


#: A fixed opponent: returns its move as text (canonical or any text the game parses).
Opponent = Callable[[OpponentView], str]


def random_opponent(view: OpponentView) -> str:
    """A uniformly random legal move."""
    moves = view.game.legal_moves(view.state)
    return moves[int(view.rng.integers(len(moves)))]


def optimal_opponent(view: OpponentView) -> str:
    """A random move among the game-theoretically best ones (perfect play)."""
    moves = view.game.best_moves(view.state)
    return moves[int(view.rng.integers(len(moves)))]
