"""Hard wall-time and memory limits for untrusted parsing, usable from any thread or process.

Verifiers parse and evaluate model output (LaTeX, sympy expressions) that can be made to run
for hours or allocate gigabytes (`9^{9^{9^9}}`). Such work runs here: in a small pool of
persistent worker processes, one call per worker at a time, under

- a **wall-time limit** per call, enforced by the caller: when it passes, the worker is killed
  (SIGKILL), a fresh one is started in its place and the call returns a `timeout` result;
- a **memory limit** per call: `RLIMIT_AS` is lowered in the worker for the duration of the
  call, to what the worker already maps plus `memory_mb`, so a blow-up raises `MemoryError`
  there (or kills that worker), never in the caller;
- a **CPU-time backstop** (`RLIMIT_CPU`), so a worker whose caller died stops on its own.

Why not `signal.alarm` (as Math-Verify does): it only works in the main thread of the main
interpreter, and it cannot interrupt a long C call (sympy's big-integer arithmetic). Why not
`multiprocessing`: its workers are daemonic (a `multiprocessing.Pool` worker cannot start
them), the `spawn` start method re-imports the caller's `__main__` (scripts without a
`__main__` guard recurse), and `fork` is unsafe in threaded callers. Workers here are plain
`subprocess` children (fork+exec, safe from threads) that import only this package and talk
over two pipes with length-prefixed pickles, so the pool works from threads, from
`multiprocessing` workers and from other pool workers alike.

Workers persist between calls, so a call costs one pipe round trip (tens of microseconds),
not a process start; the shared pool of `default_pool()` is created on first use and shut down
at interpreter exit. Time spent starting a worker or importing the function's module does not
count against a call's limit.

Not covered: this is not a sandbox for untrusted *code*. Functions and arguments are pickled
by the trusted caller and the worker runs trusted code on untrusted *data*; the results are
unpickled by the caller. Running model-written programs is the job of the code sandbox, which
adds namespaces, a scrubbed environment and file-system isolation.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import math
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "timeout", "memory", "error", "crashed"]

_HEADER = struct.Struct("!Q")
_MAX_MESSAGE = 1 << 31
_BOOT = (
    "import sys\n"
    # Not the working directory: a local file named like a module must not shadow it.
    "sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n"
    "from opd_selfplay.verifiers.limits import _worker_main\n"
    "_worker_main(int(sys.argv[1]), int(sys.argv[2]))\n"
)


@dataclass(frozen=True)
class LimitedResult:
    """What came back from one call under limits."""

    status: Status
    """`ok` (the function returned), `timeout` (wall-time limit hit; the worker was killed),
    `memory` (`MemoryError` under the memory limit), `error` (the function raised), `crashed`
    (the worker died, e.g. killed by the CPU backstop or an allocation failure in C)."""

    value: Any = None
    """The function's return value when `status == "ok"`, else None."""

    message: str = ""
    """Why the call did not return: the exception (`"ValueError: ..."`), the limit that was hit."""

    elapsed_s: float = 0.0
    """Wall time of the call itself, from the moment the worker started it."""

    @property
    def ok(self) -> bool:
        """Whether the function returned a value."""
        return self.status == "ok"


class _WorkerDied(Exception):
    """The worker's pipe closed: it exited or was killed."""


class _Deadline(Exception):
    """No message arrived before the deadline."""


