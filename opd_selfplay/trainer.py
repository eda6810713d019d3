"""The trainer: one loop, read top to bottom.

    warm start (optional) → teacher → evaluate → for each step:
        rollout (the student samples, all episodes of the step in batched turns)
        → teacher signal (forward only: logits, top-k, target text, grades or SPIN pairs)
        → objective (micro-batches, global token count; see step_objective.py)
        → optimizer step → (weights are shared with the sampler: HFPolicy samples from the
          very model being trained) → teacher follows (snapshot / EMA) → log, evaluate,
          checkpoint
    → evaluate → plots, summary

Distributed: under `torchrun` (WORLD_SIZE > 1) each rank plays its share of the step's tasks,
the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), the action-token
count is summed over ranks, and the loss is scaled by the world size so that DDP's gradient
average equals the gradient of the global token mean — the same update as one process on the
whole batch. Rank 0 evaluates, logs and checkpoints.

Resuming (`resume=True`) restores model, optimizer, scheduler, teacher, RNG states and the
step; task seeds and sampling seeds are functions of (seed, step), so a resumed run takes the
same steps as an uninterrupted one.

Options: LoRA through PEFT (`lora_rank`), a KL term to the initial student
(`objective.ref_kl`), off-policy distillation on the teacher's samples
(`rollout.sample_from=teacher`).

Not covered here: vLLM as the training-time sampler with weight sync after each step (the
`VLLMPolicy.load_weights` hook exists; the loop samples in-process with HF).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import torch

from opd_selfplay import checkpoint as ckpt
from opd_selfplay.advantages import group_advantages
from opd_selfplay.config import TrainConfig
from opd_selfplay.errors import InputError
from opd_selfplay.evaluation import EVAL_SEED_BASE, evaluate
from opd_selfplay.rollout import RolloutConfig, RolloutEngine
from opd_selfplay.runlog import Progress, RunLog
from opd_selfplay.step_objective import StepObjective, Teacher, all_reduce_sum
from opd_selfplay.teachers import (
    CrossTokenizerTeacher,
    ModelTeacher,
    ServerTeacher,
    SpinOpponent,
    TextTeacher,
    VerifiedSelfTeacher,
)
from opd_selfplay.teachers.cross_tokenizer import same_vocabulary
from opd_selfplay.warmstart import warm_start


def _dist() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Trainer(StepObjective):
    """Runs one training configuration in a run folder.

    Args:
        config: the resolved configuration.
        run_dir: the run folder (config, metrics, checkpoints, plots, summary).
        resume: continue from the run folder's latest checkpoint.
    """

    def __init__(
        self, config: TrainConfig, run_dir: str | os.PathLike[str], resume: bool = False
    ) -> None:
        from opd_selfplay.agents.hf import HFPolicy
        from opd_selfplay.agents.loading import load_policy

        self.config = config
        self.dir = Path(run_dir)
        self.rank, self.world = _dist()
        if config.threads:
            torch.set_num_threads(config.threads)
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.policy = load_policy(config.model, device=config.device, dtype=config.dtype)
        if not isinstance(self.policy, HFPolicy):
            raise ValueError(
                f"model {config.model!r}: training needs a local model (tiny or a folder)"
            )
        if config.lora_rank:
            self.policy.model = _with_lora(self.policy.model, config.lora_rank, config.lora_alpha)
        self.model = self.policy.model
        r = config.rollout
        self.engine = RolloutEngine(
            self.policy,
            RolloutConfig(
                max_turns=r.max_turns,
                max_new_tokens=r.max_new_tokens,
                max_context_tokens=r.max_context_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                env_workers=1,
            ),
        )
        self.log = RunLog(self.dir, enabled=self.rank == 0)
        self.step = 0
        self.warm_steps = 0
        self.before: dict[str, float] = {}
        self.teacher: Teacher | None = None
        self.reference: ModelTeacher | None = None
        self.train_model: torch.nn.Module = self.model
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.optim.lr,
            weight_decay=config.optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.judge_metrics: dict[str, float] = {}
        self.resumed = False
        if resume:
            self._restore()
        elif self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    # -- pieces ---------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        o, total = self.config.optim, max(self.config.steps, 1)
        if o.warmup_steps and step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
        if o.schedule == "cosine":
            return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if o.schedule == "linear":
            return 1.0 - (1.0 - o.min_lr_ratio) * progress
        return 1.0

    def build_teachers(self) -> None:
        """Build the teacher (and the KL reference) as `run` does after the warm start, for
        callers that drive `train_step` themselves (benchmarks, notebooks)."""
        self.teacher = self._build_teacher()
        self.reference = self._build_reference()

    def _build_teacher(self) -> Teacher | None:
        t, vocab = self.config.teacher, self.model.get_output_embeddings().weight.shape[0]
        if t.kind == "none":
            return None
        if t.kind == "verified_self":
            return VerifiedSelfTeacher()
        if t.kind == "spin_opponent":
            return SpinOpponent(
                self.model, self.engine, self.config.env, self.config.env_kwargs, t.refresh_every
            )
        if t.kind == "black_box":
            return self._black_box_teacher()
        if t.kind == "privileged_self":
            update = "live" if t.live else "snapshot"
            return ModelTeacher(
                self.model,
                self.engine,
                update,
                True,
                t.refresh_every,
                t.ema_decay,
                vocab,
                t.sibling_hint,
                t.privileged_each_turn,
            )
        if t.kind in ("snapshot", "ema"):
            return ModelTeacher(
                self.model,
                self.engine,
                t.kind,
                t.privileged,
                t.refresh_every,
                t.ema_decay,
                vocab,
                t.sibling_hint,
                t.privileged_each_turn,
            )
        from opd_selfplay.agents.loading import load_policy

        teacher_policy = load_policy(t.model, device=self.config.device)
        if t.kind == "white_box" and not same_vocabulary(
            self.policy.tokenizer, teacher_policy.tokenizer
        ):
            if not t.cross_tokenizer:
                raise InputError(
                    f"teacher.model {t.model}: its tokenizer ({len(teacher_policy.tokenizer)} "
                    f"tokens) differs from the student's ({len(self.policy.tokenizer)}); set "
                    "teacher.cross_tokenizer=true with objective.kind=sequence"
                )
            return CrossTokenizerTeacher(teacher_policy, self.engine, privileged=t.privileged)
        if t.kind == "white_box":
            return ModelTeacher(
                teacher_policy.model,
                self.engine,
                "fixed",
                t.privileged,
                student_vocab=vocab,
                sibling=t.sibling_hint,
                each_turn=t.privileged_each_turn,
            )  # type: ignore[attr-defined]
        return ServerTeacher(teacher_policy, self.engine, t.top_k, t.privileged)

    def _black_box_teacher(self) -> TextTeacher:
        """A text-only teacher: a chat API (URL) or a local policy with its own template."""
        from opd_selfplay.agents.base import SamplingParams
        from opd_selfplay.agents.loading import load_policy
        from opd_selfplay.teachers.text import chat_responder, policy_responder

        t, r = self.config.teacher, self.config.rollout
        # Greedy: a target or a grade should be the teacher's best, not a sample.
        params = SamplingParams(max_new_tokens=max(r.max_new_tokens, 8), temperature=0.0)
        policy = load_policy(t.model, device=self.config.device)
        respond = (
            chat_responder(policy, params)
            if hasattr(policy, "chat")
            else policy_responder(policy, params)
        )
        mode = "judge" if t.judge else "imitate"
        return TextTeacher(respond, self.engine, mode, t.privileged, r.max_new_tokens)

    def _build_reference(self) -> ModelTeacher | None:
        """A frozen copy of the student at the start of distillation, for `objective.ref_kl`."""
        if not self.config.objective.ref_kl:
            return None
        return ModelTeacher(self.model, self.engine, "snapshot", refresh_every=0)

    def _sampler(self) -> RolloutEngine:
        """The engine that plays the step's episodes: the student's (on-policy), or the
        teacher's for off-policy distillation."""
        if isinstance(self.teacher, SpinOpponent):  # the previous iterate plays
            return RolloutEngine(self.teacher.policy, self.engine.config)
        if self.config.rollout.sample_from == "student":
            return self.engine
        from opd_selfplay.agents.hf import HFPolicy

        assert isinstance(self.teacher, ModelTeacher)
        policy = HFPolicy(self.teacher.model, self.policy.tokenizer)
        return RolloutEngine(policy, self.engine.config)

    def _task_seeds(self, step: int) -> list[int]:
        """This rank's task seeds for `step` (a function of seed and step only)."""
        n = self.config.tasks_per_step
        base = (self.config.seed * 1_000_003 + step * n) % (EVAL_SEED_BASE // 2)
        seeds = [base + i for i in range(n)]
        return seeds[self.rank :: self.world]

    def evaluate(self, step: int, phase: str = "eval") -> dict[str, float]:
        """Held-out evaluation on rank 0 (logged, with sample trajectories)."""
        if self.rank != 0:
            return {}
        e = self.config.eval
        metrics, trajs = evaluate(
            self.engine,
            self.config.env,
            e.episodes,
            self.config.env_kwargs,
            e.temperature,
            e.pass_k,
        )
        self.log.metrics(step, phase, metrics)
        self.log.samples(step, trajs)
        return metrics

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> dict[str, object]:
        """Warm start, evaluate, train, evaluate; returns the summary (also in summary.json)."""
        cfg = self.config
        started = time.monotonic()
        deadline = started + cfg.max_wall_s if cfg.max_wall_s else None
        if not self.resumed:
            if cfg.warmstart.steps:
                # The warm start may take at most 40% of the time budget.
                warm_deadline = started + 0.4 * cfg.max_wall_s if deadline is not None else None
                self._warm_start(warm_deadline)
            self.build_teachers()
            self.before = self.evaluate(0, "eval")
            self.save()
        if self.world > 1 and not isinstance(
            self.train_model, torch.nn.parallel.DistributedDataParallel
        ):
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model)
        show = self.rank == 0 and os.isatty(2)
        progress = Progress(cfg.steps, self.step, show)
        last_eval = self.before
        train_started = time.monotonic()
        while self.step < cfg.steps:
            if deadline is not None and time.monotonic() > deadline:
                break
            metrics = self.train_step()
            self.step += 1
            if self.step % cfg.log_every == 0:
                self.log.metrics(self.step, "train", metrics)
            if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                last_eval = self.evaluate(self.step) or last_eval
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save()
            progress.update(self.step, metrics, last_eval)
        progress.close()
        train_s = time.monotonic() - train_started
        after = self.evaluate(self.step)
        self.save()
        summary = {
            "before": self.before.get("success"),
            "after": after.get("success"),
            "before_metrics": self.before,
            "after_metrics": after,
            "steps": self.step,
            "warm_start_steps": self.warm_steps,
            "train_seconds": round(train_s, 1),
            "wall_seconds": round(time.monotonic() - started, 1),
            "teacher": getattr(self.teacher, "name", "none"),
            "objective": cfg.objective.kind,
            "divergence": cfg.objective.divergence,
        }
        if self.rank == 0:
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=2))
            self.log.plot()
            # The trained student as a Hugging Face folder: `opd eval --model RUN/model`.
            export = self.model
            if hasattr(export, "merge_and_unload"):  # LoRA: save the merged weights
                import copy

                export = copy.deepcopy(export).merge_and_unload()
            export.save_pretrained(self.dir / "model")
            self.policy.tokenizer.save_pretrained(self.dir / "model")
        self.log.close()
        return summary

    def _warm_start(self, deadline: float | None) -> None:
        w = self.config.warmstart

        def probe(step: int) -> float:
            m, _ = evaluate(self.engine, self.config.env, 64, self.config.env_kwargs)
            return m["success"]

        self.warm_steps = warm_start(
            self.engine,
            self.config.env,
            w.steps,
            w.batch,
            w.lr,
            w.hinted_fraction,
            w.retry_fraction,
            self.config.seed,
            self.config.env_kwargs,
            probe=probe if w.target_success else None,
            target_success=w.target_success,
            log=lambda s, m: self.log.metrics(s, "warmstart", m),
            deadline=deadline,
        )

    def train_step(self) -> dict[str, float]:
        """One optimizer step: rollout, teacher, objective, update, teacher follows."""
        cfg = self.config
        self.engine.config = replace(
            self.engine.config, seed=cfg.seed * 7919 + self.step * 131 + self.rank
        )
        engine = self._sampler()
        self.model.eval()
        trajs = engine.run(cfg.env, self._task_seeds(self.step), cfg.group_size, cfg.env_kwargs)
        n_local = sum(t.num_action_tokens for t in trajs)
        n_global = all_reduce_sum(float(n_local))
        rewards = self._rewards(trajs)
        groups = torch.tensor([t.group for t in trajs])
        advantages = (
            group_advantages(rewards, groups)
            if cfg.objective.kind in ("outcome", "hybrid")
            else None
        )
        if isinstance(self.teacher, ModelTeacher):
            self.teacher.prepare(trajs)
        targets = self._targets(trajs)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        out: dict[str, float] = dict(self.judge_metrics)
        if cfg.objective.kind == "spin":
            out.update(self._spin_backward(trajs, targets or []))
        elif targets is not None:
            out.update(self._imitation_backward(targets, n_global))
        if self._reads_own_tokens(advantages is not None):
            out.update(self._own_tokens_backward(trajs, advantages, n_local, n_global))
        # The logged loss: the sum of the terms (each already in its own normalisation).
        out["loss"] = sum(out.get(k, 0.0) for k in ("loss", "imitate/loss", "spin/loss"))
        grad_norm = 0.0
        if cfg.optim.grad_clip:
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            )
        self.optimizer.step()
        self.scheduler.step()
        self.model.eval()
        if self.teacher is not None:
            self.teacher.after_step(self.model, self.step + 1)
        out.update(
            reward=float(rewards.mean()) if len(rewards) else 0.0,
            env_reward=sum(t.reward for t in trajs) / max(len(trajs), 1),
            success=sum(t.success for t in trajs) / max(len(trajs), 1),
            action_tokens=float(n_local) / max(len(trajs), 1),
            grad_norm=grad_norm,
            lr=self.scheduler.get_last_lr()[0],
        )
        return out

    def save(self) -> None:
        if self.rank != 0:
            return
        state = {
            "step": self.step,
            "warm_steps": self.warm_steps,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else {},
            "reference": self.reference.state_dict() if self.reference is not None else {},
            "before": self.before,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            "config": self.config.to_dict(),
        }
        ckpt.save_checkpoint(self.dir, self.step, state)

    def _restore(self) -> None:
        path = ckpt.latest_checkpoint(self.dir)
        if path is None:
            from opd_selfplay.errors import InputError

            raise InputError(
                f"--resume {self.dir}: no checkpoint there (checkpoints/latest missing)"
            )
        state = ckpt.load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.teacher = self._build_teacher()
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.reference = self._build_reference()
        if self.reference is not None:
            self.reference.load_state_dict(state["reference"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.step = int(state["step"])
        self.warm_steps = int(state["warm_steps"])
        self.before = dict(state["before"])
        self.resumed = True


def _with_lora(model: torch.nn.Module, rank: int, alpha: float) -> torch.nn.Module:
    """Wrap the model with LoRA adapters on every attention and MLP projection (PEFT)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        from opd_selfplay.errors import InputError

        raise InputError("lora_rank > 0 needs PEFT: pip install 'opd-selfplay[train]'") from None
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=[t for t in targets if t in present]
    )
    return get_peft_model(model, config)
