"""Fixtures for the sandbox and code-verifier tests: isolation availability, a host canary
process, and the "nothing outlives the run" check.

Tests that need namespace isolation take the `isolated` fixture, which skips them (with the
probe's reason) where bubblewrap cannot run. Nothing here is autouse, so the other verifier
tests in this folder are unaffected.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from opd_selfplay.verifiers import sandbox


@pytest.fixture(scope="session")
def isolated() -> str:
    """ "bwrap" when namespace isolation works here; skips the test otherwise."""
    works, reason = sandbox.bwrap_status()
    if not works:
        pytest.skip(f"needs bubblewrap isolation: {reason}")
    return "bwrap"


@pytest.fixture
def canary() -> Iterator[subprocess.Popen]:
    """A host process in a session of its own; hostile programs must leave it alive."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def host_ok(canary: subprocess.Popen) -> Callable[[str], None]:
    """`host_ok(run_id)`: nothing of the run survives it, and the host is untouched (the canary
    lives, this process can still start subprocesses)."""

    def check(run_id: str) -> None:
        survivors = sandbox.processes_of(run_id)
        assert survivors == [], f"processes outlived run {run_id}: {survivors}"
        assert canary.poll() is None, "the host canary process was killed"
        out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
        assert out.stdout.strip() == "42"

    return check
