"""The trusted half of the code sandbox: the runner that starts inside it and runs the program.

`sandbox.py` runs this file inside the sandbox (compiled on the host, handed over through a file
descriptor, see `isolation.BOOT`), with `python -I -S -B` and a config. Before
any untrusted code runs it reads its inputs from file descriptors, sets the resource limits,
and (when started as root) drops to an unprivileged uid. Then it runs the program in one of
four modes:

- `exec`: the program is `__main__`; its stdin, stdout and stderr are the sandbox's.
- `call`: the program is loaded, then `entry_point(*args, **kwargs)` is called for each test and
  the result, encoded by `encode` (exact builtin types only, so no object's `__eq__` ever runs),
  goes out on the result channel. The expected values never enter the sandbox: the verifier
  compares outside. Whatever the program does to this process only changes its own answers.
- `assert` (HumanEval-style `test_code`): the test code holds the expected values, so it runs in
  this process (the runner) while the program runs in a forked child (the candidate) that is
  started before the test code is read. The runner turns itself non-dumpable, so the candidate
  (same uid, no capabilities) can read neither its memory nor its file descriptors through
  /proc; the test code calls the candidate's functions through pipes, with arguments and
  results encoded as plain data. Only the runner writes the result channel, after each test.
- `stdio`: each test forks a child that runs the program with the test's stdin; its stdout is
  captured to a file under a file-size limit and sent out; the expected output stays outside.

Result-channel records are JSON lines. The runner writes them; in `call` and `exec` modes the
program shares the runner's process and could write lines of its own, which is harmless
because the verifier only reads its answers from them, never a verdict.

Values are encoded with `codec.py`, which the host imports too, so both sides agree; the host
hands it over compiled with this file (it is never on `sys.path`, so the program cannot shadow
it).
Standard library only (the sandbox runs Python with `-I -S`) and nothing heavy at module level,
to keep each execution cheap.

Not covered: limits are set by `sandbox.py` (this file only applies them); it does not isolate
anything by itself.
"""

from __future__ import annotations

import marshal
import os
import sys


def _load_codec() -> dict:
    # `BOOT` hands the codec over compiled (CODEC_CODE); run as a script, it is read from the
    # file next to this one. Either way no import machinery and no sys.path entry is involved,
    # so the program cannot shadow it.
    code = globals().get("CODEC_CODE")
    if code is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "codec.py")
        with open(path, encoding="utf-8") as fh:
            code = compile(fh.read(), path, "exec")
    module = type(sys)("opd_sandbox_codec")
    sys.modules["opd_sandbox_codec"] = module
    exec(code, module.__dict__)
    return module.__dict__


_codec = _load_codec()
Unrepresentable = _codec["Unrepresentable"]
encode, decode = _codec["encode"], _codec["decode"]
dumps, loads = _codec["dumps"], _codec["loads"]
describe, type_name, split_tests = _codec["describe"], _codec["type_name"], _codec["split_tests"]


# ------------------------------------------------------------------------------------------------
# In-sandbox runner
# ------------------------------------------------------------------------------------------------


