"""Suite "opd_step": one on-policy distillation optimizer step, ours vs TRL vs bare PyTorch.

Identical work in every contender: the same 8 prompts each step (all of the same token
length, so no contender pads), 32 sampled tokens per prompt at temperature 1 (EOS cannot end
a sequence early: our sampler's EOS set is emptied, the others use `min_new_tokens`), a
≈0.5 M-parameter Qwen2 student and a ≈4.0 M teacher sharing the built-in byte-level tokenizer
(`opd_selfplay.agents.tiny`), reverse KL over the 32 sampled positions (mean over tokens),
gradient clipping at 1.0, AdamW at lr 1e-5 with a constant schedule, one thread.

Contenders:
- `ours`: `opd_selfplay.trainer.Trainer.train_step`, the code path `opd train` runs (rollout
  engine on a registered single-turn Gymnasium env, white-box teacher, objective `token`,
  divergence `reverse_kl`, 8 tasks × 1 sample, 1 turn, 32 new tokens).
- `trl_fast`: `trl.DistillationTrainer` (trl 1.16, beta = 1: reverse KL) with
  `bf16=False, gradient_checkpointing=False`.
- `trl_default`: the same with TRL's defaults for precision and checkpointing (bf16 autocast,
  gradient checkpointing, which also turns the KV cache off while sampling).
- `trl_gkd`: `trl.experimental.gkd.GKDTrainer` (lmbda = 1: always on-policy, beta = 1), fast
  settings.
- `floor`: bare PyTorch + `model.generate`: sample, teacher forward, reverse KL, backward,
  clip, AdamW step. Nothing else: no env, no tokenization per step, no bookkeeping.

How TRL is timed: its real `trainer.train()` loop runs in a helper thread; a callback blocks
it at `on_train_begin` and at every `on_step_end`, and each timed call releases exactly one
iteration of the loop (batch fetch, generation, loss, backward, clip, optimizer, scheduler,
zero_grad). Bookkeeping that is not the algorithm is off in every contender (TRL: logging,
saving and reporting; ours: no metrics log, no evaluation). Goals: ours ≤ 1.0× `trl_fast`
and ≤ 1.15× `floor` in wall time per step.

Not covered: multi-turn rollouts (suite `rollout`), large vocabularies (suite `large_vocab`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import gymnasium as gym

from benchmarks.harness import Comparison, SuiteResult, interleave, records, tiny

ENV_ID = "opd-bench/Prompt-v0"
ENV_REF = f"benchmarks.opd_step:{ENV_ID}"
# Eight prompts of the same length (two-digit operands), so that no contender pads.
PROMPTS = tuple(
    f"What is {a} + {b}? Answer with a number."
    for a, b in ((12, 34), (56, 78), (23, 45), (67, 89), (31, 42), (53, 64), (75, 86), (97, 18))
)
LR = 1e-5


def prompts(batch: int) -> list[str]:
    """`batch` prompts: `PROMPTS` in order, repeated (what our env shows for seeds 0…batch−1)."""
    return [PROMPTS[i % len(PROMPTS)] for i in range(batch)]


class PromptEnv(gym.Env):
    """A single-turn env: reset shows one of `PROMPTS` (by seed), any answer ends the episode.

    The benchmark's task source for our trainer; the peers get the same prompts as a dataset.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Text(max_length=4096)
        self.action_space = gym.spaces.Text(max_length=65536)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return PROMPTS[(seed or 0) % len(PROMPTS)], {}

    def step(self, action: str):
        return "", 0.0, True, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=PromptEnv)


@dataclass(frozen=True)
class Setting:
    """The work of one step (shared by this suite and `large_vocab`)."""

    student: str
    """Model folder of the student."""
    teacher: str
    """Model folder of the teacher."""
    new_tokens: int = 32
    """Sampled tokens per prompt."""
    batch: int = 8
    """Prompts per step."""


