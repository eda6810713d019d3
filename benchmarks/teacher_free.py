"""Suite "teacher_free": what a teacher-free step costs next to a white-box teacher of the same size.

Run alone: `python -m benchmarks.teacher_free [--quick]` (or through `python -m benchmarks`).

The real code path, `opd train`'s: `load_config(overrides=…)` then `Trainer(config,
run_dir).train_step()`, one Trainer per contender built once, steps interleaved. Identical
work in every contender: the tiny student (≈1 M parameters, built-in byte-level tokenizer),
`opd/Arithmetic-v0` with two attempts, so episodes are multi-turn (`rollout.max_turns=2`),
16 tasks × 2 samples a step, 16 new tokens per action with EOS disabled (every action has
the same length in every contender), token-level forward KL, AdamW, one thread. Contenders:

- `white_box`: `teacher.kind=white_box, teacher.model=tiny` — a fixed local model of the
  student's size scoring each trajectory's own tokens (one sequence per trajectory);
- `snapshot`: `teacher.kind=snapshot` — a frozen copy of the student, same scoring;
- `privileged_self`: `teacher.kind=privileged_self` — a frozen copy of the student that
  scores the same action tokens after a re-rendered first context with the env's privileged
  information (the answer) in the system message, one sequence per trajectory.

Case `step`: seconds per `train_step` (goal: ≤ 1.1× `white_box` for `snapshot` and
`privileged_self`: re-rendering the context must not cost more than a forward pass).
Case `score`: the teacher's `score` alone on one fixed batch of the step's trajectories
(the part that differs between contenders), plus `privileged_render`: only the re-rendering
and re-tokenization of the privileged contexts (`teacher_sequences`), to show where the
privileged teacher's extra time goes. Rows carry the tokens each teacher runs.

Not covered: EMA (the snapshot's cost plus one in-place lerp per step), grey- and black-box
teachers, larger models (the ratio is about per-token bookkeeping, which shrinks next to a
bigger model's forward).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Comparison, SuiteResult, interleave, records, tiny

SUITE = "teacher_free"
UNITS = {
    "seconds": "s",
    "cpu_seconds": "s",
    "tokens": "tokens",
    "sequences": "sequences",
    "action_tokens": "tokens/episode",
}
TEACHERS = {
    "white_box": {
        "teacher.kind": "white_box",
        "teacher.model": "tiny",
        "teacher.privileged": False,
    },
    "snapshot": {
        "teacher.kind": "snapshot",
        "teacher.privileged": False,
        "teacher.refresh_every": 0,
    },
    "privileged_self": {"teacher.kind": "privileged_self"},
}


def overrides(teacher: dict[str, object], small: bool) -> dict[str, object]:
    """The run's config overrides (see the module docstring)."""
    return {
        "model": "tiny",
        "env": "opd/Arithmetic-v0",
        "env_kwargs": {"max_attempts": 2},
        "tasks_per_step": 2 if small else 16,
        "group_size": 1 if small else 2,
        "seed": 0,
        "threads": 1,
        "steps": 1_000_000,
        "rollout.max_turns": 2,
        "rollout.max_new_tokens": 4 if small else 16,
        "objective.kind": "token",
        "objective.divergence": "forward_kl",
        "optim.lr": 1e-5,
        "eval.episodes": 1,
        **teacher,
    }


def _timed(work: Callable[[], dict[str, float]]) -> Callable[[], dict[str, float]]:
    def run() -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        extra = work()
        return {
            "seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
            **extra,
        }

    return run


def build(name: str, small: bool, workdir: str):
    """A Trainer for one contender, ready for `train_step` (teacher built, EOS disabled)."""
    from opd_selfplay.config import load_config
    from opd_selfplay.trainer import Trainer

    config = load_config(overrides=overrides(TEACHERS[name], small))
    trainer = Trainer(config, str(Path(workdir) / name))
    # What `run()` does before its first step, minus the held-out evaluation.
    trainer.teacher = trainer._build_teacher()
    # Identical work in every contender: every action runs to max_new_tokens.
    trainer.policy.eos_token_ids = frozenset()
    return trainer


def _step(trainer) -> Callable[[], dict[str, float]]:
    def step() -> dict[str, float]:
        metrics = trainer.train_step()
        trainer.step += 1
        return {"action_tokens": metrics["action_tokens"]}

    return step


