"""ToolCallVerifier: matching calls with tolerance, markers and order rules; partial credit;
answers and final states; hostile responses; the batch API; `opd verify tool`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_selfplay.verifiers import ToolCallVerifier, Verdict
from opd_selfplay.verifiers.jsonschema_lite import Rules, compare
from opd_selfplay.verifiers.tool import gold_response, verify_state

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1},
                    "unit": {"type": "string", "enum": ["celsius", "C", "F"], "default": "celsius"},
                },
                "required": ["city", "days"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert",
            "parameters": {
                "type": "object",
                "properties": {"value": {"type": "number"}, "to": {"type": "string"}},
                "required": ["value", "to"],
            },
        },
    },
]
WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}
CONVERT = {"name": "convert", "arguments": {"value": 0.1, "to": "km"}}
REF = {"tool_calls": [WEATHER, CONVERT], "tools": TOOLS}


def hermes(*calls: dict) -> str:
    return "".join(f"<tool_call>{json.dumps(c, ensure_ascii=False)}</tool_call>" for c in calls)


def with_args(c: dict, **changes: object) -> dict:
    return {"name": c["name"], "arguments": {**c["arguments"], **changes}}


@pytest.fixture(scope="module")
def verifier() -> ToolCallVerifier:
    return ToolCallVerifier()


# --- gold, empty, garbage ----------------------------------------------------------------------


def test_gold_in_every_format_scores_one(verifier: ToolCallVerifier) -> None:
    openai = {
        "tool_calls": [
            {
                "id": f"c{i}",
                "type": "function",
                "function": {**c, "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate([WEATHER, CONVERT])
        ]
    }
    responses = [
        gold_response(REF),
        json.dumps(openai),
        "Calling:\n```json\n" + json.dumps([WEATHER, CONVERT]) + "\n```",
        json.dumps(WEATHER) + "\n" + json.dumps(CONVERT),
    ]
    for response in responses:
        verdict = verifier.verify(response, REF)
        assert (verdict.score, verdict.correct) == (1.0, True), (response, verdict.feedback)
        assert verdict.feedback == "all 2 tool call(s) match"
        json.dumps(verdict.to_dict())  # JSON-ready


@pytest.mark.parametrize("response", ["", "   \n", "I don't know.", "}{][ \x00 \ufffd ☃ {{{"])
def test_empty_and_garbage_score_zero(verifier: ToolCallVerifier, response: str) -> None:
    verdict = verifier.verify(response, REF)
    assert (verdict.score, verdict.correct) == (0.0, False)
    assert verdict.feedback == "no tool call found in the response"


def test_one_megabyte_of_garbage_scores_zero_quickly(verifier: ToolCallVerifier) -> None:
    t0 = time.monotonic()
    verdict = verifier.verify("<tool_call>{" * 100_000, REF)
    assert time.monotonic() - t0 < 2.0
    assert verdict.score == 0.0
    assert verdict.details["error"] == "too_large"
    assert "over the limit" in verdict.feedback


def test_ten_thousand_nested_brackets_score_zero(verifier: ToolCallVerifier) -> None:
    verdict = verifier.verify("<tool_call>" + "[" * 10_000 + "]" * 10_000 + "</tool_call>", REF)
    assert verdict.score == 0.0
    assert "nested deeper than 100 levels" in verdict.feedback


def test_invalid_json_feedback_gives_the_position(verifier: ToolCallVerifier) -> None:
    response = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris" "days": 3}}</tool_call>'
    )
    verdict = verifier.verify(response, REF)
    assert verdict.score == 0.0
    position = response.index('"days"')  # the decoder stops where the comma is missing
    assert f"invalid JSON at char {position}" in verdict.feedback


def test_unknown_tool_and_wrong_types_get_feedback_naming_them(verifier: ToolCallVerifier) -> None:
    unknown = verifier.verify(hermes({"name": "get_wether", "arguments": {}}, CONVERT), REF)
    assert unknown.score == 0.5
    assert 'call 1 (get_wether): unknown tool "get_wether" (available: convert, get_weather)' in (
        unknown.feedback
    )
    wrong = verifier.verify(hermes(with_args(WEATHER, days="3"), CONVERT), REF)
    assert wrong.score == 0.5
    assert (
        wrong.feedback == "call 1 (get_weather): argument 'days' must be integer, got string \"3\""
    )


def test_wrong_types_without_schemas_are_named_by_the_comparison(
    verifier: ToolCallVerifier,
) -> None:
    ref = {"tool_calls": [WEATHER]}
    verdict = verifier.verify(hermes(with_args(WEATHER, days=[3], city=None)), ref)
    lines = verdict.feedback.splitlines()
    assert "call 1 (get_weather): argument 'city' should be string, got null null" in lines
    assert "call 1 (get_weather): argument 'days' should be a number, got array [3]" in lines


# --- comparison rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("got", "expected", "ok"),
    [
        (0.1 * (1 + 5e-7), 0.1, True),  # within 1e-6 relative
        (0.1 * (1 + 5e-6), 0.1, False),
        (3.0, 3, True),
        (1e-12, 0, True),  # abs_tol
        (True, 1, False),
        (1, True, False),
        ("1", 1, False),
        (10**30, 10**30 + 1, False),  # big ints compare exactly
        (float("inf"), float("inf"), True),
        ("Paris", "paris", False),
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ([1, 2], [2, 1], False),
    ],
)
def test_compare_values(got: object, expected: object, ok: bool) -> None:
    assert (compare(got, expected) == []) is ok


def test_markers() -> None:
    assert compare("C", {"$any": ["celsius", "C"]}) == []
    assert compare("kelvin", {"$any": ["celsius", "C"]}) != []
    # A plain list in a reference is a literal list argument, never "any of".
    assert compare(["celsius", "C"], ["celsius", "C"]) == []
    assert compare("celsius", ["celsius", "C"]) != []
    assert compare([["a", "b"]], [{"$any": [["a", "b"], ["b", "a"]]}]) == []
    assert compare({}, {"unit": {"$optional": "celsius"}}) == []
    assert compare({"unit": "F"}, {"unit": {"$optional": "celsius"}}) != []
    assert compare({"q": "anything"}, {"q": {"$ignore": True}}) == []
    assert compare({}, {"q": {"$ignore": True}}) == ["missing argument 'q'"]
    assert compare([3, 1, 2], {"$unordered": [1, 2, 3]}) == []
    assert compare([3, 1, 1], {"$unordered": [1, 2, 3]}) != []
    assert compare({"$any": [1]}, {"$literal": {"$any": [1]}}) == []
    assert compare(1, {"$literal": {"$any": [1]}}) != []


def test_normalized_strings_and_tolerance_are_configurable() -> None:
    loose = Rules(normalize_strings=True, rel_tol=1e-2)
    assert compare("  NEW   york ", "New York", loose) == []
    assert compare(101.0, 100, loose) == []
    # Two integers compare exactly whatever the tolerance: ids and counts are not measurements.
    assert compare(1_000_001, 1_000_000) != []
    assert compare(101, 100, loose) != []
    assert compare("NEW york", "New York") != []


def test_alternatives_optional_fields_and_schema_defaults_in_calls(
    verifier: ToolCallVerifier,
) -> None:
    ref = {
        "tool_calls": [with_args(WEATHER, unit={"$optional": {"$any": ["celsius", "C"]}})],
        "tools": TOOLS,
    }
    for unit in (None, "celsius", "C"):
        call = WEATHER if unit is None else with_args(WEATHER, unit=unit)
        assert verifier.verify(hermes(call), ref).score == 1.0, unit
    assert verifier.verify(hermes(with_args(WEATHER, unit="F")), ref).score == 0.0
    # An extra argument equal to the schema's default is not a mismatch.
    assert (
        verifier.verify(
            hermes(with_args(WEATHER, unit="celsius")), {**REF, "tool_calls": [WEATHER]}
        ).score
        == 1.0
    )
    assert (
        verifier.verify(
            hermes(with_args(WEATHER, unit="C")), {**REF, "tool_calls": [WEATHER]}
        ).score
        == 0.0
    )


# --- order and partial credit ------------------------------------------------------------------


def test_order_rules_and_partial_credit(verifier: ToolCallVerifier) -> None:
    swapped = hermes(CONVERT, WEATHER)
    strict = verifier.verify(swapped, REF)
    assert strict.score == 0.5
    assert "call 1 (convert): matches an expected call but comes out of order" in strict.feedback
    assert verifier.verify(swapped, {**REF, "order": "any"}).score == 1.0
    assert ToolCallVerifier(order="any").verify(swapped, REF).score == 1.0
    # score = matched / max(expected calls, calls made incl. broken attempts)
    assert verifier.verify(hermes(WEATHER), REF).score == 0.5
    extra = verifier.verify(hermes(WEATHER, CONVERT, CONVERT), REF)
    assert extra.score == pytest.approx(2 / 3)
    assert "call 3 (convert): not expected (matches no reference call)" in extra.feedback
    broken = verifier.verify(hermes(WEATHER, CONVERT) + "<tool_call>{oops</tool_call>", REF)
    assert broken.score == pytest.approx(2 / 3)
    spam = verifier.verify(hermes(*[WEATHER] * 10, CONVERT), REF)
    assert spam.score == pytest.approx(2 / 11)


def test_one_feedback_line_per_mismatch(verifier: ToolCallVerifier) -> None:
    response = hermes(with_args(WEATHER, city="Lyon", days=4), with_args(CONVERT, value=1.0))
    verdict = verifier.verify(response, REF)
    assert verdict.score == 0.0
    assert verdict.feedback.splitlines() == [
        "call 1 (get_weather): argument 'city' has the wrong value: got \"Lyon\"",
        "call 1 (get_weather): argument 'days' has the wrong value: got 4",
        "call 2 (convert): argument 'value' has the wrong value: got 1.0",
    ]


def test_feedback_hides_reference_values_unless_revealed() -> None:
    ref = {"tool_calls": [{"name": "f", "arguments": {"secret": "xyzzy-42"}}, CONVERT]}
    response = hermes({"name": "f", "arguments": {"secret": "guess"}})
    hidden = ToolCallVerifier().verify(response, ref)
    assert "xyzzy-42" not in hidden.feedback and "km" not in hidden.feedback
    assert "1 expected call(s) missing" in hidden.feedback
    shown = ToolCallVerifier(reveal=True).verify(response, ref)
    assert 'expected "xyzzy-42"' in shown.feedback
    assert 'missing call convert({"value": 0.1, "to": "km"})' in shown.feedback


def test_reference_without_calls_wants_a_plain_answer(verifier: ToolCallVerifier) -> None:
    ref = {"tool_calls": []}
    assert verifier.verify("It is sunny.", ref).score == 1.0
    assert verifier.verify("It is sunny.", ref).feedback == "no tool call, as expected"
    assert verifier.verify(hermes(WEATHER), ref).score == 0.0


# --- answers and states ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "answer", "score"),
    [
        ("The answer is 42.", 42, 1.0),
        ("Answer: 41.9999999999", 42, 1.0),
        ("Step 1: 3 + 4 = 7\nSo we get 12.", 12, 1.0),
        ("First 12, then the answer is: 7 (not 12)", 7, 1.0),
        ("#### 1,234", 1234, 1.0),
        ("Answer: 3/4", 0.75, 1.0),
        ("Answer: 41", 42, 0.0),
        ("It could be 41 or 42", 41, 0.0),  # only one number is read
        ("**Answer:** Paris.", "paris", 1.0),
        ("<answer> São Paulo </answer>", "são paulo", 1.0),
        ("Paris, London", "Paris", 0.0),
        ("Answer: yes", True, 1.0),
        ("Answer: no", True, 0.0),
        ('Answer: {"km": 1.609344}', {"km": 1.6093440001}, 1.0),
        ("Answer: C", {"$any": ["celsius", "C"]}, 1.0),
        ("北京的天气：晴", "北京的天气：晴", 1.0),
        ("", 42, 0.0),
    ],
)
def test_answer_mode(
    verifier: ToolCallVerifier, response: str, answer: object, score: float
) -> None:
    verdict = verifier.verify(response, {"answer": answer})
    assert verdict.score == score, verdict.feedback
    if score == 0.0 and response:
        assert verdict.feedback.startswith("read ")


def test_answer_is_read_outside_tool_calls(verifier: ToolCallVerifier) -> None:
    response = hermes(CONVERT) + "\nThe answer is 0.1 km."
    verdict = verifier.verify(response, {"tool_calls": [CONVERT], "answer": 0.1})
    assert (verdict.score, verdict.correct) == (1.0, True)
    half = verifier.verify(response, {"tool_calls": [WEATHER], "answer": 0.1})
    assert half.score == 0.5  # mean of the parts
    assert not half.correct


def test_state_mode_partial_credit_and_missing_keys() -> None:
    expected = {"alice": 70.0, "bob": 130, "log": ["transfer"], "note": {"$optional": "x"}}
    good = verify_state(
        {"alice": 70, "bob": 130.0000001, "log": ["transfer"], "other": 1}, expected
    )
    assert (good.score, good.correct) == (1.0, True)
    bad = verify_state({"alice": 100, "log": "transfer"}, expected)
    assert bad.score == pytest.approx(1 / 4)  # only the optional key counts as matched
    assert bad.feedback.splitlines() == [
        "state key 'alice' has the wrong value: got 100",
        "missing state key 'bob'",
        "state key 'log' should be array, got string \"transfer\"",
    ]
    assert verify_state([], expected).score == 0.0  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected state must be an object"):
        verify_state({}, [1])  # type: ignore[arg-type]


def test_state_through_verify(verifier: ToolCallVerifier) -> None:
    ref = {"state": {"balance": 10}}
    assert verifier.verify("done", ref, state={"balance": 10.0}).score == 1.0
    assert verifier.verify("done", {**ref, "final_state": {"balance": 9}}).score == 0.0
    with pytest.raises(ValueError, match="no final state was given"):
        verifier.verify("done", ref)


# --- bad references and settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "error", "match"),
    [
        ([WEATHER], TypeError, "must be a JSON object"),
        ({"calls": []}, ValueError, "needs 'tool_calls', 'answer' or 'state'"),
        ({"tool_calls": WEATHER}, ValueError, "'tool_calls' must be a list"),
        ({"tool_calls": [{"arguments": {}}]}, ValueError, r"tool_calls\[0\] needs a non-empty"),
        ({"tool_calls": [{"name": "f", "arguments": [1]}]}, ValueError, "must be an object"),
        ({"tool_calls": [{"name": "nope"}], "tools": TOOLS}, ValueError, "not among"),
        ({"tool_calls": [], "order": "sorted"}, ValueError, "'strict' or 'any'"),
        ({"answer": {"$anyy": [1]}}, ValueError, "unknown marker '\\$anyy'"),
        ({"answer": {"$any": []}}, ValueError, "non-empty list"),
        ({"answer": {"$any": [1], "x": 2}}, ValueError, "only key"),
        ({"state": [1]}, ValueError, "'state' must be an object"),
        ({"answer": float("inf")}, ValueError, "inf is not a JSON number"),
        ({"answer": {"$literal": {"x": (1, 2)}}}, ValueError, "tuple is not a JSON value"),
        ({"tool_calls": [{"name": "f", "arguments": {"a": {1: 2}}}]}, ValueError, "keys must be"),
    ],
)
def test_bad_references_raise_naming_the_field(reference: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ToolCallVerifier().verify("x", reference)  # type: ignore[arg-type]


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        ToolCallVerifier(time_limit_s=0)
    with pytest.raises(ValueError, match="order"):
        ToolCallVerifier(order="sorted")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tools"):
        ToolCallVerifier(tools=[{"type": "function"}])
    with pytest.raises(TypeError, match="response must be a string"):
        ToolCallVerifier().verify(b"x", REF)  # type: ignore[arg-type]


def test_verifier_level_tools_apply_when_the_reference_has_none() -> None:
    verifier = ToolCallVerifier(tools=TOOLS)
    verdict = verifier.verify(hermes(with_args(WEATHER, days="3")), {"tool_calls": [WEATHER]})
    assert "must be integer" in verdict.feedback


# --- limits, threads, batches ------------------------------------------------------------------


def test_time_limit_gives_a_zero_within_the_limit_plus_one_second() -> None:
    verifier = ToolCallVerifier(time_limit_s=0.0001)
    response = '{"name": "f", "arguments": {"x": [' + "[]," * 300_000 + "[]]}}"  # 600k tokens
    t0 = time.monotonic()
    verdict = verifier.verify(response, REF)
    assert time.monotonic() - t0 < 0.0001 + 1.0
    assert verdict.score == 0.0
    assert verdict.details["error"] == "timeout"
    assert "time limit of 0.0001 s" in verdict.feedback


def test_verify_works_from_threads() -> None:
    verifier = ToolCallVerifier(time_limit_s=5)
    jobs = [(gold_response(REF), 1.0), (hermes(WEATHER), 0.5), ("", 0.0)] * 4
    with ThreadPoolExecutor(4) as pool:
        scores = list(pool.map(lambda j: verifier.verify(j[0], REF).score, jobs))
    assert scores == [want for _, want in jobs]


def test_batch_in_a_process_pool_keeps_order_and_isolates_bad_references() -> None:
    verifier = ToolCallVerifier()
    pairs = [
        (gold_response(REF), REF),
        (hermes(WEATHER), REF),
        ("x", {"nonsense": True}),
        ("Answer: 7", {"answer": 7}),
    ] * 3
    verdicts = verifier.verify_batch(pairs, processes=2)
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert [v.score for v in verdicts] == [1.0, 0.5, 0.0, 1.0] * 3
    assert verdicts[2].details["error"] == "invalid_reference"
    assert verdicts[2].feedback.startswith("invalid reference: reference needs")
    serial = verifier.verify_batch(pairs)  # small batch: in this process
    assert [v.to_dict()["score"] for v in serial] == [v.score for v in verdicts]


# --- command line ------------------------------------------------------------------------------


def opd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opd_selfplay", "verify", "tool", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_the_verdict_as_json(tmp_path) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps(REF), encoding="utf-8")
    gold = opd("--response", gold_response(REF), "--reference", f"@{ref}")
    assert gold.returncode == 0, gold.stderr
    out = json.loads(gold.stdout)
    assert (out["score"], out["correct"], out["feedback"]) == (
        1.0,
        True,
        "all 2 tool call(s) match",
    )
    wrong = opd("--response", hermes(with_args(WEATHER, days="3")), "--reference", json.dumps(REF))
    out = json.loads(wrong.stdout)
    assert out["score"] == 0.0 and not out["correct"]
    assert "argument 'days' must be integer" in out["feedback"]
    timed = opd("--response", "Answer: 5", "--reference", '{"answer": 5}', "--time-limit", "2")
    assert json.loads(timed.stdout)["score"] == 1.0


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ('{"tool_calls": [', "parse failed at char"),
        ('{"tools": []}', "needs 'tool_calls', 'answer' or 'state'"),
        ('{"tool_calls": [{"name": "f", "arguments": {"$bad": 1}}]}', "unknown marker"),
    ],
)
def test_cli_bad_reference_exits_2_with_one_line(reference: str, message: str) -> None:
    proc = opd("--response", "x", "--reference", reference)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert message in proc.stderr


KEYS = st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith("$"))
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
ARGUMENTS = st.dictionaries(
    KEYS,
    st.recursive(LEAVES, lambda x: st.lists(x, max_size=3) | st.dictionaries(KEYS, x, max_size=3)),
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["f", "g", "天気"]), ARGUMENTS), max_size=4))
def test_gold_response_of_any_reference_scores_one(calls: list) -> None:
    ref = {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    verdict = ToolCallVerifier().verify(gold_response(ref), ref)
    assert (verdict.score, verdict.correct) == (1.0, True), verdict.feedback


ANSWERS = st.one_of(
    LEAVES.filter(lambda v: not isinstance(v, str)),
    st.text().filter(lambda t: any(c.isalnum() for c in t) and "<" not in t),
    st.lists(LEAVES, max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(ANSWERS)
def test_gold_response_of_any_answer_scores_one(answer: object) -> None:
    ref = {"answer": answer}
    verdict = ToolCallVerifier().verify(gold_response(ref), ref)
    assert (verdict.score, verdict.correct) == (1.0, True), (gold_response(ref), verdict.feedback)