def tiny_specs():  # -> tuple[TinyModelSpec, TinyModelSpec]
    """The student (≈0.5 M parameters) and teacher (≈4.0 M) of the issue's setting."""
    from opd_selfplay.agents.tiny import TinyModelSpec

    student = TinyModelSpec(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2)
    teacher = TinyModelSpec(
        hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024
    )
    return student, teacher


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _load(path: str, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    return model


def _tokenizer(path: str):
    from opd_selfplay.agents.hf import load_tokenizer

    tok = load_tokenizer(path)
    tok.padding_side = "left"
    return tok


# -- contenders -----------------------------------------------------------------------------
def make_ours(s: Setting, workdir: str, device: str = "cpu", dtype: str = "float32"):
    """Our trainer on the setting; returns (step callable, trainer)."""
    from opd_selfplay.config import (
        EvalSection,
        ObjectiveSection,
        OptimSection,
        RolloutSection,
        TeacherSection,
        TrainConfig,
    )
    from opd_selfplay.trainer import Trainer

    config = TrainConfig(
        model=s.student,
        env=ENV_REF,
        steps=1_000_000,
        tasks_per_step=s.batch,
        group_size=1,
        seed=0,
        device=device,
        dtype=dtype,
        out=workdir,
        rollout=RolloutSection(
            max_turns=1, max_new_tokens=s.new_tokens, max_context_tokens=4096, temperature=1.0
        ),
        teacher=TeacherSection(kind="white_box", model=s.teacher, privileged=False),
        objective=ObjectiveSection(kind="token", divergence="reverse_kl"),
        optim=OptimSection(lr=LR, weight_decay=0.0, grad_clip=1.0, micro_batch=64),
        eval=EvalSection(episodes=1),
    )
    trainer = Trainer(config, workdir)
    # What `run()` does before its first step, minus the held-out evaluation.
    trainer.build_teachers()
    # Same work as the peers: no sequence may end before `new_tokens` (EOS never stops it).
    trainer.policy.eos_token_ids = frozenset()

    def step() -> None:
        metrics = trainer.train_step()
        trainer.step += 1
        expected = float(s.new_tokens)
        if metrics["action_tokens"] != expected:
            raise RuntimeError(f"ours sampled {metrics['action_tokens']} tokens, not {expected}")

    return step, trainer


class _Stepper:
    """Runs a transformers Trainer's own `train()` loop in a thread, one iteration per call."""

    def __init__(self, trainer) -> None:
        from transformers import TrainerCallback

        self.trainer = trainer
        self.go = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.stop = False
        self.error: BaseException | None = None
        outer = self

        class Gate(TrainerCallback):
            def _wait(self, control):
                outer.done.release()
                outer.go.acquire()
                if outer.stop:
                    control.should_training_stop = True
                return control

            def on_train_begin(self, args, state, control, **kw):
                return self._wait(control)

            def on_step_end(self, args, state, control, **kw):
                return self._wait(control)

        trainer.add_callback(Gate())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.done.acquire()  # the loop is set up and waits for the first step
        self._raise()

    def _run(self) -> None:
        try:
            self.trainer.train()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.release()

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"TRL's training loop failed: {self.error!r}") from self.error

    def step(self) -> None:
        """One iteration of the trainer's loop (returns when `on_step_end` fires)."""
        if not self.thread.is_alive():
            self._raise()
            raise RuntimeError("TRL's training loop ended (max_steps too small)")
        self.go.release()
        self.done.acquire()
        self._raise()

    def close(self) -> None:
        self.stop = True
        self.go.release()
        self.thread.join(timeout=60)


