"""Teacher sources on the tiny model, on multi-turn trajectories."""

from __future__ import annotations

import copy

import pytest
import torch
from toyenvs import Scripted

from opd_selfplay.agents.hf import HFPolicy
from opd_selfplay.agents.server import PolicyServer
from opd_selfplay.rollout import RolloutConfig, RolloutEngine
from opd_selfplay.teachers import (
    ModelTeacher,
    ServerTeacher,
    action_rows,
    privileged_before,
    teacher_sequences,
)


@pytest.fixture(scope="module")
def setup(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=3, max_new_tokens=6, seed=1))
    trajs = engine.run(
        lambda: Scripted(["wrong, again", [{"role": "tool", "content": "7"}]]),
        seeds=[0, 1],
        group_size=2,
    )
    assert all(len(t.turns) == 3 for t in trajs)
    return engine, trajs


def _student_rows(engine, trajs):
    seqs = [(list(t.token_ids), [i for i, m in enumerate(t.action_mask) if m]) for t in trajs]
    with torch.no_grad():
        return action_rows(engine.policy.model, seqs, engine.policy.pad_token_id).float()


def test_live_teacher_equals_the_students_own_distribution(setup):
    engine, trajs = setup
    teacher = ModelTeacher(engine.policy.model, engine, update="live")
    signal = teacher.score(trajs)
    rows = _student_rows(engine, trajs)
    assert (
        signal.logits().shape
        == rows.shape
        == (sum(t.num_action_tokens for t in trajs), rows.shape[1])
    )
    assert torch.allclose(signal.logits(), rows, atol=1e-5)
    sampled = torch.tensor([lp for t in trajs for turn in t.turns for lp in turn.action_logprobs])
    assert torch.allclose(
        signal.logprobs_N, sampled, atol=1e-4
    )  # temperature 1: sampling log-probs


def test_sampled_logprobs_are_projected_only_when_read_and_carry_no_graph(setup):
    engine, trajs = setup
    teacher = ModelTeacher(engine.policy.model, engine, update="live")  # the student's weights
    signal = teacher.score(trajs)
    assert signal._logprobs_N is None  # a token-level loss never pays for the projection
    with torch.enable_grad():
        lazy = signal.logprobs_N
    assert lazy is not None and not lazy.requires_grad
    assert signal.logprobs_N is lazy  # computed once
    sampled = torch.tensor([lp for t in trajs for turn in t.turns for lp in turn.action_logprobs])
    assert torch.allclose(lazy, sampled, atol=1e-4)


def test_a_lazy_read_after_the_head_changed_in_place_is_refused(setup):
    engine, trajs = setup
    model = copy.deepcopy(engine.policy.model)
    signal = ModelTeacher(model, engine, update="live").score(trajs)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(1.0)  # what an optimizer step does, in place
    with pytest.raises(RuntimeError, match="changed in place since it scored"):
        _ = signal.logprobs_N


def test_privileged_context_changes_scores_not_tokens(setup):
    engine, trajs = setup
    before = [(t.token_ids, t.action_mask) for t in trajs]
    plain = ModelTeacher(engine.policy.model, engine, update="live").score(trajs)
    hinted = ModelTeacher(engine.policy.model, engine, update="live", privileged=True).score(trajs)
    assert hinted.logits().shape == plain.logits().shape
    assert not torch.allclose(hinted.logprobs_N, plain.logprobs_N, atol=1e-3)
    assert [(t.token_ids, t.action_mask) for t in trajs] == before
    # Default: one sequence per episode, the first context re-rendered with the reset's
    # privileged text, then the episode's own tokens.
    [(ids, positions)] = teacher_sequences(engine, trajs[:1], privileged=True)
    traj = trajs[0]
    assert [ids[p] for p in positions] == [t for turn in traj.turns for t in turn.action_ids]
    first = engine.turn_context_ids(traj, 0, "seed 0")
    assert ids[: len(first)] == first and "seed 0" in engine.tokenizer.decode(first)
    own = list(traj.token_ids)[: len(traj.token_ids) - len(traj.tail_ids)]  # no final reply
    assert ids[len(first) :] == own[len(traj.turns[0].context_ids) :]
    # each_turn: one sequence per turn, each with the privileged text of that turn, ending
    # right where the action begins; the action tokens themselves are the sampled ones.
    seqs = teacher_sequences(engine, trajs[:1], privileged=True, each_turn=True)
    assert len(seqs) == 3
    tok = engine.tokenizer
    for k, (ids, positions) in enumerate(seqs):
        assert tuple(ids[p] for p in positions) == trajs[0].turns[k].action_ids
        assert privileged_before(trajs[0], k) in tok.decode(ids[: positions[0]])
    assert privileged_before(trajs[0], 0) == "seed 0"
    assert privileged_before(trajs[0], 2) == "step 2"


