"""`OpenAIPolicy` against a real `opd serve` on loopback (in-process and as a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from opd_selfplay.agents.base import SamplingParams
from opd_selfplay.agents.remote import OpenAIPolicy, ServerError
from opd_selfplay.agents.server import PolicyServer
from opd_selfplay.errors import InputError


@pytest.fixture(scope="module")
def server(tiny_policy):
    srv = PolicyServer(tiny_policy, "tiny", str(tiny_policy.model.name_or_path)).start()
    yield srv
    srv.close()


def _prompts(tok):
    return [
        list(
            tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True
                ),
                add_special_tokens=False,
            )["input_ids"]
        )
        for c in ("1+1=", "a longer question for the server")
    ]


def test_batched_generation_matches_the_local_policy(server, tiny_policy):
    remote = OpenAIPolicy(server.url)
    assert remote.model == "tiny"
    prompts = _prompts(remote.tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=0.8, seed=7)
    assert remote.generate(prompts, params) == tiny_policy.generate(prompts, params)


def test_logprobs_over_http_equal_a_forward_pass(server, tiny_policy):
    remote = OpenAIPolicy(server.url)
    prompts = _prompts(remote.tokenizer)
    samples = remote.generate(prompts, SamplingParams(max_new_tokens=10, seed=1))
    seqs = [p + list(s.token_ids) for p, s in zip(prompts, samples)]
    local = tiny_policy.score(seqs)
    scored = remote.score(seqs)
    for p, s, row, ref in zip(prompts, samples, scored, local):
        assert max(abs(a - b) for a, b in zip(row, ref)) < 1e-5
        assert max(abs(a - b) for a, b in zip(s.logprobs, ref[len(p) :])) < 1e-4
    [(ids, lps)] = remote.top_logprobs(seqs[:1], k=3)
    [(ref_ids, ref_lps)] = tiny_policy.top_logprobs(seqs[:1], k=3)
    assert ids == ref_ids
    assert max(abs(a - b) for r1, r2 in zip(lps, ref_lps) for a, b in zip(r1, r2)) < 1e-5


def test_chat_completions_with_top_logprobs(server):
    remote = OpenAIPolicy(server.url)
    out = remote.chat(
        [{"role": "user", "content": "hi"}],
        SamplingParams(max_new_tokens=6, seed=0),
        top_logprobs=4,
    )
    assert out.finish_reason in ("stop", "length")
    assert len(out.tokens) == len(out.logprobs) == len(out.top_logprobs) >= 1
    assert "".join(out.tokens).startswith(out.text[:1])
    for lp, alts in zip(out.logprobs, out.top_logprobs):
        assert lp <= 0 and 1 <= len(alts) <= 4
        assert max(alts.values()) >= lp - 1e-6  # the best alternative is at least as likely


def test_server_errors_are_reported(server):
    remote = OpenAIPolicy(server.url)
    with pytest.raises(ServerError, match="HTTP 400: prompt token ids must lie in"):
        remote.generate([[10**6]], SamplingParams(max_new_tokens=2))
    with pytest.raises(ServerError, match="HTTP 400: top_p must lie in"):
        remote._request("POST", "/completions", {"prompt": [1, 2], "top_p": 0, "max_tokens": 2})


def test_unreachable_server_is_an_input_error():
    with pytest.raises(InputError, match="cannot reach http://127.0.0.1:9/v1/models"):
        OpenAIPolicy("http://127.0.0.1:9", timeout_s=2)


def test_opd_serve_subprocess_and_rollout_through_it(cli_env, tmp_path):
    """The real command: `opd serve` in its own process, `opd rollout` against its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "opd_selfplay", "serve", "--model", "tiny", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
    )
    try:
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "http" not in line:
            line = proc.stderr.readline()
        url = re.search(r"(http://\S+)", line).group(1)
        out = tmp_path / "r.jsonl"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "opd_selfplay",
                "rollout",
                "--env",
                "toyenvs_registered:toy/Countdown-v0",
                "--model",
                url,
                "--episodes",
                "2",
                "--max-new-tokens",
                "4",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        lines = out.read_text().splitlines()
        assert len(lines) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