def _trl_common(workdir: str, steps: int, fast: bool, batch: int) -> dict:
    common = dict(
        output_dir=workdir,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=steps,
        seed=0,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if fast:
        common.update(bf16=False, gradient_checkpointing=False)
    return common


def make_trl(s: Setting, workdir: str, steps: int, fast: bool, device: str = "cpu", dtype=None):
    """`trl.DistillationTrainer` on the setting; returns (step callable, close, trainer).

    Args:
        s: the work.
        workdir: TRL's output_dir (nothing is saved there).
        steps: max_steps of TRL's loop (warm-up and timed steps, plus one spare).
        fast: `bf16=False, gradient_checkpointing=False`; else TRL's defaults for both.
        device: "cpu" forces TRL onto the CPU; otherwise TRL picks the accelerator.
        dtype: torch dtype of the loaded weights (default float32).
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    tok = _tokenizer(s.student)
    rows = [[{"role": "user", "content": p}] for p in prompts(s.batch)]
    # Enough rows for every step in one epoch, in order: each batch is exactly our 8 prompts.
    data = Dataset.from_dict({"prompt": rows * (steps + 1)})
    args = DistillationConfig(
        **_trl_common(workdir, steps, fast, s.batch),
        max_completion_length=s.new_tokens,
        beta=1.0,  # reverse KL
        temperature=1.0,
        shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": s.new_tokens},
        **({"use_cpu": True} if device == "cpu" else {}),
    )
    trainer = DistillationTrainer(
        model=_load(s.student, dtype),
        teacher_model=_load(s.teacher, dtype),
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    stepper = _Stepper(trainer)
    return stepper.step, stepper.close, trainer


def make_gkd(s: Setting, workdir: str, steps: int, device: str = "cpu"):
    """`trl.experimental.gkd.GKDTrainer` (always on-policy), fast settings."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    tok = _tokenizer(s.student)
    # The assistant message is a placeholder: with lmbda = 1 every step samples it anew.
    rows = [
        [{"role": "user", "content": p}, {"role": "assistant", "content": "0"}]
        for p in prompts(s.batch)
    ]
    data = Dataset.from_dict({"messages": rows * (steps + 1)})
    args = GKDConfig(
        **_trl_common(workdir, steps, True, s.batch),
        max_new_tokens=s.new_tokens,
        lmbda=1.0,
        beta=1.0,
        temperature=1.0,
        **({"use_cpu": True} if device == "cpu" else {}),
    )
    trainer = GKDTrainer(
        model=_load(s.student),
        teacher_model=_load(s.teacher),
        args=args,
        train_dataset=data,
        processing_class=tok,
    )
    trainer.generation_config.min_new_tokens = s.new_tokens
    stepper = _Stepper(trainer)
    return stepper.step, stepper.close, trainer


def make_floor(s: Setting, device: str = "cpu", dtype=None) -> Callable[[], None]:
    """Bare PyTorch: generate, teacher forward, reverse KL, backward, clip, AdamW step."""
    import torch

    tok = _tokenizer(s.student)
    student = _load(s.student, dtype).to(device)
    teacher = _load(s.teacher, dtype).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=0.0)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts(s.batch)
    ]
    enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    n = s.new_tokens

    def step() -> None:
        student.eval()
        with torch.no_grad():
            seq = student.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=tok.pad_token_id,
            )
        full = torch.cat([mask, torch.ones_like(seq[:, ids.shape[1] :])], dim=1)
        student.train()
        with torch.no_grad():
            t_logits = teacher(input_ids=seq, attention_mask=full, logits_to_keep=n + 1).logits
        s_logits = student(input_ids=seq, attention_mask=full, logits_to_keep=n + 1).logits
        logq = torch.log_softmax(s_logits[:, :-1].float(), dim=-1)
        logp = torch.log_softmax(t_logits[:, :-1].float(), dim=-1)
        loss = (logq.exp() * (logq - logp)).sum(-1).mean()  # reverse KL(student ‖ teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()

    return step


def timed(fn: Callable[[], None], sync: Callable[[], None] | None = None):
    """Wrap a unit of work as a harness contender: wall and CPU seconds of one call."""

    def run() -> dict[str, float]:
        if sync:
            sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if sync:
            sync()
        return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}

    return run


