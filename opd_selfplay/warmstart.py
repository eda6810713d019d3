"""Supervised warm start on an environment's oracle answers (before on-policy training).

A randomly initialised model cannot be distilled on-policy: it never samples anything
useful. The warm start teaches the answer format with cross-entropy on demonstrations that
the rollout engine plays from the env's `oracle_action()` (so they are rendered and
tokenized exactly like the student's own rollouts):

- a `retry_fraction` of demonstrations first give a near-miss wrong answer, get the env's
  feedback, then the right answer; only the right answers carry loss, so the model learns
  the multi-turn format without learning to be wrong;
- a `hinted_fraction` carry the env's privileged context in the system message, in exactly
  the format the privileged self-teacher uses (`rollout.with_privileged`), so that the
  model learns to use it — without that, a privileged self-teacher knows nothing more than
  the student.

The learning rate decays on a cosine to 5% (the notes on the demo found that a warm start at
a constant rate inflates any later gain), and the warm start can stop early once held-out
success reaches a target, to start distillation from a controlled point.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping

import torch

from opd_selfplay.rollout import RolloutEngine
from opd_selfplay.teachers import action_rows, teacher_sequences
from opd_selfplay.types import Trajectory

_INT = re.compile(r"-?\d+")


def _near_miss(oracle: str, rng: random.Random) -> str | None:
    if _INT.fullmatch(oracle.strip()):
        delta = rng.choice([-1, 1]) * rng.randint(1, 10)
        return str(int(oracle) + delta)
    return None


def demonstrations(
    engine: RolloutEngine,
    env: str,
    seeds: list[int],
    rng: random.Random,
    retry_fraction: float,
    env_kwargs: Mapping[str, object] | None = None,
) -> tuple[list[Trajectory], list[set[int]]]:
    """Oracle episodes, some with a wrong first answer.

    Returns:
        (trajectories, per trajectory the set of turns that carry loss).
    """
    retry: dict[int, bool] = {}

    def choose(env_obj, turn: int) -> str:
        oracle = env_obj.oracle_action()
        if oracle is None:
            raise ValueError(f"{env} has no oracle_action(); a warm start needs one")
        key = id(env_obj)
        if turn == 0:
            retry[key] = rng.random() < retry_fraction
        if turn == 0 and retry[key]:
            wrong = _near_miss(oracle, rng) or env_obj.wrong_action()
            if wrong is not None:
                return wrong
            retry[key] = False
        return oracle

    trajs = engine.demonstrate(env, seeds, choose, env_kwargs=env_kwargs)
    keep = []
    for t in trajs:
        keep.append(
            {k for k, turn in enumerate(t.turns) if turn.verdict is None or turn.verdict.correct}
        )
    return trajs, keep


def sft_sequences(
    engine: RolloutEngine, trajs: list[Trajectory], keep: list[set[int]], hinted: list[bool]
) -> list[tuple[list[int], list[int]]]:
    """Token sequences and the positions that carry loss (the kept turns' action tokens)."""
    out = []
    for traj, turns, hint in zip(trajs, keep, hinted):
        # One sequence per episode, hinted or not: exactly what a privileged teacher scores.
        seqs = teacher_sequences(engine, [traj], privileged=hint)
        if not seqs:
            continue
        [(ids, positions)] = seqs
        kept, cursor = [], 0
        for k, t in enumerate(traj.turns):
            span = positions[cursor : cursor + len(t.action_ids)]
            cursor += len(t.action_ids)
            if k in turns:
                kept.extend(span)
        out.append((ids, kept))
    return [(ids, pos) for ids, pos in out if pos]


def warm_start(
    engine: RolloutEngine,
    env: str,
    steps: int,
    batch: int,
    lr: float,
    hinted_fraction: float,
    retry_fraction: float,
    seed: int,
    env_kwargs: Mapping[str, object] | None = None,
    probe: Callable[[int], float | None] | None = None,
    target_success: float = 0.0,
    log: Callable[[int, dict[str, float]], None] | None = None,
    deadline: float | None = None,
) -> int:
    """Train the engine's policy model with cross-entropy on demonstrations.

    Args:
        engine: the student's engine (its policy's `model` is trained in place).
        env: env id with `oracle_action()`.
        steps: optimizer steps (upper bound).
        batch: demonstrations per step.
        lr: peak learning rate; cosine decay to 5%.
        hinted_fraction: demonstrations with the privileged context.
        retry_fraction: demonstrations with a wrong first answer.
        seed: seeds the demonstration tasks (drawn from a range training never uses).
        probe: `probe(step) -> held-out success or None`, called every 25 steps.
        target_success: stop once the probe reports at least this (0: never stop early).
        log: `log(step, metrics)`.
        deadline: `time.monotonic()` value after which to stop.
    Returns:
        The number of steps taken.
    """
    import time

    model = engine.policy.model  # type: ignore[attr-defined]
    pad = int(engine.tokenizer.pad_token_id or 0)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
    )
    base = 500_000_000 + seed * 10_000_000  # demonstration tasks: disjoint from training
    step = 0
    for step in range(1, steps + 1):
        seeds = [base + (step - 1) * batch + i for i in range(batch)]
        trajs, keep = demonstrations(engine, env, seeds, rng, retry_fraction, env_kwargs)
        hinted = [rng.random() < hinted_fraction for _ in trajs]
        seqs = sft_sequences(engine, trajs, keep, hinted)
        targets = torch.as_tensor([s[p] for s, pos in seqs for p in pos], device=model.device)
        model.train()
        logits = action_rows(model, seqs, pad).float()
        loss = torch.nn.functional.cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        model.eval()
        metrics = {"loss": loss.item(), "lr": sched.get_last_lr()[0]}
        if probe is not None and (step % 25 == 0 or step == steps):
            success = probe(step)
            if success is not None:
                metrics["probe_success"] = success
                if target_success and success >= target_success:
                    if log:
                        log(step, metrics)
                    break
        if log:
            log(step, metrics)
        if deadline is not None and time.monotonic() > deadline:
            break
    return step
