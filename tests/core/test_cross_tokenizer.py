"""Cross-tokenizer alignment: the pure functions on synthetic tokenizations, then a byte-level
student scored by a BPE teacher with a ChatML template (real tiny models, multi-turn)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from opd_selfplay.agents.loading import load_policy, tiny_spec
from opd_selfplay.agents.tiny import TinyModelSpec, build_tokenizer
from opd_selfplay.errors import InputError
from opd_selfplay.rollout import RolloutConfig, RolloutEngine, messages_before_action
from opd_selfplay.teachers.base import privileged_before
from opd_selfplay.teachers.cross_tokenizer import (
    AlignmentStats,
    Chunk,
    CrossTokenizerTeacher,
    align_action,
    align_chunks,
    check_objective,
    end_of_turn_id,
    project_logprobs,
    same_vocabulary,
    token_ends,
)

ARITH = "opd/Arithmetic-v0"
TEACHER = "tiny:tokenizer=bpe,hidden_size=64,num_layers=2,intermediate_size=128,seed=1"

# ---------------------------------------------------------------------------------------------
# Pure alignment on synthetic tokenizers: a token is a byte string; decoding joins the bytes
# and decodes UTF-8 with replacement, as byte-level BPE decoders do.
# ---------------------------------------------------------------------------------------------


def tokenizer_of(pieces: list[bytes]):
    """(ids, decode) for a tokenization into `pieces`."""
    table = dict(enumerate(pieces))
    return list(table), lambda ids: b"".join(table[i] for i in ids).decode("utf-8", "replace")


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_identical_tokenizations_give_one_chunk_per_token_and_the_teachers_logprobs():
    text = "the answer 数 is 🙂 é"
    pieces = [ch.encode() for ch in ["the", " answer", " ", "数", " is", " ", "🙂", " é"]]
    ids, decode = tokenizer_of(pieces)
    ends = token_ends(ids, text, decode)
    assert ends == [3, 10, 11, 12, 15, 16, 17, 19]
    chunks = align_chunks(ends, ends, len(text))
    assert [(c.student, c.teacher) for c in chunks] == [((k, k + 1), (k, k + 1)) for k in ids]
    own = [-0.5 - 0.1 * k for k in ids]
    teacher = [-1.25 - 0.37 * k for k in ids]
    for projection in ("last", "uniform"):
        assert project_logprobs(chunks, own, teacher, projection) == teacher  # bit for bit


def test_multibyte_characters_split_differently_align_on_character_boundaries():
    text = "é数🙂a"  # 2 + 3 + 4 + 1 bytes
    data = text.encode()
    s_ids, s_dec = tokenizer_of([bytes([b]) for b in data])  # byte-level student
    # The teacher's second token holds the end of "é" and the start of "数".
    t_ids, t_dec = tokenizer_of([data[0:1], data[1:3], data[3:5], data[5:9], data[9:]])
    s_ends, t_ends = token_ends(s_ids, text, s_dec), token_ends(t_ids, text, t_dec)
    assert s_ends == [None, 1, None, None, 2, None, None, None, 3, 4]
    assert t_ends == [None, None, 2, 3, 4]  # no boundary inside a character
    chunks = align_chunks(s_ends, t_ends, len(text))
    assert chunks == [
        Chunk((0, 5), (0, 3), (0, 2)),  # "é数": 5 student bytes, 3 teacher tokens
        Chunk((5, 9), (3, 4), (2, 3)),  # "🙂"
        Chunk((9, 10), (4, 5), (3, 4)),  # "a"
    ]
    own = [-0.1 * (k + 1) for k in s_ids]
    teacher = [-1.0, -2.0, -3.0, -4.0, -5.0]
    last = project_logprobs(chunks, own, teacher, "last")
    assert last[:4] == own[:4] and last[5:8] == own[5:8]  # non-final tokens: own (k1 = 0)
    assert math.isclose(sum(last[0:5]), -6.0) and math.isclose(sum(last[5:9]), -4.0)
    assert last[9] == -5.0
    uniform = project_logprobs(chunks, own, teacher, "uniform")
    assert math.isclose(sum(uniform[0:5]), -6.0) and math.isclose(sum(uniform[5:9]), -4.0)
    k1 = [o - u for o, u in zip(own[0:5], uniform[0:5])]
    assert max(k1) - min(k1) < 1e-12  # the chunk's k1 spread evenly


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab é数東🙂\n", min_size=1, max_size=12),
    s_cuts=st.lists(st.integers(1, 60), max_size=20),
    t_cuts=st.lists(st.integers(1, 60), max_size=20),
    seed=st.integers(0, 10_000),
)
def test_chunk_sums_are_preserved_for_any_two_byte_splits(text, s_cuts, t_cuts, seed):
    data = text.encode()
    s_ids, s_dec = tokenizer_of(split_at(data, s_cuts))
    t_ids, t_dec = tokenizer_of(split_at(data, t_cuts))
    s_ends, t_ends = token_ends(s_ids, text, s_dec), token_ends(t_ids, text, t_dec)
    chunks = align_chunks(s_ends, t_ends, len(text))
    # Chunks tile both token lists in order, and end on boundaries valid for both sides.
    assert [c.student[0] for c in chunks] == [0, *[c.student[1] for c in chunks[:-1]]]
    assert [c.teacher[0] for c in chunks] == [0, *[c.teacher[1] for c in chunks[:-1]]]
    assert chunks[-1].student[1] == len(s_ids) and chunks[-1].teacher[1] == len(t_ids)
    for c in chunks:
        assert s_dec(s_ids[: c.student[1]]) == text[: c.chars[1]]
        assert t_dec(t_ids[: c.teacher[1]]) == text[: c.chars[1]]
    # Every character boundary where both byte splits cut is a chunk boundary (maximality).
    s_bytes = {len(b"".join(split_at(data, s_cuts)[:k])) for k in range(len(s_ids) + 1)}
    t_bytes = {len(b"".join(split_at(data, t_cuts)[:k])) for k in range(len(t_ids) + 1)}
    char_bytes = {len(text[:c].encode()): c for c in range(len(text) + 1)}
    expected = sorted(char_bytes[b] for b in s_bytes & t_bytes if b in char_bytes and b)
    assert [c.chars[1] for c in chunks] == expected
    gen = torch.Generator().manual_seed(seed)
    own = (-torch.rand(len(s_ids), generator=gen, dtype=torch.float64) * 3).tolist()
    teacher = (-torch.rand(len(t_ids), generator=gen, dtype=torch.float64) * 3).tolist()
    for projection in ("last", "uniform"):
        out = project_logprobs(chunks, own, teacher, projection)
        assert len(out) == len(s_ids)
        for c in chunks:
            got = sum(out[c.student[0] : c.student[1]])
            assert math.isclose(got, sum(teacher[c.teacher[0] : c.teacher[1]]), abs_tol=1e-9)
            if projection == "last":
                assert out[c.student[0] : c.student[1] - 1] == own[c.student[0] : c.student[1] - 1]
        # The sequence-level k1 is exact: log q(tokens) - log p(text).
        assert math.isclose(sum(own) - sum(out), sum(own) - sum(teacher), abs_tol=1e-9)


def _ends_by_definition(ids, text, decode):
    """A boundary after token k is valid when decoding ids[:k + 1] gives a prefix of the text
    (and does not move back): the definition the fast path must reproduce."""
    out, last = [], 0
    for k in range(1, len(ids) + 1):
        prefix = decode(ids[:k])
        ok = text.startswith(prefix) and len(prefix) >= last
        last = len(prefix) if ok else last
        out.append(len(prefix) if ok else None)
    return out


# Bytes of ASCII, of "é", "数", "🙂", stray continuation bytes and bytes never valid in UTF-8.
_BYTES = st.sampled_from(
    [0x41, 0x20, 0x31, 0xC3, 0xA9, 0xE6, 0x95, 0xB0, 0xF0, 0x9F, 0x99, 0x82, 0x80, 0xFF, 0xED]
)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(_BYTES, min_size=1, max_size=14), cuts=st.lists(st.integers(1, 14)))
def test_token_ends_follow_the_prefix_definition_even_on_invalid_utf8(data, cuts):
    ids, decode = tokenizer_of(split_at(bytes(data), cuts))
    text = decode(ids)
    ends = token_ends(ids, text, decode)
    assert ends == _ends_by_definition(ids, text, decode)
    assert ends[-1] == len(text)


def test_empty_actions_and_zero_width_tokens_get_no_teacher_opinion():
    assert align_action([], [], 0, end_marker=False) == []
    only_end = align_action([], [], 0, end_marker=True)
    assert only_end == [Chunk((0, 1), (0, 1), (0, 0))]
    assert project_logprobs(only_end, [-0.3], [-2.0]) == [-2.0]
    # Two special tokens that decode to nothing, and no teacher tokens: own log-probs.
    chunks = align_chunks([0, 0], [], 0)
    assert chunks == [Chunk((0, 2), (0, 0), (0, 0))]
    assert project_logprobs(chunks, [-0.5, -0.25], []) == [-0.5, -0.25]
    assert AlignmentStats.of([chunks]).unscored == 2
    with pytest.raises(ValueError, match="3 characters has 0 student and 1 teacher tokens"):
        align_chunks([], [3], 3)


def test_an_action_that_ends_with_the_end_token_maps_it_to_the_teachers():
    text = "19"
    s_ids, s_dec = tokenizer_of([b"1", b"9"])
    t_ids, t_dec = tokenizer_of([b"19"])
    chunks = align_action(token_ends(s_ids, text, s_dec), token_ends(t_ids, text, t_dec), 2, True)
    assert chunks == [Chunk((0, 2), (0, 1), (0, 2)), Chunk((2, 3), (1, 2), (2, 2))]
    out = project_logprobs(chunks, [-0.1, -0.2, -0.05], [-3.0, -0.7])
    assert out[0] == -0.1 and math.isclose(out[0] + out[1], -3.0) and out[2] == -0.7
    stats = AlignmentStats.of([chunks]).metrics()
    assert stats["xtok/chunks_per_token"] == pytest.approx(2 / 3)
    assert stats["xtok/chunk_final_share"] == pytest.approx(2 / 3)
    assert stats["xtok/one_to_one_share"] == pytest.approx(1 / 3)


def test_a_decoder_that_is_not_prefix_stable_falls_back_to_prefix_decodes():
    # SentencePiece-style: "▁" is a space and decoding strips the text's leading space, so
    # decoding a token alone differs from decoding it in its sequence.
    table = {0: " Hello", 1: " wor", 2: "ld", 3: "!"}

    def decode(ids):
        out = "".join(table[i] for i in ids)
        return out[1:] if out.startswith(" ") else out

    text = decode([0, 1, 2, 3])
    assert text == "Hello world!"
    assert token_ends([0, 1, 2, 3], text, decode) == [5, 9, 11, 12]


def test_a_teacher_that_does_not_round_trip_merges_the_rest_into_one_chunk():
    text = "abcdef"
    s_ids, s_dec = tokenizer_of([b"ab", b"cd", b"ef"])
    t_ids, t_dec = tokenizer_of([b"ab", b"CD", b"ef"])  # e.g. a normalising tokenizer
    t_ends = token_ends(t_ids, text, t_dec)
    assert t_ends == [2, None, None]
    chunks = align_chunks(token_ends(s_ids, text, s_dec), t_ends, len(text))
    assert chunks == [Chunk((0, 1), (0, 1), (0, 2)), Chunk((1, 3), (1, 3), (2, 6))]


def test_objectives_that_need_logits_are_refused_in_one_line():
    check_objective("sequence")
    check_objective("outcome")
    check_objective("token", estimator="k3")
    for kind in ("token", "hybrid"):
        with pytest.raises(InputError) as info:
            check_objective(kind)
        message = str(info.value)
        assert "\n" not in message and "objective.kind=sequence" in message
        assert "sampled-token estimator" in message
    with pytest.raises(InputError, match="objective.kind=token with estimator topk"):
        CrossTokenizerTeacher.check_objective("token", estimator="topk")


# ---------------------------------------------------------------------------------------------
# The second tiny tokenizer
# ---------------------------------------------------------------------------------------------


def test_the_bpe_tokenizer_is_deterministic_round_trips_and_uses_chatml():
    a, b = build_tokenizer("bpe"), build_tokenizer("bpe")
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    byte = build_tokenizer()
    assert len(a) == 512 and len(byte) == 262 and not same_vocabulary(a, byte)
    assert same_vocabulary(a, b)
    text = "café 数字 東京 🙂 12+7=19 <|im_end|>"
    ids = a(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert a.decode(ids) == text and len(ids) < len(text.encode())
    # Its merges split UTF-8 characters: "数字" ends with a token that is one byte of "字".
    pieces = a.convert_ids_to_tokens(a("数字", add_special_tokens=False)["input_ids"])
    assert len(pieces) == 2 and len(pieces[1]) == 1
    chat = [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]
    assert a.apply_chat_template(chat, tokenize=False) == (
        "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n"
    )
    assert end_of_turn_id(a) == a.convert_tokens_to_ids("<|im_end|>") == a.eos_token_id
    assert end_of_turn_id(byte) == byte.convert_tokens_to_ids("<|end|>")
    with pytest.raises(ValueError, match="tokenizer kind must be one of byte, bpe"):
        build_tokenizer("wordpiece")


def test_the_tokenizer_field_keeps_default_keys_and_parses_from_model_strings():
    assert TinyModelSpec().key() == "tiny-v2-h128-l4-a4-kv2-i512-p2048-s0"
    assert TinyModelSpec(tokenizer="bpe").key() == "tiny-v2-h128-l4-a4-kv2-i512-p2048-s0-tbpe"
    assert tiny_spec("tiny:tokenizer=bpe,seed=1") == TinyModelSpec(tokenizer="bpe", seed=1)
    with pytest.raises(InputError, match="TinyModelSpec.tokenizer must be one of byte, bpe"):
        tiny_spec("tiny:tokenizer=sentencepiece")


# ---------------------------------------------------------------------------------------------
# Real tiny models: byte-level student, BPE teacher, multi-turn Arithmetic
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_policy(tiny_policy):
    return load_policy(TEACHER, device="cpu")


@pytest.fixture(scope="module")
def episodes(tiny_policy):
    engine = RolloutEngine(tiny_policy, RolloutConfig(max_turns=3, max_new_tokens=12, seed=3))
    sampled = engine.run(ARITH, seeds=[0, 1], group_size=2)
    # Scripted wrong answers with multi-byte text and the teacher's own end marker as text.
    texts = ["café 数字 東京 🙂 -1", "naïve 👍 <|im_end|> -2"]
    shown = engine.demonstrate(ARITH, seeds=[5], choose=lambda env, turn: texts[turn])
    trajs = [*sampled, *shown]
    assert sum(len(t.turns) >= 2 for t in trajs) >= 2 and len(shown[0].turns) == 2
    return engine, trajs


def _teacher_context(teacher_policy, traj, k, privileged):
    """The teacher's context tokens of turn k, rendered here with its own template."""
    tok = teacher_policy.tokenizer
    messages = [m.to_dict() for m in messages_before_action(traj, k)]
    if privileged:
        note = privileged_before(traj, k)
        messages = [{"role": "system", "content": note}, *messages]
    context = tok(
        tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
        add_special_tokens=False,
    )["input_ids"]
    return context


