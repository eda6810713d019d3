"""Held-out evaluation: success rate, pass@k, turns, action length, stop reasons.

Tasks come from a seed range that training never draws from (`EVAL_SEED_BASE` onwards), so
"held-out" holds for any procedural env. Greedy by default; pass@k uses k samples per task
(at temperature 1 when the evaluation is greedy) and the unbiased estimator of Chen et al.
2021 ("Evaluating Large Language Models Trained on Code"), with n = k here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

from opd_selfplay.rollout import RolloutConfig, RolloutEngine
from opd_selfplay.types import Trajectory

#: Evaluation tasks use seeds from here on; training seeds stay below it.
EVAL_SEED_BASE = 1_000_000_000


def eval_seeds(episodes: int, offset: int = 0) -> list[int]:
    """The held-out task seeds."""
    return list(range(EVAL_SEED_BASE + offset, EVAL_SEED_BASE + offset + episodes))


def summarize(trajectories: list[Trajectory], group_size: int = 1) -> dict[str, float]:
    """Metrics of a batch of trajectories (grouped by task when `group_size` > 1)."""
    n = len(trajectories)
    if n == 0:
        return {"episodes": 0.0}
    success = [t.success for t in trajectories]
    groups = [success[i : i + group_size] for i in range(0, n, group_size)]
    reasons = Counter(t.stop_reason.value for t in trajectories)
    out = {
        "episodes": float(n),
        "success": sum(success) / n,
        "reward": sum(t.reward for t in trajectories) / n,
        "first_try_success": sum(bool(t.verdicts and t.verdicts[0].correct) for t in trajectories)
        / n,
        "mean_turns": sum(len(t.turns) for t in trajectories) / n,
        "mean_action_tokens": sum(t.num_action_tokens for t in trajectories)
        / max(1, sum(len(t.turns) for t in trajectories)),
        f"pass@{group_size}": sum(any(g) for g in groups) / len(groups),
    }
    out.update({f"stop/{k}": v / n for k, v in reasons.items()})
    return out


def evaluate(
    engine: RolloutEngine,
    env: str,
    episodes: int,
    env_kwargs: Mapping[str, object] | None = None,
    temperature: float = 0.0,
    pass_k: int = 1,
) -> tuple[dict[str, float], list[Trajectory]]:
    """Play `episodes` held-out tasks (× `pass_k` samples) and summarise.

    Returns:
        (metrics, trajectories).
    """
    temp = temperature if pass_k == 1 or temperature > 0 else 1.0
    cfg: RolloutConfig = replace(engine.config, temperature=temp, seed=EVAL_SEED_BASE)
    evaluator = RolloutEngine(engine.policy, cfg, tools=engine.tools)
    trajs = evaluator.run(env, eval_seeds(episodes), group_size=pass_k, env_kwargs=env_kwargs)
    return summarize(trajs, pass_k), trajs
