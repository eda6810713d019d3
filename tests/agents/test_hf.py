"""`HFPolicy`: batched sampling with a KV cache, exact log-probs, seeds, stops, padding."""

from __future__ import annotations

import pytest
import torch

from opd_selfplay.agents.base import Sample, SamplingParams
from opd_selfplay.agents.hf import HFPolicy


def _prompts(policy: HFPolicy) -> list[list[int]]:
    tok = policy.tokenizer
    texts = ["12+7=", "a much longer prompt, so that the batch needs left padding", "x"]
    return [
        list(
            tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
                ),
                add_special_tokens=False,
            )["input_ids"]
        )
        for t in texts
    ]


def _separate_forward_logprobs(
    policy: HFPolicy, ids: list[int], temperature: float
) -> torch.Tensor:
    """Independent reference: one unpadded forward, no cache, log_softmax(logits / T)."""
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits / temperature, dim=-1)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0, 0.0])
def test_sampling_logprobs_equal_a_separate_forward(tiny_policy, temperature):
    prompts = _prompts(tiny_policy)
    samples = tiny_policy.generate(
        prompts, SamplingParams(max_new_tokens=24, temperature=temperature, seed=0)
    )
    ref_t = temperature or 1.0
    for prompt, sample in zip(prompts, samples):
        full = prompt + list(sample.token_ids)
        ref = _separate_forward_logprobs(tiny_policy, full, ref_t)
        for j, (tid, lp) in enumerate(zip(sample.token_ids, sample.logprobs)):
            assert abs(lp - ref[len(prompt) - 1 + j, tid].item()) < 1e-4
        if temperature == 0.0:  # greedy picks the argmax of the reference
            picks = [int(ref[len(prompt) - 1 + j].argmax()) for j in range(len(sample.token_ids))]
            assert list(sample.token_ids) == picks


def test_score_matches_sampling_logprobs(tiny_policy):
    prompts = _prompts(tiny_policy)
    samples = tiny_policy.generate(
        prompts, SamplingParams(max_new_tokens=16, temperature=1.3, seed=2)
    )
    scored = tiny_policy.score(
        [p + list(s.token_ids) for p, s in zip(prompts, samples)], temperature=1.3
    )
    for p, s, row in zip(prompts, samples, scored):
        assert len(row) == len(p) + len(s.token_ids) and row[0] == 0.0
        assert max(abs(a - b) for a, b in zip(s.logprobs, row[len(p) :])) < 1e-4


def test_left_padding_does_not_change_greedy_output(tiny_policy):
    prompts = _prompts(tiny_policy)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    batched = tiny_policy.generate(prompts, params)
    alone = [tiny_policy.generate([p], params)[0] for p in prompts]
    assert [s.token_ids for s in batched] == [s.token_ids for s in alone]


def test_seed_reproduces_and_differs(tiny_policy):
    prompts = _prompts(tiny_policy)
    a = tiny_policy.generate(prompts, SamplingParams(max_new_tokens=16, seed=11))
    b = tiny_policy.generate(prompts, SamplingParams(max_new_tokens=16, seed=11))
    c = tiny_policy.generate(prompts, SamplingParams(max_new_tokens=16, seed=12))
    assert a == b
    assert [s.token_ids for s in a] != [s.token_ids for s in c]


def test_max_new_tokens_and_length_finish(tiny_policy):
    samples = tiny_policy.generate(_prompts(tiny_policy), SamplingParams(max_new_tokens=5, seed=0))
    assert all(len(s.token_ids) == 5 and s.finish_reason == "length" for s in samples)
    assert all(
        isinstance(s, Sample)
        and s.text == tiny_policy.tokenizer.decode(list(s.token_ids), skip_special_tokens=True)
        for s in samples
    )


def test_eos_stops_and_is_kept(tiny_policy):
    prompt = _prompts(tiny_policy)[0]
    first = tiny_policy.generate([prompt], SamplingParams(max_new_tokens=1, temperature=0.0))[
        0
    ].token_ids[0]
    policy = HFPolicy(tiny_policy.model, tiny_policy.tokenizer)
    policy.eos_token_ids = frozenset({first})  # the greedy first token now ends the message
    [s] = policy.generate([prompt], SamplingParams(max_new_tokens=10, temperature=0.0))
    assert s.token_ids == (first,) and s.finish_reason == "stop"


def test_stop_string_ends_the_sample_and_tokens_decode_to_text(tiny_policy):
    policy = HFPolicy(tiny_policy.model, tiny_policy.tokenizer)
    policy.eos_token_ids = frozenset()  # let sampling run the full length
    prompt = _prompts(policy)[1]
    params = SamplingParams(max_new_tokens=30, temperature=1.0, seed=0)
    free = policy.generate([prompt], params)[0]
    tok = policy.tokenizer
    # A printable one-character stop string that the sample first produces at token k >= 3
    # (the same seed replays the same draws up to the stop).
    k, stop = next(
        (k, tok.decode([t]))
        for k, t in enumerate(free.token_ids)
        if k >= 3 and 32 < t < 127 and tok.decode([t]) not in tok.decode(list(free.token_ids[:k]))
    )
    [s] = policy.generate(
        [prompt], SamplingParams(max_new_tokens=30, temperature=1.0, seed=0, stop=(stop,))
    )
    assert s.finish_reason == "stop" and s.text.endswith(stop)
    assert s.token_ids == free.token_ids[: k + 1]
    assert stop not in tok.decode(list(s.token_ids[:-1]))


def test_tiny_top_p_is_greedy(tiny_policy):
    prompts = _prompts(tiny_policy)
    greedy = tiny_policy.generate(prompts, SamplingParams(max_new_tokens=10, temperature=0.0))
    nucleus = tiny_policy.generate(prompts, SamplingParams(max_new_tokens=10, top_p=1e-6, seed=4))
    assert [s.token_ids for s in greedy] == [s.token_ids for s in nucleus]


def test_top_logprobs_are_sorted_and_contain_the_argmax(tiny_policy):
    seq = _prompts(tiny_policy)[0]
    [(ids, lps)] = tiny_policy.top_logprobs([seq], k=5)
    assert len(ids) == len(seq) - 1 and all(len(r) == 5 for r in ids)
    ref = _separate_forward_logprobs(tiny_policy, seq, 1.0)
    for t in range(len(seq) - 1):
        assert lps[t] == sorted(lps[t], reverse=True)
        assert ids[t][0] == int(ref[t].argmax())
        assert abs(lps[t][0] - ref[t].max().item()) < 1e-4


def test_bad_sampling_params_are_refused():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)


def test_inverse_cdf_draw_matches_the_distribution_and_skips_zero_mass():
    from opd_selfplay.agents.hf import _draw

    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.2, 0.0, 1.2, 0.6, 0.0]]).repeat(100_000, 1)  # unnormalised
    counts = torch.bincount(_draw(probs, gen), minlength=5).double() / 100_000
    assert counts[1] == 0 and counts[4] == 0  # zero-probability tokens are never drawn
    expected = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.float64)
    assert torch.allclose(counts, expected, atol=0.006)  # > 4 standard errors at n = 1e5
    again = _draw(probs[:8], torch.Generator().manual_seed(3))
    assert torch.equal(again, _draw(probs[:8], torch.Generator().manual_seed(3)))  # seeded