# -- the suite ------------------------------------------------------------------------------
def _have(module: str) -> str:
    """'' when `module` imports, else the one-line reason."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return ""


def suite(quick: bool) -> SuiteResult:
    """Run the suite (see the module docstring). quick: 20 rounds; full: 100; tiny: 2."""
    import torch

    torch.set_num_threads(1)
    from opd_selfplay.agents.tiny import ensure_tiny_model

    small = tiny()
    rounds = 2 if small else (20 if quick else 100)
    new_tokens = 8 if small else 32
    s_spec, t_spec = tiny_specs()
    setting = Setting(
        student=str(ensure_tiny_model(s_spec)),
        teacher=str(ensure_tiny_model(t_spec)),
        new_tokens=new_tokens,
    )
    notes = []
    contenders: dict[str, Callable[[], dict[str, float]]] = {}
    closers: list[Callable[[], None]] = []
    steps = rounds + 2  # warm-up + rounds + one spare
    with tempfile.TemporaryDirectory(prefix="opd-bench-") as tmp:
        step, trainer = make_ours(setting, str(Path(tmp) / "ours"))
        contenders["ours"] = timed(step)
        notes.append(
            f"student {_params(trainer.model) / 1e6:.2f} M parameters, teacher "
            f"{_params(trainer.teacher.model) / 1e6:.2f} M, vocabulary {trainer.model.config.vocab_size}; "
            f"batch {setting.batch} prompts × {setting.new_tokens} sampled tokens, reverse KL, "
            f"AdamW lr {LR}, grad clip 1.0, 1 thread; {rounds} interleaved rounds after 1 warm-up"
        )
        why = _have("trl")
        if why:
            notes.append(f"trl_fast, trl_default, trl_gkd skipped: {why}")
        else:
            for name, fast in (("trl_fast", True), ("trl_default", False)):
                step, close, _ = make_trl(setting, str(Path(tmp) / name), steps, fast)
                contenders[name] = timed(step)
                closers.append(close)
            why = _have("trl.experimental.gkd")
            if why:
                notes.append(f"trl_gkd skipped: {why}")
            else:
                step, close, _ = make_gkd(setting, str(Path(tmp) / "gkd"), steps)
                contenders["trl_gkd"] = timed(step)
                closers.append(close)
        contenders["floor"] = timed(make_floor(setting))
        try:
            runs = interleave(contenders, rounds=rounds, warmup=1)
        finally:
            for close in closers:
                close()
    rows = records("opd_step", "tiny", runs, {"seconds": "s", "cpu_seconds": "s"})
    comparisons = [Comparison("opd_step", "tiny", "seconds", "ours", "floor", goal=1.15)]
    if "trl_fast" in contenders:
        comparisons.insert(0, Comparison("opd_step", "tiny", "seconds", "ours", "trl_fast", 1.0))
        comparisons.append(Comparison("opd_step", "tiny", "seconds", "ours", "trl_default"))
        comparisons.append(Comparison("opd_step", "tiny", "cpu_seconds", "ours", "trl_fast"))
    if "trl_gkd" in contenders:
        comparisons.append(Comparison("opd_step", "tiny", "seconds", "ours", "trl_gkd"))
    comparisons.append(Comparison("opd_step", "tiny", "cpu_seconds", "ours", "floor"))
    notes.append(
        "TRL runs its own train() loop in a thread, released one iteration at a time; "
        "TRL logging/saving off; our step is Trainer.train_step (rollout on a registered env, "
        "teacher, loss, backward, clip, AdamW); EOS cannot end a sequence in any contender"
    )
    return SuiteResult(rows, comparisons, notes)


def main(argv: list[str] | None = None) -> int:
    """Run alone: `python -m benchmarks.opd_step [--quick]` prints the report section."""
    from benchmarks.report import suite_markdown

    argv = sys.argv[1:] if argv is None else argv
    result = suite("--quick" in argv)
    print(suite_markdown("opd_step", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
