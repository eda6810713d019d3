"""Suite "large_vocab": peak memory and time of one OPD step with Qwen2.5's vocabulary.

Identical work in both contenders: a student with a 151,936-token vocabulary (Qwen2.5's
size), hidden 256, 4 layers; a teacher of hidden 512, 4 layers, same tokenizer; 8 prompts,
256 sampled tokens each (32 with `--quick`; EOS cannot end a sequence early), reverse KL,
AdamW, gradient clipping, one thread — the `opd_step` setting (see `benchmarks.opd_step`)
with a large vocabulary, where the (positions × vocabulary) logits dominate memory.

Contenders: `ours` (`Trainer.train_step`) and `trl_fast` (`trl.DistillationTrainer`, which
projects hidden states to logits in chunks, with `bf16=False, gradient_checkpointing=False`).
Goals: ours' peak ≤ 0.5× TRL's and step time ≤ 0.8× TRL's.

How it measures. Each (contender, round) runs in a fresh process: models loaded, one warm-up
step (which also allocates the optimizer state), then the kernel's peak-RSS mark is reset
(/proc/self/clear_refs) and the resident set is read as the baseline; the timed steps follow
and `peak_mb` is VmHWM − baseline: the step's own memory above the loaded models and
optimizer (tracemalloc or ru_maxrss deltas would miss torch's allocations or the reset).
Rounds alternate the contenders (A B, B A, …). A contender whose estimated peak does not fit
in the available memory is skipped with the reason (this machine is shared).

The tokenizer is built offline: the built-in byte-level tokenizer and chat template
(`opd_selfplay.agents.tiny`) plus synthetic, never-merged tokens up to 151,936 entries; the
models are random-init Qwen2 folders, cached under `$OPD_CACHE_DIR`.

Usage: `python -m benchmarks.large_vocab [--quick]`; `suite(quick)` for `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    Comparison,
    SuiteResult,
    available_bytes,
    interleave,
    peak_rss_bytes,
    peak_rss_reset,
    records,
    rss_bytes,
    tiny,
)

VOCAB = 151_936
STUDENT = {"hidden": 256, "layers": 4, "heads": 4, "kv": 2, "intermediate": 1024}
TEACHER = {"hidden": 512, "layers": 4, "heads": 8, "kv": 2, "intermediate": 2048}
CONTENDERS = ("ours", "trl_fast")
# Peak above the loaded state, in float32 (positions × vocabulary) blocks: measured ≈1.9 (ours)
# and ≈1.0 (TRL) at 16 new tokens, with a margin; used only to skip a contender that cannot
# fit in memory.
_BLOCKS = {"ours": 6.0, "trl_fast": 3.0}


def build_tokenizer(vocab: int):  # -> PreTrainedTokenizerFast
    """The built-in byte-level tokenizer and chat template, padded with synthetic tokens to
    exactly `vocab` entries (special tokens included)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from opd_selfplay.agents.tiny import CHAT_TEMPLATE, ROLES, SPECIAL_TOKENS

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    table = {ch: i for i, ch in enumerate(alphabet)}
    # Synthetic tokens made of ASCII letters and digits (their own byte-level characters), so
    # that a sampled one decodes to plain text; without merges no text encodes to them.
    k = 0
    while len(table) < vocab - len(SPECIAL_TOKENS):
        table[f"v{k}"] = len(table)
        k += 1
    core = Tokenizer(models.BPE(vocab=table, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[f"<|{r}|>" for r in ROLES],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )
    if len(tok) != vocab:
        raise RuntimeError(f"built a tokenizer of {len(tok)} entries, wanted {vocab}")
    return tok


def ensure_model(
    vocab: int, hidden: int, layers: int, heads: int, kv: int, intermediate: int
) -> Path:
    """A cached random-init Qwen2 folder with the large-vocabulary tokenizer (built once,
    atomically, under `$OPD_CACHE_DIR`).

    Returns:
        The model folder.
    """
    from opd_selfplay.agents.tiny import cache_dir

    key = f"bench-v1-vocab{vocab}-h{hidden}-l{layers}-a{heads}-kv{kv}-i{intermediate}-s0"
    target = cache_dir() / key
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        _build_model(tmp, vocab, hidden, layers, heads, kv, intermediate)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its folder is complete
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _build_model(out: Path, vocab, hidden, layers, heads, kv, intermediate) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(vocab)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=intermediate,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # As in agents.tiny: keep transformers from swapping in Qwen's tokenizer class.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2))


def _sizes() -> tuple[int, dict, dict]:
    """Vocabulary and model shapes: the issue's, or trivially small ones under --tiny."""
    if tiny():
        small_s = {"hidden": 32, "layers": 1, "heads": 2, "kv": 1, "intermediate": 64}
        small_t = {"hidden": 64, "layers": 1, "heads": 2, "kv": 1, "intermediate": 128}
        return 2048, small_s, small_t
    return VOCAB, STUDENT, TEACHER


def _models() -> tuple[str, str, int]:
    vocab, s, t = _sizes()
    return str(ensure_model(vocab, **s)), str(ensure_model(vocab, **t)), vocab


# -- the worker (one contender in this process) ---------------------------------------------
def _worker(contender: str, new_tokens: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from benchmarks.opd_step import Setting, make_ours, make_trl

    student, teacher, _ = _models()
    setting = Setting(student=student, teacher=teacher, new_tokens=new_tokens)
    close = None
    with tempfile.TemporaryDirectory(prefix="opd-bench-") as tmp:
        if contender == "ours":
            step, _ = make_ours(setting, tmp)
        else:
            step, close, _ = make_trl(setting, tmp, steps + 2, fast=True)
        try:
            step()  # warm-up: first-call costs and the optimizer state
            gc.collect()
            reset = peak_rss_reset()
            baseline = rss_bytes()
            times, cpus = [], []
            for _ in range(steps):
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            peak = peak_rss_bytes() - (baseline if reset else 0)
        finally:
            if close is not None:
                close()
    return {
        "seconds": sorted(times)[len(times) // 2],
        "cpu_seconds": sorted(cpus)[len(cpus) // 2],
        "peak_mb": peak / 2**20,
        "baseline_mb": baseline / 2**20,
        "peak_reset": reset,
    }


def _spawn(contender: str, new_tokens: int, steps: int) -> dict[str, float]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.large_vocab", "--worker", contender]
        cmd += ["--new-tokens", str(new_tokens), "--steps", str(steps), "--result", out.name]
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
        text = Path(out.name).read_text()
    if done.returncode != 0 or not text:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{contender} worker failed (exit {done.returncode}): {tail}")
    data = json.loads(text)
    if not data.pop("peak_reset"):
        raise RuntimeError("cannot reset the peak-RSS mark (/proc/self/clear_refs); no peak")
    return data


def suite(quick: bool) -> SuiteResult:
    """Run the suite. quick: 32 new tokens, 2 rounds of 1 timed step; full: 256, 2 × 2."""
    small = tiny()
    new_tokens = 4 if small else (32 if quick else 256)
    rounds = 1 if small else 2
    steps = 1 if (small or quick) else 2
    _, _, vocab = _models()  # build the cached folders once, before the workers race
    positions = 8 * (45 + new_tokens)
    block = positions * vocab * 4
    notes = [
        f"vocabulary {vocab}, student hidden {_sizes()[1]['hidden']} × {_sizes()[1]['layers']} "
        f"layers, teacher hidden {_sizes()[2]['hidden']}; batch 8 × {new_tokens} sampled tokens"
        + (" (quick: 32 instead of 256)" if quick and not small else "")
        + f"; {rounds} rounds, each contender in a fresh process per round, {steps} timed "
        "step(s) after 1 warm-up",
        "peak_mb: the step's resident-memory peak above the loaded models and optimizer state "
        "(VmHWM after a reset, minus the baseline)",
    ]
    contenders = {}
    available = available_bytes()
    for name in CONTENDERS:
        if name == "trl_fast":
            try:
                import trl  # noqa: F401
            except ImportError as exc:
                notes.append(f"trl_fast skipped: {exc}")
                continue
        need = _BLOCKS[name] * block
        if need > 0.8 * available:
            notes.append(
                f"{name} skipped: needs ~{need / 2**30:.1f} GiB, "
                f"{available / 2**30:.1f} GiB available"
            )
            continue
        contenders[name] = lambda name=name: _spawn(name, new_tokens, steps)
    if not contenders:
        raise RuntimeError("no contender fits in memory: " + "; ".join(notes[2:]))
    runs = interleave(contenders, rounds=rounds, warmup=0)
    units = {"seconds": "s", "cpu_seconds": "s", "peak_mb": "MB", "baseline_mb": "MB"}
    rows = records("large_vocab", f"V{vocab}", runs, units)
    case = f"V{vocab}"
    comparisons = [
        Comparison("large_vocab", case, "peak_mb", "ours", "trl_fast", goal=0.5),
        Comparison("large_vocab", case, "seconds", "ours", "trl_fast", goal=0.8),
        Comparison("large_vocab", case, "cpu_seconds", "ours", "trl_fast"),
    ]
    return SuiteResult(rows, comparisons, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        data = _worker(args.worker, args.new_tokens, args.steps)
        args.result.write_text(json.dumps(data))
        return 0
    from benchmarks.report import suite_markdown

    print(suite_markdown("large_vocab", suite(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
