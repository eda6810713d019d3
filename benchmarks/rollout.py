"""Suite "rollout": sampling and multi-turn agent rollouts, side by side with the plain ways.

Run alone: `python -m benchmarks.rollout [--quick]` (or through `python -m benchmarks`).

Cases and contenders (one thread, interleaved rounds, the same seeded work in every round):

1. `sampling 1M` and `sampling wide`: `HFPolicy.generate` (`ours`) vs transformers'
   `model.generate` (`generate`) on the same model, the same left-padded batch of 16 chat
   prompts and the same number of new tokens (EOS disabled in both, so the work is
   identical), temperature 1, KV cache in both. Models: the built-in tiny model (≈1 M
   parameters, where per-step overhead dominates) and a wider one (≈19 M: hidden 512,
   6 layers). Goal: ours ≥ 0.9× generate's tokens/s.
2. `Arithmetic-v0` and `ToolUse-v0`: 64 episodes (quick: 16) × up to 4 turns with the
   tiny model, the same env settings and limits for every contender (`max_attempts=4` so that
   a wrong answer gets feedback and another turn; 16 new tokens per turn; 2048 context
   tokens; ToolUse at difficulty 1, whose byte-level prompts, 1,363–1,753 tokens with the
   tool schemas, fit the tiny model's 2,048 positions):
   - `ours`: `RolloutEngine.run` (every turn, all live episodes in one batched `generate`;
     context tokens extended incrementally);
   - `ours_kv`: the same inside `HFPolicy.reuse_kv()`, so each turn prefills only the tokens
     the turn added (the previous turn's keys and values are kept);
   - `naive`: the plain loop a user would write: for each episode, for each turn, render the
     whole conversation with the tokenizer's chat template, tokenize it and call the same
     `HFPolicy.generate` on that one sequence, then step the env;
   - `single_generate`: ONE batched `HFPolicy.generate` over the episodes' first prompts
     producing the same total number of tokens as `ours` did (EOS disabled): the throughput
     ceiling of the sampler without turns, envs or re-prefills.
   Every seeded run of `ours` and `ours_kv` samples the same token ids (the notes say whether
   this run's did). Goals: ours ≥ 3× naive's episodes/s; ours ≥ 0.9× single_generate's
   tokens/s.

What bounds the multi-turn figures with this 1 M model (profile of 64 ToolUse episodes,
`HFPolicy` at e3f86d9: ours 9.0 s = first prefill 4.3 s + the later turns' prefills 2.4 s +
64 decode steps 2.1 s + envs and rendering 0.2 s; single_generate 6.3 s = the same first
prefill 4.3 s + 60 decode steps 1.9 s). ToolUse: every episode needs one full prefill of
its own tool schemas (each task offers its plan's tools and distractors, so the 64 first
prompts share only their first 102 tokens: a prefix cache would not help), which the naive
loop pays as well; each decoded token reads its row's whole KV cache (~1,750 positions),
which batching cannot share (only the 4 MB of weights are shared); so the engine's edge over
the naive loop is the three re-prefills per episode that KV reuse skips. Tokens/s next to
one batched `generate`: every later turn runs the env's reply through the model (ToolUse:
~80 tokens a turn per episode against 16 sampled; Arithmetic's byte-level feedback line is
as long as the answer), and each of those tokens attends to the whole context;
`generate` alone does none of that. Without the later turns' prefills ours would run at
0.94× single_generate.

TRL 1.16 as a contender: its only multi-turn path is the tool-calling loop inside
`GRPOTrainer`/`DistillationTrainer` (`_tool_call_loop`, private, run from the trainer's
`_generate`): tools are Python callables, tool calls are parsed by `parse_response` with a
response template that TRL only knows for a fixed list of chat templates (Qwen, Llama, GLM,
…), and there is no turn for environment feedback (user messages) nor a Gymnasium env. It
cannot drive these envs with this model without rewriting it, so it is not a contender here
(the suite notes say so).

Not covered: vLLM or server backends (see `benchmarks/gpu.sh`), top-p, stop strings.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.harness import Comparison, SuiteResult, interleave, records, tiny

SUITE = "rollout"
WIDE = {
    "hidden_size": 512,
    "num_layers": 6,
    "num_heads": 8,
    "num_kv_heads": 4,
    "intermediate_size": 1536,
}
UNITS = {
    "seconds": "s",
    "cpu_seconds": "s",
    "tokens_per_s": "tokens/s",
    "episodes_per_s": "episodes/s",
    "tokens": "tokens",
    "turns": "turns",
}


@dataclass(frozen=True)
class Setting:
    """Sizes of one run of the suite."""

    sampling_batch: int
    sampling_tokens: int
    sampling_rounds: int
    wide: bool
    episodes: int
    tool_episodes: int
    max_turns: int
    new_tokens: int
    rollout_rounds: int


def setting(quick: bool) -> Setting:
    """The sizes for quick, full and the test's tiny setting."""
    if tiny():
        return Setting(4, 4, 1, False, 2, 2, 2, 4, 1)
    if quick:
        return Setting(16, 32, 5, True, 16, 16, 4, 16, 2)
    return Setting(16, 64, 9, True, 64, 64, 4, 16, 3)