def _score(trainer, trajs) -> Callable[[], dict[str, float]]:
    from opd_selfplay.teachers import teacher_sequences

    teacher = trainer.teacher
    hints = getattr(teacher, "hints", None)
    sequences = teacher_sequences(trainer.engine, trajs, teacher.privileged, hints)

    def score() -> dict[str, float]:
        if hasattr(teacher, "prepare"):
            teacher.prepare(trajs)
        teacher.score(trajs)
        return {
            "tokens": float(sum(len(s) for s, _ in sequences)),
            "sequences": float(len(sequences)),
        }

    return score


def _render(trainer, trajs) -> Callable[[], dict[str, float]]:
    from opd_selfplay.teachers import teacher_sequences

    def render() -> dict[str, float]:
        sequences = teacher_sequences(trainer.engine, trajs, True, trainer.teacher.hints)
        return {"tokens": float(sum(len(s) for s, _ in sequences))}

    return render


def suite(quick: bool) -> SuiteResult:
    """Run the suite (see the module docstring).

    Args:
        quick: 12 interleaved steps per contender (full: 30), 15 score rounds (full: 40).
    Returns:
        The records, the comparisons and the settings as notes.
    """
    import torch

    torch.set_num_threads(1)
    small = tiny()
    step_rounds = 1 if small else (12 if quick else 30)
    warmup = 0 if small else 1
    score_rounds = 1 if small else (15 if quick else 40)
    with tempfile.TemporaryDirectory(prefix="opd-bench-tf-") as tmp:
        trainers = {name: build(name, small, tmp) for name in TEACHERS}
        runs = interleave(
            {name: _timed(_step(t)) for name, t in trainers.items()},
            rounds=step_rounds,
            warmup=warmup,
        )
        rows = records(SUITE, "step", runs, UNITS)
        # One fixed batch of multi-turn trajectories, scored by every teacher.
        white = trainers["white_box"]
        trajs = white.engine.run(
            white.config.env,
            white._task_seeds(white.step),
            white.config.group_size,
            white.config.env_kwargs,
        )
        privileged = trainers["privileged_self"]
        contenders = {name: _timed(_score(t, trajs)) for name, t in trainers.items()}
        contenders["privileged_render"] = _timed(_render(privileged, trajs))
        runs = interleave(contenders, rounds=score_rounds, warmup=warmup)
        rows += records(SUITE, "score", runs, UNITS)
        turns = sum(len(t.turns) for t in trajs)
        notes = [
            f"{len(trajs)} trajectories a step, {turns} turns in the scored batch, "
            f"{white.config.rollout.max_new_tokens} tokens per action (EOS disabled), "
            f"student and teachers ≈{sum(p.numel() for p in white.model.parameters()) / 1e6:.1f} M "
            f"parameters; {step_rounds} interleaved steps after {warmup} warm-up, {score_rounds} "
            "score rounds; one thread; the machine is shared, so figures are indicative",
            "every teacher runs one sequence per trajectory; privileged_self's first context is "
            "re-rendered with the reset's privileged text through the chat template and "
            "re-tokenized every step (teacher.privileged_each_turn=true would re-render every "
            "turn instead)",
        ]
    comparisons = [
        Comparison(SUITE, "step", "seconds", "privileged_self", "white_box", 1.1),
        Comparison(SUITE, "step", "seconds", "snapshot", "white_box", 1.1),
        Comparison(SUITE, "score", "seconds", "privileged_self", "white_box"),
        Comparison(SUITE, "score", "seconds", "snapshot", "white_box"),
        Comparison(SUITE, "score", "seconds", "privileged_render", "white_box"),
        Comparison(SUITE, "score", "tokens", "privileged_self", "white_box"),
    ]
    return SuiteResult(rows, comparisons, notes)


def main() -> None:
    """Run the suite alone and print the per-round ratios."""
    import os

    from benchmarks.harness import ratios, summarize, verdict

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about a minute)")
    args = parser.parse_args()
    result = suite(args.quick)
    for c in result.comparisons:
        rs = ratios(result.records, c)
        if rs:
            m = summarize(rs)
            print(
                f"{c.case:6s} {c.metric:8s} {c.ours}/{c.peer}: {m['median']:.2f} "
                f"({m['min']:.2f}–{m['max']:.2f}) goal {c.goal} {verdict(m['median'], c)}"
            )
    for note in result.notes:
        print("-", note)


if __name__ == "__main__":
    main()
