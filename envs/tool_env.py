"""`opd/ToolUse-v0`: multi-step tasks solved by calling tools over a small seeded world.

**Episode.** `reset` returns two messages: a system message that describes the tools the task
offers (their OpenAI schemas, compact JSON: the tools its plan uses and `N_DISTRACTORS` others,
or all of them with `toolset="all"`) and the conventions below, and the user's task. Each step is one
assistant message:

- **Tool calls**: Hermes/Qwen `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (one
  or more), or OpenAI-style JSON (`{"tool_calls": [...]}` or `{"name": ..., "arguments": ...}`),
  read by `opd_selfplay.verifiers.toolcalls.parse_tool_calls`. The env runs each call (at most
  `max_calls_per_turn`) and the observation is one `{"role": "tool", "content", "tool_call_id",
  "name"}` message per call. A malformed call (invalid JSON, an unknown tool, arguments of the
  wrong type) gets an `Error: ...` result or a user message saying what was wrong; the episode
  goes on. These steps are not checked answers (no verdict, reward 0).
- **Final answer**: a message with no tool call (and no broken attempt at one) is the final
  answer, written as `Answer: <value>` (else the last line is read). `ToolCallVerifier` checks
  it against the task's reference answer (numbers within a relative 1e-6) and, for tasks that
  change the world (bank transfers), the final account balances; the score is the mean of the
  parts and `correct` needs all. A wrong answer ends the episode (or, with `max_attempts > 1`,
  gets feedback and the agent may continue).
- `max_turns` (default 12) truncates an episode that never answers.

**Tasks** come from a seeded generator (`generate_task(rng, difficulty)`): a fresh world of
invented cities, people and bank accounts (so nothing can be answered from memory) and one of
eleven templates. `difficulty` 1: one or two lookups, unit conversion; 2: comparisons,
arithmetic over lookups, a transfer; 3: chains that need the Python tool or a lookup feeding
a transfer; 0 (the default): any of them. The world travels in the task's metadata, so a task
replays exactly (`reset(options={"task": task})`).

**Oracle.** Each task carries its reference plan: the tool calls that solve it, then the
answer. `oracle_action()` returns the first planned call that has not yet run successfully in
this episode (calls are matched by name and arguments), and the final `Answer: ...` once all
have; so an episode that follows the oracle replays the plan, and one that deviated (say, with
extra lookups) is brought back to it. `wrong_action()` answers with a value that is surely
wrong without calling any tool.

`info["privileged"]` holds the reference answer, the plan and the feedback on the last answer.
`info["tool_results"]` (step only) lists the results of this step's calls.

Not covered: parallel tool execution, tools that reach outside the world object, and judging
the agent's reasoning (only the answer and the final state are scored).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from opd_selfplay.verifiers.tool import ToolCallVerifier
from opd_selfplay.verifiers.toolcalls import parse_tool_calls
from opd_selfplay.verifiers.verdict import Verdict

from .base import Observation, Reply, TextTaskEnv
from .tasks import ProceduralSource, Task
from .tools import TOOLS, Tool, World, call_tool, convert_units, format_number

__all__ = ["N_DISTRACTORS", "TEMPLATES", "ToolUseEnv", "generate_task", "system_message"]

_Plan = list[dict[str, Any]]
_Template = Callable[[np.random.Generator, World], tuple[str, _Plan, Any, bool]]


def _call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"name": tool, "arguments": arguments}


def _round_half_up(x: float, digits: int = 0) -> float | int:
    scaled = math.floor(x * 10**digits + 0.5)
    return int(scaled) if digits == 0 else scaled / 10**digits


def _pick(rng: np.random.Generator, items: Sequence[str], k: int = 1) -> list[str]:
    return [items[int(i)] for i in rng.choice(len(items), size=k, replace=False)]


# Each template returns (question, plan, answer, changes_state). The plan is what the oracle
# replays; the answer is computed with the same tool code the agent calls.


def _t_population_sum(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    a, b = _pick(rng, list(w.cities), 2)
    pa, pb = w.cities[a]["population"], w.cities[b]["population"]
    plan = [_call("get_city", name=a), _call("get_city", name=b)]
    plan.append(_call("calculator", expression=f"{pa} + {pb}"))
    return f"What is the combined population of {a} and {b}?", plan, pa + pb, False


def _t_person_country(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    (p,) = _pick(rng, list(w.people))
    city = w.people[p]["city"]
    plan = [_call("get_person", name=p), _call("get_city", name=city)]
    return f"In which country does {p} live?", plan, w.cities[city]["country"], False


def _t_elevation_feet(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    (a,) = _pick(rng, list(w.cities))
    meters = w.cities[a]["elevation_m"]
    feet = _round_half_up(convert_units(float(meters), "m", "ft"))
    plan = [
        _call("get_city", name=a),
        _call("convert_units", value=meters, from_unit="m", to_unit="ft"),
    ]
    question = f"How high above sea level is {a}, in feet? Round to the nearest foot."
    return question, plan, feet, False


def _t_temperature(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    (a,) = _pick(rng, list(w.cities))
    celsius = int(rng.integers(-8, 9)) * 5
    fahrenheit = celsius * 9 // 5 + 32
    plan = [_call("convert_units", value=fahrenheit, from_unit="F", to_unit="C")]
    question = f"A thermometer in {a} reads {fahrenheit} °F. What is that in degrees Celsius?"
    return question, plan, celsius, False


def _t_road_km(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    a, b = _pick(rng, list(w.cities), 2)
    miles = int(rng.integers(12, 900))
    km = _round_half_up(convert_units(float(miles), "mi", "km"))
    plan = [_call("convert_units", value=miles, from_unit="mi", to_unit="km")]
    question = (
        f"The road from {a} to {b} is {miles} miles long. How long is it in kilometers, "
        "rounded to the nearest kilometer?"
    )
    return question, plan, km, False


def _residents(w: World, city: str) -> list[tuple[str, int]]:
    return [(n, int(p["age"])) for n, p in w.people.items() if p["city"] == city]


def _city_with_unique_oldest(rng: np.random.Generator, w: World) -> tuple[str, str] | None:
    options = []
    for city in w.cities:
        res = sorted(_residents(w, city), key=lambda r: -r[1])
        if len(res) >= 2 and res[0][1] > res[1][1]:
            options.append((city, res[0][0]))
    if not options:
        return None
    return options[int(rng.integers(len(options)))]


def _t_oldest(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    found = _city_with_unique_oldest(rng, w)
    if found is None:  # rare: no city has two residents; fall back to a lookup task
        return _t_person_country(rng, w)
    city, oldest = found
    plan = [_call("find_people", city=city)]
    return f"Who is the oldest person living in {city}? Give their full name.", plan, oldest, False


def _t_age_gap(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    people = list(w.people)
    for _ in range(20):
        p, q = _pick(rng, people, 2)
        if w.people[p]["age"] != w.people[q]["age"]:
            break
    if w.people[p]["age"] < w.people[q]["age"]:
        p, q = q, p
    ap, aq = w.people[p]["age"], w.people[q]["age"]
    plan = [_call("get_person", name=p), _call("get_person", name=q)]
    plan.append(_call("calculator", expression=f"{ap} - {aq}"))
    return f"How many years older is {p} than {q}?", plan, ap - aq, False


def _t_monthly_salary(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    (p,) = _pick(rng, list(w.people))
    salary = w.people[p]["salary"]
    monthly = _round_half_up(salary / 12, 2)
    plan = [_call("get_person", name=p), _call("calculator", expression=f"{salary} / 12")]
    question = (
        f"{p} is paid a yearly salary in twelve equal monthly payments. How many dollars is "
        "one payment, rounded to the cent?"
    )
    return question, plan, monthly, False


def _t_transfer(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    p, q = _pick(rng, list(w.accounts), 2)
    amount = int(rng.integers(1, max(2, w.accounts[p] // 10))) * 10
    plan = [
        _call("transfer", from_account=p, to_account=q, amount=amount),
        _call("get_balance", account=q),
    ]
    question = (
        f"Transfer ${amount} from {p}'s account to {q}'s account, then tell me {q}'s new "
        "balance in dollars."
    )
    return question, plan, w.accounts[q] + amount, True


def _t_digit_sum(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    (a,) = _pick(rng, list(w.cities))
    power = int(rng.integers(5, 12))
    pop = w.cities[a]["population"]
    answer = sum(int(d) for d in str(pop**power))
    code = f"print(sum(int(d) for d in str({pop} ** {power})))"
    plan = [_call("get_city", name=a), _call("python", code=code)]
    question = (
        f"Take the population of {a} and raise it to the power {power}. What is the sum of "
        "the decimal digits of the result?"
    )
    return question, plan, answer, False


def _t_oldest_transfer(rng: np.random.Generator, w: World) -> tuple[str, _Plan, Any, bool]:
    found = _city_with_unique_oldest(rng, w)
    if found is None:
        return _t_transfer(rng, w)
    city, oldest = found
    (q,) = _pick(rng, [n for n in w.accounts if n != oldest])
    amount = int(rng.integers(1, max(2, w.accounts[oldest] // 10))) * 10
    plan = [
        _call("find_people", city=city),
        _call("transfer", from_account=oldest, to_account=q, amount=amount),
        _call("get_balance", account=oldest),
    ]
    question = (
        f"Send ${amount} from the account of the oldest person living in {city} to {q}. "
        "What is the sender's balance afterwards, in dollars?"
    )
    return question, plan, w.accounts[oldest] - amount, True


#: The task templates by difficulty (1 easy .. 3 hard).
TEMPLATES: dict[int, tuple[_Template, ...]] = {
    1: (_t_population_sum, _t_person_country, _t_elevation_feet, _t_temperature, _t_road_km),
    2: (_t_oldest, _t_age_gap, _t_monthly_salary, _t_transfer),
    3: (_t_digit_sum, _t_oldest_transfer),
}


def _apply_plan_state(world: World, plan: _Plan) -> dict[str, int]:
    """The balances after the plan's transfers (computed on a copy with the tools' code)."""
    copy = World.from_json(world.to_json())
    for step in plan:
        if step["name"] == "transfer":
            result = call_tool(copy, "transfer", step["arguments"], TOOLS)
            assert not result.startswith("Error"), result
    return dict(copy.accounts)


def generate_task(rng: np.random.Generator, difficulty: int = 0) -> Task:
    """A random tool-use task with its world, reference answer and plan.

    Args:
        rng: the env's generator; every random choice is drawn from it.
        difficulty: 1, 2 or 3 (see the module docstring); 0 for any.

    Returns:
        The task. `reference` is `{"answer": ...}` plus `{"state": {"accounts": ...}}` for
        tasks that change the world; `metadata` holds the world, the plan and the template.
    """
    if difficulty not in (0, 1, 2, 3):
        raise ValueError(f"ToolUse difficulty must be 0 (any), 1, 2 or 3, got {difficulty!r}")
    world = World.generate(rng)
    pool = TEMPLATES[difficulty] if difficulty else tuple(t for v in TEMPLATES.values() for t in v)
    template = pool[int(rng.integers(len(pool)))]
    question, plan, answer, changes = template(rng, world)
    reference: dict[str, Any] = {"answer": answer}
    if changes:
        reference["state"] = {"accounts": _apply_plan_state(world, plan)}
    shown = answer if isinstance(answer, str) else format_number(answer)
    # The tools offered: those the plan uses and a few distractors, so that choosing a tool is
    # part of the task (and the system message stays short enough for small context windows).
    needed = {step["name"] for step in plan}
    others = [n for n in TOOLS if n not in needed]
    picked = {others[int(i)] for i in rng.choice(len(others), size=N_DISTRACTORS, replace=False)}
    offered = [n for n in TOOLS if n in needed or n in picked]
    return Task(
        prompt=question,
        reference=reference,
        id=f"tooluse-{template.__name__[3:]}-{zlib.crc32(question.encode()):08x}",
        solution=f"Answer: {shown}",
        metadata={
            "template": template.__name__[3:],
            "difficulty": difficulty,
            "world": world.to_json(),
            "plan": plan,
            "tools": offered,
        },
    )


N_DISTRACTORS = 2
"""Tools offered beyond those a generated task's plan uses."""

