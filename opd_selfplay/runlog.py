"""The run folder's records: metrics.jsonl, TensorBoard, sample trajectories, plots.

Layout of a run folder:
    config.json          the resolved config
    metrics.jsonl        one JSON object per logged step ({"step", "phase", ...metrics})
    samples/step_N.txt   a few trajectories as readable text, at every evaluation
    tb/                  TensorBoard event files (when tensorboard is installed)
    plots.png            reward, success, loss and KL curves (written at the end)
    checkpoints/         see opd_selfplay.checkpoint
    summary.json         before/after evaluation and run facts
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from opd_selfplay.types import Trajectory


class RunLog:
    """Appends metrics and writes the readable artefacts of one run.

    Args:
        run_dir: the run folder (created).
        enabled: False on non-zero ranks of a distributed run (they write nothing).
    """

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.dir / "tb"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def metrics(self, step: int, phase: str, values: dict[str, float]) -> None:
        """Append one line to metrics.jsonl (and TensorBoard)."""
        if not self.enabled:
            return
        record = {"step": step, "phase": phase, **{k: _finite(v) for k, v in values.items()}}
        with (self.dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{phase}/{k}", v, step)

    def samples(self, step: int, trajectories: list[Trajectory], n: int = 4) -> None:
        """Write a few trajectories as readable text."""
        if not self.enabled:
            return
        folder = self.dir / "samples"
        folder.mkdir(exist_ok=True)
        parts = []
        for t in trajectories[:n]:
            lines = [f"== seed {t.seed}  reward {t.reward:.2f}  stop {t.stop_reason.value}"]
            for m in t.messages:
                lines.append(f"[{m.role}] {m.content}")
            if t.turns and t.turns[-1].observation:
                lines.append(f"[env] {' | '.join(m.content for m in t.turns[-1].observation)}")
            parts.append("\n".join(lines))
        (folder / f"step_{step:06d}.txt").write_text("\n\n".join(parts) + "\n", encoding="utf-8")

    def read(self) -> list[dict[str, object]]:
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def plot(self, path: Path | None = None) -> Path | None:
        """Reward, success, loss and KL against steps, as a PNG (None without matplotlib)."""
        if not self.enabled:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        records = self.read()
        panels = [
            ("train", "reward", "train reward"),
            ("eval", "success", "held-out success"),
            ("train", "loss", "loss"),
            ("train", "kl", "KL(teacher‖student) on actions"),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
        for ax, (phase, key, title) in zip(axes, panels):
            xs = [
                r["step"]
                for r in records
                if r["phase"] == phase and key in r and r[key] is not None
            ]
            ys = [
                r[key] for r in records if r["phase"] == phase and key in r and r[key] is not None
            ]
            ax.plot(xs, ys, marker="o" if phase == "eval" else None, linewidth=1.5)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        out = path or self.dir / "plots.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _finite(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Progress:
    """A rich progress bar with ETA and the live success rate (only on a terminal)."""

    def __init__(self, total: int, done: int, show: bool) -> None:
        self.bar = None
        if not show:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, metrics: dict[str, float], last_eval: dict[str, float]) -> None:
        if self.bar is None:
            return
        info = f"reward {metrics.get('reward', 0):.2f} · held-out {last_eval.get('success', float('nan')):.2f}"
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
