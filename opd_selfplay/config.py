"""Training configuration: frozen dataclasses, validated on construction.

One source of truth for a config file (TOML or YAML), command-line overrides
(`teacher.kind=snapshot steps=100`), the presets, `opd train --help-config`, and the resolved
config saved in the run folder. An error names the field and the allowed values.

Any point of the survey's grid is a configuration: `objective.kind` picks the granularity
(token, sequence, outcome, hybrid), `teacher.kind` the teacher access (white-box model,
grey-box server, teacher-free snapshot / EMA / privileged self), `objective.divergence` the
f-divergence.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from opd_selfplay.errors import InputError

TEACHER_KINDS = (
    "privileged_self",
    "snapshot",
    "ema",
    "white_box",
    "grey_box",
    "black_box",
    "verified_self",
    "spin_opponent",
    "none",
)
OBJECTIVE_KINDS = ("token", "sequence", "outcome", "hybrid", "spin")
#: Teachers that write target text instead of scoring the student's tokens.
TARGET_TEACHERS = ("black_box", "verified_self")
SCHEDULES = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class RolloutSection:
    """How the student samples during training."""

    max_turns: int = 2
    """Actions per episode."""
    max_new_tokens: int = 8
    """Tokens per action."""
    max_context_tokens: int = 512
    """Tokens per episode."""
    temperature: float = 1.0
    """Sampling temperature during training."""
    top_p: float = 1.0
    """Nucleus mass during training."""
    sample_from: str = "student"
    """student (on-policy) | teacher (off-policy distillation: train on the teacher's own
    samples, the survey's baseline for on- vs off-policy at equal compute)."""


@dataclass(frozen=True)
class TeacherSection:
    """Who scores the student's tokens."""

    kind: str = "privileged_self"
    """privileged_self | snapshot | ema | white_box | grey_box | black_box | verified_self |
    spin_opponent | none."""
    model: str = ""
    """white_box: a model folder or 'tiny'; grey_box: a server URL or a model folder;
    black_box: a server URL (chat API) or a model folder/'tiny' (any tokenizer)."""
    cross_tokenizer: bool = False
    """white_box: the teacher has another tokenizer; score the student's text on aligned
    character spans (sampled-token log-probs: objective.kind=sequence; see
    docs/cross_tokenizer.md). Off: a different vocabulary is an error."""
    judge: bool = False
    """black_box: score the student's answers 0-10 as a reward (objective outcome/hybrid)
    instead of writing target answers (objective sequence/hybrid)."""
    judge_weight: float = 1.0
    """black_box judge: reward = (1 - w) * env reward + w * judge score."""
    privileged: bool = True
    """Add the env's privileged context to the teacher's prompt (always on for
    privileged_self)."""
    privileged_each_turn: bool = False
    """privileged teachers: re-render every turn with that turn's privileged context (the
    env's update after each step) instead of one sequence per episode with the reset's
    (about 1.2x the step cost on two-turn episodes; see teachers.base.teacher_sequences)."""
    sibling_hint: bool = False
    """privileged teachers: also show the final answer of the best verified rollout of the
    same task group (SDPO-style; pair with group_size > 1)."""
    live: bool = False
    """privileged_self: use the student's live weights instead of a frozen snapshot
    (collapses in our measurements; for experiments)."""
    refresh_every: int = 0
    """snapshot / privileged_self / spin_opponent: copy the student into the teacher every K
    steps (0 = never)."""
    ema_decay: float = 0.99
    """ema: weight of the old teacher in each update."""
    top_k: int = 20
    """grey_box: log-probs per position."""


@dataclass(frozen=True)
class ObjectiveSection:
    """The loss."""

    kind: str = "token"
    """token | sequence | outcome | hybrid | spin (with teacher.kind=spin_opponent). With
    black_box (imitate) and verified_self teachers, sequence means cross-entropy on their
    target text."""
    divergence: str = "forward_kl"
    """Divergence of the token-level loss (see opd_selfplay.divergences)."""
    beta: float = 0.5
    """jsd / jsd_normalized mixture weight."""
    alpha: float = 0.1
    """skew KL mixture weight."""
    kd_weight: float = 1.0
    """Weight of the distillation term (token, sequence, hybrid)."""
    outcome_weight: float = 1.0
    """Weight of the outcome (verifier reward) term (outcome, hybrid)."""
    clip_eps: float = 0.2
    """Importance-ratio clipping for policy-gradient terms."""
    ref_kl: float = 0.0
    """Coefficient of KL(student ‖ initial student) on action tokens (0 = off)."""
    spin_beta: float = 0.1
    """spin: inverse temperature λ of SPIN's implicit reward."""
    spin_nll: float = 1.0
    """spin: weight of a cross-entropy term on the real answers (RPO-style anchor). 0 = pure
    SPIN, which collapsed in our grid cell (0.32 → 0.04: both log-likelihoods fall and the
    student rambles); 1 gave 0.32 → 0.98."""


@dataclass(frozen=True)
class OptimSection:
    """Optimizer and schedule."""

    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Max gradient norm (0 = off)."""
    schedule: str = "constant"
    """constant | cosine | linear (decay to min_lr_ratio × lr after warmup)."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr (cosine, linear)."""
    micro_batch: int = 64
    """Trajectories per forward/backward (gradient accumulation over a step's batch)."""


@dataclass(frozen=True)
class WarmStartSection:
    """Supervised warm start on the env's oracle answers, before distillation (0 steps = off)."""

    steps: int = 0
    """Optimizer steps."""
    batch: int = 128
    """Demonstrations per step."""
    lr: float = 1e-3
    """Peak learning rate (cosine decay to 5%)."""
    hinted_fraction: float = 0.3
    """Fraction of demonstrations that carry the privileged context in the system message,
    so that the model learns to use it (needed by the privileged self-teacher)."""
    retry_fraction: float = 0.5
    """Fraction of demonstrations whose first answer is wrong, followed by the feedback and
    the right answer (multi-turn envs), teaching the conversation format."""
    target_success: float = 0.0
    """Stop early once held-out success (64 greedy episodes, checked every 25 steps) reaches
    this (0 = run all steps)."""


@dataclass(frozen=True)
class EvalSection:
    """Held-out evaluation."""

    every: int = 0
    """Evaluate every N steps (0 = only at the start and the end)."""
    episodes: int = 200
    """Held-out episodes (tasks from a seed range training never uses)."""
    temperature: float = 0.0
    """0 = greedy."""
    pass_k: int = 1
    """Samples per task for pass@k (k > 1 samples at temperature 1 when temperature is 0)."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run."""

    model: str = "tiny"
    """The student: 'tiny', a Hugging Face model folder, or a hub id."""
    env: str = "opd/Arithmetic-v0"
    """Environment id."""
    env_kwargs: dict[str, object] = field(default_factory=dict)
    """Keyword arguments for the environment."""
    steps: int = 100
    """Optimizer steps of distillation/RL."""
    tasks_per_step: int = 32
    """Tasks per step (each sampled group_size times)."""
    group_size: int = 2
    """Samples per task (G)."""
    seed: int = 0
    """Seed of everything: model init, task draws, sampling."""
    device: str = "cpu"
    """cpu | cuda | cuda:N."""
    dtype: str = "float32"
    """float32 | bfloat16."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""
    lora_rank: int = 0
    """LoRA rank through PEFT (0 = train all weights)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator."""
    max_wall_s: float = 0.0
    """Stop after this many seconds of warm start + training (0 = no limit; the warm start
    may use at most 40% of it); the steps reached are reported."""
    save_every: int = 0
    """Checkpoint every N steps (0 = only at the end)."""
    log_every: int = 1
    """Write metrics every N steps."""
    out: str = "runs/latest"
    """Run folder."""
    rollout: RolloutSection = field(default_factory=RolloutSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    optim: OptimSection = field(default_factory=OptimSection)
    warmstart: WarmStartSection = field(default_factory=WarmStartSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        _check_choice("teacher.kind", self.teacher.kind, TEACHER_KINDS)
        _check_choice("objective.kind", self.objective.kind, OBJECTIVE_KINDS)
        _check_choice("optim.schedule", self.optim.schedule, SCHEDULES)
        _check_choice("dtype", self.dtype, ("float32", "bfloat16", "float16"))
        for name, value, low in (
            ("steps", self.steps, 0),
            ("tasks_per_step", self.tasks_per_step, 1),
            ("group_size", self.group_size, 1),
            ("optim.micro_batch", self.optim.micro_batch, 1),
            ("eval.episodes", self.eval.episodes, 1),
            ("rollout.max_turns", self.rollout.max_turns, 1),
            ("rollout.max_new_tokens", self.rollout.max_new_tokens, 1),
            ("warmstart.steps", self.warmstart.steps, 0),
            ("eval.pass_k", self.eval.pass_k, 1),
        ):
            if value < low:
                raise InputError(f"config field {name} must be >= {low}, got {value}")
        if self.optim.lr <= 0:
            raise InputError(f"config field optim.lr must be > 0, got {self.optim.lr}")
        if self.teacher.kind in ("white_box", "grey_box", "black_box") and not self.teacher.model:
            raise InputError(
                f"config field teacher.model is required for teacher.kind={self.teacher.kind}"
            )
        if self.objective.kind in ("token", "sequence", "hybrid") and self.teacher.kind == "none":
            raise InputError(
                f"objective.kind={self.objective.kind} needs a teacher; set teacher.kind to one of "
                f"{', '.join(k for k in TEACHER_KINDS if k != 'none')} or objective.kind=outcome"
            )
        self._check_teacher_objective()
        _check_choice("rollout.sample_from", self.rollout.sample_from, ("student", "teacher"))
        if self.rollout.sample_from == "teacher" and (
            self.objective.kind != "token"
            or self.teacher.kind not in ("white_box", "snapshot", "ema", "privileged_self")
        ):
            raise InputError(
                "rollout.sample_from=teacher (off-policy distillation) needs objective.kind=token "
                "and a local teacher (white_box, snapshot, ema, privileged_self)"
            )
        if self.lora_rank < 0:
            raise InputError(f"config field lora_rank must be >= 0, got {self.lora_rank}")
        if not 0 < self.objective.beta < 1 and self.objective.divergence == "jsd":
            raise InputError(
                f"config field objective.beta must lie in (0, 1), got {self.objective.beta}"
            )

    def _check_teacher_objective(self) -> None:
        """The teacher kinds that do not score tokens fit only some objectives."""
        t, o = self.teacher.kind, self.objective.kind
        if (t == "spin_opponent") != (o == "spin"):
            raise InputError(
                "teacher.kind=spin_opponent and objective.kind=spin go together; "
                f"got teacher.kind={t}, objective.kind={o}"
            )
        if self.teacher.cross_tokenizer:
            if t != "white_box":
                raise InputError(
                    f"teacher.cross_tokenizer applies to teacher.kind=white_box, not {t}"
                )
            if self.rollout.sample_from != "student":
                raise InputError(
                    "teacher.cross_tokenizer: the teacher cannot sample with the student's "
                    "tokenizer; use rollout.sample_from=student"
                )
            from opd_selfplay.teachers.cross_tokenizer import check_objective

            check_objective(o)
        judge = t == "black_box" and self.teacher.judge
        if t in TARGET_TEACHERS and not judge and o not in ("sequence", "hybrid"):
            raise InputError(
                f"teacher.kind={t} writes target text: use objective.kind=sequence or hybrid "
                f"(got {o})"
            )
        if judge and o not in ("outcome", "hybrid"):
            raise InputError(
                f"teacher.judge=true gives rewards: use objective.kind=outcome or hybrid (got {o})"
            )

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"config field {name}={value!r} is not one of: {', '.join(allowed)}")


#: Common recipes, as overrides of the defaults.
PRESETS: dict[str, dict[str, object]] = {
    "opsd": {
        "teacher.kind": "privileged_self",
        "objective.kind": "token",
        "objective.divergence": "forward_kl",
    },
    "gkd": {"teacher.kind": "white_box", "objective.kind": "token", "objective.divergence": "jsd"},
    "tinker": {
        "teacher.kind": "white_box",
        "objective.kind": "sequence",
        "objective.divergence": "reverse_kl",
    },
    "grpo": {"teacher.kind": "none", "objective.kind": "outcome", "group_size": 4},
    "hybrid": {"teacher.kind": "privileged_self", "objective.kind": "hybrid", "group_size": 4},
    "seqkd": {"teacher.kind": "black_box", "objective.kind": "sequence"},
    "judge": {"teacher.kind": "black_box", "teacher.judge": True, "objective.kind": "outcome"},
    "rft": {"teacher.kind": "verified_self", "objective.kind": "sequence", "group_size": 4},
    "spin": {
        "teacher.kind": "spin_opponent",
        "objective.kind": "spin",
        "teacher.refresh_every": 25,
    },
    "snapshot": {
        "teacher.kind": "snapshot",
        "teacher.privileged": False,
        "teacher.refresh_every": 50,
    },
}


def _field_types(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _coerce(path: str, value: object, typ: object) -> object:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, Mapping):
            raise InputError(f"config field {path} must be a table/mapping")
        return _build(typ, value, path + ".")  # type: ignore[arg-type]
    if typ is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if isinstance(value, bool):
            return value
        raise InputError(f"config field {path} must be true or false, got {value!r}")
    if typ is int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"config field {path} must be an integer, got {value!r}") from None
    if typ is float:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"config field {path} must be a number, got {value!r}") from None
    if typ is str:
        return str(value)
    if origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InputError(
                    f"config field {path} must be a mapping (JSON on the command line)"
                ) from None
        if not isinstance(value, Mapping):
            raise InputError(f"config field {path} must be a mapping")
        return dict(value)
    return value


def _build(cls: type, data: Mapping[str, object], prefix: str = "") -> object:
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise InputError(
            f"unknown config field {prefix}{unknown[0]}; known fields: {', '.join(prefix + k for k in types)}"
        )
    kwargs = {k: _coerce(prefix + k, v, types[k]) for k, v in data.items()}
    return cls(**kwargs)


def _nest(overrides: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # type: ignore[assignment]
            if not isinstance(node, dict):
                raise InputError(f"config field {key}: {part} is not a section")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)  # type: ignore[arg-type]
        else:
            out[k] = v
    return out


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, object] | None = None,
    preset: str | None = None,
) -> TrainConfig:
    """Build a config: defaults ← preset ← file ← overrides.

    Args:
        path: a TOML (.toml) or YAML (.yaml/.yml) file, or a saved `config.json`.
        overrides: dotted keys (`teacher.kind`) to values (strings are converted).
        preset: a name from `PRESETS`.
    Raises:
        InputError: naming the field and the allowed values.
    """
    data: dict[str, object] = {}
    if preset:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        data = _merge(data, _nest(PRESETS[preset]))
    if path is not None:
        data = _merge(data, read_config_file(Path(path)))
    if overrides:
        data = _merge(data, _nest(overrides))
    return _build(TrainConfig, data)  # type: ignore[return-value]


def read_config_file(path: Path) -> dict[str, object]:
    """A config file's contents as nested dicts."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--config {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            loaded = yaml.safe_load(text) or {}
        else:
            loaded = json.loads(text)
    except Exception as exc:  # any parser's error is the user's input
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--config {path}: cannot parse: {first}") from None
    if not isinstance(loaded, dict):
        raise InputError(f"--config {path}: the top level must be a mapping")
    return loaded


def describe_fields(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, docstring) of every field, for `--help-config`."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[attr-defined]
    out = []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(describe_fields(type(value), prefix + f.name + "."))
        else:
            out.append((prefix + f.name, json.dumps(value), docs.get(f.name, "")))
    return out
