"""The trainer's objective paths equal a plain reference on materialised logits: the fused
hidden-state path (logits projected block by block) changes memory, not values."""

from __future__ import annotations

import pytest
import torch

from opd_selfplay.config import load_config
from opd_selfplay.divergences import divergence
from opd_selfplay.teachers import action_rows, sampled_token_ids
from opd_selfplay.trainer import Trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    config = load_config(
        overrides={
            "teacher.kind": "white_box",
            "teacher.model": "tiny:seed=3",
            "teacher.privileged": "false",
            "rollout.max_turns": "2",
            "rollout.max_new_tokens": "5",
            "rollout.temperature": "0.8",
            "tasks_per_step": "3",
            "group_size": "2",
            "threads": "1",
        }
    )
    t = Trainer(config, tmp_path_factory.mktemp("run"))
    t.build_teachers()
    t.trajs = t.engine.run(config.env, [1, 2, 3], 2)
    assert any(len(x.turns) == 2 for x in t.trajs)  # multi-turn
    return t


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("kind", "div"), [("token", "forward_kl"), ("token", "jsd"), ("sequence", "reverse_kl")]
)
def test_fused_loss_equals_the_materialised_reference(trainer, kind, div):
    from dataclasses import replace

    trainer.config = replace(
        trainer.config, objective=replace(trainer.config.objective, kind=kind, divergence=div)
    )
    trajs, model, temp = trainer.trajs, trainer.model, 0.8
    n = sum(t.num_action_tokens for t in trajs)
    signal = trainer.teacher.score(trajs)
    model.zero_grad(set_to_none=True)
    loss, diag = trainer._loss(trajs, signal, None, float(n))
    loss.backward()
    fused = _grads(model)

    model.zero_grad(set_to_none=True)
    seqs = [(list(t.token_ids), [i for i, m in enumerate(t.action_mask) if m]) for t in trajs]
    rows = action_rows(model, seqs, trainer.policy.pad_token_id).float()
    with torch.no_grad():
        teacher_rows = action_rows(trainer.teacher.model, seqs, trainer.policy.pad_token_id)
    if kind == "token":
        ref = divergence(div, rows / temp, teacher_rows.float() / temp).sum() / n
        # The logged KL is the exact KL(teacher ‖ student), whatever the loss's divergence.
        kl = divergence("forward_kl", rows / temp, teacher_rows.float() / temp).mean()
        assert torch.allclose(diag["kl"], kl, rtol=1e-4)
    else:
        ids = sampled_token_ids(trajs)
        logq = torch.log_softmax(rows / temp, -1).gather(-1, ids[:, None]).squeeze(-1)
        logp = signal.logprobs_N
        sampled = torch.tensor([x for t in trajs for turn in t.turns for x in turn.action_logprobs])
        ratio = torch.exp(logq - sampled)
        ref = -(ratio * -(sampled - logp)).sum() / n  # tinker: advantage −(log q − log p)
    assert torch.allclose(loss, ref, rtol=1e-4, atol=1e-5)
    ref.backward()
    for a, b in zip(fused, _grads(model)):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
