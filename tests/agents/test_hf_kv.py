"""`HFPolicy.reuse_kv` and the grouped CPU prefill: same samples and log-probs as the plain
path."""

from __future__ import annotations

import pytest
import torch

import opd_selfplay.agents.prefill as prefill
from opd_selfplay.agents.base import SamplingParams
from opd_selfplay.agents.hf import HFPolicy


def _chat(policy: HFPolicy, text: str) -> list[int]:
    tok = policy.tokenizer
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return list(tok(rendered, add_special_tokens=False)["input_ids"])


def _turn2(policy: HFPolicy, prompts, samples, reply: str) -> list[list[int]]:
    extra = list(policy.tokenizer(reply, add_special_tokens=False)["input_ids"])
    return [[*p, *s.token_ids, *extra] for p, s in zip(prompts, samples)]


def _close(a, b) -> None:
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    assert [s.finish_reason for s in a] == [s.finish_reason for s in b]
    for x, y in zip(a, b):
        assert max((abs(u - v) for u, v in zip(x.logprobs, y.logprobs)), default=0.0) < 1e-4


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_reused_kv_gives_the_samples_of_a_full_prefill(tiny_policy, temperature):
    policy = HFPolicy(tiny_policy.model, tiny_policy.tokenizer)
    policy.eos_token_ids = frozenset()  # every row runs the full length: fixed shapes
    prompts = [_chat(policy, t) for t in ("12+7=", "a longer prompt, padded", "x")]
    first = SamplingParams(max_new_tokens=6, temperature=temperature, seed=1)
    second = SamplingParams(max_new_tokens=8, temperature=temperature, seed=2)
    a1 = policy.generate(prompts, first)
    nxt = _turn2(policy, prompts, a1, "<|end|><|user|>too high<|end|><|assistant|>")
    plain = policy.generate(nxt, second)
    with policy.reuse_kv():
        b1 = policy.generate(prompts, first)
        reused = policy.generate(nxt, second)
        assert policy._stored is not None
    assert policy._stored is None  # dropped with the block
    _close(a1, b1)
    _close(plain, reused)


def test_reuse_with_a_new_prompt_in_the_batch(tiny_policy):
    policy = HFPolicy(tiny_policy.model, tiny_policy.tokenizer)
    prompts = [_chat(policy, t) for t in ("12+7=", "3*4=")]
    params = SamplingParams(max_new_tokens=5, seed=0)
    with policy.reuse_kv():
        s1 = policy.generate(prompts, params)
        mixed = [_turn2(policy, prompts, s1, "<|user|>again")[0], _chat(policy, "brand new")]
        reused = policy.generate(mixed, SamplingParams(max_new_tokens=7, seed=5))
    _close(policy.generate(mixed, SamplingParams(max_new_tokens=7, seed=5)), reused)


def test_a_weight_change_drops_the_stored_cache(tiny_policy):
    import copy

    model = copy.deepcopy(tiny_policy.model)
    policy = HFPolicy(model, tiny_policy.tokenizer)
    prompts = [_chat(policy, "12+7=")]
    params = SamplingParams(max_new_tokens=5, seed=0)
    with policy.reuse_kv():
        s1 = policy.generate(prompts, params)
        with torch.no_grad():
            next(model.parameters()).add_(0.5)  # what an optimizer step does, in place
        nxt = _turn2(policy, prompts, s1, "<|user|>again")
        reused = policy.generate(nxt, SamplingParams(max_new_tokens=6, seed=3))
    _close(policy.generate(nxt, SamplingParams(max_new_tokens=6, seed=3)), reused)


def _count_paths(monkeypatch) -> dict[str, int]:
    """Count the calls of each prefill path (so an equivalence test knows both ran)."""
    calls = {"grouped": 0, "extending": 0}
    for name in calls:
        method = getattr(prefill.Prefill, f"_start_{name}")

        def spy(self, *args, _method=method, _name=name):
            calls[_name] += 1
            return _method(self, *args)

        monkeypatch.setattr(prefill.Prefill, f"_start_{name}", spy)
    return calls


def test_grouped_prefill_equals_the_padded_one(tiny_policy, monkeypatch):
    policy = HFPolicy(tiny_policy.model, tiny_policy.tokenizer)
    prompts = [_chat(policy, "word " * n) for n in (3, 40, 41, 90)]
    params = SamplingParams(max_new_tokens=10, seed=4)
    calls = _count_paths(monkeypatch)
    monkeypatch.setattr(prefill, "LONG_PROMPT_TOKENS", 10**9)
    padded = policy.generate(prompts, params)
    assert calls["grouped"] == 0
    monkeypatch.setattr(prefill, "LONG_PROMPT_TOKENS", 1)
    _close(padded, policy.generate(prompts, params))
    assert calls["grouped"] == 1


@pytest.mark.parametrize("in_place", [True, False])
@pytest.mark.parametrize("grouped", [True, False])
def test_reuse_over_three_turns_equals_full_prefills(tiny_policy, monkeypatch, in_place, grouped):
    """Reused caches over three turns, rows dropping out between turns. `grouped`: the CPU
    path for long prompts (adjacent rows of equal lengths share one forward in the batch's own
    cache, the others run apart; after a drop groups stop being adjacent); else one padded
    forward over every row's new tokens. `in_place=False` is a transformers whose static
    layers cannot be taken over (both paths then work on copies)."""
    policy = HFPolicy(tiny_policy.model, tiny_policy.tokenizer)
    policy.eos_token_ids = frozenset()
    calls = _count_paths(monkeypatch)
    monkeypatch.setattr(prefill, "LONG_PROMPT_TOKENS", 1 if grouped else 10**9)
    if not in_place:
        monkeypatch.setattr(prefill, "static_over", lambda *a, **k: None)
    texts = ("same length A", "same length B", "other", "a much longer question here", "x")
    prompts = [_chat(policy, t) for t in texts]
    keep = ([0, 1, 2, 3, 4], [0, 2, 4], [1, 2])  # rows that play each turn
    replies = ("<|end|><|user|>again<|end|><|assistant|>", "<|end|><|user|>no<|end|><|assistant|>")
    with policy.reuse_kv():
        turn, plain, reused = prompts, [], []
        for t in range(3):
            params = SamplingParams(max_new_tokens=5 + t, seed=10 + t)
            out = policy.generate(turn, params)
            reused.append(out)
            if t < 2:
                turn = _turn2(policy, turn, out, replies[t])
                turn = [turn[i] for i in range(len(turn)) if i in keep[t + 1]]
    assert calls == ({"grouped": 3, "extending": 0} if grouped else {"grouped": 0, "extending": 2})
    turn = prompts
    monkeypatch.setattr(prefill, "LONG_PROMPT_TOKENS", 10**9)  # plain padded prefills, no reuse
    for t in range(3):
        out = policy.generate(turn, SamplingParams(max_new_tokens=5 + t, seed=10 + t))
        plain.append(out)
        if t < 2:
            turn = _turn2(policy, turn, out, replies[t])
            turn = [turn[i] for i in range(len(turn)) if i in keep[t + 1]]
    for a, b in zip(plain, reused):
        _close(a, b)
