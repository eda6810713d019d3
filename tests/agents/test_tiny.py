"""The built-in tiny model: offline, loadable like any Hugging Face folder, exact tokenizer."""

from __future__ import annotations

import json

import pytest

from opd_selfplay.agents.hf import load_tokenizer
from opd_selfplay.agents.tiny import TinyModelSpec, build_tiny_model, ensure_tiny_model

TEXTS = [
    "Hello World 12+7=",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "unicode: é ü ß 日本語 🙂 ∑∫√π",
    '<tool_call>{"name": "calc", "arguments": {"x": 1}}</tool_call>',
    "",
]


def test_folder_is_a_real_hf_checkpoint(tiny_path):
    names = {p.name for p in tiny_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((tiny_path / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["architectures"] == ["Qwen2ForCausalLM"]


def test_parameter_count_in_range(tiny_policy):
    n = sum(p.numel() for p in tiny_policy.model.parameters())
    assert 0.9e6 < n < 1.2e6


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_through_the_user_loading_path(tiny_policy, text):
    """text → ids → text is exact through the tokenizer that `load_policy("tiny")` returns (the
    transformers-5 trap swaps in Qwen's tokenizer class for a qwen2 folder)."""
    tok = tiny_policy.tokenizer
    assert type(tok).__name__ != "Qwen2Tokenizer"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) == len(text.encode("utf-8"))  # byte-level: one token per byte


def test_special_tokens_and_chat_template(tiny_policy):
    tok = tiny_policy.tokenizer
    assert tok.eos_token == "<|end|>"
    assert tok.pad_token == "<|endoftext|>"
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "2+2?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "calc", "arguments": {"e": "2+2"}}}
            ],
        },
        {"role": "tool", "content": "4", "name": "calc"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|system|>be brief<|end|><|user|>2+2?<|end|>"
        '<|assistant|><tool_call>{"name": "calc", "arguments": {"e": "2+2"}}</tool_call>'
        "<|end|><|tool|>4<|end|><|assistant|>"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<|end|>")) == 4
    assert len(ids) == len(text.encode()) - sum(
        len(t) - 1 for t in ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|assistant|>")
    ) - 4 * (len("<|end|>") - 1)
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {}}}]
    with_tools = tok.apply_chat_template(msgs[:2], tools=tools, tokenize=False)
    assert with_tools.startswith("<|system|>be brief\nTools:\n")
    assert with_tools.count("be brief") == 1


def test_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    a = build_tiny_model(
        tmp_path / "a", TinyModelSpec(hidden_size=32, num_layers=1, intermediate_size=64)
    )
    b = build_tiny_model(
        tmp_path / "b", TinyModelSpec(hidden_size=32, num_layers=1, intermediate_size=64)
    )
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    monkeypatch.setenv("OPD_CACHE_DIR", str(tmp_path / "cache"))
    spec = TinyModelSpec(hidden_size=32, num_layers=1, intermediate_size=64)
    first = ensure_tiny_model(spec)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(spec) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime  # not rebuilt
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".building-")]


def test_load_tokenizer_reports_a_broken_config(tmp_path):
    from opd_selfplay.errors import InputError

    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(InputError, match="tokenizer_config.json: not valid JSON"):
        load_tokenizer(tmp_path)


def test_tiny_model_strings(opd_cache):
    from opd_selfplay.agents.loading import tiny_spec
    from opd_selfplay.errors import InputError

    assert tiny_spec("tiny") == TinyModelSpec()
    assert tiny_spec("tiny:seed=3,hidden_size=64") == TinyModelSpec(seed=3, hidden_size=64)
    with pytest.raises(InputError, match="expected tiny:KEY=INT"):
        tiny_spec("tiny:width=3")