def _read_bytes(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _read_fd(fd: int) -> str:
    return _read_bytes(fd).decode("utf-8", "replace")


class _Channel:
    """Newline-delimited JSON records over a file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def send(self, record: dict) -> None:
        data = (dumps(record) + "\n").encode("ascii")
        while data:
            data = data[os.write(self.fd, data) :]

    def recv(self) -> dict | None:
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        record = loads(line.decode("utf-8", "replace"))
        return record if type(record) is dict else None


def _apply_limits(config: dict) -> None:
    import resource

    limits = config["limits"]
    wanted = [
        (resource.RLIMIT_CPU, limits["cpu_s"], limits["cpu_s"] + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_size_bytes"], limits["file_size_bytes"]),
        (resource.RLIMIT_NPROC, limits["nproc"], limits["nproc"]),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in wanted:
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, old_hard), min(hard, old_hard)
        resource.setrlimit(which, (soft, hard))
    uid = config.get("uid")
    if uid is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(config["gid"])
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise SystemExit("sandbox harness: could not drop privileges")
    if hasattr(sys, "set_int_max_str_digits"):  # big ints are legitimate answers
        sys.set_int_max_str_digits(0)
    os.umask(0o077)


def _new_main() -> dict:
    module = type(sys)("__main__")
    module.__dict__["__file__"] = "main.py"
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    sys.argv = ["main.py"]
    return module.__dict__


def _compile(program: str) -> object:
    return compile(program, "main.py", "exec", dont_inherit=True)


def _print_traceback(program: str) -> None:
    import linecache
    import traceback

    linecache.cache["main.py"] = (len(program), None, program.splitlines(True), "main.py")
    try:
        exc = sys.exc_info()[1]
        tb = exc.__traceback__ if exc is not None else None
        while tb is not None and tb.tb_frame.f_code.co_filename != "main.py":
            tb = tb.tb_next  # hide the harness's own frames
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:
        sys.stderr.write(describe(sys.exc_info()[1] or Exception()) + "\n")


def _exit_status(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if type(code) is int:
        return code & 0xFF
    try:  # noqa: SIM105 - no contextlib: its import would slow every sandbox start
        sys.stderr.write(str(code) + "\n")
    except BaseException:
        pass
    return 1


def _run_main(program: str, code: object) -> int:
    """Runs the program as `__main__` in this process; returns its exit status."""
    namespace = _new_main()
    try:
        exec(code, namespace)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        if isinstance(exc, MemoryError):
            sys.stderr.write("MemoryError: the sandbox's memory limit was reached\n")
        else:
            _print_traceback(program)
        status = 1
    try:  # what the interpreter does at exit: join threads, run atexit, flush
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()  # type: ignore[attr-defined]
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        status = status or 1
    return status


def _mode_exec(program: str) -> None:
    try:
        code = _compile(program)
    except (SyntaxError, ValueError):
        _print_traceback(program)
        os._exit(1)
    status = _run_main(program, code)
    os._exit(status)


def _load(program: str) -> tuple[dict | None, str]:
    """Compiles and runs the program's top level; (namespace, "") or (None, error)."""
    try:
        code = _compile(program)
    except SyntaxError as exc:
        return None, f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except BaseException as exc:
        return None, describe(exc)
    namespace = _new_main()
    try:
        exec(code, namespace)
    except SystemExit:
        return None, "the program exited while loading (SystemExit)"
    except BaseException as exc:
        return None, describe(exc)
    return namespace, ""


def _mode_call(program: str, spec: dict, out: _Channel) -> None:
    namespace, error = _load(program)
    entry = spec["entry_point"]
    if namespace is not None and not callable(namespace.get(entry)):
        error = f"the program defines no function named {entry!r}"
    if error:
        out.send({"ev": "load_error", "error": error})
        return
    function = namespace[entry]  # type: ignore[index]
    out.send({"ev": "loaded"})
    for i, test in enumerate(spec["tests"]):
        try:
            value = function(*test.get("args", []), **test.get("kwargs", {}))
        except BaseException as exc:
            out.send({"ev": "result", "i": i, "error": describe(exc)})
            continue
        try:
            out.send({"ev": "result", "i": i, "value": encode(value)})
        except Unrepresentable as exc:
            out.send({"ev": "result", "i": i, "unrepresentable": str(exc)})
        except BaseException as exc:  # e.g. RecursionError on a cycle
            out.send({"ev": "result", "i": i, "unrepresentable": describe(exc)})
    out.send({"ev": "done"})


def _close_fds_except(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:  # noqa: SIM105 - no contextlib (start-up time)
                os.close(fd)
            except OSError:
                pass


def _serve_candidate(program: str, requests: _Channel, replies: _Channel) -> None:
    """The candidate process of `assert` mode: loads the program, answers calls; never returns."""
    namespace, error = _load(program)
    if namespace is None:
        replies.send({"error": error})
        os._exit(0)
    names, modules = [], []
    for key, value in list(namespace.items()):
        if type(key) is not str or key.startswith("__"):
            continue
        if type(value) is type(sys):
            module_name = value.__dict__.get("__name__")
            if type(module_name) is str:
                modules.append([key, module_name])
        elif callable(value):
            names.append(key)
    replies.send({"names": names, "modules": modules})
    while True:
        try:
            request = requests.recv()
        except BaseException:
            request = None
        if request is None:
            os._exit(0)
        try:
            function = namespace[request["fn"]]
            args = decode(request["args"])
            kwargs = decode(request["kwargs"])
            value = function(*args, **kwargs)  # type: ignore[operator]
        except BaseException as exc:
            replies.send({"error": describe(exc), "type": type_name(exc)})
            continue
        try:
            replies.send({"value": encode(value)})
        except Unrepresentable as exc:
            error = f"the program returned {exc}, which is not plain data"
            replies.send({"error": error, "type": "TypeError"})
        except BaseException as exc:
            replies.send({"error": f"the program's value: {describe(exc)}", "type": "TypeError"})


class CandidateError(Exception):
    """The candidate process died or answered nonsense."""


class _Remote:
    """A candidate function, seen from the test code: calls go through the pipes."""

    def __init__(self, name: str, requests: _Channel, replies: _Channel, pid: int) -> None:
        self.__name__ = name
        self._requests = requests
        self._replies = replies
        self._pid = pid

    def __repr__(self) -> str:
        return f"<candidate function {self.__name__}>"

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            payload = {"fn": self.__name__, "args": encode(list(args)), "kwargs": encode(kwargs)}
        except Unrepresentable as exc:
            raise TypeError(
                f"the test passes an argument the sandbox cannot carry: {exc}"
            ) from None
        try:
            self._requests.send(payload)
            reply = self._replies.recv()
        except (OSError, ValueError, RecursionError):
            reply = None
        if reply is None:
            raise CandidateError(_death(self._pid))
        if "value" in reply:
            try:
                return decode(reply["value"])
            except (ValueError, TypeError, RecursionError):
                raise CandidateError("the program answered with a malformed value") from None
        message = str(reply.get("error", "unknown error"))[:400]
        kind = reply.get("type")
        if type(kind) is str and (message == kind or message.startswith(kind + ": ")):
            message = message[len(kind) + 2 :]  # `describe` put the type name first
        builtin = getattr(__import__("builtins"), kind, None) if type(kind) is str else None
        # The candidate's exception is re-raised as the same builtin type, so tests that expect
        # a ValueError work. Never StopIteration: raised inside `map(candidate, ...)` it would
        # silently end a test's loop before its asserts.
        if (
            isinstance(builtin, type)
            and issubclass(builtin, Exception)
            and not issubclass(builtin, (StopIteration, StopAsyncIteration))
        ):
            try:
                error = builtin(message)
            except BaseException:
                error = CandidateError(message)
            raise error
        raise CandidateError(message)


def _death(pid: int) -> str:
    """Why the candidate process stopped answering, for the feedback."""
    import signal

    status, timed_out = _wait(pid, 0.5)
    if timed_out or status is None:
        return "the program closed its channel"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return "the program timed out (CPU time limit)"
        return f"the program's process was killed by signal {number}"
    return f"the program's process exited (status {os.WEXITSTATUS(status)})"


def _set_nondumpable() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _mode_assert(program: str, spec: dict, secret_fd: int, out: _Channel) -> None:
    import builtins

    _set_nondumpable()  # before the candidate exists: it must never see a dumpable runner
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _close_fds_except({0, 1, 2, req_r, rep_w})
            _serve_candidate(program, _Channel(req_r), _Channel(rep_w))
        finally:
            os._exit(1)
    os.close(req_r)
    os.close(rep_w)
    tests = split_tests(_read_fd(secret_fd), spec["entry_point"])
    requests, replies = _Channel(req_w), _Channel(rep_r)
    try:
        hello = replies.recv()
    except (OSError, ValueError, RecursionError):
        hello = None
    names = hello.get("names") if hello else None
    error = ""
    if hello is None:
        error = _death(pid) + " while loading"
    elif type(names) is not list:
        error = str(hello.get("error", "the program failed to load"))[:400]
    elif spec["entry_point"] not in names:
        error = f"the program defines no function named {spec['entry_point']!r}"
    if error:
        out.send({"ev": "load_error", "error": error})
        return
    out.send({"ev": "loaded"})
    namespace: dict = {"__name__": "__test__", "__builtins__": builtins}
    # The test code sees the program's functions (as remote stubs) and its standard-library
    # imports (imported here, afresh), as if it ran after the program. Never under a builtin's
    # name: a program's `sorted` or `len` must not answer for the test code's own calls.
    reserved = set(dir(builtins))
    for name in names:
        if type(name) is str and name.isidentifier() and name not in reserved:
            namespace[name] = _Remote(name, requests, replies, pid)
    modules = hello.get("modules")
    for pair in modules if type(modules) is list else []:
        if type(pair) is not list or len(pair) != 2:
            continue
        alias, module_name = pair
        if not (type(alias) is str and alias.isidentifier() and alias not in reserved):
            continue
        if type(module_name) is str and module_name.split(".")[0] in sys.stdlib_module_names:
            try:  # noqa: SIM105 - no contextlib (start-up time)
                namespace[alias] = __import__(module_name, fromlist=["_"])
            except BaseException:
                pass
    import _ast

    index = 0
    for kind, _, node in tests:
        module = _ast.Module(body=[node], type_ignores=[])
        try:
            exec(compile(module, "<test_code>", "exec"), namespace)
            failure = ""
        except AssertionError as exc:
            failure = describe(exc) if str(exc) else "AssertionError"
        except BaseException as exc:
            failure = describe(exc)
        if kind == "test":
            if failure:
                out.send({"ev": "test", "i": index, "ok": False, "error": failure})
            else:
                out.send({"ev": "test", "i": index, "ok": True})
            index += 1
        elif failure:
            out.send({"ev": "setup_error", "error": failure})
    out.send({"ev": "done"})


def _wait(pid: int, seconds: float) -> tuple[int | None, bool]:
    """Waits for a child up to `seconds`; (wait status, timed_out)."""
    import select
    import time

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    deadline = time.monotonic() + seconds
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            left = deadline - time.monotonic()
            if left <= 0:
                return None, True
            if pidfd >= 0:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.005))
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _run_stdio_child(program: str, code: object, folder: str, output_bytes: int) -> None:
    import resource

    os.setpgid(0, 0)
    os.chdir(folder)
    stdin = os.open("stdin", os.O_RDONLY)
    stdout = os.open("stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr = os.open("stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(stdin, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    _close_fds_except({0, 1, 2})
    # One byte past the cap fails the write (EFBIG), so "more than the cap" is detectable.
    resource.setrlimit(resource.RLIMIT_FSIZE, (output_bytes + 1, output_bytes + 1))
    os._exit(_run_main(program, code))


def _mode_stdio(program: str, spec: dict, config: dict, out: _Channel) -> None:
    import signal
    import time

    started = time.monotonic()
    output_bytes = config["limits"]["output_bytes"]
    try:
        code = _compile(program)
    except (SyntaxError, ValueError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) else ""
        out.send({"ev": "load_error", "error": describe(exc) + where})
        return
    out.send({"ev": "loaded"})
    for i, stdin in enumerate(spec["stdin"]):
        left = config["budget_s"] - (time.monotonic() - started)
        if left <= 0:
            out.send({"ev": "test", "i": i, "skipped": "the time budget was spent"})
            continue
        folder = f"t{i}"
        os.mkdir(folder, 0o700)
        with open(os.path.join(folder, "stdin"), "wb") as fh:
            fh.write(stdin.encode("utf-8", "replace"))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                _run_stdio_child(program, code, folder, output_bytes)
            finally:
                os._exit(1)
        status, timed_out = _wait(pid, left)
        for kill in (os.killpg, os.kill):  # the test's leftovers, if any; the child itself
            try:  # noqa: SIM105 - no contextlib (start-up time)
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if timed_out:
            status = os.waitpid(pid, 0)[1]
        record = {"ev": "test", "i": i, "timeout": timed_out}
        if os.WIFSIGNALED(status):
            record["signal"] = os.WTERMSIG(status)
        else:
            record["exit"] = os.WEXITSTATUS(status)
        for name, keep in (("stdout", output_bytes), ("stderr", 2000)):
            try:
                with open(os.path.join(folder, name), "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    if name == "stderr":
                        fh.seek(max(0, size - keep))
                    elif size > output_bytes:
                        record["output_limit"] = True
                    record[name] = fh.read(keep).decode("utf-8", "replace")
            except OSError:
                record[name] = ""
        for name in ("stdin", "stdout", "stderr"):  # keep the tmpfs free for the next test
            try:  # noqa: SIM105 - no contextlib (start-up time)
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass
        out.send(record)
    out.send({"ev": "done"})


def main() -> None:
    """Entry point inside the sandbox; argv ends with the config (marshal, hex) and the run id."""
    # Config and spec come from the host, before any untrusted code runs: marshal is fast and
    # needs no import. Nothing the program writes is ever read with marshal.
    config = marshal.loads(bytes.fromhex(sys.argv[-2]))  # then the run id, for `processes_of`
    fds = config["fds"]
    program = _read_fd(fds["program"])
    spec = marshal.loads(_read_bytes(fds["spec"])) if fds.get("spec", -1) >= 0 else {}
    for fd in (fds.get("secret", -1), fds.get("result", -1)):
        if fd >= 0:
            os.set_inheritable(fd, False)  # never handed to programs the candidate starts
    _apply_limits(config)
    mode = config["mode"]
    if mode == "exec":
        _mode_exec(program)
    out = _Channel(fds["result"])
    if mode == "call":
        _mode_call(program, spec, out)
    elif mode == "assert":
        _mode_assert(program, spec, fds["secret"], out)
    elif mode == "stdio":
        _mode_stdio(program, spec, config, out)
    else:
        raise SystemExit(f"sandbox harness: unknown mode {mode!r}")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
