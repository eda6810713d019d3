"""The sympy side of math answer comparison; imported only in limits workers.

`Comparer` (in `math_compare`) calls here for leaves that plain arithmetic cannot decide:
each leaf becomes a sympy object, through `read_simple` for the common shapes (polynomials,
fractions, roots, powers, `\\pi`; a small recursive-descent reader that is 20-100 times faster
than the ANTLR grammar of `latex2sympy2_extended` on them and gives the same objects) and
through `latex2sympy2_extended` for everything else. Conversions are cached per worker.

Values are then compared exactly, numerically (closed forms to 40 digits; expressions at three
fixed sample points, which catches all but adversarially constructed identities), and with
`sympy.simplify` only when numeric evaluation cannot decide. Equations compare through the
ratio of their sides' differences; inequalities and intervals through `as_set`.

This module runs untrusted input through sympy, which can take unbounded time and memory:
call it only through `limits` (as `MathVerifier` does with `compare_job`).

Not covered: complex-number answers get no special treatment (`i` is a symbol).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import sympy
from latex2sympy2_extended.latex2sympy2 import latex2sympy

from .math_answer import (
    Group,
    Interval,
    Leaf,
    Node,
    Relation,
    SetUnion,
    compact,
    parse_answer,
    simple_number,
)
from .math_compare import Comparer, Settings, Unparsable, numbers_equal

_TOKEN = re.compile(
    r"\s+|(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<cmd>\\(?:frac|sqrt|pi|cdot|times|div))(?![a-zA-Z])"
    r"|(?P<letter>[a-zA-Z])|(?P<op>[-+*/^(){}\[\]])"
)
_MAX_SIMPLE = 200


class _Bail(Exception):
    """Outside the subset `read_simple` reads: use latex2sympy."""


def read_simple(text: str) -> Any:
    """Read a leaf in the common subset of LaTeX math, or return None.

    The subset: numbers, single letters (`e` is Euler's number, other letters real symbols,
    lowercased, as latex2sympy reads them), `+ - * / ^`, `\\cdot \\times \\div`, parentheses,
    braces, `\\frac{}{}`, `\\sqrt{}`, `\\sqrt[n]{}`, `\\pi` and implicit multiplication, which
    binds tighter than `/` (`1/2x` is `1/(2x)`) as in latex2sympy. Anything else (functions,
    subscripts, `I`, a number right after a number or before `\\frac`) returns None.
    """
    if len(text) > _MAX_SIMPLE:
        return None
    tokens: list[tuple[str, str]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:
            return None
        pos = m.end()
        kind = m.lastgroup
        if kind is not None:
            tokens.append((kind, m.group()))
    if pos != len(text) or not tokens:
        return None
    reader = _Reader(tokens)
    try:
        value = reader.expr()
        if reader.i != len(tokens):
            return None
        return value
    except _Bail:
        return None


class _Reader:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str) -> None:
        token = self.peek()
        if token is None or token[1] != value:
            raise _Bail
        self.i += 1

    def expr(self) -> Any:
        value = self.term()
        while (token := self.peek()) is not None and token[1] in ("+", "-"):
            self.i += 1
            right = self.term()
            value = value + right if token[1] == "+" else value - right
        return value

    def term(self) -> Any:
        value = self.implicit()
        while (token := self.peek()) is not None and token[1] in (
            "*",
            "/",
            "\\cdot",
            "\\times",
            "\\div",
        ):
            self.i += 1
            right = self.implicit()
            value = value / right if token[1] in ("/", "\\div") else value * right
        return value

    def implicit(self) -> Any:
        token = self.peek()
        if token is not None and token[1] in ("+", "-"):
            self.i += 1
            value = self.implicit()
            return -value if token[1] == "-" else value
        value = self.power()
        previous_number = self.tokens[self.i - 1][0] == "num"
        while (token := self.peek()) is not None and (
            token[0] in ("letter", "num") or token[1] in ("(", "{", "\\frac", "\\sqrt", "\\pi")
        ):
            if token[0] == "num" or (previous_number and token[1] == "\\frac"):
                raise _Bail  # "2 3", "2\\frac{1}{2}" (a mixed number)
            value = value * self.power()
            previous_number = False
        return value

    def power(self) -> Any:
        base = self.primary()
        token = self.peek()
        if token is not None and token[1] == "^":
            self.i += 1
            token = self.peek()
            if token is None:
                raise _Bail
            if token[1] == "{":
                exponent = self.group()
            elif token[0] in ("num", "letter"):
                exponent = self.primary()
            else:
                raise _Bail
            if self.peek() is not None and self.peek()[1] == "^":
                raise _Bail  # towers: leave their associativity to latex2sympy
            return sympy.Pow(base, exponent)
        return base

    def group(self) -> Any:
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def primary(self) -> Any:
        token = self.peek()
        if token is None:
            raise _Bail
        kind, text = token
        self.i += 1
        if kind == "num":
            if "." in text:
                return sympy.Float(text, 30)
            if len(text) > 100:
                raise _Bail
            return sympy.Integer(text)
        if kind == "letter":
            if text == "e":
                return sympy.E
            if text == "I":
                raise _Bail
            return sympy.Symbol(text.lower(), real=True)
        if text == "\\pi":
            return sympy.pi
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        if text == "{":
            self.i -= 1
            return self.group()
        if text == "\\frac":
            return self.group() / self.group()
        if text == "\\sqrt":
            index = None
            if self.peek() is not None and self.peek()[1] == "[":
                self.i += 1
                index = self.expr()
                self.take("]")
            radicand = self.group()
            return sympy.sqrt(radicand) if index is None else sympy.root(radicand, index)
        raise _Bail


_CACHE: OrderedDict[tuple[str, bool], Any] = OrderedDict()
_CACHE_SIZE = 2048
_POINTS = (
    ("0.5772156649015328606065", "1.4142135623730950488017", "2.7182818284590452353603"),
    ("1.6180339887498948482046", "0.3183098861837906715378", "1.7320508075688772935274"),
    ("0.6931471805599453094172", "2.2360679774997896964092", "1.2020569031595942853997"),
)


_cache_epoch = 0


def _check_epoch(epoch: int) -> None:
    """Forget cached conversions when the caller asked for it (`MathVerifier.clear_caches`)."""
    global _cache_epoch
    if epoch != _cache_epoch:
        _CACHE.clear()
        _cache_epoch = epoch


def _sympify(text: str, side: str) -> Any:
    key = (text, side == "reference")
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    number = simple_number(text)
    if number is not None:
        value, exact = number
        value = (
            sympy.Rational(value.numerator, value.denominator)
            if exact
            else sympy.Float(str(Decimal(value.numerator) / Decimal(value.denominator)), 30)
        )
    else:
        value = read_simple(text)
    if value is None:
        try:
            value = latex2sympy(text, normalization_config=None, is_real=True)
        except Exception:
            raise Unparsable(side, text) from None
        if isinstance(value, (list, tuple)):
            raise Unparsable(side, text)
    _CACHE[key] = value
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _evaluated(value: Any) -> Any:
    try:
        return value.doit()
    except Exception:
        return value


def _as_fraction(value: Any) -> Fraction | None:
    """A real sympy number as a Fraction (via 40 significant digits), else None."""
    if isinstance(value, sympy.Rational):
        return Fraction(int(value.p), int(value.q))
    try:
        text = str(sympy.N(value, 40))
        return Fraction(Decimal(text))
    except (InvalidOperation, ValueError, TypeError):
        return None


def _values_equal(cmp: Comparer, a: Any, b: Any) -> bool | None:
    """Numeric comparison of two closed-form values; None when either is not a number."""
    inexact = a.has(sympy.Float) or b.has(sympy.Float)
    try:
        ca, cb = complex(sympy.N(a, 40)), complex(sympy.N(b, 40))
    except (TypeError, ValueError):
        return None
    if ca != ca or cb != cb or abs(ca) == float("inf") or abs(cb) == float("inf"):
        return None
    if ca.imag or cb.imag:
        return abs(ca - cb) <= 1e-9 * max(1.0, abs(ca))
    fa, fb = _as_fraction(sympy.re(a)), _as_fraction(sympy.re(b))
    if fa is None or fb is None:
        return None
    if inexact:
        return numbers_equal((fa, False), (fb, False), cmp.settings.precision)
    return abs(fa - fb) <= Fraction(1, 10**25) * max(1, abs(fa))


def _rename(a: Any, b: Any) -> Any:
    """`b` with its symbols renamed to `a`'s, in name order, when both have as many."""
    sa = sorted(a.free_symbols, key=str)
    sb = sorted(b.free_symbols, key=str)
    if len(sa) != len(sb) or sa == sb:
        return b
    try:
        return b.xreplace(dict(zip(sb, sa)))
    except Exception:
        return b


