"""Host-side pieces of the sandbox's isolation: the bubblewrap command line, which Python to
bind, the uid a run drops to, and finding (and killing) a run's processes.

`sandbox.py` owns the run itself and explains the threat model; this module only builds what
it needs. Nothing here starts a sandbox.

Not covered: probing whether bwrap works (`sandbox.bwrap_status`, which runs one).
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import secrets
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

HARNESS = Path(__file__).with_name("harness.py")
CODEC = Path(__file__).with_name("codec.py")
BOOT = (
    "import marshal,sys;f=open(int(sys.argv[1]),'rb');h,c=marshal.loads(f.read());f.close();"
    "exec(h,{'__name__':'__main__','__builtins__':__builtins__,'CODEC_CODE':c})"
)
"""The interpreter's `-c` program: runs the harness, compiled by the host, from an fd."""
INSIDE_WORK = "/work"

FEATURES: dict[str, bool] = {}
"""Options of the installed bwrap that the command line uses when present (set by the probe)."""


def processes_of(run_id: str, uid: int | None = None) -> list[int]:
    """Live (non-zombie) processes that belong to run `run_id`: its id in their environment or
    command line, or (when given) the run's own uid. Empty after every `run`.

    Args:
        run_id: `SandboxResult.run_id`.
        uid: the run's dropped uid, when known.

    Returns:
        Process ids, as seen from the host.
    """
    needle = run_id.encode()
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        base = f"/proc/{name}"
        try:
            with open(f"{base}/stat", "rb") as fh:
                state = fh.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"Z", b"X"):
                continue
            if uid is not None and os.stat(base).st_uid == uid:
                found.append(int(name))
                continue
            for part in ("cmdline", "environ"):
                with open(f"{base}/{part}", "rb") as fh:
                    if needle in fh.read():
                        found.append(int(name))
                        break
        except (OSError, IndexError):
            continue
    return found


def sweep(run_id: str, uid: int | None) -> None:
    """rlimit mode: kill what escaped the session (daemons), by uid or by the run id."""
    for _ in range(50):
        pids = processes_of(run_id, uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)


_HARNESS_CODE: list[bytes] = []


def harness_code() -> bytes:
    """`harness.py` and `codec.py`, compiled once per process and marshalled for `BOOT`.

    Returns:
        marshal of (harness code, codec code); the sandbox's interpreter is this one, so the
        format matches.
    """
    if not _HARNESS_CODE:
        harness = compile(HARNESS.read_text(encoding="utf-8"), "<harness>", "exec")
        codec = compile(CODEC.read_text(encoding="utf-8"), "<codec>", "exec")
        _HARNESS_CODE.append(marshal.dumps((harness, codec)))
    return _HARNESS_CODE[0]


@functools.lru_cache(maxsize=1)
def python() -> str:
    """The real interpreter behind this one (a venv's python is a link to it): the sandbox runs
    it with `-I -S`, so the venv's packages stay outside."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


@functools.lru_cache(maxsize=1)
def python_roots() -> tuple[str, ...]:
    """Folders of the Python installation to bind read-only, those under /usr left out."""
    exe = python()
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(exe)))
    system = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin")
    kept = []
    for root in sorted(roots, key=len):
        if (
            root == "/"
            or any(_under(root, s) for s in system)
            or any(_under(root, k) for k in kept)
        ):
            continue
        kept.append(root)
    return tuple(kept)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _traversable_by_others(path: str) -> bool:
    """Whether an unprivileged uid can reach and read `path` (every directory o+x, file o+r)."""
    current = Path(path)
    for part in [current, *current.parents]:
        try:
            mode = os.stat(part).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def drop_uid(isolated: bool) -> int | None:
    """The uid the harness drops to: only when running as root. Random per run, so the
    process-count limit counts this run's processes alone, and a sweep finds them by uid."""
    if os.geteuid() != 0:
        return None
    if not isolated and not _python_readable_by_others():
        return None  # the interpreter would not be readable after the drop (see _warn_once)
    return 1_000_000 + secrets.randbelow(1 << 30)


@functools.lru_cache(maxsize=1)
def _python_readable_by_others() -> bool:
    return all(_traversable_by_others(r) for r in python_roots())


def nproc_limit(nproc: int, uid: int | None, isolated: bool) -> int:
    """RLIMIT_NPROC counts a uid's processes. Under bwrap the run has a uid (or user
    namespace) of its own; in rlimit mode without a dropped uid it shares the user's count, so
    the limit sits on top of the user's current processes."""
    if isolated or uid is not None:
        return nproc
    me = os.getuid()
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == me:
                    count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                continue
    return count + nproc


def bwrap_argv(disk_mb: int, info_fd: int) -> list[str]:
    """The bwrap command line, up to the command it runs.

    Args:
        disk_mb: size of the writable tmpfs mounts.
        info_fd: where bwrap writes its JSON info (the PID of its init in the namespace).

    Returns:
        The argument list, to be followed by the interpreter's.
    """
    return [*_bwrap_prefix(disk_mb, os.geteuid() == 0), "--info-fd", str(info_fd)]


@functools.lru_cache(maxsize=8)
def _bwrap_prefix(disk_mb: int, root: bool) -> tuple[str, ...]:
    # No --new-session (it costs ~5 ms a run): the sandbox already has no controlling terminal,
    # since `sandbox.py` starts bwrap in a session of its own, so TIOCSTI injection is moot.
    argv = [shutil.which("bwrap") or "bwrap", "--die-with-parent"]
    if root:
        # No user namespace as root: the sandbox's uid would map to root and escape the
        # process-count limit. The harness keeps SETUID/SETGID just long enough to drop.
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-all", "--unshare-user"]
        if FEATURES.get("disable-userns"):
            argv += ["--disable-userns"]
    made: set[str] = set()
    binds: list[str] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            binds += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            binds += ["--ro-bind", top, top]
    for root_dir in python_roots():
        for parent in reversed(Path(root_dir).parents[:-1]):
            if str(parent) not in made:  # mount points' parents, readable after the uid drop
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        binds += ["--ro-bind", root_dir, root_dir]
    argv += binds
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # Writable: two size-capped tmpfs mounts, nothing else (/ and /dev remounted read-only).
    size = ["--size", str(disk_mb << 20)] if FEATURES.get("size") else []
    argv += ["--perms", "1777", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--perms", "1777", *size, "--tmpfs", INSIDE_WORK, "--symlink", INSIDE_WORK, "/tmp"]
    argv += ["--remount-ro", "/", "--chdir", INSIDE_WORK]
    return tuple(argv)
