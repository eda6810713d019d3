"""The teacher sources that do not score tokens with logits: black-box text (imitate and
judge), verified self, and the SPIN opponent; on the tiny model and multi-turn episodes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from toyenvs import Scripted

from opd_selfplay.agents.base import SamplingParams
from opd_selfplay.agents.hf import HFPolicy
from opd_selfplay.agents.server import PolicyServer
from opd_selfplay.rollout import (
    RolloutConfig,
    RolloutEngine,
    messages_before_action,
    with_privileged,
)
from opd_selfplay.teachers import SpinOpponent, TextTeacher, VerifiedSelfTeacher, action_rows
from opd_selfplay.teachers.text import chat_responder, parse_score, policy_responder

ARITH = "opd/Arithmetic-v0"


@pytest.fixture(scope="module")
def engine(tiny_policy):
    return RolloutEngine(tiny_policy, RolloutConfig(max_turns=3, max_new_tokens=6, seed=1))


@pytest.fixture(scope="module")
def scripted(engine):
    trajs = engine.run(
        lambda: Scripted(["wrong, again", [{"role": "tool", "content": "7"}]]), [0, 1], 2
    )
    assert all(len(t.turns) == 3 for t in trajs)
    return trajs


@pytest.fixture(scope="module")
def teacher_policy(tiny_path):
    """Another model behind the same template (its weights scaled so it answers otherwise)."""
    policy = HFPolicy.from_pretrained(tiny_path, device="cpu")
    with torch.no_grad():
        for p in policy.model.parameters():
            p.mul_(1.5)
    return policy


GREEDY = SamplingParams(max_new_tokens=5, temperature=0.0)


def test_black_box_targets_are_the_teachers_text_in_the_students_own_context(
    engine, scripted, teacher_policy
):
    seen = []
    respond = policy_responder(teacher_policy, GREEDY)

    def recording(conversations, seed):
        seen.extend(conversations)
        return respond(conversations, seed)

    teacher = TextTeacher(recording, engine, "imitate", privileged=True, max_new_tokens=5)
    before = [(t.token_ids, t.action_mask) for t in scripted]
    targets = teacher.targets(scripted)
    assert len(targets) == sum(len(t.turns) for t in scripted) == 12
    replies = respond(seen, 0)  # greedy: the same text again
    eos = engine.tokenizer.eos_token_id
    places = [(t, k) for t in scripted for k in range(len(t.turns))]
    for (traj, k), (ids, positions), reply, conv in zip(places, targets, replies, seen):
        context = engine.turn_context_ids(traj, k)  # the student's view: no privileged text
        assert ids[: positions[0]] == context
        assert positions == list(range(len(context), len(ids)))
        assert ids[positions[0] :] == [*engine.encode(reply)[:5], eos]
        # The teacher saw the privileged text of that turn; the student's context did not.
        hint = f"seed {traj.seed}" if k == 0 else f"step {k}"
        assert conv == with_privileged(messages_before_action(traj, k), hint)
        assert hint not in engine.tokenizer.decode(context)
    assert [(t.token_ids, t.action_mask) for t in scripted] == before


def test_black_box_teacher_over_a_chat_api(engine, scripted, teacher_policy):
    from opd_selfplay.agents.remote import OpenAIPolicy

    server = PolicyServer(teacher_policy, "teacher", str(teacher_policy.model.name_or_path))
    server.start()
    try:
        over_http = TextTeacher(chat_responder(OpenAIPolicy(server.url), GREEDY), engine)
        targets = over_http.targets(scripted[:1])
    finally:
        server.close()
    local = TextTeacher(policy_responder(teacher_policy, GREEDY), engine).targets(scripted[:1])
    assert len(targets) == 3
    assert targets == local  # the server renders with the same template, greedy


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 7", 0.7),
        ("score=10 because", 1.0),
        ("8/10", 0.8),
        ("Score: 42", 1.0),  # clamped
        ("I think it is fine", None),
        ("x" * 500 + "Score: 9", None),  # only the first 200 characters are read
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_judge_rewards_read_the_final_answer_and_count_unparsed(engine, scripted):
    asked = []

    def grader(conversations, seed):
        # A rule-based black-box judge: full marks when the final answer mentions "7".
        asked.extend(conversations)
        return [
            "Score: 10" if "Final answer:\n7" in c[1].content else "no idea" for c in conversations
        ]

    traj = scripted[0]
    last = traj.turns[-1]
    right = dataclasses.replace(
        traj, turns=(*traj.turns[:-1], dataclasses.replace(last, action_text="7"))
    )
    teacher = TextTeacher(grader, engine, "judge", privileged=True)
    assert teacher.rewards([right, traj]) == [1.0, 0.0]
    assert teacher.unparsed == 1
    assert "Reference (hidden from the assistant):\nstep 2" in asked[0][1].content
    assert teacher.state_dict() == {"calls": 1, "unparsed": 1}


def _arith_demos(engine, plans):
    """Arithmetic episodes that play `plans[i]` (per turn: True = the right answer)."""

    out = []
    for i, plan in enumerate(plans):

        def pick(env, turn, plan=plan):
            return env.oracle_action() if plan[min(turn, len(plan) - 1)] else env.wrong_action()

        (traj,) = engine.demonstrate(ARITH, [100 + i // 4], pick)
        out.append(dataclasses.replace(traj, group=i // 4))
    return out


def test_verified_self_targets_the_cheapest_success_once_per_failed_sibling(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=2, max_new_tokens=6))
    plans = [
        # group 0: wrong then right, right, wrong twice, wrong twice
        (False, True),
        (True,),
        (False, False),
        (False, False),
        # group 1: nobody succeeds; group 2: everybody does
        (False, False),
        (False, False),
        (False, False),
        (False, False),
        (True,),
        (True,),
        (True,),
        (True,),
    ]
    trajs = _arith_demos(engine, plans)
    assert [t.success for t in trajs[:4]] == [True, True, False, False]
    assert len(trajs[0].turns) == 2 and len(trajs[1].turns) == 1
    teacher = VerifiedSelfTeacher()
    targets = teacher.targets(trajs)
    assert len(targets) == 2  # the two failures of group 0; groups 1 and 2 teach nothing
    winner = trajs[1]
    assert targets[0] == targets[1] == (list(winner.token_ids), _action_positions(winner))
    # A two-turn winner contributes only its last (corrected) action, in its full context.
    ids, positions = teacher.targets([trajs[0], trajs[2]])[0]
    assert ids == list(trajs[0].token_ids)
    assert tuple(ids[p] for p in positions) == trajs[0].turns[1].action_ids


def _action_positions(traj):
    return [i for i, m in enumerate(traj.action_mask) if m]


def test_spin_opponent_plays_scores_and_follows_the_student(tiny_path):
    student = HFPolicy.from_pretrained(tiny_path, device="cpu")
    engine = RolloutEngine(student, RolloutConfig(max_turns=2, max_new_tokens=6, seed=3))
    spin = SpinOpponent(student.model, engine, ARITH, refresh_every=2)
    generated = RolloutEngine(spin.policy, engine.config).run(ARITH, [5, 6], 1)
    real = spin.targets(generated)
    assert len(real) == 2
    for (ids, positions), traj in zip(real, generated):
        # The real response is the env's oracle answer to the same task.
        (demo,) = engine.demonstrate(ARITH, [traj.seed], lambda env, turn: env.oracle_action())
        assert ids == list(demo.token_ids) and demo.success
        assert messages_before_action(demo, 0) == messages_before_action(traj, 0)
        assert positions == _action_positions(demo)
    seqs = [*real, *[(list(t.token_ids), _action_positions(t)) for t in generated]]
    ref = spin.sequence_logprobs(seqs)
    with torch.no_grad():
        rows = torch.log_softmax(action_rows(student.model, seqs, student.pad_token_id), -1)
    ids = torch.tensor([s[p] for s, ps in seqs for p in ps])
    per_token = rows.gather(-1, ids[:, None]).squeeze(-1)
    sizes = [len(ps) for _, ps in seqs]
    expected = torch.stack([c.sum() for c in per_token.split(sizes)])
    assert torch.allclose(ref, expected, atol=1e-4)  # the opponent starts as the student
    with torch.no_grad():
        for p in student.model.parameters():
            p.add_(0.01)
    spin.after_step(student.model, 1)
    assert torch.allclose(spin.sequence_logprobs(seqs), ref)  # still the previous iterate
    spin.after_step(student.model, 2)
    assert not torch.allclose(spin.sequence_logprobs(seqs), ref, atol=1e-4)


def test_privileged_teacher_with_a_sibling_hint_sees_the_verified_answer(tiny_policy):
    from opd_selfplay.teachers import ModelTeacher
    from opd_selfplay.teachers.base import sibling_hints, teacher_sequences

    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=2, max_new_tokens=6))
    # group 0: the second member is right first time; group 1: nobody is right
    trajs = _arith_demos(engine, [(False, False), (True,), (False, True), (False, False)])[:2]
    trajs += [dataclasses.replace(t, group=1) for t in _arith_demos(engine, [(False, False)] * 2)]
    hints = sibling_hints(trajs)
    answer = trajs[1].turns[-1].action_text
    assert hints == {(0, trajs[0].seed): f"A verified answer from another attempt: {answer}"}
    plain = ModelTeacher(tiny_policy.model, engine, "live", privileged=True)
    sib = ModelTeacher(tiny_policy.model, engine, "live", privileged=True, sibling=True)
    sib.prepare(trajs)
    tok = engine.tokenizer
    for each_turn in (False, True):
        seqs = teacher_sequences(engine, trajs[:1], True, sib.hints, each_turn)
        assert len(seqs) == (2 if each_turn else 1)
        actions = [t for turn in trajs[0].turns for t in turn.action_ids]
        assert [ids[p] for ids, positions in seqs for p in positions] == actions
        for ids, positions in seqs:
            assert hints[(0, trajs[0].seed)] in tok.decode(ids[: positions[0]])
    a, b = plain.score(trajs), sib.score(trajs)
    n0 = trajs[0].num_action_tokens + trajs[1].num_action_tokens
    assert not torch.allclose(a.logprobs_N[:n0], b.logprobs_N[:n0], atol=1e-4)
    # No verified sibling, no hint: the same scores (up to padding in another batch).
    assert torch.allclose(a.logprobs_N[n0:], b.logprobs_N[n0:], atol=1e-5)
    assert sib.name == "privileged live + sibling"