def _expressions_equal(cmp: Comparer, a: Any, b: Any) -> bool:
    a, b = _evaluated(a), _evaluated(b)
    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):
        if not (isinstance(a, sympy.MatrixBase) and isinstance(b, sympy.MatrixBase)):
            return False
        return a.shape == b.shape and all(_expressions_equal(cmp, x, y) for x, y in zip(a, b))
    if a == b:
        return True
    if isinstance(a, sympy.Set) or isinstance(b, sympy.Set):
        return _sympy_set_equal(a, b)
    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return False
    if any(v.has(sympy.nan, sympy.zoo) for v in (a, b)):
        return False
    if not cmp.settings.strict:
        b = _rename(a, b)
        if a == b:
            return True
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        same = _values_equal(cmp, a, b)
        if same is not None:
            return same
    else:
        verdicts = []
        for point in _POINTS:
            subs = {s: sympy.Float(point[k % 3], 30) * (1 + k // 3) for k, s in enumerate(symbols)}
            try:
                verdicts.append(_values_equal(cmp, a.xreplace(subs), b.xreplace(subs)))
            except Exception:
                verdicts.append(None)
        if False in verdicts:
            return False
        if verdicts and all(v is True for v in verdicts):
            return True
    try:
        return bool(sympy.simplify(a - b) == 0)
    except Exception:
        return False


def leaves_equal(cmp: Comparer, gold: str, pred: str) -> bool:
    """Two leaves through sympy: exact, numeric at sample points, then `simplify`."""
    b = _sympify(pred, "response")
    a = _sympify(gold, "reference")
    return _expressions_equal(cmp, a, b)


def scaled_equal(cmp: Comparer, pct: str, other: str, factor: int) -> bool:
    """Whether `other == pct / factor`."""
    b = _sympify(other, "response")
    a = _sympify(pct, "reference")
    return _expressions_equal(cmp, a / factor, b)


_OPS = {"=": "Eq", "!=": "Ne", "<": "Lt", "<=": "Le", ">": "Gt", ">=": "Ge"}


def relations_equal(cmp: Comparer, gold: Relation, pred: Relation) -> bool:
    """Two single relations: the same kind, and one difference a multiple of the other."""
    g_op, p_op = gold.ops[0], pred.ops[0]
    if g_op != p_op or g_op == "in":
        return False
    ga, gb = (_sympify(t.text, "reference") for t in gold.terms)  # type: ignore[union-attr]
    pa, pb = (_sympify(t.text, "response") for t in pred.terms)  # type: ignore[union-attr]
    if not all(isinstance(v, sympy.Expr) for v in (ga, gb, pa, pb)):
        return False
    dg, dp = ga - gb, pa - pb
    if not cmp.settings.strict:
        dp = _rename(dg, dp)
    symbols = sorted(dg.free_symbols | dp.free_symbols, key=str)
    if not symbols:
        return False
    ratios = []
    for point in _POINTS:
        subs = {s: sympy.Float(point[k % 3], 30) * (1 + k // 3) for k, s in enumerate(symbols)}
        try:
            vg, vp = complex(dg.xreplace(subs).evalf(30)), complex(dp.xreplace(subs).evalf(30))
        except (TypeError, ValueError):
            return False
        if abs(vp) < 1e-12:
            if abs(vg) > 1e-9:
                return False
            continue
        ratios.append(vg / vp)
    if not ratios:
        return False
    first = ratios[0]
    if abs(first) < 1e-12 or any(abs(r - first) > 1e-8 * abs(first) for r in ratios):
        return False
    if g_op in ("<", "<=", ">", ">="):
        return first.real > 0 and abs(first.imag) < 1e-12
    return True


def _sympy_set(cmp: Comparer, node: Node, side: str) -> Any:
    if isinstance(node, Interval):
        lo = _sympify(node.lo.text, side) if isinstance(node.lo, Leaf) else None
        hi = _sympify(node.hi.text, side) if isinstance(node.hi, Leaf) else None
        if lo is None or hi is None:
            raise Unparsable(side, "interval")
        return sympy.Interval(lo, hi, not node.lo_closed, not node.hi_closed)
    if isinstance(node, Group) and node.kind == "tuple" and len(node.items) == 2:
        return _sympy_set(cmp, Interval(node.items[0], node.items[1], False, False), side)
    if isinstance(node, Group):
        return sympy.FiniteSet(*(_sympify(i.text, side) for i in node.items if isinstance(i, Leaf)))
    if isinstance(node, SetUnion):
        return sympy.Union(*(_sympy_set(cmp, p, side) for p in node.parts))
    if isinstance(node, Relation):
        terms = [_sympify(t.text, side) if isinstance(t, Leaf) else None for t in node.terms]
        if any(t is None for t in terms) or "in" in node.ops:
            raise Unparsable(side, "relation")
        parts = [getattr(sympy, _OPS[op])(a, b) for op, a, b in zip(node.ops, terms, terms[1:])]
        condition = sympy.And(*parts)
        if len(condition.free_symbols) != 1:
            raise Unparsable(side, "relation in several variables")
        return condition.as_set()
    if isinstance(node, Leaf):
        value = _sympify(node.text, side)
        return value if isinstance(value, sympy.Set) else sympy.FiniteSet(value)
    raise Unparsable(side, "set")


def _sympy_set_equal(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        return bool(
            isinstance(a, sympy.Set)
            and isinstance(b, sympy.Set)
            and a.symmetric_difference(b).is_empty
        )
    except Exception:
        return False


def sets_equal(cmp: Comparer, gold: Node, pred: Node) -> bool:
    """Two set-like answers (intervals, unions, finite sets, inequalities) through sympy."""
    return _sympy_set_equal(_sympy_set(cmp, gold, "reference"), _sympy_set(cmp, pred, "response"))


def compare_job(
    job: tuple[tuple[str, ...], tuple[str, ...], tuple[int, bool, bool], int],
) -> tuple[str, int, int, str]:
    """Compare answer candidates with reference candidates, with sympy (runs in a worker).

    Args:
        job: `(answers, references, settings, cache_epoch)`: normalised candidate strings of
            the response and of the reference, best first, `Settings` fields as a tuple, and
            a counter whose change empties the conversion cache.

    Returns:
        `(outcome, answer_index, reference_index, method)`: outcome is "equal", "different",
        "unparsed_response" or "unparsed_reference"; the indices say which candidates were
        compared; method is "text", "numeric" or "symbolic".
    """
    answers, references, settings, epoch = job
    _check_epoch(epoch)
    outcome = ("unparsed_reference", 0, 0, "")
    for gi, gold_text in enumerate(references):
        gold = parse_answer(gold_text)
        outcome = ("unparsed_response", 0, gi, "")
        for pi, pred_text in enumerate(answers):
            if compact(pred_text) == compact(gold_text):
                return "equal", pi, gi, "text"
            cmp = Comparer(Settings(*settings), use_sympy=True)
            try:
                same = cmp.equal(gold, parse_answer(pred_text))
            except Unparsable as exc:
                if exc.side == "reference":
                    outcome = ("unparsed_reference", 0, gi, "")
                    break
                continue
            except (RecursionError, ValueError, TypeError, AttributeError, ZeroDivisionError):
                continue
            method = "symbolic" if cmp.used_sympy else "numeric"
            return ("equal" if same else "different"), pi, gi, method
        else:
            return outcome
    return outcome
