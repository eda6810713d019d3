"""Generator of `data/code_tasks.jsonl`, the task set that `opd/Code-v0` ships.

Each task is written here once: a statement, the function's signature, a reference solution
and a list of test inputs. The expected outputs are computed by running the reference solution
in this process (it is our own trusted code, never model output), so a statement and its tests
cannot drift apart. The first `N_PUBLIC` inputs become the public tests (shown to the agent as
examples and in feedback); the rest are hidden (they grade).

Run it after editing a task:

    python -m opd_selfplay.envs.make_code_tasks            # rewrite data/code_tasks.jsonl
    python -m opd_selfplay.envs.make_code_tasks --check    # also grade every reference

`--check` runs every reference through `CodeVerifier` on its own tests (the test suite does
the same). Outputs are JSON values (lists, not tuples; no floats that need a tolerance) because
`CodeVerifier` compares JSON-serialised results type-strictly.

JSONL fields, one task per line:
    task_id       "opd-code/NNN-name", stable
    prompt        the statement, with the signature to implement
    entry_point   the function's name
    solution      a reference solution (complete Python source)
    public_tests  [{"args": [...], "expected": ...}], shown to the agent
    hidden_tests  same shape, used for the reward
    difficulty    1 (one loop) to 3 (an algorithm)
"""

from __future__ import annotations

import argparse
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

N_PUBLIC = 3
OUT = Path(__file__).with_name("data") / "code_tasks.jsonl"


@dataclass(frozen=True)
class _Spec:
    name: str
    signature: str
    statement: str
    solution: str
    inputs: tuple[tuple[object, ...], ...]
    difficulty: int = 1


def _s(name: str, sig: str, text: str, sol: str, inputs: list, difficulty: int = 1) -> _Spec:
    return _Spec(
        name,
        sig,
        text,
        textwrap.dedent(sol).strip() + "\n",
        tuple(tuple(a) for a in inputs),
        difficulty,
    )


