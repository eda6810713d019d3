"""The trainer: resume equals an uninterrupted run, crash-safe checkpoints, DDP on gloo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from opd_selfplay import checkpoint as ckpt
from opd_selfplay.config import PRESETS, load_config
from opd_selfplay.errors import InputError
from opd_selfplay.trainer import Trainer

TINY = {
    "tasks_per_step": "6",
    "group_size": "2",
    "eval.episodes": "4",
    "rollout.max_new_tokens": "4",
    "optim.micro_batch": "5",
    "env_kwargs": '{"difficulty": 1}',
    "threads": "1",
}


def _train_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["phase"] == "train"]


@pytest.mark.slow
def test_resume_gives_the_same_losses_step_for_step(tmp_path):
    full = load_config(overrides={**TINY, "steps": "4"})
    Trainer(full, tmp_path / "a").run()
    half = load_config(overrides={**TINY, "steps": "2"})
    Trainer(half, tmp_path / "b").run()
    resumed = load_config(tmp_path / "b" / "config.json", {"steps": "4"})
    Trainer(resumed, tmp_path / "b", resume=True).run()
    a, b = _train_losses(tmp_path / "a"), _train_losses(tmp_path / "b")
    assert len(a) == len(b) == 4
    assert a == b  # bit-identical on CPU with fixed seeds
    wa = torch.load(tmp_path / "a" / "checkpoints" / "step_000004.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoints" / "step_000004.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_without_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no checkpoint there"):
        Trainer(load_config(overrides=TINY), tmp_path, resume=True)


def test_checkpoint_survives_sigkill_during_write(tmp_path):
    """A writer killed mid-write leaves the previous checkpoint as `latest`, loadable."""
    ckpt.save_checkpoint(tmp_path, 1, {"step": 1, "w": torch.ones(3)})
    script = textwrap.dedent(
        f"""
        import torch
        from opd_selfplay import checkpoint as ckpt
        big = torch.zeros(400_000_000 // 4)  # ~400 MB: the write takes a while
        ckpt.save_checkpoint({str(tmp_path)!r}, 2, {{"step": 2, "w": big}})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    folder = tmp_path / "checkpoints"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(folder.glob(".step_000002.pt.*.tmp")):
        time.sleep(0.005)
    assert list(folder.glob(".step_000002.pt.*.tmp")), "the write never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_000001.pt"
    state = ckpt.load_checkpoint(latest)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert not (folder / "step_000002.pt").exists()


def test_checkpoints_keep_the_newest(tmp_path):
    for step in range(1, 5):
        ckpt.save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert names == ["step_000003.pt", "step_000004.pt"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000004.pt"


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, cli_env):
    """DDP with 2 CPU processes (rollouts sharded, gradients averaged) gives the same weights
    as one process on the same data (greedy sampling makes the data batch-independent)."""
    overrides = [f"{k}={v}" for k, v in TINY.items()] + [
        "steps=2",
        "rollout.temperature=0",
        "eval.episodes=2",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "opd_selfplay", "train", *overrides, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    env = {**cli_env, "OMP_NUM_THREADS": "1"}
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "opd_selfplay",
            "train",
            *overrides,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoints" / "step_000002.pt", weights_only=False)[
        "model"
    ]
    two = torch.load(tmp_path / "two" / "checkpoints" / "step_000002.pt", weights_only=False)[
        "model"
    ]
    start = torch.load(tmp_path / "one" / "checkpoints" / "step_000000.pt", weights_only=False)[
        "model"
    ]
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-4  # training changed the weights
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5 + 1e-3 * moved


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"teacher.kind": "oracle"},
            "teacher.kind='oracle' is not one of: privileged_self, snapshot",
        ),
        ({"steps": "many"}, "config field steps must be an integer"),
        ({"optim.lrr": "1"}, "unknown config field optim.lrr"),
        ({"objective.kind": "token", "teacher.kind": "none"}, "needs a teacher"),
        ({"teacher.kind": "white_box"}, "teacher.model is required"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("'", "'")):
        load_config(overrides=overrides)


def test_config_file_and_presets(tmp_path):
    (tmp_path / "c.toml").write_text('steps = 7\n[teacher]\nkind = "ema"\nema_decay = 0.9\n')
    cfg = load_config(tmp_path / "c.toml", {"teacher.ema_decay": "0.5"}, preset="grpo")
    assert cfg.steps == 7 and cfg.teacher.kind == "ema" and cfg.teacher.ema_decay == 0.5
    assert cfg.objective.kind == "outcome" and cfg.group_size == 4  # from the preset
    (tmp_path / "c.yaml").write_text("rollout:\n  max_turns: 3\n")
    assert load_config(tmp_path / "c.yaml").rollout.max_turns == 3
    (tmp_path / "bad.toml").write_text("steps = \n")
    with pytest.raises(InputError, match="bad.toml: cannot parse"):
        load_config(tmp_path / "bad.toml")


def test_lora_with_reference_kl_trains_only_the_adapters(tmp_path):
    cfg = load_config(overrides={**TINY, "steps": "2", "lora_rank": "4", "objective.ref_kl": "0.1"})
    trainer = Trainer(cfg, tmp_path)
    base = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora_" not in k}
    summary = trainer.run()
    assert summary["steps"] == 2
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(base[k], after[k]) for k in base)  # frozen base weights
    lora = [v for k, v in after.items() if "lora_B" in k]
    assert lora and any(v.abs().sum() > 0 for v in lora)  # adapters moved (B starts at 0)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["ref_kl"] >= 0 for r in rows if r["phase"] == "train")
    assert (tmp_path / "model" / "model.safetensors").is_file()  # merged export


