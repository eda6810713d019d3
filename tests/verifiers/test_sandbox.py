"""The sandbox: limits, isolation and clean-up, tested with real hostile programs.

Each hostile case checks the result, that the host is untouched (a canary process lives, files
outside the sandbox are unchanged) and that no process of the run outlives it. Cases that need
namespaces use the `isolated` fixture and skip where bubblewrap cannot run; the rest also run
in the weaker rlimit-only mode.
"""

from __future__ import annotations

import ast
import hashlib
import os
import socket
import threading
import time
import warnings

import pytest

from opd_selfplay.verifiers import sandbox
from opd_selfplay.verifiers.sandbox import Limits, Sandbox, SandboxUnavailable, SandboxWarning

MODES = ["bwrap", "rlimit"]


def _box(mode: str, **limits: object) -> Sandbox:
    if mode == "bwrap":
        works, reason = sandbox.bwrap_status()
        if not works:
            pytest.skip(f"needs bubblewrap isolation: {reason}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxWarning)
        return Sandbox(Limits(**{"wall_s": 2.0, **limits}), isolation=mode)  # type: ignore[arg-type]


# -- ordinary runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_runs_a_program_with_stdin_and_reports_its_output(mode: str) -> None:
    program = "import sys\ndata = sys.stdin.read()\nprint(data.upper())\nsys.exit(3)"
    result = _box(mode).run(program, stdin="hello\n")
    assert result.stdout == "HELLO\n\n"
    assert result.returncode == 3
    assert result.limit is None and not result.timed_out
    assert result.isolation == mode
    assert (result.warning == "") == (mode == "bwrap")


@pytest.mark.parametrize("mode", MODES)
def test_a_crash_shows_the_programs_traceback_not_the_harness(mode: str) -> None:
    result = _box(mode).run("def f():\n    return 1 / 0\nf()\n")
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stderr
    assert 'File "main.py", line 2' in result.stderr
    assert "harness" not in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_death_by_signal_is_reported_as_a_negative_status(mode: str) -> None:
    result = _box(mode).run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert result.returncode == -15


@pytest.mark.parametrize("mode", MODES)
def test_the_environment_is_scrubbed(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPD_TEST_SECRET", "hunter2-env")
    result = _box(mode).run("import os\nprint(sorted(os.environ))\nprint(dict(os.environ))")
    assert "hunter2-env" not in result.stdout
    names = ast.literal_eval(result.stdout.splitlines()[0])
    assert set(names) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PWD", "OPD_SANDBOX_RUN"}


def test_many_runs_in_threads_do_not_mix() -> None:
    box = _box("bwrap" if sandbox.bwrap_status()[0] else "rlimit")
    results: dict[int, str] = {}

    def one(i: int) -> None:
        results[i] = box.run(f"print({i} * {i})").stdout

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i * i}\n" for i in range(8)}


def test_run_python_is_the_plain_entry_point() -> None:
    result = sandbox.run_python("print(sum(range(10)))", time_limit_s=2, memory_limit_mb=256)
    assert (result.stdout, result.returncode, result.timed_out) == ("45\n", 0, False)


def test_limits_are_validated_with_a_named_field() -> None:
    with pytest.raises(ValueError, match="Limits.wall_s must be positive"):
        Limits(wall_s=0)
    with pytest.raises(ValueError, match="Limits.output_bytes"):
        Limits(output_bytes=10)
    with pytest.raises(ValueError, match="isolation must be one of"):
        Sandbox(isolation="docker")


# -- the weaker mode says so -------------------------------------------------------------------


def test_without_bwrap_it_falls_back_loudly_or_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # bwrap cannot be found: the real probe says so
    monkeypatch.setattr(sandbox, "_STATUS", None)
    monkeypatch.setattr(sandbox, "_WARNED", False)
    monkeypatch.delenv("OPD_SANDBOX", raising=False)
    with pytest.warns(SandboxWarning, match="WITHOUT namespace isolation"):
        box = Sandbox(Limits(wall_s=2))
    result = box.run("print('still runs')")
    assert result.stdout == "still runs\n"
    assert result.isolation == "rlimit"
    assert "bwrap is not installed" in result.warning
    with pytest.raises(SandboxUnavailable, match="bwrap is not installed"):
        Sandbox(isolation="bwrap")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SandboxWarning)
        Sandbox(Limits(wall_s=2))  # once per process, not per sandbox


# -- hostile programs: limits ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["busy", "sleep"])
def test_an_infinite_loop_is_stopped_within_the_limit(mode: str, where: str, host_ok) -> None:
    program = "while True: pass" if where == "busy" else "import time\ntime.sleep(1000)"
    started = time.monotonic()
    result = _box(mode, wall_s=1.0).run(program)
    assert time.monotonic() - started < 2.0
    assert result.timed_out and result.limit in ("wall", "cpu")
    if where == "sleep":
        assert result.limit == "wall"
    host_ok(result.run_id)


@pytest.mark.parametrize("mode", MODES)
def test_a_4gb_allocation_under_512mb_fails_inside(mode: str, host_ok) -> None:
    result = _box(mode, memory_mb=512).run("x = bytearray(4 << 30)\nprint('allocated')")
    assert "allocated" not in result.stdout
    assert result.returncode == 1 and result.limit == "memory"
    assert "MemoryError" in result.stderr
    host_ok(result.run_id)


@pytest.mark.parametrize("mode", MODES)
def test_200mb_of_output_is_cut_at_the_cap(mode: str, host_ok) -> None:
    program = (
        "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(200):\n    sys.stdout.write(chunk)"
    )
    started = time.monotonic()
    result = _box(mode, output_bytes=1 << 20).run(program)
    assert time.monotonic() - started < 2.0
    assert result.limit == "output"
    assert len(result.stdout) <= 1 << 20
    host_ok(result.run_id)


