"""Decide whether a parsed answer matches a parsed reference.

`Comparer.equal(reference, answer)` walks the two trees of `math_answer` with explicit rules,
reference-directed (so it is not symmetric):

- `x = 3` (or `x \\in S`, `(p, q) = (3, 2)`) matches `3`, both ways, when one side is not an
  equation; `2x + z = 1` is an equation, not a value, and does not match `1`;
- a list of assignments with distinct names (`a = 1, b = 2`) matches the values in order or
  the same assignments in any order; repeated names (`x = 1, x = 2`) are a list of solutions;
- lists of solutions and sets match in any order, tuples in order; `(a, b)` matches an open
  interval; an inequality chain in one variable matches the interval or union it describes
  (an inequality answer matches an interval reference only with `allow_set_relation_comp`);
- equations match when one is a non-zero multiple of the other (`2x + 4y = 3` and
  `y = -x/2 + 3/4`), inequalities when the multiple is positive (`-x > -1` and `x < 1`);
- leaves match when their text is the same, when both are plain numbers that are equal
  (exactly, or to `precision` decimal places when one is written as a decimal), when a `%`
  value matches its number or its fraction, and otherwise through sympy: exact equality,
  numeric evaluation (constants to 40 digits, expressions at fixed sample points), and
  `simplify` as the last resort.

With `use_sympy=False` (the caller's fast path) a leaf that needs sympy raises `NeedsSympy`
and the caller hands the whole comparison to a worker process under limits
(`math_sympy.compare_job`), the only place where sympy is imported.

Not covered: finding or normalising answers (`math_extract`, `math_answer`), the sympy
side of the comparison (`math_sympy`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .math_answer import (
    Group,
    Interval,
    Leaf,
    Node,
    Relation,
    SetUnion,
    Words,
    compact,
    is_name,
    is_variable,
    show,
    simple_number,
)


class NeedsSympy(Exception):
    """A leaf comparison that plain arithmetic cannot decide."""


class Unparsable(Exception):
    """A leaf that sympy cannot read; `side` is "response" or "reference"."""

    def __init__(self, side: str, text: str) -> None:
        super().__init__(f"cannot parse {side} {text!r}")
        self.side = side
        self.text = text


@dataclass(frozen=True)
class Settings:
    """How strictly answers are compared (mirrors the `MathVerifier` options)."""

    precision: int = 6
    """Decimal places to which a number written as a decimal must agree."""

    strict: bool = True
    """Variable names matter (`f(x)` is not `f(y)`)."""

    allow_set_relation_comp: bool = False
    """An inequality answer may match an interval/set reference."""


def numbers_equal(a: tuple[Fraction, bool], b: tuple[Fraction, bool], precision: int) -> bool:
    """Exact equality for exact numbers; agreement to `precision` places if one is a decimal."""
    (x, x_exact), (y, y_exact) = a, b
    if x_exact and y_exact:
        return x == y
    if abs(x - y) <= Fraction(1, 2 * 10**precision) * Fraction(1000000001, 1000000000):
        return True
    return _round(x, precision) == _round(y, precision)


def _round(x: Fraction, places: int) -> Fraction:
    scaled = x * 10**places
    return Fraction(round(scaled), 10**places)


_RELATION_FLIP = {">": "<", ">=": "<="}


def _is_equation(node: Node) -> bool:
    return isinstance(node, Relation) and all(op in ("=", "in") for op in node.ops)


def _is_assignment(node: Node) -> bool:
    return (
        isinstance(node, Relation)
        and len(node.terms) == 2
        and node.ops[0] in ("=", "in")
        and is_name(node.terms[0])
    )


def _is_inequality(node: Node) -> bool:
    return isinstance(node, Relation) and all(op in ("<", "<=", ">", ">=") for op in node.ops)


def _is_set(node: Node) -> bool:
    return isinstance(node, (Interval, SetUnion)) or (
        isinstance(node, Group)
        and (node.kind == "set" or (node.kind == "tuple" and len(node.items) == 2))
    )


def _canonical(rel: Relation) -> Relation:
    """`b > a` as `a < b`, `c >= b >= a` as `a <= b <= c`."""
    if rel.ops and all(op in _RELATION_FLIP for op in rel.ops):
        return Relation(rel.terms[::-1], tuple(_RELATION_FLIP[op] for op in rel.ops[::-1]))
    return rel


def _text_key(node: Node) -> str | None:
    if isinstance(node, Words):
        return compact(node.text).casefold()
    if isinstance(node, Leaf) and not node.percent:
        return compact(re.sub(r"\\text\{([^{}]*)\}", r"\1", node.text)).casefold()
    return None


class Comparer:
    """Reference-directed equivalence of two parsed answers (see the module doc)."""

    def __init__(self, settings: Settings, use_sympy: bool) -> None:
        """
        Args:
            settings: precision and strictness.
            use_sympy: False in the caller's process: raise `NeedsSympy` instead.
        """
        self.settings = settings
        self.use_sympy = use_sympy
        self.used_sympy = False

    # -- structure ------------------------------------------------------------------------

    def equal(self, gold: Node, pred: Node) -> bool:
        """Whether `pred` (the response's answer) matches `gold` (the reference's)."""
        if _is_equation(pred) and not _is_equation(gold):
            pred = pred.terms[-1]  # "x = 3" read as 3, "x \in S" as S
        elif _is_assignment(gold) and not _is_equation(pred):
            gold = gold.terms[-1]
        if _is_inequality(gold) and _is_set(pred):
            gold = self._relation_as_set(gold)
        elif self.settings.allow_set_relation_comp and _is_inequality(pred) and _is_set(gold):
            pred = self._relation_as_set(pred)

        if isinstance(gold, Leaf) and isinstance(pred, Leaf):
            return self.leaf_equal(gold, pred)
        if isinstance(gold, Words) or isinstance(pred, Words):
            gold_key = _text_key(gold)
            return gold_key is not None and gold_key == _text_key(pred)
        if isinstance(gold, Relation) and isinstance(pred, Relation):
            return self._relations_equal(gold, pred)
        if (_is_inequality(gold) and _is_set(pred)) or (
            self.settings.allow_set_relation_comp and _is_inequality(pred) and _is_set(gold)
        ):
            return self._sets_equal_sympy(gold, pred)  # an inequality sympy has to solve
        if isinstance(gold, Relation) or isinstance(pred, Relation):
            return False
        if isinstance(gold, Group) and isinstance(pred, Group):
            return self._groups_equal(gold, pred)
        if isinstance(gold, Interval) and isinstance(pred, Interval):
            return (
                gold.lo_closed == pred.lo_closed
                and gold.hi_closed == pred.hi_closed
                and self.equal(gold.lo, pred.lo)
                and self.equal(gold.hi, pred.hi)
            )
        if isinstance(gold, SetUnion) and isinstance(pred, SetUnion):
            return len(gold.parts) == len(pred.parts) and self._match_all(
                list(gold.parts), list(pred.parts)
            )
        if (isinstance(gold, Interval) and isinstance(pred, Group)) or (
            isinstance(pred, Interval) and isinstance(gold, Group) and gold.kind == "tuple"
        ):
            if not _is_open_pair(gold, pred) and not _is_open_pair(pred, gold):
                return False  # "[0, 1)" is not the pair or open interval "(0, 1)"
            g_ends, p_ends = _ends(gold), _ends(pred)
            return self.equal(g_ends[0], p_ends[0]) and self.equal(g_ends[1], p_ends[1])
        if (
            (_is_set(gold) and _is_set(pred))
            or isinstance(gold, SetUnion)
            or isinstance(pred, SetUnion)
        ):
            return self._sets_equal_sympy(gold, pred)
        return False

    def _items(self, group: Group) -> tuple[str, list[Node], list[str] | None]:
        """A group's kind and items, with assignments read as values (see the module doc)."""
        items = list(group.items)
        assigned = [_is_assignment(i) for i in items]
        if items and all(assigned):
            names = [compact(_show_leafish(i.terms[0])) for i in items]  # type: ignore[union-attr]
            values = [i.terms[-1] for i in items]  # type: ignore[union-attr]
            if len(set(names)) == len(names):
                return "record", values, names
            return "list", values, None
        if any(assigned):
            return "list", [i.terms[-1] if a else i for i, a in zip(items, assigned)], None  # type: ignore[union-attr]
        return group.kind, items, None

    def _groups_equal(self, gold: Group, pred: Group) -> bool:
        g_kind, g_items, g_names = self._items(gold)
        _, p_items, p_names = self._items(pred)
        if g_kind in ("list", "set"):
            return self._same_elements(g_items, p_items)
        if len(g_items) != len(p_items):
            return False
        if g_names and p_names and sorted(g_names) == sorted(p_names):
            by_name = dict(zip(p_names, p_items))
            return all(self.equal(g, by_name[n]) for n, g in zip(g_names, g_items))
        return all(self.equal(g, p) for g, p in zip(g_items, p_items))

    def _same_elements(self, golds: list[Node], preds: list[Node]) -> bool:
        """Set equality: every item on each side matches one on the other (repeats collapse,
        as in a list of solutions that names one twice)."""
        matched = [False] * len(preds)
        for g in golds:
            hit = False
            for k, p in enumerate(preds):
                if self.equal(g, p):
                    matched[k] = hit = True
                    if len(golds) == len(preds):
                        break
            if not hit:
                return False
        return all(matched) or all(
            any(self.equal(g, p) for g in golds) for p, m in zip(preds, matched) if not m
        )

    def _match_all(self, golds: list[Node], preds: list[Node]) -> bool:
        """Every gold item matched by a distinct pred item (greedy: matching is transitive)."""
        left = list(preds)
        for g in golds:
            for k, p in enumerate(left):
                if self.equal(g, p):
                    del left[k]
                    break
            else:
                return False
        return not left

    def _relations_equal(self, gold: Relation, pred: Relation) -> bool:
        gold, pred = _canonical(gold), _canonical(pred)
        if gold.ops == pred.ops and len(gold.terms) == len(pred.terms):
            try:
                if all(self.equal(g, p) for g, p in zip(gold.terms, pred.terms)):
                    return True
            except NeedsSympy:
                if not self.use_sympy:
                    raise
        if (
            _is_assignment(gold)
            and _is_assignment(pred)
            and compact(_show_leafish(gold.terms[0])) == compact(_show_leafish(pred.terms[0]))
        ):
            return self.equal(gold.terms[1], pred.terms[1])
        if (
            len(gold.terms) == 2
            and len(pred.terms) == 2
            and all(isinstance(t, Leaf) for t in (*gold.terms, *pred.terms))
        ):
            self._need_sympy()
            return _sympy().relations_equal(self, gold, pred)
        if _is_inequality(gold) and _is_inequality(pred):
            return self._sets_equal_sympy(gold, pred)
        return False

    def _relation_as_set(self, rel: Relation) -> Node:
        """`a < x <= b`, `x >= a` as an `Interval` when `x` is one variable; else unchanged
        (sympy solves it when sets are compared)."""
        rel = _canonical(rel)
        inf = Leaf("\\infty")
        neg_inf = Leaf("-\\infty")
        if all(op in ("<", "<=") for op in rel.ops):
            t, ops = rel.terms, rel.ops
            if len(t) == 3 and is_variable(t[1]):
                return Interval(t[0], t[2], ops[0] == "<=", ops[1] == "<=")
            if len(t) == 2 and is_variable(t[0]) and not is_variable(t[1]):
                return Interval(neg_inf, t[1], False, ops[0] == "<=")
            if len(t) == 2 and is_variable(t[1]) and not is_variable(t[0]):
                return Interval(t[0], inf, ops[0] == "<=", False)
        return rel

    def _sets_equal_sympy(self, gold: Node, pred: Node) -> bool:
        self._need_sympy()
        return _sympy().sets_equal(self, gold, pred)

    # -- leaves ---------------------------------------------------------------------------

    def leaf_equal(self, gold: Leaf, pred: Leaf) -> bool:
        """Whether two single expressions are equal (see the module doc)."""
        if gold.percent != pred.percent:
            pct, other = (gold, pred) if gold.percent else (pred, gold)
            base = Leaf(pct.text)
            if self.leaf_equal(base, Leaf(other.text)):
                return True
            return self._scaled_equal(base, other.text, 100)
        if compact(gold.text) == compact(pred.text):
            return True
        g, p = simple_number(gold.text), simple_number(pred.text)
        if g is not None and p is not None:
            return numbers_equal(g, p, self.settings.precision)
        self._need_sympy()
        return _sympy().leaves_equal(self, gold.text, pred.text)

    def _scaled_equal(self, pct: Leaf, other: str, factor: int) -> bool:
        """Whether `other == pct / factor` (a percentage written as a fraction)."""
        g, p = simple_number(pct.text), simple_number(other)
        if g is not None and p is not None:
            return numbers_equal((g[0] / factor, g[1]), p, self.settings.precision)
        self._need_sympy()
        return _sympy().scaled_equal(self, pct.text, other, factor)

    def _need_sympy(self) -> None:
        if not self.use_sympy:
            raise NeedsSympy
        self.used_sympy = True


def _is_open_pair(a: Node, b: Node) -> bool:
    return (
        isinstance(a, Interval)
        and not a.lo_closed
        and not a.hi_closed
        and isinstance(b, Group)
        and b.kind == "tuple"
        and len(b.items) == 2
    )


def _ends(node: Node) -> tuple[Node, Node]:
    if isinstance(node, Interval):
        return node.lo, node.hi
    return node.items[0], node.items[1]  # type: ignore[union-attr]


def _show_leafish(node: Node) -> str:
    return show(node)


def _sympy():
    from . import math_sympy

    return math_sympy


def compare_job(
    job: tuple[tuple[str, ...], tuple[str, ...], tuple[int, bool, bool], int],
) -> tuple[str, int, int, str]:
    """Entry point of a limits worker: `math_sympy.compare_job` (see there), importable by
    the caller without importing sympy."""
    return _sympy().compare_job(job)