@torch.no_grad()
def test_the_teacher_scores_every_student_token_with_exact_chunk_sums(episodes, teacher_policy):
    engine, trajs = episodes
    teacher = CrossTokenizerTeacher(teacher_policy, engine)
    before = [(t.token_ids, t.action_mask) for t in trajs]
    signal = teacher.score(trajs)
    assert signal.full is None and signal.topk_ids_NK is None
    assert signal.logprobs_N.shape == (sum(t.num_action_tokens for t in trajs),)
    assert [(t.token_ids, t.action_mask) for t in trajs] == before
    student_tok, teacher_tok = engine.tokenizer, teacher_policy.tokenizer
    im_end = teacher_tok.convert_tokens_to_ids("<|im_end|>")
    rows = signal.logprobs_N.tolist()
    offset, checked_chunks, multi = 0, 0, 0
    alignments = iter(teacher.last_alignments)
    for b, traj in enumerate(trajs):
        for k, turn in enumerate(traj.turns):
            a = next(alignments)
            assert (a.trajectory, a.turn) == (b, k)
            ids = list(turn.action_ids)
            ends_with_eos = ids[-1] == student_tok.eos_token_id
            body = ids[:-1] if ends_with_eos else ids
            assert a.text == student_tok.decode(body, skip_special_tokens=True)
            expected_t = teacher_tok(a.text, add_special_tokens=False, split_special_tokens=True)
            assert list(a.teacher_ids) == expected_t["input_ids"] + (
                [im_end] if ends_with_eos else []
            )
            # An independent, unpadded forward of the teacher-rendered text.
            context = _teacher_context(teacher_policy, traj, k, False)
            assert list(a.context_ids) == context
            seq = torch.tensor([[*context, *a.teacher_ids]])
            logp = torch.log_softmax(teacher_policy.model(seq).logits[0].float(), -1)
            t_lp = [float(logp[len(context) + j - 1, t]) for j, t in enumerate(a.teacher_ids)]
            mine = rows[offset : offset + len(ids)]
            for c in a.chunks:
                s0, s1 = c.student
                if c.teacher[0] == c.teacher[1]:
                    assert mine[s0:s1] == pytest.approx(list(turn.action_logprobs[s0:s1]))
                    continue
                want = sum(t_lp[c.teacher[0] : c.teacher[1]])
                assert sum(mine[s0:s1]) == pytest.approx(want, abs=1e-4)
                own = list(turn.action_logprobs[s0 : s1 - 1])
                assert mine[s0 : s1 - 1] == pytest.approx(own, abs=1e-6)
                checked_chunks += 1
                multi += s1 - s0 > 1
            offset += len(ids)
    assert offset == len(rows) and checked_chunks > 20 and multi > 3
    d = teacher.diagnostics
    assert 0 < d["xtok/chunk_final_share"] <= d["xtok/chunks_per_token"] <= 1
    # (A random student samples invalid UTF-8, whose U+FFFD costs the teacher 3 bytes.)
    assert d["xtok/teacher_tokens_per_token"] > 0