SPECS: list[_Spec] = [
    _s(
        "reverse_words",
        "reverse_words(s: str) -> str",
        "returns the words of `s` (separated by runs of spaces) in reverse order, joined by single spaces.",
        """
        def reverse_words(s):
            return " ".join(reversed(s.split()))
        """,
        [
            ["hello world"],
            ["a b c"],
            ["  one  "],
            [""],
            ["x  y   z"],
            ["The quick brown fox"],
            ["ab"],
        ],
    ),
    _s(
        "is_palindrome",
        "is_palindrome(s: str) -> bool",
        "returns True when `s` reads the same backwards, ignoring case and every character that is not a letter or digit.",
        """
        def is_palindrome(s):
            t = [c.lower() for c in s if c.isalnum()]
            return t == t[::-1]
        """,
        [
            ["racecar"],
            ["A man, a plan, a canal: Panama"],
            ["hello"],
            [""],
            ["ab"],
            ["No 'x' in Nixon"],
            ["12321"],
            ["123"],
        ],
    ),
    _s(
        "count_vowels",
        "count_vowels(s: str) -> int",
        "returns how many characters of `s` are vowels (a, e, i, o, u, either case).",
        """
        def count_vowels(s):
            return sum(c in "aeiouAEIOU" for c in s)
        """,
        [
            ["hello"],
            ["AEIOU"],
            ["rhythm"],
            [""],
            ["Programming Language"],
            ["xyzzy"],
            ["Eerie OAK"],
            ["aaaa"],
        ],
    ),
    _s(
        "fizzbuzz",
        "fizzbuzz(n: int) -> list[str]",
        'returns the FizzBuzz strings for 1..n: "Fizz" for multiples of 3, "Buzz" for multiples of 5, "FizzBuzz" for multiples of both, otherwise the number as a string.',
        """
        def fizzbuzz(n):
            out = []
            for i in range(1, n + 1):
                s = ("Fizz" if i % 3 == 0 else "") + ("Buzz" if i % 5 == 0 else "")
                out.append(s or str(i))
            return out
        """,
        [[5], [15], [1], [0], [3], [16], [10]],
    ),
    _s(
        "sum_of_digits",
        "sum_of_digits(n: int) -> int",
        "returns the sum of the decimal digits of the integer `n` (the sign is ignored).",
        """
        def sum_of_digits(n):
            return sum(int(c) for c in str(abs(n)))
        """,
        [[123], [0], [-45], [9999], [1000000], [987654321], [7]],
    ),
    _s(
        "factorial",
        "factorial(n: int) -> int",
        "returns n! for n >= 0.",
        """
        def factorial(n):
            r = 1
            for i in range(2, n + 1):
                r *= i
            return r
        """,
        [[5], [0], [1], [10], [20], [3], [25]],
    ),
    _s(
        "fibonacci",
        "fibonacci(n: int) -> int",
        "returns the n-th Fibonacci number, with fibonacci(0) == 0 and fibonacci(1) == 1.",
        """
        def fibonacci(n):
            a, b = 0, 1
            for _ in range(n):
                a, b = b, a + b
            return a
        """,
        [[10], [0], [1], [2], [30], [50], [90]],
    ),
    _s(
        "is_prime",
        "is_prime(n: int) -> bool",
        "returns True when the integer `n` is a prime number.",
        """
        def is_prime(n):
            if n < 2:
                return False
            i = 2
            while i * i <= n:
                if n % i == 0:
                    return False
                i += 1
            return True
        """,
        [[7], [1], [15], [2], [0], [-7], [97], [7919], [7917]],
    ),
    _s(
        "primes_below",
        "primes_below(n: int) -> list[int]",
        "returns all primes strictly less than `n`, in increasing order.",
        """
        def primes_below(n):
            if n < 3:
                return []
            sieve = [True] * n
            sieve[0] = sieve[1] = False
            for i in range(2, int(n ** 0.5) + 1):
                if sieve[i]:
                    for j in range(i * i, n, i):
                        sieve[j] = False
            return [i for i in range(n) if sieve[i]]
        """,
        [[10], [2], [20], [0], [3], [50], [100]],
        2,
    ),
    _s(
        "gcd",
        "gcd(a: int, b: int) -> int",
        "returns the greatest common divisor of `a` and `b` (non-negative; gcd(0, 0) == 0).",
        """
        def gcd(a, b):
            a, b = abs(a), abs(b)
            while b:
                a, b = b, a % b
            return a
        """,
        [[12, 18], [7, 5], [0, 9], [0, 0], [-12, 8], [1071, 462], [100, 10]],
    ),
    _s(
        "lcm_list",
        "lcm_list(nums: list[int]) -> int",
        "returns the least common multiple of a non-empty list of positive integers.",
        """
        def lcm_list(nums):
            from math import gcd
            r = 1
            for x in nums:
                r = r * x // gcd(r, x)
            return r
        """,
        [[[4, 6]], [[1, 2, 3]], [[5]], [[2, 4, 8]], [[3, 7, 11]], [[12, 15, 20]], [[1, 1]]],
    ),
    _s(
        "flatten",
        "flatten(xs: list) -> list",
        "returns the elements of an arbitrarily nested list in order, with all nesting removed.",
        """
        def flatten(xs):
            out = []
            for x in xs:
                if isinstance(x, list):
                    out.extend(flatten(x))
                else:
                    out.append(x)
            return out
        """,
        [
            [[1, [2, 3]]],
            [[]],
            [[[[[1]]]]],
            [[1, 2, 3]],
            [[[1, [2, [3, [4]]]], 5]],
            [[[], [[]], 1]],
            [["a", ["b"]]],
        ],
        2,
    ),
    _s(
        "chunk",
        "chunk(xs: list, size: int) -> list[list]",
        "splits `xs` into consecutive pieces of length `size` (the last may be shorter).",
        """
        def chunk(xs, size):
            return [xs[i:i + size] for i in range(0, len(xs), size)]
        """,
        [
            [[1, 2, 3, 4, 5], 2],
            [[], 3],
            [[1, 2, 3], 3],
            [[1], 5],
            [[1, 2, 3, 4], 1],
            [list(range(10)), 4],
        ],
    ),
    _s(
        "rotate_list",
        "rotate_list(xs: list, k: int) -> list",
        "returns `xs` rotated right by `k` positions (k may be negative or larger than the length).",
        """
        def rotate_list(xs, k):
            if not xs:
                return []
            k %= len(xs)
            return xs[-k:] + xs[:-k] if k else list(xs)
        """,
        [
            [[1, 2, 3, 4], 1],
            [[1, 2, 3], 0],
            [[1, 2, 3], -1],
            [[], 5],
            [[1, 2, 3], 7],
            [["a", "b"], 3],
            [[1], 100],
        ],
    ),
    _s(
        "dedupe",
        "dedupe(xs: list) -> list",
        "returns `xs` without repeated elements, keeping the first occurrence of each, in order.",
        """
        def dedupe(xs):
            seen = set()
            out = []
            for x in xs:
                if x not in seen:
                    seen.add(x)
                    out.append(x)
            return out
        """,
        [
            [[1, 2, 1, 3, 2]],
            [[]],
            [["a", "a", "a"]],
            [[3, 2, 1]],
            [[1, 1, 2, 2, 3, 3]],
            [[0, -1, 0, -1]],
        ],
    ),
    _s(
        "second_largest",
        "second_largest(xs: list[int]) -> int | None",
        "returns the second largest distinct value of `xs`, or None when there is none.",
        """
        def second_largest(xs):
            vals = sorted(set(xs))
            return vals[-2] if len(vals) >= 2 else None
        """,
        [[[1, 2, 3]], [[5, 5, 5]], [[]], [[4, 1, 4, 3]], [[-1, -2]], [[10]], [[2, 2, 1]]],
    ),
    _s(
        "running_sum",
        "running_sum(xs: list[int]) -> list[int]",
        "returns the prefix sums of `xs`: element i is xs[0] + ... + xs[i].",
        """
        def running_sum(xs):
            out, total = [], 0
            for x in xs:
                total += x
                out.append(total)
            return out
        """,
        [[[1, 2, 3]], [[]], [[5]], [[1, -1, 1, -1]], [[10, 20, 30, 40]], [[0, 0, 0]]],
    ),
    _s(
        "max_subarray_sum",
        "max_subarray_sum(xs: list[int]) -> int",
        "returns the largest sum of a non-empty contiguous slice of the non-empty list `xs`.",
        """
        def max_subarray_sum(xs):
            best = cur = xs[0]
            for x in xs[1:]:
                cur = max(x, cur + x)
                best = max(best, cur)
            return best
        """,
        [
            [[-2, 1, -3, 4, -1, 2, 1, -5, 4]],
            [[1]],
            [[-3, -1, -2]],
            [[5, 4, -1, 7, 8]],
            [[0, 0]],
            [[2, -1, 2]],
            [[-1, 3, -1, 3, -10, 4]],
        ],
        2,
    ),
    _s(
        "two_sum",
        "two_sum(nums: list[int], target: int) -> list[int]",
        "returns the indices [i, j] with i < j of the first pair (smallest j, then smallest i) whose values add up to `target`, or [] when no pair does.",
        """
        def two_sum(nums, target):
            seen = {}
            for j, x in enumerate(nums):
                if target - x in seen:
                    return [seen[target - x], j]
                seen.setdefault(x, j)
            return []
        """,
        [
            [[2, 7, 11, 15], 9],
            [[3, 2, 4], 6],
            [[1, 2], 5],
            [[3, 3], 6],
            [[], 0],
            [[1, 5, 1, 5], 6],
            [[0, 4, 3, 0], 0],
        ],
        2,
    ),
    _s(
        "word_frequencies",
        "word_frequencies(text: str) -> dict[str, int]",
        "returns how often each word occurs in `text`; words are maximal runs of letters, compared in lower case.",
        """
        def word_frequencies(text):
            import re
            out = {}
            for w in re.findall(r"[A-Za-z]+", text):
                w = w.lower()
                out[w] = out.get(w, 0) + 1
            return out
        """,
        [
            ["the cat and the hat"],
            [""],
            ["Hi hi HI"],
            ["one, two; two... three!"],
            ["a1b2c3"],
            ["It's it."],
        ],
    ),
    _s(
        "caesar_cipher",
        "caesar_cipher(text: str, shift: int) -> str",
        "shifts every ASCII letter of `text` by `shift` places in the alphabet (wrapping, keeping case); other characters are unchanged.",
        """
        def caesar_cipher(text, shift):
            out = []
            for c in text:
                if "a" <= c <= "z":
                    out.append(chr((ord(c) - 97 + shift) % 26 + 97))
                elif "A" <= c <= "Z":
                    out.append(chr((ord(c) - 65 + shift) % 26 + 65))
                else:
                    out.append(c)
            return "".join(out)
        """,
        [
            ["abc", 1],
            ["xyz", 3],
            ["Hello, World!", 13],
            ["", 5],
            ["abc", -1],
            ["Zz", 26],
            ["Python 3", 52 + 2],
        ],
    ),
    _s(
        "run_length_encode",
        "run_length_encode(s: str) -> str",
        'encodes `s` as runs "<count><char>", e.g. "aaab" -> "3a1b".',
        """
        def run_length_encode(s):
            out = []
            i = 0
            while i < len(s):
                j = i
                while j < len(s) and s[j] == s[i]:
                    j += 1
                out.append(f"{j - i}{s[i]}")
                i = j
            return "".join(out)
        """,
        [["aaab"], [""], ["abc"], ["zzzzzzzzzzzz"], ["aabbaa"], ["x"], ["  !!"]],
    ),
    _s(
        "run_length_decode",
        "run_length_decode(s: str) -> str",
        'decodes runs "<count><char>" (count has one or more digits, char is not a digit), e.g. "3a1b" -> "aaab".',
        """
        def run_length_decode(s):
            out, num = [], ""
            for c in s:
                if c.isdigit():
                    num += c
                else:
                    out.append(c * int(num))
                    num = ""
            return "".join(out)
        """,
        [["3a1b"], [""], ["1a1b1c"], ["12z"], ["2a2b2a"], ["1x"], ["10-"]],
    ),
    _s(
        "anagrams",
        "anagrams(a: str, b: str) -> bool",
        "returns True when `a` and `b` use the same letters the same number of times, ignoring case and spaces.",
        """
        def anagrams(a, b):
            norm = lambda s: sorted(s.replace(" ", "").lower())
            return norm(a) == norm(b)
        """,
        [
            ["listen", "silent"],
            ["abc", "abd"],
            ["Dormitory", "dirty room"],
            ["", ""],
            ["a", "aa"],
            ["Astronomer", "Moon starer"],
        ],
    ),
    _s(
        "group_anagrams",
        "group_anagrams(words: list[str]) -> list[list[str]]",
        "groups the words that are anagrams of each other; each group keeps input order and groups are ordered by their first word's position.",
        """
        def group_anagrams(words):
            groups = {}
            for w in words:
                groups.setdefault("".join(sorted(w)), []).append(w)
            return list(groups.values())
        """,
        [
            [["eat", "tea", "tan", "ate", "nat", "bat"]],
            [[]],
            [["a"]],
            [["ab", "ba", "ab"]],
            [["abc", "def"]],
            [["", ""]],
        ],
        2,
    ),
    _s(
        "balanced_brackets",
        "balanced_brackets(s: str) -> bool",
        "returns True when the brackets ()[]{} in `s` are balanced and properly nested; other characters are ignored.",
        """
        def balanced_brackets(s):
            pairs = {")": "(", "]": "[", "}": "{"}
            stack = []
            for c in s:
                if c in "([{":
                    stack.append(c)
                elif c in pairs:
                    if not stack or stack.pop() != pairs[c]:
                        return False
            return not stack
        """,
        [["()[]{}"], ["([)]"], [""], ["((("], ["{[()()]}"], ["a(b)c]"], ["f(x[0]) { return 1; }"]],
        2,
    ),
    _s(
        "roman_to_int",
        "roman_to_int(s: str) -> int",
        "converts a valid Roman numeral (I V X L C D M, subtractive notation) to an integer.",
        """
        def roman_to_int(s):
            vals = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
            total = 0
            for i, c in enumerate(s):
                v = vals[c]
                if i + 1 < len(s) and vals[s[i + 1]] > v:
                    total -= v
                else:
                    total += v
            return total
        """,
        [["III"], ["IV"], ["MCMXCIV"], ["LVIII"], ["MMXXIV"], ["XLII"], ["CDXLIV"]],
        2,
    ),
    _s(
        "int_to_roman",
        "int_to_roman(n: int) -> str",
        "converts 1 <= n <= 3999 to a Roman numeral in standard subtractive notation.",
        """
        def int_to_roman(n):
            table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                     (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
            out = []
            for v, s in table:
                while n >= v:
                    out.append(s)
                    n -= v
            return "".join(out)
        """,
        [[3], [4], [1994], [58], [3999], [444], [2024]],
        2,
    ),
    _s(
        "binary_search",
        "binary_search(xs: list[int], target: int) -> int",
        "returns an index of `target` in the sorted list `xs` of distinct values, or -1 when it is absent.",
        """
        def binary_search(xs, target):
            lo, hi = 0, len(xs) - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                if xs[mid] == target:
                    return mid
                if xs[mid] < target:
                    lo = mid + 1
                else:
                    hi = mid - 1
            return -1
        """,
        [
            [[1, 3, 5, 7], 5],
            [[1, 3, 5, 7], 4],
            [[], 1],
            [[2], 2],
            [list(range(0, 100, 3)), 99],
            [list(range(0, 100, 3)), 0],
            [[-5, -2, 0], -2],
        ],
    ),
    _s(
        "merge_sorted",
        "merge_sorted(a: list[int], b: list[int]) -> list[int]",
        "merges two sorted lists into one sorted list (duplicates kept).",
        """
        def merge_sorted(a, b):
            i = j = 0
            out = []
            while i < len(a) and j < len(b):
                if a[i] <= b[j]:
                    out.append(a[i])
                    i += 1
                else:
                    out.append(b[j])
                    j += 1
            return out + a[i:] + b[j:]
        """,
        [
            [[1, 3, 5], [2, 4, 6]],
            [[], [1]],
            [[], []],
            [[1, 1], [1]],
            [[5, 6], [1, 2]],
            [[-3, 0], [-1, 10, 11]],
        ],
    ),
    _s(
        "insertion_sort",
        "insertion_sort(xs: list[int]) -> list[int]",
        "returns a sorted copy of `xs` (ascending) without calling sorted() or list.sort().",
        """
        def insertion_sort(xs):
            out = []
            for x in xs:
                i = len(out)
                while i > 0 and out[i - 1] > x:
                    i -= 1
                out.insert(i, x)
            return out
        """,
        [[[3, 1, 2]], [[]], [[1]], [[5, 4, 3, 2, 1]], [[2, 2, 1, 1]], [[-1, 10, -20, 3]]],
    ),
    _s(
        "matrix_transpose",
        "matrix_transpose(m: list[list[int]]) -> list[list[int]]",
        "returns the transpose of a rectangular matrix given as a list of rows ([] for an empty matrix).",
        """
        def matrix_transpose(m):
            if not m:
                return []
            return [[row[j] for row in m] for j in range(len(m[0]))]
        """,
        [
            [[[1, 2], [3, 4]]],
            [[[1, 2, 3]]],
            [[]],
            [[[1], [2], [3]]],
            [[[1, 2], [3, 4], [5, 6]]],
            [[[7]]],
            [[[0, -1, 2], [3, 4, -5]]],
        ],
    ),
    _s(
        "matrix_multiply",
        "matrix_multiply(a: list[list[int]], b: list[list[int]]) -> list[list[int]]",
        "returns the matrix product a x b (the shapes are compatible).",
        """
        def matrix_multiply(a, b):
            return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))]
                    for i in range(len(a))]
        """,
        [
            [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
            [[[1]], [[2]]],
            [[[1, 2, 3]], [[1], [2], [3]]],
            [[[1], [2]], [[3, 4]]],
            [[[2, 0], [0, 2]], [[1, -1], [4, 5]]],
            [[[1, 0], [0, 1]], [[9, 8], [7, 6]]],
            [[[0, 0]], [[1, 2, 3], [4, 5, 6]]],
        ],
        2,
    ),
    _s(
        "spiral_order",
        "spiral_order(m: list[list[int]]) -> list[int]",
        "returns the elements of a rectangular matrix in clockwise spiral order, starting at the top-left.",
        """
        def spiral_order(m):
            out = []
            m = [list(r) for r in m]
            while m:
                out.extend(m.pop(0))
                if m and m[0]:
                    for row in m:
                        out.append(row.pop())
                if m:
                    out.extend(reversed(m.pop()))
                if m and m[0]:
                    for row in reversed(m):
                        out.append(row.pop(0))
                m = [r for r in m if r]
            return out
        """,
        [
            [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]],
            [[[1, 2], [3, 4]]],
            [[]],
            [[[1]]],
            [[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]],
            [[[1], [2], [3]]],
        ],
        3,
    ),
    _s(
        "pascal_row",
        "pascal_row(n: int) -> list[int]",
        "returns row `n` of Pascal's triangle (row 0 is [1]).",
        """
        def pascal_row(n):
            row = [1]
            for _ in range(n):
                row = [a + b for a, b in zip([0] + row, row + [0])]
            return row
        """,
        [[0], [1], [4], [2], [10], [6]],
    ),
    _s(
        "collatz_steps",
        "collatz_steps(n: int) -> int",
        "returns how many Collatz steps (n -> n/2 if even, 3n+1 if odd) take n >= 1 to 1.",
        """
        def collatz_steps(n):
            steps = 0
            while n != 1:
                n = n // 2 if n % 2 == 0 else 3 * n + 1
                steps += 1
            return steps
        """,
        [[1], [6], [27], [2], [7], [97], [1024]],
    ),
    _s(
        "digital_root",
        "digital_root(n: int) -> int",
        "repeatedly sums the decimal digits of n >= 0 until one digit remains, and returns it.",
        """
        def digital_root(n):
            while n >= 10:
                n = sum(int(c) for c in str(n))
            return n
        """,
        [[16], [942], [0], [132189], [493193], [9], [10]],
    ),
    _s(
        "to_binary",
        "to_binary(n: int) -> str",
        'returns the binary representation of n >= 0 without a prefix ("0" for zero), without calling bin() or format().',
        """
        def to_binary(n):
            if n == 0:
                return "0"
            out = ""
            while n:
                out = str(n % 2) + out
                n //= 2
            return out
        """,
        [[5], [0], [1], [255], [1024], [6], [12345]],
    ),
    _s(
        "from_base",
        "from_base(digits: str, base: int) -> int",
        "parses a non-negative number written in `base` (2..36, digits 0-9 then letters, either case).",
        """
        def from_base(digits, base):
            value = 0
            for c in digits.lower():
                d = int(c) if c.isdigit() else ord(c) - 87
                value = value * base + d
            return value
        """,
        [["101", 2], ["ff", 16], ["z", 36], ["0", 10], ["777", 8], ["FF", 16], ["zz", 36]],
    ),
    _s(
        "count_bits",
        "count_bits(n: int) -> int",
        "returns the number of 1 bits in the binary form of n >= 0.",
        """
        def count_bits(n):
            c = 0
            while n:
                c += n & 1
                n >>= 1
            return c
        """,
        [[0], [7], [8], [255], [1023], [12345], [2**40 + 1]],
    ),
    _s(
        "is_power_of_two",
        "is_power_of_two(n: int) -> bool",
        "returns True when n is a positive power of two (1, 2, 4, ...).",
        """
        def is_power_of_two(n):
            return n > 0 and n & (n - 1) == 0
        """,
        [[1], [6], [16], [0], [-8], [1024], [1023]],
    ),
    _s(
        "perfect_numbers",
        "perfect_numbers(limit: int) -> list[int]",
        "returns the perfect numbers (equal to the sum of their proper divisors) up to and including `limit`.",
        """
        def perfect_numbers(limit):
            out = []
            for n in range(2, limit + 1):
                s = 1
                d = 2
                while d * d <= n:
                    if n % d == 0:
                        s += d
                        if d != n // d:
                            s += n // d
                    d += 1
                if s == n:
                    out.append(n)
            return out
        """,
        [[10], [30], [1], [500], [6], [28], [10000]],
        2,
    ),
    _s(
        "title_case",
        "title_case(s: str) -> str",
        "capitalises the first letter of every space-separated word and lower-cases the rest, keeping the spaces as they are.",
        """
        def title_case(s):
            return " ".join(w[:1].upper() + w[1:].lower() for w in s.split(" "))
        """,
        [["hello world"], [""], ["hELLO"], ["a  b"], ["python is FUN"], [" x"]],
    ),
    _s(
        "snake_to_camel",
        "snake_to_camel(s: str) -> str",
        'converts snake_case to camelCase: "get_user_id" -> "getUserId"; empty parts from repeated underscores are dropped.',
        """
        def snake_to_camel(s):
            parts = [p for p in s.split("_") if p]
            if not parts:
                return ""
            return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
        """,
        [["get_user_id"], ["x"], [""], ["a__b"], ["already"], ["to_json_string"]],
    ),
    _s(
        "camel_to_snake",
        "camel_to_snake(s: str) -> str",
        'converts camelCase or PascalCase to snake_case: every capital letter starts a new lower-case part, so "getUserId" -> "get_user_id" and "HTTPServer" -> "h_t_t_p_server".',
        """
        def camel_to_snake(s):
            out = []
            for i, c in enumerate(s):
                if c.isupper():
                    if i:
                        out.append("_")
                    out.append(c.lower())
                else:
                    out.append(c)
            return "".join(out)
        """,
        [["getUserId"], ["x"], [""], ["HTTPServer"], ["Already"], ["toJSON"]],
    ),
    _s(
        "longest_common_prefix",
        "longest_common_prefix(words: list[str]) -> str",
        'returns the longest string that is a prefix of every word ("" for an empty list).',
        """
        def longest_common_prefix(words):
            if not words:
                return ""
            p = words[0]
            for w in words[1:]:
                while not w.startswith(p):
                    p = p[:-1]
            return p
        """,
        [
            [["flower", "flow", "flight"]],
            [["dog", "car"]],
            [[]],
            [["same", "same"]],
            [["a"]],
            [["prefix", "pre", "prepare"]],
        ],
    ),
    _s(
        "longest_unique_substring",
        "longest_unique_substring(s: str) -> int",
        "returns the length of the longest substring of `s` with no repeated character.",
        """
        def longest_unique_substring(s):
            last = {}
            start = best = 0
            for i, c in enumerate(s):
                if c in last and last[c] >= start:
                    start = last[c] + 1
                last[c] = i
                best = max(best, i - start + 1)
            return best
        """,
        [["abcabcbb"], ["bbbbb"], ["pwwkew"], [""], ["abcdef"], ["dvdf"], ["abba"]],
        3,
    ),
    _s(
        "edit_distance",
        "edit_distance(a: str, b: str) -> int",
        "returns the Levenshtein distance (insertions, deletions, substitutions) between `a` and `b`.",
        """
        def edit_distance(a, b):
            prev = list(range(len(b) + 1))
            for i, ca in enumerate(a, 1):
                cur = [i]
                for j, cb in enumerate(b, 1):
                    cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
                prev = cur
            return prev[-1]
        """,
        [
            ["kitten", "sitting"],
            ["", "abc"],
            ["same", "same"],
            ["flaw", "lawn"],
            ["intention", "execution"],
            ["a", ""],
            ["abc", "cba"],
        ],
        3,
    ),
    _s(
        "longest_common_subsequence",
        "longest_common_subsequence(a: str, b: str) -> int",
        "returns the length of the longest common subsequence of `a` and `b`.",
        """
        def longest_common_subsequence(a, b):
            prev = [0] * (len(b) + 1)
            for ca in a:
                cur = [0]
                for j, cb in enumerate(b, 1):
                    cur.append(prev[j - 1] + 1 if ca == cb else max(prev[j], cur[j - 1]))
                prev = cur
            return prev[-1]
        """,
        [
            ["abcde", "ace"],
            ["abc", "def"],
            ["", "x"],
            ["abc", "abc"],
            ["AGGTAB", "GXTXAYB"],
            ["aaaa", "aa"],
        ],
        3,
    ),
    _s(
        "coin_change",
        "coin_change(coins: list[int], amount: int) -> int",
        "returns the fewest coins (unlimited supply of each positive denomination) that add up to `amount`, or -1 when impossible.",
        """
        def coin_change(coins, amount):
            INF = amount + 1
            best = [0] + [INF] * amount
            for a in range(1, amount + 1):
                for c in coins:
                    if c <= a and best[a - c] + 1 < best[a]:
                        best[a] = best[a - c] + 1
            return best[amount] if best[amount] <= amount else -1
        """,
        [
            [[1, 2, 5], 11],
            [[2], 3],
            [[1], 0],
            [[3, 7], 14],
            [[2, 5, 10, 1], 27],
            [[186, 419, 83, 408], 6249],
        ],
        3,
    ),
    _s(
        "climb_stairs",
        "climb_stairs(n: int) -> int",
        "returns the number of ways to climb n >= 0 stairs taking 1 or 2 steps at a time.",
        """
        def climb_stairs(n):
            a, b = 1, 1
            for _ in range(n):
                a, b = b, a + b
            return a
        """,
        [[2], [3], [0], [1], [10], [45]],
        2,
    ),
    _s(
        "knapsack",
        "knapsack(weights: list[int], values: list[int], capacity: int) -> int",
        "returns the largest total value of a subset of items (each used at most once) whose total weight is at most `capacity`.",
        """
        def knapsack(weights, values, capacity):
            best = [0] * (capacity + 1)
            for w, v in zip(weights, values):
                for c in range(capacity, w - 1, -1):
                    best[c] = max(best[c], best[c - w] + v)
            return best[capacity]
        """,
        [
            [[1, 3, 4, 5], [1, 4, 5, 7], 7],
            [[], [], 10],
            [[5], [10], 4],
            [[2, 2, 2], [3, 3, 3], 4],
            [[10, 20, 30], [60, 100, 120], 50],
            [[3, 4, 5, 9, 4], [3, 4, 4, 10, 4], 11],
            [[1, 1, 1, 1], [1, 2, 3, 4], 2],
        ],
        3,
    ),
    _s(
        "permutations_sorted",
        "permutations_sorted(s: str) -> list[str]",
        "returns every distinct permutation of the characters of `s`, sorted lexicographically.",
        """
        def permutations_sorted(s):
            from itertools import permutations
            return sorted(set("".join(p) for p in permutations(s)))
        """,
        [["abc"], ["aab"], [""], ["x"], ["ba"], ["abcd"]],
        2,
    ),
    _s(
        "subsets_sum",
        "subsets_sum(nums: list[int], target: int) -> int",
        "returns how many subsets (by position) of `nums` add up to `target`; the empty subset sums to 0.",
        """
        def subsets_sum(nums, target):
            from itertools import combinations
            return sum(1 for r in range(len(nums) + 1)
                       for c in combinations(nums, r) if sum(c) == target)
        """,
        [[[1, 2, 3], 3], [[], 0], [[1, 1, 1], 2], [[5], 3], [[2, 4, 6, 8], 10], [[1, -1, 2], 0]],
        2,
    ),
    _s(
        "valid_ipv4",
        "valid_ipv4(s: str) -> bool",
        "returns True for a dotted-quad IPv4 address: four decimal parts 0..255 without leading zeros (except 0 itself).",
        """
        def valid_ipv4(s):
            parts = s.split(".")
            if len(parts) != 4:
                return False
            for p in parts:
                if not p.isdigit() or not p.isascii() or (len(p) > 1 and p[0] == "0") or int(p) > 255:
                    return False
            return True
        """,
        [
            ["192.168.0.1"],
            ["256.1.1.1"],
            ["1.2.3"],
            ["01.2.3.4"],
            ["0.0.0.0"],
            ["a.b.c.d"],
            ["1.2.3.4.5"],
            ["255.255.255.255"],
        ],
        2,
    ),
    _s(
        "parse_key_values",
        "parse_key_values(s: str) -> dict[str, str]",
        'parses "k1=v1;k2=v2" into a dict; whitespace around keys and values is stripped, empty items are skipped, a later key overrides an earlier one.',
        """
        def parse_key_values(s):
            out = {}
            for item in s.split(";"):
                if not item.strip():
                    continue
                k, _, v = item.partition("=")
                out[k.strip()] = v.strip()
            return out
        """,
        [["a=1;b=2"], [""], [" x = y ; ;z=w"], ["k=1;k=2"], ["url=a=b"], ["name=Ada Lovelace"]],
    ),
    _s(
        "evaluate_rpn",
        "evaluate_rpn(tokens: list[str]) -> int",
        'evaluates a reverse-Polish expression over integers with + - * and / (integer division truncating toward zero), e.g. ["2", "1", "+", "3", "*"] -> 9.',
        """
        def evaluate_rpn(tokens):
            stack = []
            for t in tokens:
                if t in ("+", "-", "*", "/"):
                    b, a = stack.pop(), stack.pop()
                    if t == "+":
                        stack.append(a + b)
                    elif t == "-":
                        stack.append(a - b)
                    elif t == "*":
                        stack.append(a * b)
                    else:
                        stack.append(int(a / b))
                else:
                    stack.append(int(t))
            return stack[-1]
        """,
        [
            [["2", "1", "+", "3", "*"]],
            [["4", "13", "5", "/", "+"]],
            [["7"]],
            [["3", "-4", "*"]],
            [["10", "6", "9", "3", "+", "-11", "*", "/", "*", "17", "+", "5", "+"]],
            [["-7", "2", "/"]],
        ],
        2,
    ),
    _s(
        "histogram",
        "histogram(xs: list[int]) -> list[list[int]]",
        "returns [[value, count], ...] for the distinct values of `xs`, sorted by descending count and then ascending value.",
        """
        def histogram(xs):
            counts = {}
            for x in xs:
                counts[x] = counts.get(x, 0) + 1
            return [[v, c] for v, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        """,
        [
            [[1, 2, 2, 3, 3, 3]],
            [[]],
            [[5, 4]],
            [[0, 0, 1, 1]],
            [[-1, -1, 2, 2, 2, 7]],
            [[9, 9, 9]],
            [[3, 1, 2]],
        ],
    ),
    _s(
        "invert_dict",
        "invert_dict(d: dict[str, str]) -> dict[str, list[str]]",
        "maps each value of `d` to the sorted list of keys that had it.",
        """
        def invert_dict(d):
            out = {}
            for k, v in d.items():
                out.setdefault(v, []).append(k)
            return {v: sorted(ks) for v, ks in out.items()}
        """,
        [
            [{"a": "x", "b": "y", "c": "x"}],
            [{}],
            [{"k": "v"}],
            [{"z": "1", "y": "1", "x": "1"}],
            [{"p": "q", "q": "p"}],
            [{"b": "", "a": ""}],
        ],
    ),
    _s(
        "merge_intervals",
        "merge_intervals(intervals: list[list[int]]) -> list[list[int]]",
        "merges overlapping or touching closed intervals [start, end] and returns them sorted by start.",
        """
        def merge_intervals(intervals):
            out = []
            for s, e in sorted(intervals):
                if out and s <= out[-1][1]:
                    out[-1][1] = max(out[-1][1], e)
                else:
                    out.append([s, e])
            return out
        """,
        [
            [[[1, 3], [2, 6], [8, 10]]],
            [[]],
            [[[1, 4], [4, 5]]],
            [[[5, 6], [1, 2]]],
            [[[1, 10], [2, 3], [4, 5]]],
            [[[0, 0], [0, 0]]],
        ],
        2,
    ),
    _s(
        "count_islands",
        "count_islands(grid: list[str]) -> int",
        'counts groups of "#" cells connected horizontally or vertically in a grid of "#" and "." rows.',
        """
        def count_islands(grid):
            seen = set()
            count = 0
            for r in range(len(grid)):
                for c in range(len(grid[r])):
                    if grid[r][c] == "#" and (r, c) not in seen:
                        count += 1
                        stack = [(r, c)]
                        seen.add((r, c))
                        while stack:
                            y, x = stack.pop()
                            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                                if (0 <= ny < len(grid) and 0 <= nx < len(grid[ny])
                                        and grid[ny][nx] == "#" and (ny, nx) not in seen):
                                    seen.add((ny, nx))
                                    stack.append((ny, nx))
            return count
        """,
        [
            [["##..", "#...", "..##"]],
            [[]],
            [["...."]],
            [["#.#", ".#.", "#.#"]],
            [["###", "#.#", "###"]],
            [["#"]],
        ],
        3,
    ),
    _s(
        "shortest_path_grid",
        "shortest_path_grid(grid: list[str]) -> int",
        'returns the fewest moves (up/down/left/right) from the top-left to the bottom-right cell through "." cells ("#" is a wall), or -1 when there is no path.',
        """
        def shortest_path_grid(grid):
            from collections import deque
            h, w = len(grid), len(grid[0])
            if grid[0][0] == "#" or grid[h - 1][w - 1] == "#":
                return -1
            dist = {(0, 0): 0}
            q = deque([(0, 0)])
            while q:
                y, x = q.popleft()
                if (y, x) == (h - 1, w - 1):
                    return dist[(y, x)]
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if 0 <= ny < h and 0 <= nx < w and grid[ny][nx] == "." and (ny, nx) not in dist:
                        dist[(ny, nx)] = dist[(y, x)] + 1
                        q.append((ny, nx))
            return -1
        """,
        [
            [["...", ".#.", "..."]],
            [["."]],
            [[".#", "#."]],
            [["....", "###.", "....", ".###", "...."]],
            [["..", ".."]],
            [["#."]],
        ],
        3,
    ),
    _s(
        "topological_order",
        "topological_order(n: int, edges: list[list[int]]) -> list[int]",
        "returns a topological order of nodes 0..n-1 for the directed edges [u, v] (u before v), always choosing the smallest available node next; [] when there is a cycle.",
        """
        def topological_order(n, edges):
            import heapq
            indeg = [0] * n
            adj = [[] for _ in range(n)]
            for u, v in edges:
                adj[u].append(v)
                indeg[v] += 1
            heap = [i for i in range(n) if indeg[i] == 0]
            heapq.heapify(heap)
            out = []
            while heap:
                u = heapq.heappop(heap)
                out.append(u)
                for v in adj[u]:
                    indeg[v] -= 1
                    if indeg[v] == 0:
                        heapq.heappush(heap, v)
            return out if len(out) == n else []
        """,
        [
            [3, [[0, 1], [1, 2]]],
            [3, []],
            [2, [[0, 1], [1, 0]]],
            [4, [[3, 0], [2, 0], [1, 3]]],
            [1, []],
            [5, [[4, 3], [3, 2], [2, 1], [1, 0]]],
        ],
        3,
    ),
    _s(
        "nth_ugly_number",
        "nth_ugly_number(n: int) -> int",
        "returns the n-th (1-based) positive integer whose only prime factors are 2, 3 and 5 (1 is the first).",
        """
        def nth_ugly_number(n):
            ugly = [1]
            i2 = i3 = i5 = 0
            while len(ugly) < n:
                nxt = min(ugly[i2] * 2, ugly[i3] * 3, ugly[i5] * 5)
                ugly.append(nxt)
                if nxt == ugly[i2] * 2:
                    i2 += 1
                if nxt == ugly[i3] * 3:
                    i3 += 1
                if nxt == ugly[i5] * 5:
                    i5 += 1
            return ugly[n - 1]
        """,
        [[1], [10], [7], [15], [150], [2]],
        3,
    ),
    _s(
        "look_and_say",
        "look_and_say(n: int) -> str",
        'returns the n-th (1-based) term of the look-and-say sequence "1", "11", "21", "1211", ...',
        """
        def look_and_say(n):
            s = "1"
            for _ in range(n - 1):
                out, i = [], 0
                while i < len(s):
                    j = i
                    while j < len(s) and s[j] == s[i]:
                        j += 1
                    out.append(f"{j - i}{s[i]}")
                    i = j
                s = "".join(out)
            return s
        """,
        [[1], [4], [2], [5], [8], [10]],
        2,
    ),
    _s(
        "stock_profit",
        "stock_profit(prices: list[int]) -> int",
        "returns the best profit from one buy followed by one later sell (0 when no profit is possible).",
        """
        def stock_profit(prices):
            best, low = 0, None
            for p in prices:
                if low is None or p < low:
                    low = p
                best = max(best, p - low)
            return best
        """,
        [[[7, 1, 5, 3, 6, 4]], [[7, 6, 4, 3, 1]], [[]], [[1, 2]], [[3, 3, 3]], [[2, 4, 1, 7]]],
        2,
    ),
    _s(
        "product_except_self",
        "product_except_self(nums: list[int]) -> list[int]",
        "returns a list whose element i is the product of every element of `nums` except nums[i].",
        """
        def product_except_self(nums):
            n = len(nums)
            out = [1] * n
            left = 1
            for i in range(n):
                out[i] = left
                left *= nums[i]
            right = 1
            for i in range(n - 1, -1, -1):
                out[i] *= right
                right *= nums[i]
            return out
        """,
        [[[1, 2, 3, 4]], [[0, 1, 2]], [[5]], [[2, 0, 0]], [[-1, 1, -1, 1]], [[3, 4]]],
        2,
    ),
    _s(
        "majority_element",
        "majority_element(xs: list[int]) -> int | None",
        "returns the value that occurs in more than half of the positions of `xs`, or None.",
        """
        def majority_element(xs):
            counts = {}
            for x in xs:
                counts[x] = counts.get(x, 0) + 1
                if counts[x] * 2 > len(xs):
                    return x
            return None
        """,
        [[[3, 2, 3]], [[1, 2]], [[]], [[2, 2, 1, 1, 1, 2, 2]], [[7]], [[1, 1, 2, 2]]],
    ),
    _s(
        "zigzag_merge",
        "zigzag_merge(a: list, b: list) -> list",
        "interleaves a[0], b[0], a[1], b[1], ...; leftover elements of the longer list come at the end.",
        """
        def zigzag_merge(a, b):
            out = []
            for i in range(max(len(a), len(b))):
                if i < len(a):
                    out.append(a[i])
                if i < len(b):
                    out.append(b[i])
            return out
        """,
        [
            [[1, 3, 5], [2, 4, 6]],
            [[], [1]],
            [[1, 2, 3], ["a"]],
            [[], []],
            [["x"], ["y", "z"]],
            [[0, 0], [1, 1]],
        ],
    ),
    _s(
        "compress_ranges",
        "compress_ranges(nums: list[int]) -> list[str]",
        'summarises a sorted list of distinct integers as ranges: [0, 1, 2, 4, 6, 7] -> ["0->2", "4", "6->7"].',
        """
        def compress_ranges(nums):
            out = []
            i = 0
            while i < len(nums):
                j = i
                while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
                    j += 1
                out.append(str(nums[i]) if i == j else f"{nums[i]}->{nums[j]}")
                i = j + 1
            return out
        """,
        [[[0, 1, 2, 4, 6, 7]], [[]], [[5]], [[-3, -2, -1, 1]], [[1, 3, 5]], [[0, 1]]],
        2,
    ),
    _s(
        "next_permutation",
        "next_permutation(xs: list[int]) -> list[int]",
        "returns the next lexicographic permutation of `xs`, wrapping to the smallest (sorted) one after the largest.",
        """
        def next_permutation(xs):
            xs = list(xs)
            i = len(xs) - 2
            while i >= 0 and xs[i] >= xs[i + 1]:
                i -= 1
            if i >= 0:
                j = len(xs) - 1
                while xs[j] <= xs[i]:
                    j -= 1
                xs[i], xs[j] = xs[j], xs[i]
            xs[i + 1:] = reversed(xs[i + 1:])
            return xs
        """,
        [[[1, 2, 3]], [[3, 2, 1]], [[1, 1, 5]], [[]], [[1]], [[1, 3, 2]], [[2, 3, 1]]],
        3,
    ),
    _s(
        "word_wrap",
        "word_wrap(text: str, width: int) -> list[str]",
        "greedily wraps the space-separated words of `text` into lines of at most `width` characters (a longer word gets a line of its own).",
        """
        def word_wrap(text, width):
            lines, cur = [], ""
            for w in text.split():
                if not cur:
                    cur = w
                elif len(cur) + 1 + len(w) <= width:
                    cur += " " + w
                else:
                    lines.append(cur)
                    cur = w
            if cur:
                lines.append(cur)
            return lines
        """,
        [
            ["the quick brown fox", 10],
            ["", 5],
            ["a b c d", 3],
            ["extraordinary word", 5],
            ["one two", 7],
            ["aa bb cc", 100],
        ],
        2,
    ),
]