def _write_message(fd: int, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise _Deadline
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise _WorkerDied
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _read_message(fd: int, deadline: float | None = None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > _MAX_MESSAGE:
        raise _WorkerDied
    return pickle.loads(_read_exact(fd, size, deadline))


# --------------------------------------------------------------------------- worker side


def _address_space_bytes() -> int:
    """Current virtual memory size of this process (what RLIMIT_AS counts)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _run_task(
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    memory_mb: float | None,
    timeout_s: float | None,
) -> tuple[Status, Any, str]:
    """Run `fn` under the memory limit and the CPU backstop, restoring both afterwards."""
    as_soft, as_hard = resource.getrlimit(resource.RLIMIT_AS)
    cpu_soft, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    try:
        if memory_mb is not None:
            limit = _address_space_bytes() + int(memory_mb * 2**20)
            if as_hard != resource.RLIM_INFINITY:
                limit = min(limit, as_hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, as_hard))
        if timeout_s is not None:
            # Backstop only: the caller enforces the wall limit. This one stops a worker whose
            # caller died mid-call, a few CPU seconds after the wall limit would have.
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = math.ceil(usage.ru_utime + usage.ru_stime + timeout_s) + 2
            if cpu_hard != resource.RLIM_INFINITY:
                cpu = min(cpu, cpu_hard)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu_hard))
        try:
            return "ok", fn(*args, **kwargs), ""
        except MemoryError:
            return "memory", None, f"MemoryError: more than {memory_mb} MB requested"
        except RecursionError:
            return "error", None, "RecursionError: input nested too deeply"
        except Exception as exc:
            return "error", None, f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (as_soft, as_hard))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))


def _import_all(modules: Iterable[str]) -> None:
    for name in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


def _worker_main(read_fd: int, write_fd: int) -> None:
    """Loop of a worker process: read a call, run it under limits, write the result."""
    # Ctrl-C in a terminal reaches the whole process group; the caller decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        init = _read_message(read_fd)
        _import_all(init.get("preload", ()))
        _write_message(write_fd, ("ready", os.getpid()))
        while True:
            try:
                message = _read_message(read_fd)
            except (_WorkerDied, OSError):
                break
            except Exception as exc:
                _write_message(write_fd, ("started",))
                _write_message(write_fd, ("done", "error", None, f"cannot load the task: {exc}"))
                continue
            if message[0] == "import":
                _import_all(message[1])
                _write_message(write_fd, ("ready", os.getpid()))
                continue
            _, fn, args, kwargs, memory_mb, timeout_s = message
            _write_message(write_fd, ("started",))
            status, value, text = _run_task(fn, args, kwargs, memory_mb, timeout_s)
            try:
                _write_message(write_fd, ("done", status, value, text))
            except Exception as exc:
                _write_message(write_fd, ("done", "error", None, f"result not picklable: {exc}"))
    except (_WorkerDied, BrokenPipeError, EOFError, KeyboardInterrupt):
        pass  # the caller closed the pipe: exit quietly
    os._exit(0)


# --------------------------------------------------------------------------- caller side


class _Worker:
    """One worker process and the caller's ends of its two pipes."""

    def __init__(self, preload: Sequence[str]) -> None:
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        env = dict(os.environ)
        # The worker must import this package from wherever the caller did.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.loaded: frozenset[str] = frozenset(preload)
        self.ready = False
        with contextlib.suppress(OSError):  # a child that failed to start shows in wait_ready
            _write_message(self.to_child, {"preload": list(preload)})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll_ready(self) -> bool:
        """Whether the worker has reported ready, without blocking."""
        if not self.ready:
            try:
                if select.select([self.from_child], [], [], 0)[0]:
                    self.wait_ready(1.0)
            except (OSError, ValueError, _Deadline, _WorkerDied, EOFError):
                return False
        return self.ready

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        message = _read_message(self.from_child, time.monotonic() + timeout_s)
        if message[0] != "ready":
            raise _WorkerDied
        self.ready = True

    def kill(self) -> None:
        for fd in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)

    def close(self, timeout_s: float = 2.0) -> None:
        """Ask the worker to exit (closing its input pipe), kill it if it does not."""
        with contextlib.suppress(OSError):
            os.close(self.to_child)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self.from_child)


_POOLS: weakref.WeakSet[LimitedPool] = weakref.WeakSet()