def test_the_scripted_unicode_turns_align_on_characters(episodes, teacher_policy):
    engine, trajs = episodes
    teacher = CrossTokenizerTeacher(teacher_policy, engine)
    shown = trajs[-1]
    alignments = teacher.align([shown])
    assert [a.text for a in alignments] == ["café 数字 東京 🙂 -1", "naïve 👍 <|im_end|> -2"]
    for a, turn in zip(alignments, shown.turns):
        body = list(turn.action_ids[:-1])
        n, m, chars = len(body), len(a.teacher_ids), len(a.text)
        assert a.chunks[-1] == Chunk((n, n + 1), (m - 1, m), (chars, chars))  # end markers
        for c in a.chunks[:-1]:
            assert engine.tokenizer.decode(body[: c.student[1]]) == a.text[: c.chars[1]]
            prefix = list(a.teacher_ids[: c.teacher[1]])
            assert teacher_policy.tokenizer.decode(prefix) == a.text[: c.chars[1]]
    # "数字" is 6 student bytes; the teacher's tokens end inside "字", so it is one chunk.
    first = alignments[0]
    spans = [first.text[c.chars[0] : c.chars[1]] for c in first.chunks]
    assert any("字" in s and len(s) >= 2 for s in spans)
    # The literal "<|im_end|>" in the text is text for the teacher, not its end token.
    assert list(alignments[1].teacher_ids).count(teacher.teacher_end_id) == 1