Metric = Callable[[float], float]


def _timed(work: Callable[[], dict[str, Metric]]) -> Callable[[], dict[str, float]]:
    """A contender: wall and CPU seconds around `work`, plus the metrics `work` returns, each
    a function of the wall time (rates are computed once the time is known)."""

    def run() -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = work()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"seconds": wall, "cpu_seconds": cpu, **{k: v(wall) for k, v in out.items()}}

    return run


# -- sampling: HFPolicy.generate vs model.generate ----------------------------------------------


def chat_prompts(policy, batch: int) -> list[list[int]]:
    """`batch` chat-rendered prompts of different lengths (so the batch is left-padded)."""
    tok = policy.tokenizer
    out = []
    for i in range(batch):
        text = f"What is {17 * i + 3} + {29 * i % 97}? Answer with a number." + " pad" * (i % 5)
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        out.append(list(tok(rendered, add_special_tokens=False)["input_ids"]))
    return out


def hf_generate(policy, prompts: list[list[int]], new_tokens: int, seed: int) -> int:
    """transformers' own sampling loop on the same left-padded batch; returns tokens made."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), policy.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = policy.model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=policy.tokenizer.pad_token_id,
            use_cache=True,
        )
    return int(out.shape[1] - width) * len(prompts)


def sampling_case(case: str, model_dir, s: Setting) -> tuple[list[dict], list[Comparison], str]:
    """HFPolicy.generate vs model.generate on one model."""
    from opd_selfplay.agents.base import SamplingParams
    from opd_selfplay.agents.hf import HFPolicy

    policy = HFPolicy.from_pretrained(model_dir, device="cpu")
    policy.eos_token_ids = frozenset()  # identical work: both run to max_new_tokens
    prompts = chat_prompts(policy, s.sampling_batch)
    n = s.sampling_tokens
    seeds = iter(range(10**6))

    def ours() -> dict:
        samples = policy.generate(prompts, SamplingParams(max_new_tokens=n, seed=next(seeds)))
        made = sum(len(x.token_ids) for x in samples)
        assert made == len(prompts) * n, made
        return {"tokens_per_s": lambda wall: made / wall}

    def bare() -> dict:
        made = hf_generate(policy, prompts, n, next(seeds))
        return {"tokens_per_s": lambda wall: made / wall}

    runs = interleave(
        {"ours": _timed(ours), "generate": _timed(bare)},
        rounds=s.sampling_rounds,
        warmup=0 if tiny() else 1,
    )
    params = sum(p.numel() for p in policy.model.parameters())
    note = (
        f"{case}: {params / 1e6:.1f} M parameters, batch {len(prompts)} × {n} new tokens, "
        f"EOS disabled, temperature 1, {s.sampling_rounds} rounds"
    )
    comparisons = [
        Comparison(SUITE, case, "tokens_per_s", "ours", "generate", 0.9, lower_is_better=False)
    ]
    return records(SUITE, case, runs, UNITS), comparisons, note


# -- multi-turn rollouts ---------------------------------------------------------------------


def naive_rollouts(
    policy,
    env_id: str,
    env_kwargs: dict,
    seeds: list[int],
    max_turns: int,
    new_tokens: int,
    max_context: int,
    sampling_seed: int,
) -> tuple[int, int]:
    """The plain loop: one `generate` per episode per turn, the whole conversation re-rendered
    and re-tokenized every turn. Returns (turns, generated tokens)."""
    import gymnasium as gym

    from opd_selfplay.agents.base import SamplingParams
    from opd_selfplay.rollout import observation_messages, resolve_env_id

    resolve_env_id(env_id)  # registers the built-in ids
    tok = policy.tokenizer
    turns = tokens = 0
    for k, seed in enumerate(seeds):
        env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
        try:
            obs, _ = env.reset(seed=seed)
            messages = [m.to_dict() for m in observation_messages(obs)]
            generated = 0  # the same token budget as the engine: context + actions so far
            for turn in range(max_turns):
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                room = max_context - len(ids)
                if room <= 0:
                    break
                params = SamplingParams(
                    max_new_tokens=min(new_tokens, room), seed=sampling_seed + 1000 * k + turn
                )
                sample = policy.generate([ids], params)[0]
                turns += 1
                generated += len(sample.token_ids)
                obs, _, terminated, truncated, _ = env.step(sample.text)
                messages.append({"role": "assistant", "content": sample.text})
                messages.extend(m.to_dict() for m in observation_messages(obs))
                if terminated or truncated:
                    break
            tokens += generated
        finally:
            env.close()
    return turns, tokens


def rollout_case(policy, env_id: str, s: Setting) -> tuple[list[dict], list[Comparison], list[str]]:
    """Engine vs naive loop vs one batched generate, on one env."""
    from opd_selfplay.agents.base import SamplingParams
    from opd_selfplay.agents.hf import HFPolicy
    from opd_selfplay.rollout import RolloutConfig, RolloutEngine

    case = env_id.split("/")[-1]
    env_kwargs: dict = {"max_attempts": s.max_turns}
    if env_id == "opd/ToolUse-v0":
        # Level 1 keeps the byte-level prompt (tool schemas) under the tiny model's 2048
        # positions; levels 0 and 3 reach 2,115 tokens and end at reset.
        env_kwargs["difficulty"] = 1
    seeds = list(range(s.tool_episodes if env_id == "opd/ToolUse-v0" else s.episodes))
    config = RolloutConfig(
        max_turns=s.max_turns, max_new_tokens=s.new_tokens, seed=0, env_workers=1
    )
    engine = RolloutEngine(policy, config)

    made = {"ours": 0}
    sampled: dict[bool, list] = {}  # reuse -> every trajectory's token ids, last run

    def ours(reuse: bool = False) -> dict:
        with policy.reuse_kv() if reuse else contextlib.nullcontext():
            trajs = engine.run(env_id, seeds, env_kwargs=env_kwargs)
        tokens = sum(t.num_action_tokens for t in trajs)
        made["ours"] = tokens
        sampled[reuse] = [t.token_ids for t in trajs]
        turns = sum(len(t.turns) for t in trajs)
        return {
            "episodes_per_s": lambda wall: len(trajs) / wall,
            "tokens_per_s": lambda wall: tokens / wall,
            "tokens": lambda wall: tokens,
            "turns": lambda wall: turns,
        }

    def naive() -> dict:
        turns, tokens = naive_rollouts(
            policy,
            env_id,
            env_kwargs,
            seeds,
            s.max_turns,
            s.new_tokens,
            config.max_context_tokens,
            0,
        )
        return {
            "episodes_per_s": lambda wall: len(seeds) / wall,
            "tokens_per_s": lambda wall: tokens / wall,
            "tokens": lambda wall: tokens,
            "turns": lambda wall: turns,
        }

    # The same seeded engine run every round, so its token count is fixed: measure it once.
    ours()
    per_row = max(1, math.ceil(made["ours"] / len(seeds)))
    flat = HFPolicy(policy.model, policy.tokenizer)
    flat.eos_token_ids = frozenset()
    first = [
        engine.encode(engine.render(_first_messages(env_id, env_kwargs, sd), True)) for sd in seeds
    ]

    def single() -> dict:
        samples = flat.generate(first, SamplingParams(max_new_tokens=per_row, seed=0))
        tokens = sum(len(x.token_ids) for x in samples)
        return {"tokens_per_s": lambda wall: tokens / wall, "tokens": lambda wall: tokens}

    contenders = {
        "ours": _timed(ours),
        "ours_kv": _timed(lambda: ours(reuse=True)),
        "naive": _timed(naive),
        "single_generate": _timed(single),
    }
    runs = interleave(
        contenders,
        rounds=s.rollout_rounds,
        warmup=0,  # `ours` ran once above; naive's first call warms nothing it lacks
    )
    comparisons = []
    for name in ("ours", "ours_kv"):
        comparisons += [
            Comparison(SUITE, case, "episodes_per_s", name, "naive", 3.0, lower_is_better=False),
            Comparison(
                SUITE, case, "tokens_per_s", name, "single_generate", 0.9, lower_is_better=False
            ),
        ]
    prompt_len = sorted(len(p) for p in first)
    same = sampled.get(True) == sampled.get(False)
    notes = [
        f"{case}: {len(seeds)} episodes × ≤ {s.max_turns} turns × ≤ {s.new_tokens} new tokens, "
        f"env kwargs {env_kwargs}, first prompts {prompt_len[0]}–{prompt_len[-1]} tokens; "
        f"ours made {made['ours']} tokens, single_generate {len(seeds)} × {per_row}; "
        f"{s.rollout_rounds} rounds; ours_kv sampled the same token ids as ours: {same}"
    ]
    return records(SUITE, case, runs, UNITS), comparisons, notes


def _first_messages(env_id: str, env_kwargs: dict, seed: int):
    import gymnasium as gym

    from opd_selfplay.rollout import observation_messages

    env = gym.make(env_id, disable_env_checker=True, **env_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        return observation_messages(obs)
    finally:
        env.close()


def suite(quick: bool) -> SuiteResult:
    """Run the suite (see the module docstring).

    Args:
        quick: 16 episodes per rollout case and fewer rounds (about 1.5 minutes here). The
            full run (64 episodes, 3 rounds, 9 sampling rounds) takes about 9 minutes on a
            quiet machine: under load, raise `--suite-timeout` (default 900 s).
    Returns:
        The records, the comparisons and the settings as notes.
    """
    import torch

    torch.set_num_threads(1)
    from opd_selfplay.agents.loading import load_policy
    from opd_selfplay.agents.tiny import TinyModelSpec, ensure_tiny_model

    s = setting(quick)
    rows: list[dict] = []
    comparisons: list[Comparison] = []
    notes = ["one torch thread; the machine is shared, so figures are indicative"]
    cases = [("sampling 1M", ensure_tiny_model())]
    if s.wide:
        cases.append(("sampling wide", ensure_tiny_model(TinyModelSpec(**WIDE))))
    for case, model_dir in cases:
        r, c, n = sampling_case(case, model_dir, s)
        rows += r
        comparisons += c
        notes.append(n)
    policy = load_policy("tiny", device="cpu")
    for env_id in ("opd/Arithmetic-v0", "opd/ToolUse-v0"):
        r, c, n = rollout_case(policy, env_id, s)
        rows += r
        comparisons += c
        notes += n
    notes.append(
        "TRL 1.16 has no applicable multi-turn rollout path: its tool-calling loop lives inside "
        "GRPOTrainer/DistillationTrainer (private `_tool_call_loop`), needs Python-callable tools "
        "and a chat template from its fixed list (for `parse_response`), and has no env-feedback "
        "turns; so no TRL contender here"
    )
    return SuiteResult(rows, comparisons, notes)


def main() -> None:
    """Run the suite alone and print medians and per-round ratios."""
    import os
    import statistics

    from benchmarks.harness import ratios, summarize, verdict

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (about 2 minutes)")
    args = parser.parse_args()
    result = suite(args.quick)
    for c in result.comparisons:
        rs = ratios(result.records, c)
        if not rs:
            continue
        summary = summarize(rs)
        print(
            f"{c.case:16s} {c.metric:15s} {c.ours}/{c.peer}: {statistics.median(rs):.2f} "
            f"({summary['min']:.2f}–{summary['max']:.2f}) goal {c.goal} {verdict(summary['median'], c)}"
        )
    for note in result.notes:
        print("-", note)


if __name__ == "__main__":
    main()
