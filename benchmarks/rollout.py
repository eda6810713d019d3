"""Sampling and multi-turn rollout throughput, side by side with bare `model.generate`.

Run: `python benchmarks/rollout.py [--quick] [--repeats N]`

1. Sampling: `HFPolicy.generate` vs `model.generate` (transformers, KV cache, sampling) on the
   same model, the same left-padded batch of prompts and the same number of new tokens (EOS
   disabled in both, so the work is identical). Interleaved A/B runs; medians, min–max and the
   ratio (goal: ours / generate ≥ 0.9). Two model sizes: the built-in tiny model (≈1 M
   parameters, where per-step Python overhead dominates) and a wider one (≈25 M).
2. Multi-turn rollouts: 64 episodes of `opd/Arithmetic-v0` (falls back to a built-in toy env
   when the env package is absent), up to 4 turns, through `RolloutEngine`: episodes/s, env
   steps/s and generated tokens/s.

Prints a markdown report; `run(quick)` returns the records for `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from opd_selfplay.agents.base import SamplingParams
from opd_selfplay.agents.hf import HFPolicy
from opd_selfplay.agents.tiny import TinyModelSpec, build_tiny_model, ensure_tiny_model


def _prompts(policy: HFPolicy, batch: int) -> list[list[int]]:
    tok = policy.tokenizer
    out = []
    for i in range(batch):
        text = f"What is {17 * i + 3} + {29 * i % 97}? Answer with a number." + " pad" * (i % 5)
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        out.append(list(tok(rendered, add_special_tokens=False)["input_ids"]))
    return out


def _bare_generate(policy: HFPolicy, prompts: list[list[int]], new_tokens: int, seed: int) -> int:
    """transformers' own sampling loop on the same left-padded batch."""
    tok = policy.tokenizer
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
            pad_token_id=tok.pad_token_id,
            use_cache=True,
        )
    return int(out.shape[1] - width) * len(prompts)


def _ours(policy: HFPolicy, prompts: list[list[int]], new_tokens: int, seed: int) -> int:
    samples = policy.generate(prompts, SamplingParams(max_new_tokens=new_tokens, seed=seed))
    return sum(len(s.token_ids) for s in samples)


def bench_sampling(model_dir: Path, batch: int, new_tokens: int, repeats: int) -> dict:
    policy = HFPolicy.from_pretrained(model_dir, device="cpu")
    policy.eos_token_ids = frozenset()  # identical work: both run to max_new_tokens
    prompts = _prompts(policy, batch)
    _ours(policy, prompts, 4, 0)  # warm-up both paths
    _bare_generate(policy, prompts, 4, 0)
    ours, bare = [], []
    for r in range(repeats):  # interleaved A B A B
        t = time.perf_counter()
        n = _ours(policy, prompts, new_tokens, r)
        ours.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        m = _bare_generate(policy, prompts, new_tokens, r)
        bare.append(m / (time.perf_counter() - t))
        assert n == m == batch * new_tokens
    params = sum(p.numel() for p in policy.model.parameters())
    return {
        "suite": "sampling",
        "params": params,
        "batch": batch,
        "new_tokens": new_tokens,
        "ours_tps": ours,
        "generate_tps": bare,
        "ratio_median": statistics.median(o / b for o, b in zip(ours, bare)),
    }


def bench_rollout(episodes: int, repeats: int) -> dict:
    from opd_selfplay.agents.loading import load_policy
    from opd_selfplay.rollout import RolloutConfig, RolloutEngine

    policy = load_policy("tiny", device="cpu")
    try:
        import gymnasium

        import opd_selfplay.envs  # noqa: F401 - registers opd/Arithmetic-v0

        gymnasium.spec("opd/Arithmetic-v0")
        env: object = "opd/Arithmetic-v0"
    except Exception:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from toyenvs import Countdown

        env = lambda: Countdown(turns=4)  # noqa: E731
    engine = RolloutEngine(policy, RolloutConfig(max_turns=4, max_new_tokens=16, seed=0))
    runs = []
    for r in range(repeats):
        t = time.perf_counter()
        trajs = engine.run(env, seeds=list(range(r * episodes, (r + 1) * episodes)))
        dt = time.perf_counter() - t
        steps = sum(len(tr.turns) for tr in trajs)
        tokens = sum(tr.num_action_tokens for tr in trajs)
        runs.append(
            {
                "seconds": dt,
                "episodes_s": len(trajs) / dt,
                "steps_s": steps / dt,
                "tokens_s": tokens / dt,
            }
        )
    return {
        "suite": "rollout",
        "env": env if isinstance(env, str) else "toy Countdown",
        "episodes": episodes,
        "runs": runs,
    }


def run(quick: bool = False, repeats: int | None = None) -> list[dict]:
    """All suites; returns the raw records."""
    torch.set_num_threads(2)
    repeats = repeats or (3 if quick else 7)
    records = [
        bench_sampling(
            ensure_tiny_model(), batch=16, new_tokens=32 if quick else 64, repeats=repeats
        )
    ]
    if not quick:
        with tempfile.TemporaryDirectory() as tmp:
            wide = build_tiny_model(
                Path(tmp) / "wide",
                TinyModelSpec(
                    hidden_size=512,
                    num_layers=6,
                    num_heads=8,
                    num_kv_heads=4,
                    intermediate_size=1536,
                ),
            )
            records.append(bench_sampling(wide, batch=16, new_tokens=64, repeats=repeats))
    records.append(bench_rollout(episodes=64, repeats=2 if quick else 3))
    return records


def report(records: list[dict]) -> str:
    lines = [
        "| suite | model params | batch × new tokens | ours tokens/s (median, min–max) | generate tokens/s | ours / generate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for rec in records:
        if rec["suite"] != "sampling":
            continue
        o, g = rec["ours_tps"], rec["generate_tps"]
        lines.append(
            f"| sampling | {rec['params'] / 1e6:.1f} M | {rec['batch']} × {rec['new_tokens']} | "
            f"{statistics.median(o):.0f} ({min(o):.0f}–{max(o):.0f}) | "
            f"{statistics.median(g):.0f} ({min(g):.0f}–{max(g):.0f}) | {rec['ratio_median']:.2f} |"
        )
    for rec in records:
        if rec["suite"] == "rollout":
            runs = rec["runs"]
            med = {
                k: statistics.median(r[k] for r in runs)
                for k in ("episodes_s", "steps_s", "tokens_s")
            }
            lines += [
                "",
                f"Multi-turn rollout, {rec['episodes']} episodes of {rec['env']}, ≤ 4 turns, tiny model: "
                f"{med['episodes_s']:.1f} episodes/s, {med['steps_s']:.1f} env steps/s, "
                f"{med['tokens_s']:.0f} generated tokens/s (median of {len(runs)}).",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings (about a minute)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="interleaved repeats per contender"
    )
    args = parser.parse_args()
    print(report(run(args.quick, args.repeats)))


if __name__ == "__main__":
    main()