@torch.no_grad()
def test_privileged_context_changes_the_teachers_logprobs_not_the_tokens(episodes, teacher_policy):
    engine, trajs = episodes
    before = [(t.token_ids, t.action_mask) for t in trajs]
    plain = CrossTokenizerTeacher(teacher_policy, engine).score(trajs)
    hinted_teacher = CrossTokenizerTeacher(teacher_policy, engine, privileged=True)
    hinted = hinted_teacher.score(trajs)
    assert hinted.logprobs_N.shape == plain.logprobs_N.shape
    assert not torch.allclose(hinted.logprobs_N, plain.logprobs_N, atol=1e-3)
    assert [(t.token_ids, t.action_mask) for t in trajs] == before
    a = hinted_teacher.last_alignments[0]
    traj = trajs[a.trajectory]
    context = _teacher_context(teacher_policy, traj, a.turn, True)
    assert list(a.context_ids) == context
    assert privileged_before(traj, a.turn) in teacher_policy.tokenizer.decode(context)


def test_the_bpe_model_plays_multi_turn_episodes_as_a_student(teacher_policy):
    engine = RolloutEngine(teacher_policy, RolloutConfig(max_turns=2, max_new_tokens=6, seed=0))
    trajs = engine.run(ARITH, seeds=[0, 1])
    assert all(t.stop_reason.value != "env_error" for t in trajs)
    for t in trajs:
        assert teacher_policy.tokenizer.decode(list(t.token_ids)).startswith("<|im_start|>user\n")


@torch.no_grad()
def test_small_buckets_give_the_same_scores(episodes, teacher_policy):
    engine, trajs = episodes
    whole = CrossTokenizerTeacher(teacher_policy, engine).score(trajs).logprobs_N
    split = CrossTokenizerTeacher(teacher_policy, engine, max_batch_tokens=1, projection="last")
    assert torch.allclose(split.score(trajs).logprobs_N, whole, atol=1e-5)
    uniform = CrossTokenizerTeacher(teacher_policy, engine, projection="uniform").score(trajs)
    assert not torch.allclose(uniform.logprobs_N, whole)
    # Per action the two projections agree on the sum: the sequence-level signal.
    offset = 0
    for traj in trajs:
        for turn in traj.turns:
            n = len(turn.action_ids)
            a, b = whole[offset : offset + n].sum(), uniform.logprobs_N[offset : offset + n].sum()
            assert torch.isclose(a, b, atol=1e-4)
            offset += n
    with pytest.raises(InputError, match="projection must be 'last' or 'uniform'"):
        CrossTokenizerTeacher(teacher_policy, engine, projection="first")