def test_off_policy_distillation_samples_from_the_teacher(tmp_path):
    cfg = load_config(
        overrides={
            **TINY,
            "steps": "1",
            "rollout.sample_from": "teacher",
            "teacher.kind": "snapshot",
            "teacher.privileged": "false",
        }
    )
    trainer = Trainer(cfg, tmp_path)
    trainer.build_teachers()
    sampler = trainer._sampler()
    assert (
        sampler.policy.model is trainer.teacher.model and sampler.policy.model is not trainer.model
    )
    metrics = trainer.train_step()
    assert metrics["kl"] < 1e-5  # the snapshot equals the student before the first update
    with pytest.raises(InputError, match="needs objective.kind=token"):
        load_config(
            overrides={
                "rollout.sample_from": "teacher",
                "objective.kind": "outcome",
                "teacher.kind": "none",
            }
        )


@pytest.mark.parametrize(
    ("overrides", "teacher_name", "key"),
    [
        (
            {"teacher.kind": "black_box", "teacher.model": "tiny", "objective.kind": "sequence"},
            "black-box imitate (privileged)",
            "imitate/nll",
        ),
        (
            {
                "teacher.kind": "black_box",
                "teacher.model": "tiny",
                "teacher.judge": "true",
                "teacher.judge_weight": "0.5",
                "objective.kind": "hybrid",
                "warmstart.steps": "30",
            },
            "black-box judge (privileged)",
            "judge/unparsed",
        ),
        (
            {
                "teacher.kind": "verified_self",
                "objective.kind": "sequence",
                "warmstart.steps": "60",
                "group_size": "4",
            },
            "verified self",
            "targets",  # nll only on steps with a verified winner
        ),
        (
            {
                "teacher.kind": "white_box",
                "teacher.model": "tiny:tokenizer=bpe",
                "teacher.cross_tokenizer": "true",
                "objective.kind": "sequence",
            },
            "privileged cross-tokenizer white-box",
            "xtok/chunks_per_token",
        ),
        (
            {
                "teacher.kind": "spin_opponent",
                "objective.kind": "spin",
                "objective.spin_nll": "0",
                "teacher.refresh_every": "1",
            },
            "spin opponent (previous iterate)",
            "spin/margin",
        ),
        (
            {
                "teacher.kind": "spin_opponent",
                "objective.kind": "spin",
            },
            "spin opponent (previous iterate)",
            "spin/nll",
        ),
    ],
)
def test_teacher_sources_without_logits_train(tmp_path, overrides, teacher_name, key):
    """Each text / verified / self-play source runs through the trainer and moves weights."""
    config = load_config(
        overrides={
            **TINY,
            **overrides,
            "steps": "2",
            "rollout.max_turns": "2",
            "warmstart.batch": "32",
            "warmstart.lr": "3e-3",
            "warmstart.hinted_fraction": "0",
        }
    )
    trainer = Trainer(config, tmp_path)
    summary = trainer.run()
    assert summary["teacher"] == teacher_name and summary["steps"] == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["phase"] == "train"]
    assert len(train) == 2 and all(key in r for r in train)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    if key == "judge/unparsed":
        # The tiny teacher cannot grade: every reply is unparsed, scored 0 and counted, so
        # the reward is half the env's (judge_weight 0.5) and the gradient depends on
        # whether the env's rewards vary within a group this step.
        assert all(r["judge/unparsed"] == 12 and r["judge/score"] == 0 for r in train)
        assert all(abs(r["reward"] - 0.5 * r["env_reward"]) < 1e-6 for r in train)
    else:
        assert any(r["grad_norm"] > 0 for r in train)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"teacher.kind": "spin_opponent"}, "spin_opponent and objective.kind=spin go together"),
        ({"objective.kind": "spin"}, "spin_opponent and objective.kind=spin go together"),
        ({"teacher.kind": "verified_self"}, "writes target text: use objective.kind=sequence"),
        (
            {"teacher.kind": "black_box", "teacher.model": "tiny", "teacher.judge": "true"},
            "gives rewards: use objective.kind=outcome or hybrid",
        ),
        ({"teacher.kind": "black_box", "objective.kind": "sequence"}, "teacher.model is required"),
        (
            {"teacher.kind": "white_box", "teacher.model": "x", "teacher.cross_tokenizer": "true"},
            "objective.kind=token needs teacher logits over the student's vocabulary",
        ),
        (
            {"teacher.cross_tokenizer": "true", "objective.kind": "sequence"},
            "teacher.cross_tokenizer applies to teacher.kind=white_box",
        ),
    ],
)
def test_teacher_objective_pairings_are_checked(overrides, message):
    with pytest.raises(InputError, match=message):
        load_config(overrides=overrides)


def test_a_teacher_with_another_tokenizer_is_refused_naming_both_sizes(tmp_path):
    config = load_config(
        overrides={
            **TINY,
            "teacher.kind": "white_box",
            "teacher.model": "tiny:tokenizer=bpe",
            "objective.kind": "sequence",
        }
    )
    with pytest.raises(InputError, match=r"\(512 tokens\) differs from the student's \(262\)"):
        Trainer(config, tmp_path).run()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_a_valid_config(preset):
    config = load_config(overrides={"teacher.model": "tiny"}, preset=preset)
    for key, value in PRESETS[preset].items():
        section, _, name = key.rpartition(".")
        holder = getattr(config, section) if section else config
        assert getattr(holder, name) == value, key
