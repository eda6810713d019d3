"""Checkpoints written atomically, so a crash mid-write never loses the previous one.

A checkpoint is one file `checkpoints/step_{N:06d}.pt` (model, optimizer, scheduler, RNG
states, step, teacher state, metrics so far). It is written to a temporary file in the same
folder, flushed and fsynced, then renamed over its final name (`os.replace` is atomic on
POSIX); `checkpoints/latest` names the newest complete file and is replaced the same way. A
process killed (even by SIGKILL) during a write leaves at most a stray `*.tmp` file, and
`latest` still points at the previous, complete checkpoint.

Not covered: sharded (FSDP) state; a checkpoint is gathered on rank 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_checkpoint(
    run_dir: str | os.PathLike[str], step: int, state: dict[str, object], keep: int = 2
) -> Path:
    """Write `state` as the checkpoint of `step` and point `latest` at it.

    Args:
        run_dir: the run folder.
        step: optimizer steps done.
        state: anything `torch.save` takes.
        keep: how many complete checkpoints to keep (older ones are deleted after the write).
    Returns:
        The checkpoint file.
    """
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:06d}.pt"
    _atomic_write(path, lambda fh: torch.save(state, fh))
    _atomic_write(folder / "latest", lambda fh: fh.write(path.name.encode()))
    complete = sorted(folder.glob("step_*.pt"))
    for old in complete[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    folder = Path(run_dir) / "checkpoints"
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if path.is_file() else None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, object]:
    """Load a checkpoint onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)