def test_snapshot_is_frozen_until_refreshed_and_ema_moves_part_way(setup, tiny_path):
    engine, _ = setup
    student = HFPolicy.from_pretrained(tiny_path, device="cpu").model
    snap = ModelTeacher(student, engine, update="snapshot", refresh_every=2)
    ema = ModelTeacher(student, engine, update="ema", ema_decay=0.75)
    start = [p.clone() for p in student.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01)
    snap.after_step(student, 1)
    assert all(torch.equal(a, b) for a, b in zip(snap.model.parameters(), start))  # not yet
    snap.after_step(student, 2)
    assert all(torch.equal(a, b) for a, b in zip(snap.model.parameters(), student.parameters()))
    ema.after_step(student, 1)
    for e, s0 in zip(ema.model.parameters(), start):
        assert torch.allclose(e, s0 + 0.0025, atol=1e-6)  # 0.75 old + 0.25 new
    assert not any(p.requires_grad for p in snap.model.parameters())
    state = snap.state_dict()
    fresh = ModelTeacher(
        HFPolicy.from_pretrained(tiny_path, device="cpu").model, engine, update="snapshot"
    )
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.parameters(), snap.model.parameters()))


def test_white_box_teacher_checks_the_vocabulary(setup):
    engine, trajs = setup
    other = copy.deepcopy(engine.policy.model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    teacher = ModelTeacher(
        other, engine, update="fixed", student_vocab=other.get_output_embeddings().weight.shape[0]
    )
    signal = teacher.score(trajs)
    assert not torch.allclose(signal.logits(), _student_rows(engine, trajs))
    with pytest.raises(
        ValueError, match=r"teacher vocabulary has \d+ tokens but the student's has 50000"
    ):
        ModelTeacher(other, engine, update="fixed", student_vocab=50000)


def test_grey_box_server_teacher_over_http(setup):
    engine, trajs = setup
    from opd_selfplay.agents.remote import OpenAIPolicy

    server = PolicyServer(engine.policy, "tiny", str(engine.policy.model.name_or_path)).start()
    try:
        teacher = ServerTeacher(OpenAIPolicy(server.url), engine, k=5)
        signal = teacher.score(trajs)
    finally:
        server.close()
    n = sum(t.num_action_tokens for t in trajs)
    assert signal.topk_ids_NK.shape == signal.topk_logprobs_NK.shape == (n, 5)
    rows = torch.log_softmax(_student_rows(engine, trajs), dim=-1)
    ref_vals, ref_ids = rows.topk(5, dim=-1)
    assert torch.equal(signal.topk_ids_NK, ref_ids)
    assert torch.allclose(signal.topk_logprobs_NK, ref_vals, atol=1e-4)
    sampled = torch.tensor([lp for t in trajs for turn in t.turns for lp in turn.action_logprobs])
    assert torch.allclose(signal.logprobs_N, sampled, atol=1e-4)


def test_one_sequence_per_episode_equals_per_turn_contexts_when_the_hint_is_constant(setup):
    """With the same privileged text at every turn and canonically tokenized actions, the
    single re-rendered sequence is the per-turn contexts joined (the template is
    prefix-consistent): the same scores. (Sampled actions may hold tokens that their text
    does not re-tokenize to; per-turn contexts re-render earlier actions from text, the
    single sequence keeps the sampled tokens.)"""
    import dataclasses

    from toyenvs import ScriptedPolicy

    engine, _ = setup
    scripted = RolloutEngine(
        ScriptedPolicy(engine.tokenizer, ["12", "no, 7", "7 it is"]), engine.config
    )
    trajs = scripted.run(
        lambda: Scripted(["wrong, again", [{"role": "tool", "content": "7"}]]), [0, 1], 1
    )
    same = [
        dataclasses.replace(
            t,
            turns=tuple(
                dataclasses.replace(turn, info={**turn.info, "privileged": f"seed {t.seed}"})
                for turn in t.turns
            ),
        )
        for t in trajs
    ]
    one = ModelTeacher(engine.policy.model, engine, "live", privileged=True).score(same)
    each = ModelTeacher(engine.policy.model, engine, "live", privileged=True, each_turn=True)
    assert torch.allclose(one.logprobs_N, each.score(same).logprobs_N, atol=1e-5)
    assert len(teacher_sequences(engine, same, True)) == len(same)
    assert len(teacher_sequences(engine, same, True, each_turn=True)) == 3 * len(same)
    assert all(len(t.turns) == 3 for t in same)
