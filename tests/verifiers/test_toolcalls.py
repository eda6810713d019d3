"""Reading tool calls from model text, and checking them against OpenAI tool schemas.

Covers `opd_selfplay.verifiers.toolcalls` (formats, hostile input, remaining prose) and the
schema half of `opd_selfplay.verifiers.jsonschema_lite` (types, enums, required, extra
properties, refs, bounded work).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_selfplay.verifiers.jsonschema_lite import SchemaError, check_schema, validate
from opd_selfplay.verifiers.toolcalls import (
    MAX_CHARS,
    ParsedCall,
    ToolSpec,
    load_tools,
    parse_tool_calls,
    validate_call,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
                "hours": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def names(text: str) -> list[str]:
    return [c.name for c in parse_tool_calls(text).calls]


# --- formats -----------------------------------------------------------------------------------


def test_hermes_several_calls_with_object_and_string_arguments() -> None:
    text = (
        "Let me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n'
        "</tool_call>\n<tool_call>\n"
        '{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2.5}"}\n'
        "</tool_call>"
    )
    result = parse_tool_calls(text)
    assert result.format == "hermes"
    assert [(c.name, c.arguments) for c in result.calls] == [
        ("get_weather", {"city": "Paris", "days": 3}),
        ("add", {"a": 1, "b": 2.5}),
    ]
    assert result.errors == ()
    assert result.text == "Let me check."
    assert result.calls[0].position == text.index("<tool_call>") + len("<tool_call>\n")


def test_hermes_unclosed_last_tag_is_read() -> None:
    # Generation often stops on the closing tag, so it never reaches the text.
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}')
    assert [(c.name, c.arguments) for c in result.calls] == [("f", {"x": 1})]
    assert result.errors == ()


def test_hermes_name_without_arguments_means_empty_arguments() -> None:
    result = parse_tool_calls('<tool_call>{"name": "now"}</tool_call>')
    assert [(c.name, c.arguments) for c in result.calls] == [("now", {})]


def test_openai_tool_calls_object_keeps_ids_and_decodes_argument_strings() -> None:
    text = json.dumps(
        {
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a": [1, 2]}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": ""}},
            ]
        }
    )
    result = parse_tool_calls(text)
    assert result.format == "openai"
    assert [(c.id, c.name, c.arguments) for c in result.calls] == [
        ("call_1", "f", {"a": [1, 2]}),
        ("call_2", "g", {}),
    ]
    assert result.text == ""


def test_openai_single_function_object() -> None:
    text = '{"type": "function", "function": {"name": "f", "arguments": {"q": "x"}}}'
    assert [(c.name, c.arguments) for c in parse_tool_calls(text).calls] == [("f", {"q": "x"})]


def test_bare_json_fenced_json_llama_parameters_and_mistral_list() -> None:
    assert names('Calling {"name": "a", "arguments": {}} now') == ["a"]
    fenced = 'I will call it:\n```json\n{"name": "b", "arguments": {"k": 1}}\n```\nDone.'
    result = parse_tool_calls(fenced)
    assert [c.name for c in result.calls] == ["b"]
    assert result.text == "I will call it:\n\nDone."  # the emptied fence goes too
    assert names('<|python_tag|>{"name": "c", "parameters": {"x": 2}}') == ["c"]
    mistral = '[TOOL_CALLS][{"name": "d", "arguments": {}}, {"name": "e", "arguments": {}}]'
    assert names(mistral) == ["d", "e"]


def test_parsed_call_converts_to_the_openai_shape_the_core_reads() -> None:
    call = parse_tool_calls('{"name": "f", "arguments": {"city": "Zürich"}}').calls[0]
    assert isinstance(call, ParsedCall)
    shape = call.to_openai()
    assert shape["type"] == "function"
    assert shape["function"]["name"] == "f"  # type: ignore[index]
    assert json.loads(shape["function"]["arguments"]) == {"city": "Zürich"}  # type: ignore[index]


def test_json_that_is_not_a_call_stays_prose() -> None:
    for text in (
        "The answer is 42.",
        r"So $\frac{1}{2}$ and the set {x | x > 0}.",
        'The result is {"total": 5, "items": [1, 2]}.',
        'A person: {"name": "Ada", "age": 36}',  # has "name" but no arguments
        "```python\nd = {'a': 1}\n```",
    ):
        result = parse_tool_calls(text)
        assert result.calls == () and result.errors == (), text
        assert result.text == text.strip()
        assert result.format == "none"


def test_unicode_in_every_script_round_trips() -> None:
    args = {
        "zh": "北京天气怎么样",
        "ar": "ما هو الطقس",
        "hi": "मौसम कैसा है",
        "ru": "Какая погода",
        "ja": "東京の天気",
        "emoji": "🌧️☂️",
        "rtl_mark": "\u200f",
        "combining": "e\u0301",
    }
    text = "前置き <tool_call>" + json.dumps({"name": "天気", "arguments": args}) + "</tool_call>"
    result = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in result.calls] == [("天気", args)]
    assert result.text == "前置き"
    escaped = json.dumps({"name": "f", "arguments": args}, ensure_ascii=True)
    assert parse_tool_calls(escaped).calls[0].arguments == args


# --- malformed and hostile input ---------------------------------------------------------------


def test_invalid_json_reports_position_and_excerpt() -> None:
    text = 'ok <tool_call>{"name": "f", "arguments": {"a": 1,}}</tool_call>'
    result = parse_tool_calls(text)
    assert result.calls == ()
    (err,) = result.errors
    assert err.kind == "invalid_json"
    assert err.position == text.index(",}") + 1  # where the decoder stopped
    assert f"char {err.position}" in err.message
    assert "\n" not in err.message


def test_each_broken_call_gets_its_own_error_and_good_ones_survive() -> None:
    text = (
        '<tool_call>{"name": "good", "arguments": {}}</tool_call>'
        "<tool_call>not json at all</tool_call>"
        '<tool_call>{"nombre": "x"}</tool_call>'
        '<tool_call>{"name": "", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>'
        '<tool_call>{"name": "f", "arguments": "{oops"}</tool_call>'
        '<tool_call>{"name": "last", "arguments": {}}</tool_call>'
    )
    result = parse_tool_calls(text)
    assert [c.name for c in result.calls] == ["good", "last"]
    kinds = [e.kind for e in result.errors]
    assert kinds == ["not_a_call", "not_a_call", "bad_call", "bad_call", "bad_call"]
    messages = " | ".join(e.message for e in result.errors)
    assert "non-empty string" in messages
    assert "arguments must be a JSON object, got array" in messages
    assert "arguments string is not valid JSON" in messages
    positions = [e.position for e in result.errors]
    assert positions == sorted(positions)


def test_broken_call_outside_tags_is_reported_when_it_looks_like_a_call() -> None:
    result = parse_tool_calls('Sure: {"name": "f", "arguments": {"x": 1}')  # never closed
    assert [e.kind for e in result.errors] == ["unterminated"]
    assert result.text == "Sure:"


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_invalid(const: str) -> None:
    result = parse_tool_calls('{"name": "f", "arguments": {"x": ' + const + "}}")
    assert result.calls == ()
    assert result.errors[0].kind == "invalid_json"


def test_over_long_integer_is_an_error_not_a_crash() -> None:
    result = parse_tool_calls('{"name": "f", "arguments": {"x": ' + "9" * 5000 + "}}")
    assert result.calls == ()
    assert result.errors[0].kind == "invalid_json"


def test_one_megabyte_of_garbage_is_rejected_unparsed_and_fast() -> None:
    garbage = ('{"name": [' * 10 + "\x00\ufffd<tool_call>") * (MAX_CHARS // 100 + 1)
    assert len(garbage) > MAX_CHARS
    t0 = time.monotonic()
    result = parse_tool_calls(garbage)
    assert time.monotonic() - t0 < 1.0
    assert result.calls == ()
    assert [e.kind for e in result.errors] == ["too_large"]
    assert result.text == ""


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000,
        "{" * 10_000 + "}" * 10_000,
        '{"name": "f", "arguments": ' + "[" * 10_000 + "]" * 10_000 + "}",
        "<tool_call>" + "[" * 10_000 + "</tool_call>",
        '{"name": "f", "arguments": "' + "[" * 10_000 + '"}',
    ],
    ids=["open", "balanced", "in-arguments", "in-tag", "in-argument-string"],
)
def test_ten_thousand_nested_brackets(text: str) -> None:
    result = parse_tool_calls(text)
    assert result.calls == ()
    assert all(e.kind in ("too_deep", "unterminated", "bad_call") for e in result.errors)
    if '"name"' in text or "<tool_call>" in text:
        assert result.errors, "an attempted call must get an error"


def test_nearly_one_megabyte_of_adversarial_text_is_bounded() -> None:
    # Worst cases for the scanner just under the cap: many tiny call-like spans, deep
    # brackets, and unterminated strings with runs of backslashes.
    cases = [
        '{"name":1}' * (MAX_CHARS // 10),
        "[" * (MAX_CHARS // 2) + "]" * (MAX_CHARS // 2),
        '["' + "\\" * (MAX_CHARS - 10),
        '{"name": "f", "arguments": {}}' * (MAX_CHARS // 31),
    ]
    for text in cases:
        assert len(text) <= MAX_CHARS
        t0 = time.monotonic()
        result = parse_tool_calls(text)
        assert time.monotonic() - t0 < 5.0
        assert len(result.calls) + len(result.errors) <= 65  # max_calls + one too_many error


def test_too_many_calls_are_capped_with_one_error() -> None:
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>' * 100
    result = parse_tool_calls(text, max_calls=10)
    assert len(result.calls) == 10
    assert [e.kind for e in result.errors] == ["too_many"]


def test_call_like_json_that_is_no_call_is_decoded_a_bounded_number_of_times() -> None:
    result = parse_tool_calls('{"name": "x", "age": 3}' * 5000, max_calls=4)
    assert result.calls == ()
    (err,) = result.errors
    assert err.kind == "too_many"
    assert (
        err.message == "more than 64 JSON objects that look like tool calls; the rest was ignored"
    )


def test_non_string_response_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="response must be a string"):
        parse_tool_calls(None)  # type: ignore[arg-type]


def test_deadline_in_the_past_stops_a_long_scan() -> None:
    with pytest.raises(TimeoutError):
        parse_tool_calls('{"name": []}' * 80_000, deadline=time.monotonic() - 1)


# --- tool schemas ------------------------------------------------------------------------------


def test_load_tools_accepts_openai_and_flat_shapes() -> None:
    flat = {"name": "now", "description": "time"}
    tools = load_tools([WEATHER, flat])
    assert sorted(tools) == ["get_weather", "now"]
    assert tools["now"].parameters == {"type": "object"}
    assert ToolSpec.from_schema(tools["get_weather"].to_openai()) == tools["get_weather"]


@pytest.mark.parametrize(
    ("tools", "match"),
    [
        ({"name": "x"}, "must be a list"),
        ([{"function": {"description": "no name"}}], r"tools\[0\].*'name'"),
        ([WEATHER, WEATHER], "used twice"),
        ([{"name": "x", "parameters": {"type": "array"}}], "type 'object'"),
        ([{"name": "x", "parameters": {"type": "object", "required": "a"}}], "'required'"),
        ([{"name": "x", "parameters": {"properties": {"a": {"type": "int"}}}}], "unknown type"),
        ([{"name": "x", "parameters": {"$ref": "#/$defs/missing"}}], "does not resolve"),
    ],
)
def test_malformed_tool_schemas_are_value_errors_naming_the_entry(
    tools: object, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        load_tools(tools)  # type: ignore[arg-type]


def call(name: str, **arguments: object) -> ParsedCall:
    return ParsedCall(name, dict(arguments), raw="")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"city": "Paris"}, []),
        ({"city": "Paris", "days": 3.0}, []),  # an integral float is an integer (JSON Schema)
        ({"city": "Paris", "days": "3"}, ["argument 'days' must be integer, got string \"3\""]),
        ({"city": "Paris", "days": 2.5}, ["argument 'days' must be integer, got number 2.5"]),
        ({"city": "Paris", "days": True}, ["argument 'days' must be integer, got boolean true"]),
        ({"city": "Paris", "days": 0}, ["argument 'days' must be >= 1, got 0"]),
        ({"city": 7}, ["argument 'city' must be string, got integer 7"]),
        (
            {"city": "P", "detailed": "yes"},
            ["argument 'detailed' must be boolean, got string \"yes\""],
        ),
        ({"city": "P", "unit": "kelvin"}, ["argument 'unit' must be one of"]),
        (
            {"city": "P", "hours": [1, "2"]},
            ["argument 'hours[1]' must be number, got string \"2\""],
        ),
        (
            {"city": "P", "hours": [1, 2, 3, 4]},
            ["argument 'hours' must have at most 3 items, got 4"],
        ),
        ({}, ["missing required argument 'city'"]),
        ({"city": "P", "country": "FR"}, ["unexpected argument 'country' (not in the schema)"]),
    ],
)
def test_schema_validation_names_the_argument_and_types(arguments: dict, expected: list) -> None:
    problems = validate_call(call("get_weather", **arguments), load_tools([WEATHER]))
    assert len(problems) == len(expected)
    for got, want in zip(problems, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_unknown_tool_lists_the_available_ones() -> None:
    problems = validate_call(call("get_wether", city="Paris"), load_tools([WEATHER]))
    assert problems == ['unknown tool "get_wether" (available: get_weather)']


def test_schema_combinators_refs_and_nullable() -> None:
    schema = {
        "type": "object",
        "$defs": {"point": {"type": "array", "prefixItems": [{"type": "number"}] * 2}},
        "properties": {
            "at": {"$ref": "#/$defs/point"},
            "id": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 3}]},
            "mode": {"oneOf": [{"const": "a"}, {"const": "b"}]},
            "note": {"type": "string", "nullable": True},
            "tags": {"type": "array", "uniqueItems": True},
        },
    }
    check_schema(schema)
    assert validate({"at": [1, 2.5], "id": "abc", "mode": "a", "note": None}, schema) == []
    assert validate({"at": [1, "x"]}, schema) == [
        "argument 'at[1]' must be number, got string \"x\""
    ]
    (msg,) = validate({"id": "ab"}, schema)
    assert msg.startswith("argument 'id' matches none of the allowed forms")
    assert validate({"mode": "c"}, schema)[0].startswith("argument 'mode' matches none")
    assert validate({"tags": [1, 1.0]}, schema) == [
        "argument 'tags' must not repeat items, got 1.0 twice"
    ]


def test_recursive_schema_with_hostile_instance_stays_within_budget() -> None:
    # Two branches per level over a 100-deep instance would be 2**100 steps without a budget.
    schema = {
        "$defs": {"n": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/n"}}] * 2}},
        "$ref": "#/$defs/n",
    }
    check_schema(schema)
    value: object = "leaf"
    for _ in range(100):
        value = [value]
    t0 = time.monotonic()
    problems = validate(value, schema, max_steps=20_000)
    assert time.monotonic() - t0 < 5.0
    assert problems and "too complex" in problems[-1]


def test_ref_loop_in_schema_is_reported_not_recursed_forever() -> None:
    schema = {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    }
    check_schema(schema)
    assert any("loops" in p for p in validate({}, schema))


def test_schema_error_is_a_value_error() -> None:
    with pytest.raises(SchemaError, match="'minimum' must be a number"):
        check_schema({"type": "number", "minimum": "0"})
    assert issubclass(SchemaError, ValueError)


def test_importing_the_verifiers_pulls_in_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, opd_selfplay.verifiers.tool, opd_selfplay.verifiers.toolcalls;"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- properties --------------------------------------------------------------------------------

KEYS = st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith("$"))
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
ARGUMENTS = st.dictionaries(KEYS, JSON_VALUES, max_size=5)
TEXT = st.text(
    alphabet=st.sampled_from('{}[]"\\:, <>/_tool_call name arguments 1aé€'), max_size=200
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), TEXT))
def test_parsing_never_raises_and_stays_within_its_bounds(text: str) -> None:
    result = parse_tool_calls(text)
    assert len(result.calls) + len(result.errors) <= 65
    assert all(0 <= e.position <= len(text) for e in result.errors)
    assert all(0 <= c.position <= len(text) for c in result.calls)
    assert len(result.text) <= len(text)
    assert all("\n" not in e.message for e in result.errors)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=20).filter(str.strip), ARGUMENTS)
def test_any_json_arguments_round_trip_through_every_format(name: str, arguments: dict) -> None:
    name = name.strip()
    body = {"name": name, "arguments": arguments}
    as_string = {"name": name, "arguments": json.dumps(arguments)}
    openai = {"tool_calls": [{"type": "function", "function": as_string}]}
    for text in (
        f"<tool_call>{json.dumps(body)}</tool_call>",
        f"<tool_call>{json.dumps(as_string, ensure_ascii=False)}</tool_call>",
        json.dumps(openai),
        "Text before.\n```json\n" + json.dumps(body, ensure_ascii=False) + "\n```",
    ):
        result = parse_tool_calls(text)
        assert result.errors == (), (text, result.errors)
        assert [(c.name, c.arguments) for c in result.calls] == [(name, arguments)]
