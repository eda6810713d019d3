"""Teacher sources: who scores the student's own action tokens, and with what context.

Every teacher gets the student's trajectories and returns a `TeacherSignal` for the action
tokens, in one fixed order (trajectory by trajectory, turn by turn, token by token: the
order of `action_rows`). Each action token is scored in its full conversation context, so
multi-turn trajectories are handled like single-turn ones.

Sources (survey axis "teacher access"; arXiv 2604.00626):
- `ModelTeacher`, white-box (full logits):
  - `update="fixed"`: another local model with the same tokenizer (a different vocabulary
    raises a clear error naming both sizes);
  - `update="snapshot"`: a frozen copy of the student, refreshed every K steps (K = 0: never);
  - `update="ema"`: an exponential moving average of the student;
  - `update="live"`: the student's own current weights (no copy);
  - `privileged=True` on any of them: the context is re-rendered with the environment's
    privileged information (reference answer, verifier feedback) in the system message, and
    the *same* action tokens are scored (OPSD/SDFT/SDPO-style privileged self-distillation).
    The notes on the teacher-free demo found that a *live* privileged self collapses (moving
    the student moves the teacher); a frozen snapshot is stable, so that is the default.
- `ServerTeacher`, grey-box: top-k log-probs from an OpenAI-compatible server (`opd serve`,
  vLLM) or any policy with `top_logprobs`; used with a top-k estimator.

Teacher scoring is forward-only (no gradient), batched over all sequences of a step.

"""

from opd_selfplay.teachers.base import (
    TeacherSignal,
    action_rows,
    privileged_before,
    sampled_token_ids,
    teacher_sequences,
)
from opd_selfplay.teachers.model import ModelTeacher
from opd_selfplay.teachers.server import ServerTeacher

__all__ = [
    "ModelTeacher",
    "ServerTeacher",
    "TeacherSignal",
    "action_rows",
    "privileged_before",
    "sampled_token_ids",
    "teacher_sequences",
]
