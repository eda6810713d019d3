"""The limits pool: wall-time and memory limits that hold from threads and from other processes.

Functions sent to workers are builtins (`pow`, `time.sleep`, `bytearray`, `sum`), which every
worker can import, so nothing here depends on how pytest imports this file.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from opd_selfplay.verifiers.limits import LimitedPool, LimitedResult, run_limited


@pytest.fixture
def pool():
    with LimitedPool(max_workers=2) as p:
        p.warm(1)
        yield p


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return False
    return "State:\tZ" not in status.read_text()  # a zombie has exited


def test_a_call_returns_its_value(pool: LimitedPool) -> None:
    result = pool.run(pow, 2, 10, timeout_s=5)
    assert result == LimitedResult("ok", 1024, "", result.elapsed_s)
    assert result.ok and result.elapsed_s < 5


def test_an_exception_is_a_result_with_its_message(pool: LimitedPool) -> None:
    result = pool.run(int, "x", timeout_s=5)
    assert result.status == "error" and not result.ok
    assert result.message.startswith("ValueError: invalid literal")


def test_a_timeout_returns_within_the_limit_and_replaces_the_worker(pool: LimitedPool) -> None:
    before = set(pool.pids())
    started = time.monotonic()
    result = pool.run(time.sleep, 60, timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result.status == "timeout" and "1 s" in result.message
    assert elapsed < 2.0
    killed = before - set(pool.pids())
    assert len(killed) == 1 and not any(_alive(pid) for pid in killed)
    assert pool.run(pow, 3, 3, timeout_s=30).value == 27  # the pool still works


def test_a_long_c_call_is_stopped_too(pool: LimitedPool) -> None:
    # `sum` over a huge range runs in C and never returns to the interpreter: no signal-based
    # timeout could interrupt it.
    started = time.monotonic()
    result = pool.run(sum, range(10**13), timeout_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - started < 2.0


def test_a_memory_blow_up_is_contained(pool: LimitedPool) -> None:
    result = pool.run(bytearray, 8 * 2**30, timeout_s=10, memory_mb=256)
    assert result.status == "memory" and "MemoryError" in result.message
    # Well under the limit is fine, and the caller never allocated the 8 GiB.
    assert pool.run(len, b"x" * 1000, timeout_s=10, memory_mb=256).value == 1000
    with open("/proc/self/status") as f:
        rss_kb = int(next(line for line in f if line.startswith("VmRSS")).split()[1])
    assert rss_kb < 4 * 2**20


def test_a_dying_worker_is_reported_and_replaced(pool: LimitedPool) -> None:
    result = pool.run(os._exit, 3, timeout_s=5)
    assert result.status == "crashed" and "worker died" in result.message
    assert pool.run(pow, 2, 3, timeout_s=30).value == 8


def test_calls_from_many_threads_at_once(pool: LimitedPool) -> None:
    def call(k: int) -> object:
        if k % 7 == 3:
            return pool.run(time.sleep, 30, timeout_s=0.5).status
        return pool.run(pow, k, 2, timeout_s=30).value

    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(call, range(28)))
    assert results == ["timeout" if k % 7 == 3 else k * k for k in range(28)]
    assert len(pool.pids()) <= 2


def test_map_keeps_order_and_limits_each_item(pool: LimitedPool) -> None:
    results = pool.map(functools.partial(pow, 2), [1, 2, 3, 4], timeout_s=10, processes=2)
    assert [r.value for r in results] == [2, 4, 8, 16]
    mixed = pool.map(time.sleep, [0, 30, 0], timeout_s=0.5, processes=2)
    assert [r.status for r in mixed] == ["ok", "timeout", "ok"]


def test_usable_from_a_multiprocessing_worker_and_from_a_limits_worker() -> None:
    # multiprocessing pool workers are daemonic and may not start multiprocessing children;
    # limits workers are plain subprocesses, so the pool works there as well.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as executor:
        result = executor.submit(run_limited, pow, 2, 5, timeout_s=30).result(timeout=120)
    assert result.value == 32
    nested = run_limited(functools.partial(run_limited, pow, 3, 4, timeout_s=60), timeout_s=90)
    assert nested.ok and nested.value.value == 81


def test_no_worker_outlives_shutdown() -> None:
    pool = LimitedPool(max_workers=2)
    assert pool.run(time.sleep, 30, timeout_s=0.5).status == "timeout"
    threads = [
        threading.Thread(target=pool.run, args=(pow, 2, 2), kwargs={"timeout_s": 30})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = pool.pids()
    assert pids and all(_alive(pid) for pid in pids)
    pool.shutdown()
    assert not any(_alive(pid) for pid in pids)
    assert pool.pids() == []
    with pytest.raises(RuntimeError, match="shut down"):
        pool.run(pow, 2, 2, timeout_s=1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        LimitedPool(max_workers=0)
    with LimitedPool(max_workers=1) as p:
        with pytest.raises(ValueError, match="timeout_s must be positive"):
            p.run(pow, 2, 2, timeout_s=0)
        with pytest.raises((AttributeError, TypeError, Exception), match="pickle|lambda|local"):
            p.run(lambda: 1, timeout_s=1)
