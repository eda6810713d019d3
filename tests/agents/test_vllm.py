"""`VLLMPolicy` on a GPU: log-probs agree with transformers, weights can be reloaded."""

from __future__ import annotations

import pytest

from opd_selfplay.agents.base import SamplingParams

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]


def test_vllm_logprobs_match_hf_and_weights_reload(tiny_path):
    import torch

    from opd_selfplay.agents.hf import HFPolicy
    from opd_selfplay.agents.vllm_local import VLLMPolicy

    vp = VLLMPolicy(str(tiny_path), dtype="float32", gpu_memory_utilization=0.2)
    hf = HFPolicy.from_pretrained(tiny_path, device="cuda", dtype="float32")
    prompt = list(vp.tokenizer("12+7=", add_special_tokens=False)["input_ids"])
    [s] = vp.generate([prompt], SamplingParams(max_new_tokens=16, temperature=1.0, seed=0))
    ref = hf.score([prompt + list(s.token_ids)])[0][len(prompt) :]
    assert max(abs(a - b) for a, b in zip(s.logprobs, ref)) < 1e-3
    with torch.no_grad():
        for p in hf.model.parameters():
            p.mul_(0.5)
    vp.load_weights(hf.model.state_dict().items())
    ref2 = hf.score([prompt + list(s.token_ids)])[0][1:]
    got2 = vp.score([prompt + list(s.token_ids)])[0][1:]
    assert max(abs(a - b) for a, b in zip(got2, ref2)) < 1e-3
