"""Runs untrusted Python in its own process tree, under limits, isolated by Linux namespaces.

Every run starts `python -I -S -B` inside bubblewrap (`bwrap`) on `harness.py` (the trusted
runner that sets the limits, drops privileges, then runs the program; compiled once on the
host and handed over through a file descriptor, like the program and its inputs), waits for
it under a wall clock, captures capped stdout/stderr and the harness's result channel, and
kills the whole tree before returning. `CodeVerifier` builds on `Sandbox.run_harness`;
`run_python` is the plain "run this program" entry point (the Python tool of
`opd/ToolUse-v0`). Isolation details (the bwrap command line, uids, finding processes) live
in `isolation.py`.

Threat model
------------
Protected against, with bwrap (`isolation == "bwrap"`):

- Runaway programs: wall-clock and CPU limits (infinite loops, also at import time); an
  address-space limit per process (memory bombs); a process-count limit (fork storms); capped
  stdout/stderr (floods are killed when they pass the cap); a file-size limit, and the only
  writable places are size-capped tmpfs mounts (`/work`, the working directory, which `/tmp`
  points to, and `/dev/shm`), so the host's disk cannot be filled.
- Reaching the host: the file system is a fresh root holding read-only binds of `/usr` (with
  `/bin`, `/lib*`) and the Python installation, nothing else; no home, project, data sets or
  `/etc` beyond the loader cache, so no reference or secret file is visible and nothing outside
  the working directory can be written. A new network namespace (loopback only: listeners on
  the host's 127.0.0.1 are unreachable), PID namespace (the program sees and can signal only
  its own tree: killing its parent, its process group or `kill(-1)` stays inside), IPC and UTS
  namespaces, and a new session (no terminal injection).
- Secrets: the program gets a fixed, small environment, and bwrap itself is started with it
  (its `/proc/1/environ` is readable from inside). No capabilities; `no_new_privs`, so setuid
  binaries do not elevate. When the host runs as root, the harness drops to a random
  unprivileged uid before the program starts (the process-count limit then binds, and root's
  files stay out of reach).
- Leftovers: when the program's main process ends or a limit is hit, the PID namespace's init
  dies and the kernel kills every process in it (daemons, orphans, double forks); `run`
  returns only after that.

Not protected against: kernel exploits (namespaces share the host kernel; use a VM such as
gVisor or Firecracker for adversaries with kernel 0-days); the total memory of a sandbox's
processes (each is capped, so the worst case is `nproc × memory_mb`: there are no cgroups
here); CPU contention and timing or /proc side channels (`/proc/cpuinfo` is readable); reading
the world-readable files of `/usr` and the Python installation.

Weaker mode (`isolation == "rlimit"`), used when bwrap is missing or cannot create namespaces
(some containers, Ubuntu's AppArmor user-namespace restriction): the same resource limits, a
fresh working directory, a scrubbed environment, a new session and a sweep for leftovers after
the run; but the program can read every file the user can, use the network, see and signal the
user's other processes, and, as the same user, read the verifier's own memory. It warns once
(`SandboxWarning`) and every result says `isolation="rlimit"` with the reason in `warning`.
Set `OPD_SANDBOX=rlimit` or `bwrap` to force a mode (`bwrap` raises when it cannot work).
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal

from .isolation import (
    BOOT,
    FEATURES,
    HARNESS,
    INSIDE_WORK,
    bwrap_argv,
    drop_uid,
    harness_code,
    nproc_limit,
    processes_of,
    python,
    sweep,
)

__all__ = [
    "HARNESS",
    "Limits",
    "Sandbox",
    "SandboxResult",
    "SandboxUnavailable",
    "SandboxWarning",
    "bwrap_status",
    "processes_of",
    "run_python",
]

ISOLATIONS = ("auto", "bwrap", "rlimit")
_GRACE_S = 0.25  # wall-clock allowance for starting the sandbox and the interpreter
_RESULT_CAP = 32 << 20  # bytes of result-channel records kept (tests × values)


class SandboxUnavailable(RuntimeError):
    """`isolation="bwrap"` was asked for and bubblewrap cannot run here."""


class SandboxWarning(RuntimeWarning):
    """Programs run without namespace isolation (rlimit-only mode)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    wall_s: float = 10.0
    """Wall-clock seconds for the whole run; the tree is killed past it."""
    cpu_s: float | None = None
    """CPU seconds per process (SIGXCPU, then SIGKILL a second later); None: `wall_s`."""
    memory_mb: int = 512
    """Address space per process, MiB (allocations past it fail with MemoryError)."""
    file_size_mb: int = 16
    """Largest file a process may write, MiB."""
    disk_mb: int = 64
    """Size of the writable tmpfs (`/work`, `/tmp`) and of `/dev/shm`, MiB (bwrap only)."""
    nproc: int = 16
    """Processes and threads the sandbox may hold at once."""
    open_files: int = 256
    """File descriptors per process."""
    output_bytes: int = 1 << 20
    """Cap on stdout and on stderr, each; the run is killed when a stream passes it."""

    def __post_init__(self) -> None:
        for name in ("wall_s", "memory_mb", "file_size_mb", "disk_mb", "nproc", "open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.cpu_s is not None and not self.cpu_s > 0:
            raise ValueError(f"Limits.cpu_s must be positive or None, got {self.cpu_s!r}")
        if self.output_bytes < 1024:
            raise ValueError(f"Limits.output_bytes must be at least 1024, got {self.output_bytes}")


@dataclass(frozen=True)
class SandboxResult:
    """What came out of one sandboxed run."""

    returncode: int
    """Exit status, or -N when killed by signal N (subprocess's convention). Under bwrap a death
    by signal is reported by bwrap as 128+N and mapped back, so a program that exits with
    status 128+N deliberately reads as killed by N."""
    stdout: str
    """Standard output (UTF-8, undecodable bytes replaced), at most `output_bytes`."""
    stderr: str
    """Standard error, at most `output_bytes`."""
    timed_out: bool
    """The wall-clock or CPU limit ended the run."""
    limit: str | None
    """Which limit stopped it: "wall", "cpu", "memory", "output", or None."""
    duration_s: float
    """Wall-clock seconds from start to the last process gone."""
    isolation: str
    """"bwrap" (namespaces) or "rlimit" (the weaker mode, see the module docstring)."""
    warning: str
    """Why isolation is weaker than bwrap's, or ""."""
    run_id: str
    """Random id in every sandboxed process's environment and the harness's command line
    (`processes_of(run_id)` finds survivors; there should be none)."""
    records: tuple[dict, ...] = ()
    """Result-channel records of the harness (verifier modes), parsed."""

    @property
    def ok(self) -> bool:
        """Exited with status 0 and no limit hit."""
        return self.returncode == 0 and self.limit is None


class Sandbox:
    """Runs programs under `limits`, isolated with bwrap when it works here.

    Thread-safe: `run` and `run_harness` may be called from many threads at once (no signals,
    no `preexec_fn`); each run is its own process tree.
    """

    def __init__(self, limits: Limits | None = None, isolation: str | None = None) -> None:
        """
        Args:
            limits: resource limits (default `Limits()`).
            isolation: "auto" (bwrap when it works, else rlimit with a warning), "bwrap"
                (raise `SandboxUnavailable` when it cannot work) or "rlimit". None: the
                `OPD_SANDBOX` environment variable, else "auto".
        """
        self.limits = limits or Limits()
        wanted = isolation or os.environ.get("OPD_SANDBOX") or "auto"
        if wanted not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {wanted!r}")
        self.warning = ""
        if wanted == "rlimit":
            self.isolation = "rlimit"
            self.warning = "rlimit-only mode was asked for"
        else:
            works, reason = bwrap_status()
            if works:
                self.isolation = "bwrap"
            elif wanted == "bwrap":
                raise SandboxUnavailable(f"bubblewrap isolation is unavailable: {reason}")
            else:
                self.isolation = "rlimit"
                self.warning = reason
        if self.isolation == "rlimit":
            _warn_once(self.warning)

    def run(self, program: str, stdin: str | bytes = b"") -> SandboxResult:
        """Runs `program` as `__main__` with `stdin`; its stdout/stderr are captured.

        Args:
            program: Python source.
            stdin: what the program reads on standard input.

        Returns:
            The result; a program's failure is data here, never an exception.
        """
        data = stdin.encode("utf-8", "replace") if isinstance(stdin, str) else stdin
        return self._execute("exec", program, None, None, data)

    def run_harness(
        self, mode: str, program: str, spec: dict, secret: str | None = None
    ) -> SandboxResult:
        """Runs a verifier mode of `harness.py` ("call", "assert", "stdio") on `program`.

        Args:
            mode: the harness mode.
            program: the untrusted Python source.
            spec: JSON-ready inputs the program may see (entry point, call arguments, stdins).
            secret: text only the harness's runner may read, never the program (test code).

        Returns:
            The result, with the harness's records in `records`.
        """
        if mode not in ("call", "assert", "stdio"):
            raise ValueError(f"mode must be call, assert or stdio, got {mode!r}")
        return self._execute(mode, program, spec, secret, None)

    # -- one run ---------------------------------------------------------------------------

    def _execute(
        self,
        mode: str,
        program: str,
        spec: dict | None,
        secret: str | None,
        stdin: bytes | None,
    ) -> SandboxResult:
        limits = self.limits
        run_id = secrets.token_hex(8)
        isolated = self.isolation == "bwrap"
        uid = drop_uid(isolated)
        workdir = None if isolated else tempfile.mkdtemp(prefix="opd-sandbox-")
        if workdir is not None and uid is not None:
            os.chown(workdir, uid, uid)
        child_fds: list[int] = []
        fds = {"program": _data_fd(program.encode("utf-8", "replace"), child_fds)}
        if spec is not None:
            fds["spec"] = _data_fd(marshal.dumps(spec), child_fds)
        if secret is not None:
            fds["secret"] = _data_fd(secret.encode("utf-8", "replace"), child_fds)
        result_r = info_r = -1
        if mode != "exec":
            result_r, fds["result"] = os.pipe()
            child_fds.append(fds["result"])
        cpu_s = limits.cpu_s or limits.wall_s
        config = {
            "run": run_id,
            "mode": mode,
            "uid": uid,
            "gid": uid,
            "budget_s": limits.wall_s,
            "fds": fds,
            "limits": {
                "cpu_s": max(1, int(-(-cpu_s // 1))),
                "memory_bytes": limits.memory_mb << 20,
                "file_size_bytes": limits.file_size_mb << 20,
                "nproc": nproc_limit(limits.nproc, uid, isolated),
                "open_files": limits.open_files,
                "output_bytes": limits.output_bytes,
            },
        }
        interpreter = python()
        home = INSIDE_WORK if isolated else str(workdir)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": home,
            "TMPDIR": home,
            "OPD_SANDBOX_RUN": run_id,
        }
        # The harness arrives compiled, through an fd: no file to bind or read, nothing to
        # compile per run. `BOOT` reads it and runs it; CONFIG and the run id follow.
        code_fd = _data_fd(harness_code(), child_fds)
        tail = [interpreter, "-I", "-S", "-B", "-c", BOOT, str(code_fd)]
        tail += [marshal.dumps(config).hex(), run_id]
        if isolated:
            info_r, info_w = os.pipe()
            child_fds.append(info_w)
            argv = bwrap_argv(limits.disk_mb, info_w) + tail
        else:
            argv = tail
        stdin_fd: int = subprocess.DEVNULL
        if stdin:
            stdin_fd = _data_fd(stdin, child_fds)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(child_fds),
                env=env,
                cwd=workdir or "/",
                start_new_session=True,
            )
        except BaseException:
            for fd in (result_r, info_r):
                if fd >= 0:
                    os.close(fd)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        inner = -1
        try:
            deadline = started + limits.wall_s + _GRACE_S
            streams, limit, inner = _supervise(
                proc, result_r, info_r, deadline, limits.output_bytes
            )
        finally:
            _kill_tree(proc, inner, run_id, uid, isolated)
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
        duration = time.monotonic() - started
        returncode = proc.returncode
        if isolated and returncode > 128 and limit is None:
            returncode = 128 - returncode  # bwrap's 128+N for a death by signal N
        stderr = streams["stderr"].decode("utf-8", "replace")
        if limit is None:
            if returncode == -signal.SIGXCPU or (
                returncode == -signal.SIGKILL and duration >= config["limits"]["cpu_s"]
            ):
                limit = "cpu"  # SIGXCPU at the soft limit, SIGKILL at the hard one
            elif "MemoryError" in stderr[-1000:]:
                limit = "memory"
        return SandboxResult(
            returncode=returncode,
            stdout=streams["stdout"].decode("utf-8", "replace"),
            stderr=stderr,
            timed_out=limit in ("wall", "cpu"),
            limit=limit,
            duration_s=duration,
            isolation=self.isolation,
            warning=self.warning,
            run_id=run_id,
            records=_parse_records(streams["result"]),
        )


def run_python(
    source: str,
    *,
    stdin: str | bytes = b"",
    time_limit_s: float = 5.0,
    memory_limit_mb: int = 512,
) -> SandboxResult:
    """Runs a Python program in the sandbox with default limits but for time and memory.

    Args:
        source: the program.
        stdin: its standard input.
        time_limit_s: wall-clock (and CPU) seconds.
        memory_limit_mb: address space per process, MiB.

    Returns:
        The run's result (`stdout`, `stderr`, `returncode`, `timed_out`, ...).
    """
    limits = Limits(wall_s=time_limit_s, memory_mb=memory_limit_mb)
    return Sandbox(limits).run(source, stdin)


# -- supervision ---------------------------------------------------------------------------------


def _supervise(
    proc: subprocess.Popen, result_r: int, info_r: int, deadline: float, cap: int
) -> tuple[dict[str, bytearray], str | None, int]:
    """Reads the streams until the process is gone or a limit is hit; never blocks past the
    deadline. Returns the streams, the host-observed limit ("wall", "output" or None) and a
    pidfd of bwrap's in-namespace init (-1 when unknown)."""
    assert proc.stdout is not None and proc.stderr is not None
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
    caps = {"stdout": cap, "stderr": cap, "result": _RESULT_CAP, "info": 1 << 16}
    if result_r >= 0:
        names[result_r] = "result"
    if info_r >= 0:
        names[info_r] = "info"
    streams = {name: bytearray() for name in ("stdout", "stderr", "result", "info")}
    selector = selectors.DefaultSelector()
    for fd in names:
        selector.register(fd, selectors.EVENT_READ)
    try:
        exit_fd = os.pidfd_open(proc.pid)
        selector.register(exit_fd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        exit_fd = -1
    inner = -1
    limit = None
    exited_at = None
    try:
        while names or exited_at is None:
            now = time.monotonic()
            if exited_at is None and (exit_fd < 0 and proc.poll() is not None):
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                break  # the main process is gone; what still holds a pipe gets killed
            if now >= deadline:
                limit = "wall"
                break
            wait = deadline - now if exit_fd >= 0 else min(deadline - now, 0.01)
            for key, _ in selector.select(wait if exited_at is None else 0.05):
                fd = key.fd
                if fd == exit_fd:
                    selector.unregister(fd)
                    exited_at = time.monotonic()
                    continue
                name = names[fd]
                data = os.read(fd, 1 << 16)
                if not data:
                    selector.unregister(fd)
                    del names[fd]
                    if name == "info":
                        inner = _inner_pidfd(streams["info"], proc.pid)
                    continue
                buffer = streams[name]
                room = caps[name] - len(buffer)
                buffer += data[: max(room, 0)]
                if len(data) > room:
                    limit = "output"
            if limit:
                break
    finally:
        selector.close()
        if exit_fd >= 0:
            os.close(exit_fd)
        for fd in (result_r, info_r):
            if fd >= 0:
                os.close(fd)
    if inner < 0 and streams["info"]:
        inner = _inner_pidfd(streams["info"], proc.pid)
    return streams, limit, inner


def _inner_pidfd(info: bytes, outer: int) -> int:
    """A pidfd of bwrap's init in the new PID namespace, from bwrap's --info-fd JSON; -1 when
    unknown. Only a child of our own bwrap is accepted, whatever the JSON says."""
    try:
        pid = int(json.loads(info)["child-pid"])
        with open(f"/proc/{pid}/stat", "rb") as fh:
            parent = int(fh.read().rsplit(b")", 1)[1].split()[1])
        if parent != outer:
            return -1
        return os.pidfd_open(pid)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OSError):
        return -1


def _kill_tree(
    proc: subprocess.Popen, inner: int, run_id: str, uid: int | None, isolated: bool
) -> None:
    """Kills everything the run started and returns once it is gone."""
    try:
        if inner >= 0:
            # Killing the namespace's init makes the kernel kill every process in it, and bwrap
            # outside exits only after that, so proc.wait() below means "all gone".
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(inner, signal.SIGKILL)
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(OSError):
                kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if inner >= 0:  # bwrap killed by us before its init: wait for --die-with-parent's work
            _wait_readable(inner, 5.0)
        if not isolated:
            sweep(run_id, uid)
    finally:
        if inner >= 0:
            os.close(inner)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _wait_readable(fd: int, seconds: float) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        selector.select(seconds)


def _parse_records(data: bytes) -> tuple[dict, ...]:
    records = []
    for line in bytes(data).splitlines():
        try:
            record = json.loads(line, parse_int=_parse_int)
        except (ValueError, RecursionError):
            continue
        if type(record) is dict:
            records.append(record)
    return tuple(records)


def _parse_int(text: str) -> int:
    # json's int() refuses more than 4300 digits; Decimal converts without that limit
    return int(text) if len(text) < 4000 else int(Decimal(text))


# -- set-up helpers ------------------------------------------------------------------------------


def _data_fd(data: bytes, opened: list[int]) -> int:
    """A readable fd holding `data` from its start (a memfd; no file on disk)."""
    try:
        fd = os.memfd_create("opd-sandbox")
    except (AttributeError, OSError):
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    opened.append(fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


_STATUS: tuple[bool, str] | None = None
_STATUS_LOCK = threading.Lock()
_WARNED = False


def bwrap_status() -> tuple[bool, str]:
    """Whether bwrap isolation works here (probed once per process), and why not.

    Returns:
        (works, reason); reason is "" when it works.
    """
    global _STATUS
    with _STATUS_LOCK:
        if _STATUS is None:
            _STATUS = _probe()
        return _STATUS


def _probe() -> tuple[bool, str]:
    path = shutil.which("bwrap")
    if path is None:
        return False, "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        text = subprocess.run(
            [path, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"bwrap --help failed: {exc}"
    FEATURES["size"] = "--size" in text and "--perms" in text
    FEATURES["disable-userns"] = "--disable-userns" in text
    probe = Sandbox.__new__(Sandbox)
    probe.limits, probe.isolation, probe.warning = Limits(wall_s=10), "bwrap", ""
    # After the uid drop, the standard library must still be importable.
    result = probe.run("import ctypes, linecache, traceback\nprint('ok')")
    if result.returncode == 0 and result.stdout == "ok\n":
        return True, ""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    why = lines[-1] if lines else f"exit status {result.returncode}"
    return False, f"bwrap cannot create the sandbox here ({why[:200]})"


def _warn_once(reason: str) -> None:
    global _WARNED
    if _WARNED:
        return
    _WARNED = True
    root = os.geteuid() == 0 and drop_uid(False) is None
    extra = " and as root (the Python installation is not readable by other users)" if root else ""
    warnings.warn(
        f"code sandbox: running untrusted programs WITHOUT namespace isolation{extra}: {reason}. "
        "Programs can read your files, use the network and signal your processes; install "
        "bubblewrap (and allow user namespaces) for isolation.",
        SandboxWarning,
        stacklevel=3,
    )