def test_a_fork_storm_is_bounded_and_fully_reaped(isolated: str, host_ok) -> None:
    program = (
        "import os\n"
        "n = 0\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "        n += 1\n"
        "    except OSError:\n"
        "        pass\n"
    )
    started = time.monotonic()
    result = _box(isolated, wall_s=1.0, nproc=16).run(program)
    assert time.monotonic() - started < 2.0
    assert result.timed_out
    host_ok(result.run_id)


def test_filling_the_disk_stops_at_the_tmpfs_size(isolated: str, host_ok) -> None:
    program = (
        "import os\n"
        "chunk = b'x' * (1 << 20)\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(100):\n"
        "        with open(f'f{i}', 'wb') as fh:\n"
        "            for _ in range(4):\n"
        "                fh.write(chunk); fh.flush(); written += 1\n"
        "except OSError as exc:\n"
        "    print('stopped', exc.errno)\n"
        "print(written)\n"
    )
    result = _box(isolated, disk_mb=16).run(program)
    lines = result.stdout.split()
    assert lines[0] == "stopped" and int(lines[-1]) <= 16
    host_ok(result.run_id)


# -- hostile programs: isolation ----------------------------------------------------------------


def test_writes_outside_the_working_directory_fail(isolated: str, tmp_path, host_ok) -> None:
    target = tmp_path / "pwned.txt"
    harness = sandbox.HARNESS
    before = hashlib.sha256(harness.read_bytes()).hexdigest()
    home = os.path.expanduser("~")
    paths = [str(target), str(harness), "/usr/pwned", "/pwned", f"{home}/pwned", "/opd/x"]
    program = (
        "import os\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        with open(path, 'w') as fh:\n"
        "            fh.write('pwned')\n"
        "        print('WROTE', path)\n"
        "    except OSError:\n"
        "        pass\n"
        "open('ok.txt', 'w').write('fine')\n"
        "print(open('ok.txt').read(), os.getcwd())\n"
    )
    result = _box(isolated).run(program)
    assert "WROTE" not in result.stdout
    assert result.stdout.startswith("fine /work")
    assert not target.exists()
    assert not os.path.exists("/pwned") and not os.path.exists(f"{home}/pwned")
    assert hashlib.sha256(harness.read_bytes()).hexdigest() == before
    host_ok(result.run_id)


def test_host_secrets_are_not_readable(
    isolated: str, tmp_path, monkeypatch: pytest.MonkeyPatch, host_ok
) -> None:
    secret = "s3cret-" + os.urandom(6).hex()
    monkeypatch.setenv("OPD_TEST_SECRET", secret)
    (tmp_path / "secret.txt").write_text(secret)
    program = (
        "import os\n"
        "seen = [repr(dict(os.environ))]\n"
        f"for path in ['/proc/1/environ', '/proc/self/environ', {str(tmp_path / 'secret.txt')!r},\n"
        f"             '/proc/{os.getpid()}/environ', '/proc/{os.getppid()}/environ']:\n"
        "    try:\n"
        "        seen.append(open(path, 'rb').read().decode('latin-1'))\n"
        "    except OSError as exc:\n"
        "        seen.append(type(exc).__name__)\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            seen.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
        "        except OSError:\n"
        "            pass\n"
        "print('\\n'.join(seen))\n"
    )
    result = _box(isolated).run(program)
    assert result.returncode == 0
    assert secret not in result.stdout + result.stderr
    host_ok(result.run_id)


def test_a_loopback_listener_on_the_host_is_unreachable(isolated: str, host_ok) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    program = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'leak')\n"
        "    print('CONNECTED')\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    try:
        result = _box(isolated).run(program)
        assert result.stdout.startswith("refused")
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    host_ok(result.run_id)


@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(os.getppid(), signal.SIGKILL)",
        "os.killpg(os.getpgid(0), signal.SIGKILL)",
        "os.kill(-1, signal.SIGKILL)",
        "os.kill(1, signal.SIGKILL)",
    ],
)
def test_killing_the_parent_or_group_stays_inside(isolated: str, attack: str, host_ok) -> None:
    program = f"import os, signal\nprint('before', flush=True)\n{attack}\nprint('after')"
    result = _box(isolated).run(program)
    assert result.stdout.startswith("before")
    assert result.returncode != 0 or "after" in result.stdout
    host_ok(result.run_id)


@pytest.mark.parametrize("mode", MODES)
def test_orphaned_and_daemonised_children_do_not_survive(mode: str, host_ok) -> None:
    program = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                 start_new_session=True)\n"
        "if os.fork() == 0:\n"  # a classic double-forked daemon
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        "print('parent done')\n"
    )
    result = _box(mode).run(program)
    assert result.stdout == "parent done\n"
    assert result.duration_s < 2.0  # returned when the main program ended, not at the limit
    host_ok(result.run_id)


def test_the_program_runs_without_privileges(isolated: str) -> None:
    program = (
        "import os\n"
        "status = open('/proc/self/status').read()\n"
        "print(os.getuid() != 0, [l for l in status.splitlines() if l.startswith('CapEff')])\n"
        "print([l for l in status.splitlines() if l.startswith('NoNewPrivs')])\n"
        "try:\n"
        "    open('/dev/tty', 'w')\n"  # a controlling terminal would allow TIOCSTI injection
        "    print('has a terminal')\n"
        "except OSError:\n"
        "    print('no terminal')\n"
    )
    result = _box(isolated).run(program)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("True") and "0000000000000000" in lines[0]
    assert "1" in lines[1]
    assert lines[2] == "no terminal"
