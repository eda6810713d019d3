"""Generate `envs/data/math_tasks.jsonl`, the task set of `opd/Math-v0`, with verified answers.

    python -m opd_selfplay.envs.make_math_tasks [--out PATH] [--seed 0]

Six categories, from templates with seeded random parameters: linear equations, quadratic
equations (integer and rational roots), fraction arithmetic, polynomial simplification and
expansion, 2x2 linear systems, and word problems (ages, change, speed, work, discounts,
consecutive integers, rectangles, coins, averages, ratios). Every answer is computed twice, by
the template's construction and independently by sympy (`solve`, `simplify`, exact rationals),
and a task is written only when the two agree, so a shipped reference is never a typo.

Formats (what `MathVerifier` compares against): integers and fractions as `7`, `-3/4`;
several solutions as `-3, 1/2` (ascending); a system's solution as the tuple `(2, -1)`;
polynomials in `x` as `2x^2 + 5x - 12`. Prompts are our own plain-text formatting (not
sympy's printer), so the file is stable across sympy versions. Each task has a short worked
`solution` ending in `\\boxed{answer}`.

Not covered: harder competition math (load MATH or GSM8K with `opd_selfplay.envs.math_env`).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import sympy as sp

X, Y = sp.symbols("x y")
DEFAULT_OUT = Path(__file__).with_name("data") / "math_tasks.jsonl"
COUNTS = {"linear": 70, "quadratic": 60, "fraction": 60, "simplify": 50, "system": 50, "word": 80}


class Rejected(Exception):
    """The drawn parameters do not make a good task (or the two answers disagree)."""


def frac(q: Fraction | sp.Rational | int) -> str:
    """`7`, `-3/4`: an exact rational in plain text."""
    q = Fraction(int(sp.Rational(q).p), int(sp.Rational(q).q))
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def poly(coeffs: list[int], var: str = "x") -> str:
    """`2x^2 - 3x + 1` from coefficients, highest degree first."""
    deg = len(coeffs) - 1
    out = ""
    for i, c in enumerate(coeffs):
        p = deg - i
        if c == 0:
            continue
        mag = abs(c)
        body = (
            ("" if mag == 1 and p > 0 else str(mag))
            + (var if p >= 1 else "")
            + (f"^{p}" if p > 1 else "")
        )
        if not out:
            out = ("-" if c < 0 else "") + body
        else:
            out += (" - " if c < 0 else " + ") + body
    return out or "0"


def dec(q: sp.Rational) -> str:
    """`21.6`, `36`: a rational with a terminating decimal expansion, in decimal notation."""
    q = sp.Rational(q)
    for places in range(7):
        scaled = q * 10**places
        if scaled.q == 1:
            whole = str(abs(int(scaled.p))).rjust(places + 1, "0")
            text = whole if places == 0 else f"{whole[:-places]}.{whole[-places:]}"
            return ("-" if q < 0 else "") + text
    raise Rejected  # not a short decimal


def linear_side(a: int, b: int) -> str:
    """`ax + b` in plain text."""
    return poly([a, b])


def sympy_poly(text: str) -> sp.Expr:
    """Parse our own plain polynomial text back (an independent check of `poly`)."""
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    tr = (*standard_transformations, implicit_multiplication_application, convert_xor)
    return parse_expr(text, transformations=tr, local_dict={"x": X, "y": Y})


def boxed(ans: str) -> str:
    return f"The answer is \\boxed{{{ans}}}."


# ------------------------------------------------------------------ categories ---
def linear(r: random.Random) -> dict:
    sol = Fraction(r.randint(-12, 12), r.choice([1, 1, 1, 2, 3, 4]))
    a, c = r.choice([i for i in range(-9, 10) if i]), r.randint(-9, 9)
    if a == c:
        raise Rejected
    b = r.randint(-20, 20)
    d = (a - c) * sol + b  # a x + b = c x + d at x = sol
    if d.denominator != 1:
        raise Rejected
    d = int(d)
    left, right = linear_side(a, b), (linear_side(c, d) if c else str(d))
    got = sp.solve(sp.Eq(sympy_poly(left), sympy_poly(right)), X)
    if got != [sp.Rational(sol.numerator, sol.denominator)]:
        raise Rejected
    ans = frac(sol)
    steps = f"Collect x on the left: {poly([a - c, 0])} = {d - b}, so x = {ans}."
    return {"prompt": f"Solve for x: {left} = {right}.", "answer": ans, "steps": steps}


def quadratic(r: random.Random) -> dict:
    p, q = r.choice([1, 1, 1, 2, 3]), r.randint(-9, 9)
    s, t = 1, r.randint(-9, 9)
    if r.random() < 0.15:  # a double root
        p, q, s, t = 1, q, 1, q
    k = r.choice([1, 1, 1, -1, 2])
    coeffs = [k * p * s, k * (p * t + q * s), k * q * t]  # k (p x + q)(s x + t)
    roots = sorted({Fraction(-q, p), Fraction(-t, s)})
    got = sorted(sp.solve(sympy_poly(poly(coeffs)), X))
    if [sp.Rational(f.numerator, f.denominator) for f in roots] != got:
        raise Rejected
    ans = ", ".join(frac(f) for f in roots)
    lead = {1: "", -1: "-"}.get(k, str(k))
    steps = f"Factor: {poly(coeffs)} = {lead}({poly([p, q])})({poly([s, t])}), so x = {ans}."
    if len(roots) == 1:
        steps = f"Factor: {poly(coeffs)} = {lead}({poly([p, q])})^2, a double root x = {ans}."
    return {
        "prompt": f"Find all real solutions of {poly(coeffs)} = 0.",
        "answer": ans,
        "steps": steps,
    }


def fraction(r: random.Random) -> dict:
    a, b = Fraction(r.randint(1, 9), r.randint(2, 12)), Fraction(r.randint(1, 9), r.randint(2, 12))
    op = r.choice(["+", "-", "*", "/"])
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
    sym = {"+": sp.Add, "-": lambda u, v: u - v, "*": sp.Mul, "/": lambda u, v: u / v}[op](
        sp.Rational(a.numerator, a.denominator), sp.Rational(b.numerator, b.denominator)
    )
    if sp.Rational(value.numerator, value.denominator) != sym:
        raise Rejected
    shown = {"+": "+", "-": "-", "*": "×", "/": "÷"}[op]
    ans = frac(value)
    return {
        "prompt": f"Compute {frac(a)} {shown} {frac(b)}. Give the result as a fraction in lowest terms.",
        "answer": ans,
        "steps": f"{frac(a)} {shown} {frac(b)} = {ans}.",
    }


def simplify(r: random.Random) -> dict:
    kind = r.choice(["expand", "square-diff", "cancel"])
    a, b = r.choice([1, 1, 2, 3]), r.choice([i for i in range(-7, 8) if i])
    c, d = r.choice([1, 1, 2]), r.choice([i for i in range(-7, 8) if i])
    if kind == "expand":
        text = f"Expand ({poly([a, b])})({poly([c, d])})."
        expr = sympy_poly(poly([a, b])) * sympy_poly(poly([c, d]))
        coeffs = [a * c, a * d + b * c, b * d]
    elif kind == "square-diff":
        e = r.choice([i for i in range(-7, 8) if i])
        text = f"Simplify ({poly([1, b])})^2 - ({poly([1, d])})({poly([1, e])})."
        expr = sympy_poly(poly([1, b])) ** 2 - sympy_poly(poly([1, d])) * sympy_poly(poly([1, e]))
        coeffs = [0, 2 * b - d - e, b * b - d * e]
    else:
        text = f"Simplify ({poly([a * c, a * d + b * c, b * d])}) / ({poly([a, b])}) for {poly([a, b])} ≠ 0."
        expr = sympy_poly(poly([a * c, a * d + b * c, b * d])) / sympy_poly(poly([a, b]))
        coeffs = [0, c, d]
    while len(coeffs) > 1 and coeffs[0] == 0:
        coeffs = coeffs[1:]
    ans = poly(coeffs)
    if sp.simplify(expr - sympy_poly(ans)) != 0:
        raise Rejected
    return {
        "prompt": text,
        "answer": ans,
        "steps": f"Multiplying out and collecting terms gives {ans}.",
    }


def system(r: random.Random) -> dict:
    x, y = r.randint(-9, 9), r.randint(-9, 9)
    a, b, c, d = (r.choice([i for i in range(-6, 7) if i]) for _ in range(4))
    if a * d - b * c == 0:
        raise Rejected
    e, f = a * x + b * y, c * x + d * y

    def side(p: int, q: int) -> str:
        return (poly([p, 0], "x") + (" - " if q < 0 else " + ") + poly([abs(q), 0], "y")).replace(
            "+ -", "- "
        )

    got = sp.solve([a * X + b * Y - e, c * X + d * Y - f], [X, Y])
    if got != {X: x, Y: y}:
        raise Rejected
    ans = f"({x}, {y})"
    return {
        "prompt": f"Solve the system {side(a, b)} = {e} and {side(c, d)} = {f}. Give the answer as (x, y).",
        "answer": ans,
        "steps": f"Eliminating one variable gives x = {x}, then y = {y}.",
    }


def _word_templates() -> list[Callable[[random.Random], tuple[str, sp.Expr, sp.Expr, str]]]:
    """Each returns (prompt, equation in X whose solution is the answer, the answer, steps)."""

    def ages(r: random.Random):
        bob, k, n = r.randint(3, 20), r.randint(2, 4), r.randint(1, 10)
        s = k * bob + bob + 2 * n
        return (
            f"Alice is {k} times as old as Bob. In {n} years the sum of their ages will be {s}. "
            "How old is Bob now?",
            sp.Eq(k * X + n + X + n, s),
            sp.Integer(bob),
            f"{k}b + {n} + b + {n} = {s}, so {k + 1}b = {s - 2 * n} and b = {bob}.",
        )

    def change(r: random.Random):
        a, b, m, n = r.randint(2, 9), r.randint(1, 4), r.randint(1, 5), r.randint(1, 6)
        bill = r.choice([50, 100])
        cost = m * a + n * b
        return (
            f"A notebook costs ${a} and a pen costs ${b}. Sam buys {m} notebooks and {n} pens and "
            f"pays with a ${bill} bill. How many dollars of change does he get?",
            sp.Eq(X + m * a + n * b, bill),
            sp.Integer(bill - cost),
            f"He spends {m}·{a} + {n}·{b} = {cost}, so the change is {bill} - {cost} = {bill - cost}.",
        )

    def speed(r: random.Random):
        v, t, t2 = r.randint(20, 90), r.randint(2, 6), r.randint(2, 9)
        return (
            f"A train travels {v * t} km in {t} hours. At the same speed, how many km does it "
            f"travel in {t2} hours?",
            sp.Eq(X / t2, sp.Rational(v * t, t)),
            sp.Integer(v * t2),
            f"Its speed is {v * t}/{t} = {v} km/h, so in {t2} hours it covers {v * t2} km.",
        )

    def work(r: random.Random):
        a, b = r.randint(2, 9), r.randint(2, 12)
        ans = sp.Rational(a * b, a + b)
        return (
            f"Tom can paint a fence alone in {a} hours and Jerry can paint it alone in {b} hours. "
            "Working together at these rates, how many hours do they need?",
            sp.Eq(X / a + X / b, 1),
            ans,
            f"Together they paint 1/{a} + 1/{b} of the fence per hour, so they need {frac(ans)} hours.",
        )

    def discount(r: random.Random):
        p, q = r.choice(range(20, 200, 4)), r.choice([10, 20, 25, 30, 40, 50, 75])
        ans = sp.Rational(p * (100 - q), 100)
        return (
            f"A jacket costs ${p}. It is on sale for {q}% off. What is the sale price in dollars?",
            sp.Eq(X, p - sp.Rational(q, 100) * p),
            ans,
            f"{q}% of {p} is {dec(sp.Rational(p * q, 100))}, so the price is {dec(ans)}.",
        )

    def consecutive(r: random.Random):
        k, first = r.randint(3, 6), r.randint(-10, 40)
        s = sum(range(first, first + k))
        return (
            f"The sum of {k} consecutive integers is {s}. What is the smallest of them?",
            sp.Eq(sum(X + i for i in range(k)), s),
            sp.Integer(first),
            f"{k}n + {k * (k - 1) // 2} = {s}, so n = {first}.",
        )

    def rectangle(r: random.Random):
        w, k = r.randint(2, 20), r.randint(1, 10)
        p = 2 * (w + w + k)
        return (
            f"A rectangle is {k} cm longer than it is wide, and its perimeter is {p} cm. "
            "What is its area in square centimetres?",
            sp.Eq(
                X,
                sp.solve(sp.Eq(2 * (Y + Y + k), p), Y)[0]
                * (sp.solve(sp.Eq(2 * (Y + Y + k), p), Y)[0] + k),
            ),
            sp.Integer(w * (w + k)),
            f"Width w with 2(w + w + {k}) = {p} gives w = {w}, so the area is {w}·{w + k} = {w * (w + k)}.",
        )

    def coins(r: random.Random):
        dimes, nickels = r.randint(1, 30), r.randint(1, 30)
        cents = 10 * dimes + 5 * nickels
        return (
            f"A jar holds {dimes + nickels} coins, all dimes and nickels, worth {cents} cents in "
            "total. How many dimes are in the jar?",
            sp.Eq(10 * X + 5 * (dimes + nickels - X), cents),
            sp.Integer(dimes),
            f"10d + 5({dimes + nickels} - d) = {cents}, so 5d = {5 * dimes} and d = {dimes}.",
        )

    def average(r: random.Random):
        k, m2 = r.randint(4, 9), r.randint(5, 40)
        m = r.randint(m2 + 1, m2 + 12)
        removed = k * m - (k - 1) * m2  # the old total minus the new one
        return (
            f"The average of {k} numbers is {m}. After one of them is removed, the average of the "
            f"remaining {k - 1} numbers is {m2}. Which number was removed?",
            sp.Eq(k * m - X, (k - 1) * m2),
            sp.Integer(removed),
            f"The total was {k}·{m} = {k * m} and is now {k - 1}·{m2} = {(k - 1) * m2}, "
            f"so {removed} was removed.",
        )

    def ratio(r: random.Random):
        a, b, unit = r.randint(1, 7), r.randint(1, 7), r.randint(2, 12)
        if a == b:
            raise Rejected
        return (
            f"A bag holds red and blue marbles in the ratio {a}:{b}, {(a + b) * unit} marbles in "
            "all. How many red marbles are there?",
            sp.Eq(X / a, (a + b) * unit / sp.Integer(a + b)),
            sp.Integer(a * unit),
            f"One part is {(a + b) * unit}/{a + b} = {unit} marbles, so red is {a}·{unit} = {a * unit}.",
        )

    return [ages, change, speed, work, discount, consecutive, rectangle, coins, average, ratio]


_WORD = _word_templates()


def word(r: random.Random) -> dict:
    template = _WORD[r.randrange(len(_WORD))]
    prompt, equation, answer, steps = template(r)
    solved = sp.solve(equation, X)
    if solved != [answer]:
        raise Rejected
    shown = dec(answer) if template.__name__ == "discount" else frac(answer)
    return {"prompt": prompt, "answer": shown, "steps": steps, "template": template.__name__}


GENERATORS: dict[str, Callable[[random.Random], dict]] = {
    "linear": linear,
    "quadratic": quadratic,
    "fraction": fraction,
    "simplify": simplify,
    "system": system,
    "word": word,
}


def generate(seed: int = 0, counts: dict[str, int] | None = None) -> list[dict]:
    """The task rows, in a fixed order for a given seed (deterministic)."""
    rows: list[dict] = []
    seen: set[str] = set()
    for category, n in (counts or COUNTS).items():
        r = random.Random(f"{seed}-{category}")
        made = 0
        while made < n:
            try:
                item = GENERATORS[category](r)
            except Rejected:
                continue
            if item["prompt"] in seen:
                continue
            seen.add(item["prompt"])
            made += 1
            meta = {"category": category, "source": "opd-selfplay/make_math_tasks"}
            if "template" in item:
                meta["template"] = item["template"]
            rows.append(
                {
                    "id": f"math-{category}-{made:03d}",
                    "prompt": item["prompt"],
                    "reference": item["answer"],
                    "solution": f"{item['steps']} {boxed(item['answer'])}",
                    "metadata": meta,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = generate(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} tasks to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
