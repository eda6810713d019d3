"""The GPU path: bf16 OPD steps/s, rollout tokens/s and peak GPU memory, next to TRL.

Run `bash benchmarks/gpu.sh [OUT]` on a single-GPU machine with PyTorch and no network (it
installs any wheels found in `benchmarks/wheels/` first); it calls this script, which writes
`OUT/report.md` and `OUT/records.jsonl` (the shape of `python -m benchmarks`) in under 10
minutes. Nothing is downloaded: the models are random-init folders with Qwen2.5-0.5B's
configuration (written below), and the tokenizer is the offline 151,936-entry one of
`benchmarks.large_vocab`.

Sections (each a suite in the report; a missing peer is skipped with its reason):
1. `gpu_opd_step`: one OPD step — 32 prompts × 256 sampled tokens, reverse KL, AdamW, grad
   clip 1.0, student and teacher both of the 0.5B configuration (different seeds), weights in
   bf16 — `ours` (`Trainer.train_step`, `dtype=bfloat16`) vs `trl_fast`
   (`trl.DistillationTrainer` with the same bf16 weights, `bf16=False` (no autocast: the
   weights already are bf16), `gradient_checkpointing=False`). Metrics: seconds per step, OPD
   steps/s, the step's peak GPU memory above the resident models (`max_memory_allocated`
   after a reset, minus what was allocated before the step).
2. `gpu_rollout`: sampling 64 prompts × 256 new tokens: `ours_hf` (`HFPolicy.generate`),
   `hf_generate` (transformers' `model.generate`, the peer), and `ours_vllm`
   (`agents.vllm_local.VLLMPolicy`, in a subprocess so that its memory reservation does not
   touch the others; skipped when vLLM is absent). Metrics: tokens/s, peak GPU memory.

`--dry-run` runs every code path on the CPU with trivially small sizes (tests use it); its
figures mean nothing. The script also works from an uninstalled checkout (it maps
`opd_selfplay.agents`, `.envs`, `.verifiers` onto the top-level folders as the installed
package does).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Qwen2.5-0.5B's configuration (config.json of Qwen/Qwen2.5-0.5B), written out so that nothing
# is downloaded.
QWEN25_05B = {
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151_936,
    "tie_word_embeddings": True,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 32_768,
    "hidden_act": "silu",
}
DRY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 2048,
    "tie_word_embeddings": True,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 4096,
    "hidden_act": "silu",
}


def _import_paths() -> None:
    """Make `benchmarks` and `opd_selfplay` (with its mapped subpackages) importable from
    this checkout, installed or not."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import opd_selfplay

    for sub in ("agents", "envs", "verifiers"):
        name = f"opd_selfplay.{sub}"
        try:
            importlib.import_module(name)
            continue
        except ModuleNotFoundError:
            pass
        spec = importlib.util.spec_from_file_location(
            name, ROOT / sub / "__init__.py", submodule_search_locations=[str(ROOT / sub)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        setattr(opd_selfplay, sub, module)
        spec.loader.exec_module(module)


def build_folder(out: Path, cfg: dict, seed: int, dtype: str) -> Path:
    """A random-init Qwen2 folder of configuration `cfg` with the offline tokenizer (cached)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    from benchmarks.large_vocab import build_tokenizer

    hf_logging.disable_progress_bar()

    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(cfg["vocab_size"])
    config = Qwen2Config(
        **cfg,
        bos_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model = model.to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # see agents.tiny
    cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    del model
    return out


class _Gpu:
    """Timing and peak-memory bookkeeping around one call, on CUDA or (dry run) the CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")

    def measure(self, fn, tokens: int = 0):
        """Wrap `fn` as a harness contender: seconds, steps or tokens per second, peak MB."""
        torch = self.torch

        def run() -> dict[str, float]:
            if self.cuda:
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            produced = fn()
            if self.cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            out = {"seconds": seconds}
            if tokens or produced:
                out["tokens_per_s"] = (produced or tokens) / seconds
            else:
                out["steps_per_s"] = 1.0 / seconds
            if self.cuda:
                out["peak_gpu_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            return out

        return run


def opd_step_section(args, student: str, teacher: str, device: str, deadline: float):
    """Suite `gpu_opd_step` (see the module docstring)."""
    import torch

    from benchmarks.harness import Comparison, SuiteResult, interleave, records
    from benchmarks.opd_step import Setting, make_ours, make_trl

    s = Setting(student=student, teacher=teacher, new_tokens=args.new_tokens, batch=args.batch)
    gpu = _Gpu(device)
    notes = [
        f"{args.batch} prompts × {args.new_tokens} sampled tokens, reverse KL, AdamW lr 1e-5, "
        f"grad clip 1.0, bf16 weights; {args.rounds} interleaved rounds after 1 warm-up",
        "peak_gpu_mb: max_memory_allocated during the step minus memory_allocated before it",
    ]
    contenders = {}
    closers = []
    with tempfile.TemporaryDirectory(prefix="opd-gpu-") as tmp:
        step, _ = make_ours(s, f"{tmp}/ours", device=device, dtype="bfloat16")
        contenders["ours"] = gpu.measure(step)
        try:
            import trl  # noqa: F401

            step, close, _ = make_trl(
                s, f"{tmp}/trl", args.rounds + 2, fast=True, device=device, dtype=torch.bfloat16
            )
            contenders["trl_fast"] = gpu.measure(step)
            closers.append(close)
        except ImportError as exc:
            notes.append(f"trl_fast skipped: {exc}")
        try:
            runs = interleave(contenders, rounds=1, warmup=1)
            rounds_done = 1
            while rounds_done < args.rounds and time.monotonic() < deadline:
                more = interleave(contenders, rounds=1, warmup=0)
                for r in more:
                    r["round"] = rounds_done
                runs += more
                rounds_done += 1
            if rounds_done < args.rounds:
                notes.append(f"stopped after {rounds_done} rounds (time budget)")
        finally:
            for close in closers:
                close()
    units = {"seconds": "s", "steps_per_s": "1/s", "peak_gpu_mb": "MB"}
    rows = records("gpu_opd_step", "qwen2.5-0.5b-config", runs, units)
    case = "qwen2.5-0.5b-config"
    comparisons = [
        Comparison("gpu_opd_step", case, "steps_per_s", "ours", "trl_fast", 1.0, False),
        Comparison("gpu_opd_step", case, "peak_gpu_mb", "ours", "trl_fast"),
    ]
    return SuiteResult(rows, comparisons, notes)


def rollout_section(args, student: str, device: str, deadline: float):
    """Suite `gpu_rollout`: HF backends in this process, vLLM in a subprocess."""
    import gc

    import torch

    from benchmarks.harness import Comparison, SuiteResult, records

    rounds = max(1, args.rounds // 2)
    runs = _hf_rollouts(args, student, device, rounds)
    notes = [
        f"{args.rollout_batch} prompts × {args.new_tokens} new tokens, temperature 1, bf16; "
        f"{rounds} rounds after 1 warm-up"
    ]
    gc.collect()  # the HF model is unreachable now: free its memory before vLLM starts
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    vllm = _vllm_subprocess(args, student, deadline)
    if isinstance(vllm, str):
        notes.append(f"ours_vllm skipped: {vllm}")
    else:
        runs += [{"contender": "ours_vllm", "round": r, "metrics": m} for r, m in enumerate(vllm)]
        notes.append(
            "ours_vllm: gpu_reserved_mb is what the vLLM process holds (KV cache included)"
        )
    units = {"seconds": "s", "tokens_per_s": "tokens/s", "peak_gpu_mb": "MB"}
    units["gpu_reserved_mb"] = "MB"
    case = "qwen2.5-0.5b-config"
    rows = records("gpu_rollout", case, runs, units)
    comparisons = [
        Comparison("gpu_rollout", case, "tokens_per_s", "ours_hf", "hf_generate", 0.9, False),
        Comparison("gpu_rollout", case, "tokens_per_s", "ours_vllm", "ours_hf", None, False),
    ]
    return SuiteResult(rows, comparisons, notes)


def _hf_rollouts(args, student: str, device: str, rounds: int) -> list[dict]:
    """`HFPolicy.generate` vs `model.generate` on the same batch (interleaved runs)."""
    import torch

    from benchmarks.harness import interleave
    from benchmarks.opd_step import prompts
    from opd_selfplay.agents.base import SamplingParams
    from opd_selfplay.agents.hf import HFPolicy

    policy = HFPolicy.from_pretrained(student, device=device, dtype="bfloat16")
    policy.eos_token_ids = frozenset()  # every row samples exactly `new_tokens`
    tok = policy.tokenizer
    batch, n = args.rollout_batch, args.new_tokens
    ids = [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
        for p in prompts(batch)
    ]
    params = SamplingParams(max_new_tokens=n, temperature=1.0, seed=0)
    x = torch.tensor(ids, device=policy.device)

    def ours_hf() -> int:
        return sum(len(s.token_ids) for s in policy.generate(ids, params))

    def hf_generate() -> int:
        with torch.inference_mode():
            out = policy.model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                do_sample=True,
                top_k=0,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=policy.pad_token_id,
            )
        return int(out[:, x.shape[1] :].numel())

    gpu = _Gpu(device)
    contenders = {"ours_hf": gpu.measure(ours_hf), "hf_generate": gpu.measure(hf_generate)}
    return interleave(contenders, rounds=rounds, warmup=1)


def _vllm_subprocess(args, student: str, deadline: float) -> list[dict] | str:
    """vLLM's rounds from a child process, or the reason they could not run."""
    if args.dry_run:
        return "dry run (no GPU)"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (put its wheels in benchmarks/wheels/)"
    left = deadline - time.monotonic()
    if left < 90:
        return f"only {left:.0f} s of the time budget left"
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--vllm-worker", student]
        cmd += ["--result", out.name, "--new-tokens", str(args.new_tokens)]
        cmd += ["--rollout-batch", str(args.rollout_batch), "--rounds", str(args.rounds)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left, check=False)
        except subprocess.TimeoutExpired:
            return "timed out (time budget)"
        text = Path(out.name).read_text()
    if done.returncode != 0 or not text:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"vLLM failed (exit {done.returncode}): {tail[:200]}"
    return json.loads(text)


def _vllm_worker(args) -> int:
    import torch

    from benchmarks.opd_step import prompts
    from opd_selfplay.agents.base import SamplingParams
    from opd_selfplay.agents.vllm_local import VLLMPolicy

    policy = VLLMPolicy(
        args.vllm_worker, dtype="bfloat16", gpu_memory_utilization=0.4, max_model_len=2048
    )
    tok = policy.tokenizer
    ids = [
        tok(
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )["input_ids"]
        for p in prompts(args.rollout_batch)
    ]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, seed=0)
    policy.generate(ids, params)  # warm-up
    out = []
    for _ in range(max(1, args.rounds // 2)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        produced = sum(len(s.token_ids) for s in policy.generate(ids, params))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        # vLLM reserves its KV cache up front; report what this process holds on the GPU.
        free, total = torch.cuda.mem_get_info()
        out.append(
            {
                "seconds": seconds,
                "tokens_per_s": produced / seconds,
                "gpu_reserved_mb": (total - free) / 2**20,
            }
        )
    Path(args.result).write_text(json.dumps(out))
    return 0


def _header(argv: list[str], device: str) -> dict[str, object]:
    import torch

    from benchmarks.__main__ import machine_header

    header = machine_header(argv, False)
    header["command"] = "bash benchmarks/gpu.sh / python benchmarks/gpu.py " + " ".join(argv)
    header["device"] = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    header["cuda"] = torch.version.cuda or "none"
    header["vllm"] = _version("vllm")
    return header


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-gpu", help="output folder")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (tests)")
    parser.add_argument("--budget-s", type=float, default=540, help="stop adding rounds after")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved OPD-step rounds")
    parser.add_argument("--batch", type=int, default=32, help="prompts per OPD step")
    parser.add_argument("--rollout-batch", type=int, default=64, help="prompts per rollout")
    parser.add_argument("--new-tokens", type=int, default=256, help="sampled tokens per prompt")
    parser.add_argument("--vllm-worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    _import_paths()
    if args.vllm_worker:
        return _vllm_worker(args)
    started = time.monotonic()
    deadline = started + args.budget_s
    import torch

    from benchmarks.report import write

    if args.dry_run:
        device, cfg = "cpu", DRY
        args.rounds, args.batch, args.rollout_batch, args.new_tokens = 1, 2, 2, 4
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, cfg = "cuda", QWEN25_05B
    else:
        print("gpu.py: no CUDA device; run with --dry-run to check the code paths", file=sys.stderr)
        return 2
    cache = Path(os.environ.get("OPD_CACHE_DIR") or Path(tempfile.gettempdir()) / "opd-gpu")
    key = "dry" if args.dry_run else "qwen2.5-0.5b-config"
    student = str(build_folder(cache / f"gpu-{key}-s0", cfg, 0, "bfloat16"))
    teacher = str(build_folder(cache / f"gpu-{key}-s1", cfg, 1, "bfloat16"))
    results: dict[str, object] = {}
    extra: dict[str, dict[str, object]] = {}
    for name, section in (
        ("gpu_opd_step", lambda: opd_step_section(args, student, teacher, device, deadline)),
        ("gpu_rollout", lambda: rollout_section(args, student, device, deadline)),
    ):
        t0 = time.monotonic()
        print(f"[gpu] {name} …", file=sys.stderr, flush=True)
        try:
            results[name] = section()
        except Exception as exc:  # one section failing must not lose the other's figures
            import traceback

            traceback.print_exc()
            results[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        extra[name] = {"wall_seconds": round(time.monotonic() - t0, 1)}
        if device == "cuda":
            torch.cuda.empty_cache()
    header = _header(argv, device)
    header["total_seconds"] = round(time.monotonic() - started, 1)
    report, rec = write(args.out, header, results, extra)  # type: ignore[arg-type]
    print(f"[gpu] wrote {report} and {rec}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