_SYSTEM = """Solve the user's task with these tools (OpenAI tool schemas):
{schemas}
Call tools as <tool_call>{{"name": "...", "arguments": {{...}}}}</tool_call> (one or more per
message); results come back as tool messages. To finish, reply without a tool call, ending
with: Answer: <your answer>"""


def system_message(tools: Sequence[Tool]) -> str:
    """The system message that lists `tools` (compact JSON schemas, one per line).

    Args:
        tools: the tools offered.

    Returns:
        The text.
    """
    schemas = "\n".join(json.dumps(t.schema, separators=(",", ":")) for t in tools)
    return _SYSTEM.format(schemas=schemas)


class ToolUseEnv(TextTaskEnv):
    """Tool-use tasks over a seeded world; see the module docstring.

    Args:
        difficulty: 0 (any template, default), 1, 2 or 3.
        tasks: A task source to use instead of the generator (tasks in `generate_task`'s
            shape: world and plan in the metadata).
        max_turns: Steps before truncation (tool calls count).
        max_attempts: Final answers allowed (1: the first answer ends the episode).
        max_calls_per_turn: Calls run per message; further ones get an error result.
        toolset: "task" (default): the tools in the task's metadata ("tools": the plan's and
            `N_DISTRACTORS` others; all tools when absent); "all": every tool of `TOOLS`.
        render_mode: None or "ansi".
    """

    metadata = {"render_modes": ["ansi"], "description": "tool-use tasks"}  # noqa: RUF012

    def __init__(
        self,
        difficulty: int = 0,
        *,
        tasks: Any = None,
        max_turns: int = 12,
        max_attempts: int = 1,
        max_calls_per_turn: int = 8,
        toolset: Literal["task", "all"] = "task",
        render_mode: str | None = None,
    ) -> None:
        if difficulty not in (0, 1, 2, 3):
            raise ValueError(f"ToolUse difficulty must be 0 (any), 1, 2 or 3, got {difficulty!r}")
        if toolset not in ("task", "all"):
            raise ValueError(f"toolset must be 'task' or 'all', got {toolset!r}")
        self.toolset = toolset
        self.tools: dict[str, Tool] = dict(TOOLS)
        super().__init__(
            tasks if tasks is not None else ProceduralSource(generate_task, int(difficulty)),
            max_attempts=max_attempts,
            max_turns=max_turns,
            # replaced at each reset by the task's own tool list (see `reset`)
            system_prompt=system_message(list(TOOLS.values())),
            render_mode=render_mode,
        )
        self.max_calls_per_turn = int(max_calls_per_turn)
        self.verifier = ToolCallVerifier(time_limit_s=5.0)
        self.world = World()
        self._done_calls: list[str] = []
        self._tool_results: list[dict[str, str]] = []

    # ------------------------------------------------------------------------ reset ---
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        obs, info = super().reset(seed=seed, options=options)
        assert self.task is not None and isinstance(obs, list)
        names = self.task.metadata.get("tools") if self.toolset == "task" else None
        if names is not None and not (
            isinstance(names, Sequence) and all(n in TOOLS for n in names)
        ):
            raise ValueError(
                f"task {self.task.id}: metadata 'tools' must name tools of {list(TOOLS)}"
            )
        self.tools = {n: TOOLS[n] for n in (names or TOOLS)}
        obs[0] = {"role": "system", "content": system_message(list(self.tools.values()))}
        self.world = World.from_json(self.task.metadata.get("world") or {})
        self._done_calls = []
        self._tool_results = []
        return obs, info

    # ------------------------------------------------------------------------- steps ---
    def respond(self, action: str) -> Reply:
        assert self.task is not None
        self._tool_results = []
        parsed = parse_tool_calls(action)
        if not parsed.calls and not parsed.errors:
            return Reply(verdict=self.safe_verify(self._verify_answer, action))
        messages: list[dict[str, str]] = []
        for i, call in enumerate(parsed.calls):
            call_id = call.id or f"call_{self._turn}_{i}"
            if i >= self.max_calls_per_turn:
                result = f"Error: not run; at most {self.max_calls_per_turn} calls per message"
            else:
                result = call_tool(self.world, call.name, call.arguments, self.tools)
                if not result.startswith("Error"):
                    self._done_calls.append(_call_key(call.name, call.arguments))
            messages.append(
                {"role": "tool", "content": result, "tool_call_id": call_id, "name": call.name}
            )
            self._tool_results.append({"name": call.name, "result": result[:2000]})
        if parsed.errors:
            lines = "\n".join(f"- {e.message}" for e in parsed.errors[:5])
            messages.append(
                {
                    "role": "user",
                    "content": "Some tool calls could not be read:\n"
                    + lines
                    + '\nWrite each call as <tool_call>{"name": ..., "arguments": {...}}'
                    "</tool_call>, or answer with `Answer: ...` and no call.",
                }
            )
        return Reply(observation=messages)

    def _verify_answer(self, action: str) -> Verdict:
        assert self.task is not None
        reference = self.task.reference
        assert isinstance(reference, Mapping)
        state = {"accounts": dict(self.world.accounts)} if "state" in reference else None
        verdict = self.verifier.verify(action, reference, state=state)
        # Timings in details would make two identical episodes differ (Gymnasium checks that).
        details = {k: v for k, v in verdict.details.items() if k != "elapsed_s"}
        return Verdict(verdict.score, verdict.correct, verdict.feedback, details)

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        if self._tool_results:
            info["tool_results"] = list(self._tool_results)
        return info

    # ----------------------------------------------------------------- privileged ---
    def reference_text(self, task: Task) -> str:
        ref = task.reference if isinstance(task.reference, Mapping) else {}
        answer = ref.get("answer")
        shown = format_number(answer) if isinstance(answer, (int, float)) else str(answer)
        text = f"answer: {shown}"
        if "state" in ref:
            text += "; the transfers in the plan must be made"
        return text

    def render_privileged(self, task: Task, feedback: str) -> str:
        plan = task.metadata.get("plan") or []
        steps = "\n".join(
            f"{i + 1}. {s['name']}({json.dumps(s['arguments'], ensure_ascii=False)})"
            for i, s in enumerate(plan)
        )
        text = f"Reference {self.reference_text(task)}\nReference plan:\n{steps}\n{task.solution}"
        if feedback:
            text += f"\nFeedback on the last answer: {feedback}"
        return text

    # -------------------------------------------------------------------- oracle ---
    def oracle_action(self) -> str | None:
        """The next call of the reference plan not yet run successfully in this episode, as a
        Hermes tool call; once all have run, the final `Answer: ...`."""
        if self.task is None or self._done:
            return None
        done = list(self._done_calls)
        for step in self.task.metadata.get("plan") or []:
            key = _call_key(step["name"], step["arguments"])
            if key in done:
                done.remove(key)
                continue
            body = json.dumps({"name": step["name"], "arguments": step["arguments"]})
            return f"<tool_call>{body}</tool_call>"
        return self.task.solution

    def wrong_action(self) -> str | None:
        """A final answer that cannot match: no tool call, an impossible value."""
        return "Answer: -1234567.5 (a guess)"


def _call_key(name: str, arguments: Mapping[str, Any]) -> str:
    return json.dumps([name, arguments], sort_keys=True, ensure_ascii=False)