class LimitedPool:
    """A thread-safe pool of persistent worker processes running calls under hard limits.

    Workers start on demand, up to `max_workers`, and are reused; while there is room, one
    spare worker waits beside those in use. Each call holds one worker for its duration;
    callers beyond `max_workers` wait for a free one.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        preload: Sequence[str] = (),
        start_timeout_s: float = 120.0,
    ) -> None:
        """
        Args:
            max_workers: most worker processes at once (default: the number of CPUs, at least 2).
            preload: modules every worker imports at start, before it reports ready (heavy
                imports such as sympy then never count against a call's time limit).
            start_timeout_s: how long to wait for a new worker to start and import `preload`.
        """
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers or max(2, os.cpu_count() or 2)
        self.start_timeout_s = start_timeout_s
        self._preload: tuple[str, ...] = tuple(dict.fromkeys(preload))
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False
        self._pid = os.getpid()
        _POOLS.add(self)

    # -- public API -------------------------------------------------------------------

    def preload(self, modules: Sequence[str]) -> None:
        """Add modules that every worker imports before running a call (idempotent)."""
        with self._lock:
            self._preload = tuple(dict.fromkeys((*self._preload, *modules)))

    def warm(self, n: int = 1) -> None:
        """Start up to `n` workers now and wait until they are ready (avoids first-call lag)."""
        workers = [self._checkout() for _ in range(min(n, self.max_workers))]
        for worker in workers:
            self._checkin(worker)

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        timeout_s: float,
        memory_mb: float | None = None,
        **kwargs: Any,
    ) -> LimitedResult:
        """Call `fn(*args, **kwargs)` in a worker under the limits.

        Args:
            fn: a picklable function (module-level, importable by the worker).
            timeout_s: wall-time limit of the call, in seconds.
            memory_mb: how much more address space the call may map, in MiB (None: no limit).

        Returns:
            A `LimitedResult`; never raises for anything the call itself does.
        """
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        payload = pickle.dumps(
            ("call", fn, args, kwargs, memory_mb, timeout_s), protocol=pickle.HIGHEST_PROTOCOL
        )
        for attempt in (1, 2):
            worker = self._checkout()
            started = time.monotonic()
            try:
                _write_raw(worker.to_child, payload)
                _read_message(worker.from_child, time.monotonic() + self.start_timeout_s)
                break
            except (_Deadline, _WorkerDied, OSError, EOFError, pickle.UnpicklingError):
                # The worker died before starting the call (killed while idle): the call has
                # not run yet, so it is safe to try once more on a fresh worker.
                self._replace(worker)
                if attempt == 2:
                    return LimitedResult("crashed", None, "worker died before the call started")
        started = time.monotonic()
        try:
            _, status, value, message = _read_message(worker.from_child, started + timeout_s)
        except _Deadline:
            self._replace(worker)
            return LimitedResult(
                "timeout", None, f"no result within {timeout_s:g} s", time.monotonic() - started
            )
        except (_WorkerDied, OSError, EOFError, pickle.UnpicklingError):
            time.sleep(0.01)  # let the exit status arrive
            code = worker.proc.poll()
            self._replace(worker)
            how = f"exit status {code}" if code is not None else "no reply"
            return LimitedResult(
                "crashed", None, f"worker died ({how})", time.monotonic() - started
            )
        elapsed = time.monotonic() - started
        if status == "memory":
            self._replace(worker)  # its heap may be fragmented; start clean
        else:
            self._checkin(worker)
        return LimitedResult(status, value, message, elapsed)

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        timeout_s: float,
        memory_mb: float | None = None,
        processes: int | None = None,
    ) -> list[LimitedResult]:
        """`[run(fn, item) for item in items]`, on up to `processes` workers at once.

        Args:
            fn: a picklable one-argument function.
            items: the arguments, one call each; results come back in the same order.
            timeout_s: wall-time limit of each call.
            memory_mb: memory limit of each call (see `run`).
            processes: workers used at once (default: `max_workers`); the pool grows to it.

        Returns:
            One `LimitedResult` per item, in order.
        """
        items = list(items)
        if not items:
            return []
        processes = processes or self.max_workers
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        with self._lock:
            self.max_workers = max(self.max_workers, processes)
        if processes == 1:
            return [self.run(fn, item, timeout_s=timeout_s, memory_mb=memory_mb) for item in items]
        with ThreadPoolExecutor(max_workers=min(processes, len(items))) as executor:
            futures = [
                executor.submit(self.run, fn, item, timeout_s=timeout_s, memory_mb=memory_mb)
                for item in items
            ]
            return [future.result() for future in futures]

    def pids(self) -> list[int]:
        """Process ids of the current workers (idle and busy)."""
        with self._lock:
            return [w.pid for w in (*self._idle, *self._busy)]

    def shutdown(self) -> None:
        """Stop every worker and wait for it; calls still running get a `crashed` result."""
        with self._lock:
            self._closed = True
            idle, busy = self._idle, list(self._busy)
            self._idle = []
            self._available.notify_all()
        for worker in idle:
            if worker.poll_ready():
                worker.close()  # exits as soon as its input pipe closes
            else:
                worker.kill()  # still importing its modules: do not wait for it
        for worker in busy:
            worker.kill()

    def __enter__(self) -> LimitedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- internals --------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child inherits the parent's workers; they are not its own to use."""
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)
        for worker in (*self._idle, *self._busy):
            for fd in (worker.to_child, worker.from_child):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._idle, self._busy = [], set()
        self._pid = os.getpid()

    def _checkout(self) -> _Worker:
        if self._pid != os.getpid():
            self._after_fork_in_child()
        with self._lock:
            while True:
                if self._closed:
                    raise RuntimeError("LimitedPool is shut down; create a new one")
                if self._idle:
                    # A ready worker first: a replacement may still be importing its modules.
                    worker = next(
                        (w for w in reversed(self._idle) if w.poll_ready()), self._idle[-1]
                    )
                    self._idle.remove(worker)
                    break
                if len(self._busy) < self.max_workers:
                    worker = None
                    break
                self._available.wait()
            preload = self._preload
            if worker is None:
                worker = _Worker(preload)
            self._busy.add(worker)
            if not self._idle and len(self._busy) < self.max_workers:
                # Keep one spare booting or ready, so that a caller after a timeout does not
                # wait for the killed worker's replacement to import its modules.
                self._idle.append(_Worker(preload))
        try:
            worker.wait_ready(self.start_timeout_s)
            missing = [m for m in preload if m not in worker.loaded]
            if missing:
                _write_message(worker.to_child, ("import", missing))
                worker.ready = False
                worker.wait_ready(self.start_timeout_s)
                worker.loaded = worker.loaded | frozenset(missing)
        except (_Deadline, _WorkerDied, OSError, EOFError) as exc:
            worker.kill()
            with self._lock:
                self._busy.discard(worker)
                self._available.notify()
            raise RuntimeError(
                f"a limits worker did not start within {self.start_timeout_s:g} s "
                f"({type(exc).__name__}); check that '{sys.executable}' can import opd_selfplay"
            ) from None
        return worker

    def _checkin(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            if self._closed:
                worker.close()
            else:
                self._idle.append(worker)
            self._available.notify()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start its successor now, so it boots while the caller goes on."""
        worker.kill()
        with self._lock:
            self._busy.discard(worker)
            if not self._closed:
                self._idle.append(_Worker(self._preload))
            self._available.notify()


def _write_raw(fd: int, data: bytes) -> None:
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


_default_pool: LimitedPool | None = None
_default_lock = threading.Lock()


def default_pool() -> LimitedPool:
    """The process-wide shared pool, created on first use and shut down at exit."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = LimitedPool()
        return _default_pool


def run_limited(
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float,
    memory_mb: float | None = None,
    **kwargs: Any,
) -> LimitedResult:
    """Call `fn(*args, **kwargs)` in the shared pool under a wall-time and memory limit.

    Args:
        fn: a picklable function (module-level, importable by the worker).
        timeout_s: wall-time limit in seconds; on expiry the worker is killed and replaced.
        memory_mb: how much more address space the call may map, in MiB (None: no limit).

    Returns:
        A `LimitedResult` (`status` says whether the call returned, timed out, ran out of
        memory, raised, or crashed its worker).
    """
    return default_pool().run(fn, *args, timeout_s=timeout_s, memory_mb=memory_mb, **kwargs)


def shutdown_default_pool() -> None:
    """Stop the shared pool's workers (it is recreated on next use)."""
    global _default_pool
    with _default_lock:
        pool, _default_pool = _default_pool, None
    if pool is not None:
        pool.shutdown()


def _shutdown_all() -> None:
    for pool in list(_POOLS):
        if pool._pid == os.getpid():
            pool.shutdown()


def _reset_after_fork() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for pool in list(_POOLS):
        pool._after_fork_in_child()


atexit.register(_shutdown_all)
os.register_at_fork(after_in_child=_reset_after_fork)