def _function_of(spec: _Spec):
    namespace: dict[str, object] = {}
    exec(compile(spec.solution, f"<reference {spec.name}>", "exec"), namespace)  # trusted source
    return namespace[spec.name]


def build_tasks() -> list[dict]:
    """Computes every task's expected outputs from its reference solution.

    Returns:
        The JSON-ready task dicts, in `SPECS` order.

    Raises:
        ValueError: a reference solution mutated its input, returned a non-JSON value, or
            two specs share a name.
    """
    names = [s.name for s in SPECS]
    if len(set(names)) != len(names):
        raise ValueError("make_code_tasks: two specs share a name; names must be unique")
    tasks = []
    for i, spec in enumerate(SPECS, 1):
        fn = _function_of(spec)
        tests = []
        for args in spec.inputs:
            before = json.dumps(args)
            value = fn(*json.loads(before))  # a fresh copy: the reference must not see shared state
            if json.loads(json.dumps(value)) != value:
                raise ValueError(f"task {spec.name}: output {value!r} is not a JSON value")
            tests.append({"args": json.loads(before), "expected": value})
        prompt = f"Write a Python function `{spec.signature}` that {spec.statement}"
        tasks.append(
            {
                "task_id": f"opd-code/{i:03d}-{spec.name}",
                "prompt": prompt,
                "entry_point": spec.name,
                "solution": spec.solution,
                "public_tests": tests[:N_PUBLIC],
                "hidden_tests": tests[N_PUBLIC:],
                "difficulty": spec.difficulty,
            }
        )
    return tasks


def main(argv: list[str] | None = None) -> int:
    """Writes `data/code_tasks.jsonl`; with `--check`, grades every reference too."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSONL")
    parser.add_argument("--check", action="store_true", help="grade references with CodeVerifier")
    args = parser.parse_args(argv)
    tasks = build_tasks()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for t in tasks:
            fh.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"wrote {len(tasks)} tasks to {args.out}")
    if args.check:
        from opd_selfplay.envs.code_env import check_references

        failures = check_references(tasks)
        for line in failures:
            print(line)
        print(f"{len(tasks) - len(failures)} of {len(tasks)} references pass their tests")
        return 1 if failures else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
