"""Registration: built-in ids, skipped rows, `module:Id` ids, the listing, broken plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import gymnasium as gym

import opd_selfplay.envs
from opd_selfplay.envs import registry


def run_python(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_import_registers_our_ids_with_descriptions():
    ids = {e.id for e in opd_selfplay.envs.list_envs()}
    assert {"opd/Arithmetic-v0", "opd/Math-v0"} <= ids
    for entry in registry.BUILTIN_ENVS:
        registered = entry.id in gym.registry
        assert registered != (entry.id in registry.skipped_builtin())
        if registered:
            assert gym.registry[entry.id].entry_point == entry.entry_point
    listing = {e.id: e for e in registry.list_envs()}
    assert listing["opd/Arithmetic-v0"].source == "builtin"
    assert listing["opd/Arithmetic-v0"].description.startswith("procedural integer arithmetic")
    assert "CartPole-v1" not in listing
    assert "CartPole-v1" in {e.id for e in registry.list_envs(include_gymnasium=True)}


def test_rows_whose_module_is_missing_are_skipped_with_a_reason(monkeypatch):
    ghost = registry.EnvEntry("opd/Ghost-v0", "opd_selfplay.envs.no_such_env:Ghost", "not here")
    broken = registry.EnvEntry("opd/Broken-v0", "opd_selfplay.envs.arithmetic:NoSuchClass", "x")
    monkeypatch.setattr(registry, "BUILTIN_ENVS", (*registry.BUILTIN_ENVS, ghost, broken))
    done = registry.register_builtin()
    assert "opd/Ghost-v0" not in done and "opd/Ghost-v0" not in gym.registry
    skipped = registry.skipped_builtin()
    assert "ModuleNotFoundError" in skipped["opd/Ghost-v0"]
    assert "AttributeError" in skipped["opd/Broken-v0"]


def test_description_falls_back_to_the_class_metadata_and_docstring():
    class Documented(gym.Env):
        """First line of the docstring.

        More text.
        """

    gym.register("testdesc/Doc-v0", entry_point=Documented)
    gym.register("testdesc/Str-v0", entry_point="opd_selfplay.envs.math_env:MathEnv")
    gym.register("testdesc/Gone-v0", entry_point="no_such_module_abc:Env")
    try:
        assert registry.describe_env("testdesc/Doc-v0") == "First line of the docstring."
        assert registry.describe_env("testdesc/Str-v0").startswith("free-text math problems")
        assert registry.describe_env("testdesc/Gone-v0").startswith("(cannot import")
        listing = {e.id: e for e in registry.list_envs()}
        assert listing["testdesc/Doc-v0"].source == "registered"
    finally:
        for i in ("testdesc/Doc-v0", "testdesc/Str-v0", "testdesc/Gone-v0"):
            gym.registry.pop(i, None)


def test_module_colon_id_works_in_a_fresh_interpreter():
    proc = run_python(
        """
        import gymnasium as gym
        env = gym.make("opd_selfplay.envs:opd/Arithmetic-v0", difficulty=1)
        obs, info = env.reset(seed=0)
        print(obs, info["reference"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    prompt, ref = proc.stdout.split()
    a, b = prompt.rstrip("=").split("+")
    assert int(a) + int(b) == int(ref)


def test_importing_envs_does_not_import_torch_or_sympy():
    proc = run_python(
        """
        import sys, gymnasium as gym
        import opd_selfplay.envs
        gym.make("opd/Math-v0").reset(seed=0)
        gym.make("opd/Arithmetic-v0").reset(seed=0)
        print(sorted(m for m in ("torch", "transformers", "sympy") if m in sys.modules))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_broken_plugin_is_reported_not_raised(tmp_path):
    # A distribution made by hand (what pip writes): importlib.metadata finds its entry points.
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[opd_selfplay.envs]\nbroken = broken_plugin_mod\nmissing = not_there_at_all:register\n"
    )
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('plugin bug')\n")
    proc = run_python(
        """
        from opd_selfplay.envs import list_envs, plugin_errors
        print(sorted(plugin_errors().items()))
        print("opd/Arithmetic-v0" in {e.id for e in list_envs()})
        """,
        PYTHONPATH=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    errors, listed = proc.stdout.strip().splitlines()
    assert "broken = broken_plugin_mod" in errors and "RuntimeError: plugin bug" in errors
    assert "missing = not_there_at_all:register" in errors and "ModuleNotFoundError" in errors
    assert listed == "True"
    assert "env plugin broken = broken_plugin_mod failed to load" in proc.stderr
