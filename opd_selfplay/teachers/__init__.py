"""Teacher sources: who scores the student's own action tokens, and with what context.

Every teacher gets the student's trajectories and returns a `TeacherSignal` for the action
tokens, in one fixed order (trajectory by trajectory, turn by turn, token by token: the
order of `action_rows`). Each action token is scored in its full conversation context, so
multi-turn trajectories are handled like single-turn ones.

Sources (survey axis "teacher access"; arXiv 2604.00626):
- `ModelTeacher`, white-box (full distribution, as hidden states + lm_head projected block
  by block by the loss, so no positions × vocabulary tensor is built):
  - `update="fixed"`: another local model with the same tokenizer (a different tokenizer
    is refused naming both sizes unless `teacher.cross_tokenizer` is set);
  - `update="snapshot"`: a frozen copy of the student, refreshed every K steps (K = 0: never);
  - `update="ema"`: an exponential moving average of the student;
  - `update="live"`: the student's own current weights (no copy);
  - `privileged=True` on any of them: the context is re-rendered with the environment's
    privileged information (reference answer; per turn, with `each_turn`, also the feedback
    so far; with `sibling`, a verified sibling's answer) in the system message, and the
    *same* action tokens are scored (OPSD/SDFT/SDPO-style privileged self-distillation):
    one teacher sequence per episode by default (`base.teacher_sequences`).
    The notes on the teacher-free demo found that a *live* privileged self collapses (moving
    the student moves the teacher); a frozen snapshot is stable, so that is the default.
- `ServerTeacher`, grey-box: top-k log-probs from an OpenAI-compatible server (`opd serve`,
  vLLM) or any policy with `top_logprobs`; used with a top-k estimator.
- `TextTeacher`, black-box (text only, any tokenizer): writes its own answer for each
  conversation the student reached (targets for cross-entropy), or judges the student's
  final answer 0-10 (a reward).
- `VerifiedSelfTeacher`, teacher-free: the best verified rollout of each group is the target
  of its failed siblings.
- `SpinOpponent`, self-play: the previous iterate plays the episodes and is SPIN's reference;
  the env's oracle answers are the real data.
- `CrossTokenizerTeacher` (`teachers.cross_tokenizer`), white-box with another tokenizer:
  the teacher's log-prob of the same text, aligned on common character boundaries.

Three shapes: scorers (`score` → `TeacherSignal`: ModelTeacher, ServerTeacher,
CrossTokenizerTeacher), target writers (`targets` → sequences with target positions:
TextTeacher in imitate mode, VerifiedSelfTeacher, SpinOpponent) and judges (`rewards`).
Every teacher has `name`, `after_step`, `state_dict` and `load_state_dict`.

Teacher scoring is forward-only (no gradient), batched over all sequences of a step.

"""

from opd_selfplay.teachers.base import (
    TeacherSignal,
    action_rows,
    privileged_before,
    sampled_token_ids,
    teacher_sequences,
)
from opd_selfplay.teachers.cross_tokenizer import CrossTokenizerTeacher
from opd_selfplay.teachers.model import ModelTeacher
from opd_selfplay.teachers.server import ServerTeacher
from opd_selfplay.teachers.spin import SpinOpponent
from opd_selfplay.teachers.text import TextTeacher
from opd_selfplay.teachers.verified import VerifiedSelfTeacher

__all__ = [
    "CrossTokenizerTeacher",
    "ModelTeacher",
    "ServerTeacher",
    "SpinOpponent",
    "TeacherSignal",
    "TextTeacher",
    "VerifiedSelfTeacher",
    "action_rows",
    "privileged_before",
    "sampled_token_ids",
    "teacher_sequences",
]
