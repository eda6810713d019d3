"""A real plugin package (tests/plugin_pkg, its own pyproject.toml) is installed, found through
the `opd_selfplay.envs` entry point, listed and checked.

It is installed with pip into a temporary folder (`--target`, offline, no build isolation)
rather than into the shared virtual environment, and that folder is put on `PYTHONPATH` of
the subprocesses: `importlib.metadata` finds entry points on any `sys.path` entry, exactly as
in site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugin_pkg"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> str:
    work = tmp_path_factory.mktemp("plugin")
    src = work / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = work / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--quiet", "--disable-pip-version-check", "--target", str(site), str(src)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    except (OSError, subprocess.TimeoutExpired) as exc:  # pragma: no cover
        pytest.skip(f"cannot run pip to install the test plugin: {exc}")
    if proc.returncode != 0:  # pragma: no cover - e.g. no setuptools in the environment
        pytest.skip(f"pip could not install tests/plugin_pkg: {proc.stderr.strip()[-300:]}")
    assert (site / "opd_plugin_example").is_dir()
    return str(site)


def run(args: list[str], site: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": site}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_plugin_envs_are_listed(plugin_site):
    proc = run(["-m", "opd_selfplay", "envs", "list", "--source"], plugin_site)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "opd/Arithmetic-v0" in lines
    reverse, countdown = lines["example/Reverse-v0"], lines["example/Countdown-v0"]
    # module entry point: description from the class docstring
    assert "Reverse a word; the answer is the last whitespace-separated token" in reverse
    # callable entry point: description from the class metadata
    assert "count down from N to 0 (plugin example)" in countdown
    assert reverse.endswith("[plugin:opd-plugin-example]")
    assert countdown.endswith("[plugin:opd-plugin-example]")


def test_plugin_envs_pass_the_check(plugin_site):
    proc = run(
        ["-m", "opd_selfplay", "envs", "check", "example/Reverse-v0", "example/Countdown-v0"],
        plugin_site,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == ["example/Reverse-v0: ok", "example/Countdown-v0: ok"]


def test_plugin_envs_make_after_importing_opd_envs(plugin_site):
    code = (
        "import gymnasium as gym, opd_selfplay.envs\n"
        "env = gym.make('example/Reverse-v0', difficulty=2)\n"
        "obs, info = env.reset(seed=0)\n"
        "word = obs.split(': ')[1]\n"
        "print(env.step('So: ' + word[::-1])[1], info['privileged'])\n"
    )
    proc = run(["-c", code], plugin_site)
    assert proc.returncode == 0, proc.stderr
    reward, privileged = proc.stdout.strip().split(" ", 1)
    assert reward == "1.0"
    assert privileged.startswith("Reference answer: ")
