"""Shared fixtures: the tiny model built once per session in a temporary cache, and markers.

Nothing here downloads anything. GPU-only tests (`gpu`, `vllm` markers) are skipped with a
reason when no CUDA device (or no vLLM) is present.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))  # for tests/toyenvs.py


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = _has_cuda()
    vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none present"))
        if "vllm" in item.keywords and not (cuda and vllm):
            item.add_marker(pytest.mark.skip(reason="needs vLLM (optional extra) and a CUDA GPU"))


@pytest.fixture(scope="session", autouse=True)
def opd_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private model cache for the whole session (also seen by CLI subprocesses)."""
    path = tmp_path_factory.mktemp("opd-cache")
    os.environ["OPD_CACHE_DIR"] = str(path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return path


@pytest.fixture(scope="session")
def tiny_path(opd_cache: Path) -> Path:
    """Folder of the built-in tiny model."""
    from opd_selfplay.agents.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tiny_policy(tiny_path: Path):
    """An `HFPolicy` over the tiny model on CPU, loaded through the public loading path."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from opd_selfplay.agents.loading import load_policy

    return load_policy("tiny", device="cpu")


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for `opd` subprocesses: same cache, tests importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
