"""The survey's grid as an experiment matrix on tiny models: `opd grid`.

The survey (arXiv 2604.00626) organises on-policy distillation along three axes: feedback
signal {logit, outcome, self-play} × teacher access {white-box, grey-box, black-box,
teacher-free} × loss granularity {token, sequence, hybrid}. This module runs one small cell per
meaningful combination that the trainer supports, all from the same starting student, and
writes a results table (markdown and CSV), a plot, and one run folder per cell.

How a grid run is built (everything offline, on a CPU):
1. The white-box teacher is "a larger tiny model trained longer": a wider Qwen2 tiny model
   (hidden 192 instead of 128, ≈ 2.3 M parameters) warm-started on the env's oracle answers
   for several times the student's steps. Saved once, in `OUT/models/teacher`.
2. The student is the default tiny model warm-started briefly (to a low success rate, leaving
   room to improve; most demonstrations carry the privileged context, so that the student can
   use it and a privileged self-teacher knows more than the student), saved once in
   `OUT/models/student`. Every cell starts from that folder with no warm start of its own,
   so that cells differ only in the axis under test.
3. Each cell is one `Trainer` run with a few overrides. Every cell plays the same number of
   episodes per step (distillation cells: E tasks × 1 sample; cells with a group-normalised
   outcome term: E/4 tasks × 4 samples), so that compute is comparable.
4. After training, every cell's final student is scored the same way: held-out success
   (greedy) and the exact KL(white-box teacher ‖ student) over the full vocabulary on the action
   tokens the student samples (temperature 1) on held-out tasks — one yardstick for all rows,
   teacher-free ones included. The trainer's own logged `kl` (to the cell's own teacher) is
   reported too; its definition differs by teacher (see `docs/grid.md`).

The central comparison of the survey — on-policy versus off-policy distillation from the same
teacher at equal compute — is the pair of white-box token cells with forward KL, one sampling
from the student and one from the teacher (`rollout.sample_from=teacher`): same steps, same
episodes per step, same loss.

Not covered: a black-box judge (the tiny teacher cannot follow grading instructions) and
two-player games with both sides learning; the table lists them as rows with their reasons
rather than leaving them out. One seed per cell; the numbers are a smoke-scale comparison,
not a benchmark.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from opd_selfplay.errors import InputError

ENV = "opd/Arithmetic-v0"


@dataclass(frozen=True)
class GridSettings:
    """Sizes of one grid run (the same matrix at every size)."""

    steps: int
    """Optimizer steps per cell."""
    episodes_per_step: int
    """Episodes played per step in every cell (divisible by 4, the outcome cells' group)."""
    eval_episodes: int
    """Held-out episodes for success before/after and for the KL to the teacher."""
    eval_every: int
    """Held-out evaluation every N steps (0 = only before and after), for the curves."""
    student_warm_steps: int
    """Supervised warm-start steps of the shared starting student."""
    teacher_warm_steps: int
    """Supervised warm-start steps of the white-box teacher (stops early at 97% success)."""
    warm_batch: int = 64
    """Demonstrations per warm-start step."""
    hinted_fraction: float = 0.9
    """Share of the student's warm-start demonstrations that carry the privileged context, so
    that the student learns to use it (the privileged self-teacher is then nearly an oracle)
    well before it solves the plain task. The teacher's warm start has none."""
    difficulty: int = 1
    """`opd/Arithmetic-v0` level (1: one-digit additions, two tries with "too high/low")."""
    max_new_tokens: int = 4
    """Tokens per action (answers have at most 2 digits, then the end token)."""
    teacher_hidden: int = 192
    """Width of the white-box teacher (the student's is 128)."""
    threads: int = 2
    """torch CPU threads."""
    lr: float = 1e-3
    """Learning rate of every cell (constant) and of both warm starts (cosine)."""

    def __post_init__(self) -> None:
        for name in ("steps", "episodes_per_step", "eval_episodes", "threads"):
            if getattr(self, name) < 1:
                raise InputError(f"grid setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("student_warm_steps", "teacher_warm_steps", "eval_every"):
            if getattr(self, name) < 0:
                raise InputError(f"grid setting {name} must be >= 0, got {getattr(self, name)}")
        if self.episodes_per_step % 4:
            raise InputError(
                f"grid setting episodes_per_step must be a multiple of 4 (the outcome cells' "
                f"group size), got {self.episodes_per_step}"
            )

    @property
    def env_kwargs(self) -> dict[str, object]:
        return {"difficulty": self.difficulty}


#: `opd grid --quick`: a few minutes on 2 CPU cores.
QUICK = GridSettings(
    steps=20,
    episodes_per_step=32,
    eval_episodes=64,
    eval_every=0,
    student_warm_steps=120,
    teacher_warm_steps=150,
)
#: `opd grid`: the documented run (200-episode evaluations, curves every 20 steps).
FULL = GridSettings(
    steps=80,
    episodes_per_step=64,
    eval_episodes=200,
    eval_every=20,
    student_warm_steps=120,
    teacher_warm_steps=200,
)


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    name: str
    """Short id; also the run folder's name under `OUT/cells/`."""
    feedback: str
    """logit | outcome | logit + outcome | self-play."""
    access: str
    """white-box | grey-box | black-box | teacher-free."""
    granularity: str
    """token | sequence | hybrid."""
    objective: str
    """What the loss is, in words."""
    sampling: str = "on-policy"
    """on-policy (the student samples) | off-policy (the teacher samples)."""
    overrides: dict[str, object] = field(default_factory=dict)
    """Trainer config overrides (dotted keys) on top of the shared base."""
    grouped: bool = False
    """Uses a group-normalised outcome advantage (4 samples per task)."""
    unsupported: str = ""
    """Why the trainer cannot run this cell yet ("" = it can)."""


def grid_cells(settings: GridSettings) -> list[Cell]:
    """The matrix, in table order. `teacher.model` of white-box cells is filled in at run time
    (the teacher folder; the grey-box cell gets a loopback server's URL)."""
    wb = {"teacher.kind": "white_box", "teacher.privileged": False}
    free = {"teacher.privileged": True}
    return [
        Cell("wb-token-fkl", "logit", "white-box", "token", "forward KL (GKD-style)",
             overrides={**wb, "objective.kind": "token", "objective.divergence": "forward_kl"}),
        Cell("wb-token-fkl-offpolicy", "logit", "white-box", "token", "forward KL (GKD-style)",
             sampling="off-policy",
             overrides={**wb, "objective.kind": "token", "objective.divergence": "forward_kl",
                        "rollout.sample_from": "teacher"}),
        Cell("wb-token-rkl", "logit", "white-box", "token", "reverse KL",
             overrides={**wb, "objective.kind": "token", "objective.divergence": "reverse_kl"}),
        Cell("wb-seq-rkl", "logit", "white-box", "sequence",
             "reverse KL as per-token reward, policy gradient (tinker-style)",
             overrides={**wb, "objective.kind": "sequence", "objective.divergence": "reverse_kl"}),
        Cell("wb-hybrid", "logit + outcome", "white-box", "hybrid",
             "forward KL + GRPO outcome term", grouped=True,
             overrides={**wb, "objective.kind": "hybrid", "objective.divergence": "forward_kl"}),
        Cell("gb-token-top20", "logit", "grey-box", "token",
             "forward KL on the teacher's top-20 log-probs (loopback server)",
             overrides={"teacher.kind": "grey_box", "teacher.privileged": False,
                        "teacher.top_k": 20, "objective.kind": "token",
                        "objective.divergence": "forward_kl"}),
        Cell("tf-privileged-self", "logit", "teacher-free", "token",
             "forward KL to the frozen start student given the privileged context",
             overrides={"teacher.kind": "privileged_self", "objective.kind": "token"}),
        Cell("tf-snapshot", "logit", "teacher-free", "token",
             f"forward KL to a privileged snapshot refreshed every "
             f"{max(1, settings.steps // 4)} steps",
             overrides={**free, "teacher.kind": "snapshot",
                        "teacher.refresh_every": max(1, settings.steps // 4),
                        "objective.kind": "token"}),
        Cell("tf-ema", "logit", "teacher-free", "token",
             "forward KL to a privileged EMA of the student (decay 0.95)",
             overrides={**free, "teacher.kind": "ema", "teacher.ema_decay": 0.95,
                        "objective.kind": "token"}),
        Cell("outcome-grpo", "outcome", "teacher-free", "sequence",
             "GRPO: verifier reward, group-normalised (G=4)", grouped=True,
             overrides={"teacher.kind": "none", "objective.kind": "outcome"}),
        Cell("bb-seqkd", "text", "black-box", "sequence",
             "cross-entropy on the teacher's greedy text for the student's own contexts",
             overrides={"teacher.kind": "black_box", "teacher.privileged": False,
                        "objective.kind": "sequence"}),
        Cell("tf-verified-self", "outcome", "teacher-free", "sequence",
             "cross-entropy on the best verified sibling (G=4), for its failed siblings; "
             "lr 3e-4 (at the shared 1e-3 it fell below its start before recovering)",
             grouped=True,
             overrides={"teacher.kind": "verified_self", "objective.kind": "sequence",
                        "optim.lr": 3e-4}),
        Cell("sp-spin", "self-play", "teacher-free", "sequence",
             f"SPIN + cross-entropy on the oracle answers (spin_nll=1), opponent refreshed "
             f"every {max(1, settings.steps // 4)} steps (pure SPIN collapsed to 0.04)",
             overrides={"teacher.kind": "spin_opponent", "objective.kind": "spin",
                        "teacher.refresh_every": max(1, settings.steps // 4)}),
        Cell("bb-judge", "outcome", "black-box", "sequence", "—",
             unsupported="not run: a judge needs a teacher that follows grading instructions "
             "(teacher.judge=true with a chat model); the tiny teacher cannot grade"),
        Cell("self-play-games", "self-play", "teacher-free", "sequence", "—",
             unsupported="not supported yet: two-player games with both sides learning (envs "
             "play against a fixed bot)"),
    ]  # fmt: skip


@dataclass
class Row:
    """One line of the results table."""

    cell: str
    feedback: str
    access: str
    granularity: str
    teacher: str
    objective: str
    sampling: str
    before: float | None = None
    after: float | None = None
    kl_own_teacher: float | None = None
    """Mean of the trainer's logged `kl` over the last steps (to the cell's own teacher)."""
    kl_to_teacher: float | None = None
    """Exact KL(white-box teacher ‖ student) on held-out student samples, per action token."""
    steps: int | None = None
    wall_s: float | None = None
    status: str = "ok"


COLUMNS = (
    "cell", "feedback", "access", "granularity", "teacher", "objective", "sampling", "before",
    "after", "kl_own_teacher", "kl_to_teacher", "steps", "wall_s", "status",
)  # fmt: skip


# -- models ---------------------------------------------------------------------------------
def _engine(policy, settings: GridSettings, temperature: float = 0.0):
    from opd_selfplay.rollout import RolloutConfig, RolloutEngine

    return RolloutEngine(
        policy,
        RolloutConfig(
            max_turns=2,
            max_new_tokens=settings.max_new_tokens,
            max_context_tokens=256,
            temperature=temperature,
            env_workers=1,
        ),
    )


def _warm_and_save(policy, folder: Path, s: GridSettings, seed: int, teacher: bool) -> dict:
    """Warm-start `policy` in place (as `Trainer._warm_start` does) and save it as a model
    folder; returns its held-out metrics. The teacher trains longer, without the privileged
    context, and stops once it reaches 97% held-out success."""
    from opd_selfplay.evaluation import evaluate
    from opd_selfplay.warmstart import warm_start

    engine = _engine(policy, s)
    kw = s.env_kwargs
    steps = s.teacher_warm_steps if teacher else s.student_warm_steps
    hinted, target = (0.0, 0.97) if teacher else (s.hinted_fraction, 0.0)

    def probe(step: int) -> float:
        return evaluate(engine, ENV, 64, kw)[0]["success"]

    if steps:
        warm_start(
            engine, ENV, steps, s.warm_batch, s.lr, hinted, 0.5, seed, kw,
            probe=probe if target else None, target_success=target,
        )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return evaluate(engine, ENV, s.eval_episodes, kw)[0]


def build_models(
    root: Path, settings: GridSettings, seed: int
) -> tuple[Path, Path, dict[str, float], dict[str, float]]:
    """The white-box teacher (wider, trained longer) and the shared starting student.

    Returns:
        (student folder, teacher folder, student metrics, teacher metrics), metrics held-out.
    """
    import torch

    from opd_selfplay.agents.hf import HFPolicy
    from opd_selfplay.agents.tiny import TinyModelSpec, build_tiny_model, ensure_tiny_model

    h = settings.teacher_hidden
    teacher_dir = build_tiny_model(
        root / "teacher", TinyModelSpec(hidden_size=h, intermediate_size=4 * h)
    )
    torch.manual_seed(seed)
    teacher = HFPolicy.from_pretrained(teacher_dir, device="cpu")
    t_metrics = _warm_and_save(teacher, teacher_dir, settings, seed, teacher=True)
    torch.manual_seed(seed)
    student = HFPolicy.from_pretrained(ensure_tiny_model(), device="cpu")
    student_dir = root / "student"
    s_metrics = _warm_and_save(student, student_dir, settings, seed, teacher=False)
    return student_dir, teacher_dir, s_metrics, t_metrics


def heldout_kl(model_dir: Path, teacher_model, settings: GridSettings) -> float:
    """Exact KL(teacher ‖ student) per action token, on held-out episodes the student samples.

    Args:
        model_dir: the student's model folder.
        teacher_model: the white-box teacher (same tokenizer).
        settings: sizes (episodes, tokens per action, env level).
    Returns:
        The mean over action tokens, in nats.
    """
    import torch

    from opd_selfplay.agents.hf import HFPolicy
    from opd_selfplay.evaluation import EVAL_SEED_BASE, eval_seeds
    from opd_selfplay.teachers import action_rows

    student = HFPolicy.from_pretrained(model_dir, device="cpu")
    engine = _engine(student, settings, temperature=1.0)
    engine.config = replace(engine.config, seed=EVAL_SEED_BASE)
    trajs = engine.run(ENV, eval_seeds(settings.eval_episodes), 1, settings.env_kwargs)
    seqs = [
        (list(t.token_ids), [i for i, m in enumerate(t.action_mask) if m])
        for t in trajs
        if t.num_action_tokens
    ]
    if not seqs:
        return float("nan")
    pad = int(student.tokenizer.pad_token_id or 0)
    with torch.no_grad():
        logq = torch.log_softmax(action_rows(student.model, seqs, pad).float(), dim=-1)
        logp = torch.log_softmax(action_rows(teacher_model, seqs, pad).float(), dim=-1)
    return float((logp.exp() * (logp - logq)).sum(-1).mean())


# -- cells ----------------------------------------------------------------------------------
def cell_overrides(
    cell: Cell, settings: GridSettings, student_dir: Path, teacher: str, seed: int
) -> dict[str, object]:
    """The full override set of a cell: the shared base, then the cell's own."""
    group = 4 if cell.grouped else 1
    base: dict[str, object] = {
        "model": str(student_dir),
        "env": ENV,
        "env_kwargs": settings.env_kwargs,
        "steps": settings.steps,
        "tasks_per_step": settings.episodes_per_step // group,
        "group_size": group,
        "seed": seed,
        "threads": settings.threads,
        "rollout.max_turns": 2,
        "rollout.max_new_tokens": settings.max_new_tokens,
        "rollout.max_context_tokens": 256,
        "optim.lr": settings.lr,
        # A decaying rate: at a constant rate the tiny student's greedy success swings by tens
        # of points from one evaluation to the next, which would swamp the differences between
        # cells; cosine decay (to 10%) makes the end point comparable.
        "optim.schedule": "cosine",
        "optim.micro_batch": 64,
        "warmstart.steps": 0,
        "eval.episodes": settings.eval_episodes,
        "eval.every": settings.eval_every,
    }
    out = {**base, **cell.overrides}
    if out.get("teacher.kind") in ("white_box", "grey_box", "black_box"):
        out["teacher.model"] = teacher
    return out


def _last_kl(run_dir: Path, last: int = 3) -> float | None:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    train = [json.loads(x) for x in path.read_text().splitlines() if '"train"' in x]
    kls = [r["kl"] for r in train if r.get("phase") == "train" and r.get("kl") is not None]
    return sum(kls[-last:]) / len(kls[-last:]) if kls else None


def run_cell(
    cell: Cell,
    settings: GridSettings,
    cells_dir: Path,
    student_dir: Path,
    teacher_dir: Path,
    teacher_model,
    seed: int,
) -> Row:
    """Train one cell in `cells_dir/<name>` and measure it (a failure becomes the row's status)."""
    row = Row(cell.name, cell.feedback, cell.access, cell.granularity, "—", cell.objective,
              cell.sampling if not cell.unsupported else "—")  # fmt: skip
    if cell.unsupported:
        row.status = cell.unsupported
        return row
    from opd_selfplay.config import load_config
    from opd_selfplay.trainer import Trainer

    run_dir = cells_dir / cell.name
    server = None
    try:
        teacher = str(teacher_dir)
        if cell.overrides.get("teacher.kind") == "grey_box":
            from opd_selfplay.agents.hf import HFPolicy
            from opd_selfplay.agents.server import PolicyServer

            served = HFPolicy.from_pretrained(teacher_dir, device="cpu")
            server = PolicyServer(served, "grid-teacher", str(teacher_dir)).start()
            teacher = server.url
        overrides = cell_overrides(cell, settings, student_dir, teacher, seed)
        overrides["out"] = str(run_dir)
        config = load_config(overrides=overrides)
        summary = Trainer(config, run_dir).run()
        row.teacher = str(summary.get("teacher", "none"))
        if cell.overrides.get("teacher.kind") == "white_box":
            row.teacher = f"white-box h{settings.teacher_hidden}"
        row.before = summary.get("before")  # type: ignore[assignment]
        row.after = summary.get("after")  # type: ignore[assignment]
        row.steps = int(summary.get("steps", 0))  # type: ignore[arg-type]
        row.wall_s = float(summary.get("wall_seconds", 0.0))  # type: ignore[arg-type]
        row.kl_own_teacher = _last_kl(run_dir)
        row.kl_to_teacher = heldout_kl(run_dir / "model", teacher_model, settings)
    except Exception as exc:  # one broken cell must not lose the others' results
        first = (str(exc).splitlines() or [""])[0][:200]
        row.status = f"failed: {type(exc).__name__}: {first}"
    finally:
        if server is not None:
            server.close()
    return row


# -- the whole grid -------------------------------------------------------------------------
def run_grid(
    out: Path,
    settings: GridSettings,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
) -> list[Row]:
    """Build the models, run every cell, write results.md, results.csv, plots.png, grid.json.

    Args:
        out: the output folder (created).
        settings: the sizes (`QUICK`, `FULL`, or a variant).
        seed: seed of the warm starts and of every cell.
        log: progress lines (default: stderr).
        only: run just these cells (names; the reference rows are always there).
    Returns:
        The rows: two reference rows (the starting student, the white-box teacher), then one
        per cell.
    """
    import torch

    import opd_selfplay.envs  # noqa: F401  (registers the env ids)

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    torch.set_num_threads(settings.threads)
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    say(f"opd grid: building the white-box teacher (h{settings.teacher_hidden}) and the student")
    student_dir, teacher_dir, s_m, t_m = build_models(out / "models", settings, seed)
    models_s = time.monotonic() - started
    say(
        f"  teacher success {t_m['success']:.3f}, student start {s_m['success']:.3f} "
        f"({models_s:.0f} s)"
    )
    from opd_selfplay.agents.hf import HFPolicy

    teacher_model = HFPolicy.from_pretrained(teacher_dir, device="cpu").model
    rows = [
        Row("student-start", "—", "—", "—", "—", "warm start only (every cell starts here)",
            "—", s_m["success"], s_m["success"],
            kl_to_teacher=heldout_kl(student_dir, teacher_model, settings), steps=0,
            status="reference"),
        Row("teacher", "—", "—", "—", f"white-box h{settings.teacher_hidden}",
            f"warm start, {settings.teacher_warm_steps} steps at most", "—", t_m["success"],
            t_m["success"], kl_to_teacher=0.0, steps=0, status="reference"),
    ]  # fmt: skip
    cells = grid_cells(settings)
    if only:
        known = [c.name for c in cells]
        unknown = [n for n in only if n not in known]
        if unknown:
            raise InputError(f"--cells: unknown cell {unknown[0]!r}; cells: {', '.join(known)}")
        cells = [c for c in cells if c.name in only]
    runnable = [c for c in cells if not c.unsupported]
    for cell in cells:
        if not cell.unsupported:
            say(f"[{runnable.index(cell) + 1}/{len(runnable)}] {cell.name}")
        row = run_cell(cell, settings, out / "cells", student_dir, teacher_dir, teacher_model, seed)
        rows.append(row)
        if row.status == "ok":
            say(f"  {_fmt(row.before)} → {_fmt(row.after)}, KL to teacher "
                f"{_fmt(row.kl_to_teacher)}, {row.wall_s:.0f} s")  # fmt: skip
        elif not cell.unsupported:
            say(f"  {row.status}")
    total = time.monotonic() - started
    write_results(out, rows, settings, seed, total, models_s)
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[Row]) -> str:
    """The results as a markdown table."""
    head = ("cell", "feedback", "teacher access", "granularity", "teacher", "objective",
            "sampling", "success before → after", "Δ", "KL own teacher (train, end)",
            "KL to white-box teacher (held-out)", "steps", "wall s", "status")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.before is not None and r.after is not None:
            success = f"{r.before:.3f} → {r.after:.3f}"
            delta = f"{r.after - r.before:+.3f}"
        else:
            success, delta = "—", "—"
        cells = (r.cell, r.feedback, r.access, r.granularity, r.teacher, r.objective, r.sampling,
                 success, delta, _fmt(r.kl_own_teacher), _fmt(r.kl_to_teacher),
                 "—" if r.steps is None else str(r.steps),
                 "—" if r.wall_s is None else f"{r.wall_s:.0f}", r.status)  # fmt: skip
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _comparison(rows: list[Row], settings: GridSettings) -> str:
    by = {r.cell: r for r in rows}
    on, off = by.get("wb-token-fkl"), by.get("wb-token-fkl-offpolicy")
    if not on or not off or on.status != "ok" or off.status != "ok":
        return ""
    return (
        f"On-policy vs off-policy distillation from the same white-box teacher, equal compute "
        f"({settings.steps} steps × {settings.episodes_per_step} episodes, forward KL on every "
        f"action token):\n\n"
        f"- on-policy (student samples): success {_fmt(on.before)} → {_fmt(on.after)}, "
        f"KL to teacher on the student's own samples {_fmt(on.kl_to_teacher)}\n"
        f"- off-policy (teacher samples): success {_fmt(off.before)} → {_fmt(off.after)}, "
        f"KL to teacher on the student's own samples {_fmt(off.kl_to_teacher)}\n"
    )


LEGEND = (
    "Columns: success = held-out success within two tries (greedy). KL own teacher = the "
    "trainer's logged `kl` averaged over the last 3 steps, to the cell's own teacher (exact "
    "KL(teacher ‖ student) for full-logit teachers; mean log-ratio of the sampled tokens for the "
    "grey-box and sequence cells). KL to white-box teacher = exact KL(teacher ‖ student) per "
    "action token, on held-out episodes the final student samples at temperature 1: one "
    "yardstick for every row. wall s = the cell's trainer run (evaluations included)."
)


def write_results(
    out: Path,
    rows: list[Row],
    settings: GridSettings,
    seed: int,
    wall_s: float,
    models_s: float = 0.0,
) -> None:
    """results.md, results.csv, grid.json and plots.png in `out`."""
    table = markdown_table(rows)
    header = (
        f"# opd grid results\n\n"
        f"Env {ENV} {settings.env_kwargs}, seed {seed}, {settings.steps} steps × "
        f"{settings.episodes_per_step} episodes per cell, held-out evaluations of "
        f"{settings.eval_episodes} episodes (greedy). Total wall time {wall_s:.0f} s, of which "
        f"{models_s:.0f} s building the teacher and the student.\n\n"
    )
    comparison = _comparison(rows, settings)
    (out / "results.md").write_text(
        header + table + "\n\n" + LEGEND + "\n\n" + (comparison + "\n" if comparison else ""),
        encoding="utf-8",
    )
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in rows:
            d = asdict(r)
            writer.writerow(["" if d[c] is None else d[c] for c in COLUMNS])
    record = {
        "settings": asdict(settings),
        "seed": seed,
        "wall_seconds": round(wall_s, 1),
        "rows": [asdict(r) for r in rows],
    }
    (out / "grid.json").write_text(json.dumps(record, indent=2))
    plot(out, rows)


def plot(out: Path, rows: list[Row]) -> Path | None:
    """Bars of held-out success (before and after) and of the KL to the teacher per cell, and
    held-out success curves from each cell's metrics (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    done = [r for r in rows if r.after is not None]
    names = [r.cell for r in done]
    y = list(range(len(done)))
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.45 * len(done) + 2.2))
    kls = [r.kl_to_teacher if r.kl_to_teacher is not None else 0.0 for r in done]
    for ax, values, color, title in (
        (axes[0], [r.after for r in done], "tab:blue", "held-out success"),
        (axes[1], kls, "tab:orange", "KL(white-box teacher ‖ student), held-out"),
    ):
        ax.barh(y, values, color=["tab:gray" if r.status == "reference" else color for r in done])
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_title(title)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    axes[0].scatter([r.before for r in done], y, color="black", marker="|", s=200)
    axes[0].set_xlim(0, 1)
    handles = [
        Patch(color="tab:blue", label="after"),
        Patch(color="tab:gray", label="reference"),
        Line2D([], [], color="black", marker="|", linestyle="", markersize=12, label="before"),
    ]
    axes[0].legend(handles=handles, loc="lower right")
    ax = axes[2]
    for r in done:
        path = out / "cells" / r.cell / "metrics.jsonl"
        if not path.exists():
            continue
        evals = [json.loads(x) for x in path.read_text().splitlines() if '"eval"' in x]
        evals = [e for e in evals if e.get("phase") == "eval" and e.get("success") is not None]
        ax.plot([e["step"] for e in evals], [e["success"] for e in evals], marker="o", label=r.cell)
    ax.set_title("held-out success during training")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "plots.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
