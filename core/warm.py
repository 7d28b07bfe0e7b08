"""Warm starts for local jobs: a resident process that has already imported torch and transformers
forks each job (DESIGN.md §4).

A cold job process spends 6–10 s of a laptop CPU importing torch, transformers and TRL before its
first shard, while a tiny job's own work is under a second: a two-round recipe of 16 jobs waited
two minutes on imports. The warm server imports them once, then forks a child per job. The child
is an ordinary job process: its own pid and session, the caller's environment and working folder,
its output appended to the job's log, `core.jobs`'s `main` run in it. Nothing of the job contract
changes: markers, shards, kill and resume are the same, and a launch falls back to a cold process
whenever no server answers.

One server serves one interpreter, one code version and one import-relevant environment (their
hash names its socket), so an edited module or another venv never runs stale code: it gets a
server of its own, and the old one exits after `IDLE_SECONDS` without a request. The server never
runs a torch op, opens CUDA or starts a thread, so forking it is safe (it checks the thread count
before every fork). `WINNOW_WARM_START=0` turns warm starts off.

    python -m core.warm serve SOCKET   # started by `spawn` on first use, detached
    python -m core.warm stop           # stop this user's servers
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from pathlib import Path

ENV_SWITCH = "WINNOW_WARM_START"
IDLE_SECONDS = float(os.environ.get("WINNOW_WARM_IDLE_S", "900"))
REPO = Path(__file__).resolve().parent.parent
# What a job would import first thing; a module that fails to import is simply not preloaded.
WARM_IMPORTS = (
    "torch", "transformers", "transformers.models.llama.modeling_llama", "safetensors.torch",
    "core.jobs", "core.stages", "core.generate", "core.judge_stage", "core.llm.hf", "core.llm.registry",
    "core.train.job", "core.train.sft", "peft", "trl", "sentence_transformers",
)
# Read by these libraries when they are imported (thread pools, caches, offline switches), so two
# environments that differ in them need two servers; every other variable is set per job. Not a
# wider net: torch and others set variables of their own in a running process (KMP_*,
# TORCHINDUCTOR_CACHE_DIR), which would give every later launch a new server.
IMPORT_ENV_PREFIXES = ("PYTHON", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "OMP_", "MKL_", "OPENBLAS_")
IMPORT_ENV_KEYS = ("LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV", "CUDA_VISIBLE_DEVICES", "TORCH_HOME")
MAX_REQUEST_BYTES = 1 << 20


def enabled(env: dict | None = None) -> bool:
    env = os.environ if env is None else env
    return hasattr(os, "fork") and env.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _runtime_dir() -> Path:
    """A folder only this user can enter: the socket runs whatever job it is sent."""
    path = Path(tempfile.gettempdir()) / f"winnow-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} must belong to this user with mode 0700")
    return path


def fingerprint(env: dict) -> str:
    """The interpreter, the installed packages, this code and the import-relevant environment."""
    digest = hashlib.sha256()
    digest.update(sys.executable.encode())
    purelib = Path(sysconfig.get_paths()["purelib"])
    for path in (purelib, *sorted((REPO / "core").rglob("*.py"))):
        try:
            info = path.stat()
        except OSError:
            continue
        digest.update(f"{path}:{info.st_mtime_ns}:{info.st_size}".encode())
    for key in sorted(k for k in env if k.startswith(IMPORT_ENV_PREFIXES) or k in IMPORT_ENV_KEYS):
        digest.update(f"{key}={env[key]}".encode())
    return digest.hexdigest()[:16]


def socket_path(env: dict) -> Path:
    return _runtime_dir() / f"warm-{fingerprint(env)}.sock"


# --------------------------------------------------------------------------------------------
# The client side: core.jobs.launch
# --------------------------------------------------------------------------------------------


class WarmProcess:
    """A job forked by the warm server, with the part of subprocess.Popen's interface callers use.
    The server reaps it, so the exit code is read from the job's markers: 0 when the job ended
    done or cancelled, the signal's negative when this handle sent one, else 1."""

    def __init__(self, pid: int, job_dir: Path):
        self.pid, self.job_dir, self.returncode, self._signal = pid, Path(job_dir), None, None
        self.args = ["warm", str(job_dir)]

    def poll(self) -> int | None:
        from core import jobs

        if self.returncode is None and not jobs.pid_alive(self.pid):
            ended_well = (self.job_dir / jobs.DONE).exists() or (self.job_dir / jobs.CANCELLED).exists()
            self.returncode = -self._signal if self._signal else (0 if ended_well else 1)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self._signal = sig
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def spawn(job_dir: Path, env: dict, module: str = "core.jobs") -> WarmProcess | None:
    """Fork `module.main(["run", job_dir])` from the warm server. None when no server is ready:
    one is then started for the next job, and the caller starts this one cold."""
    if not enabled(env):
        return None
    try:
        path = socket_path(env)
    except OSError:  # no private runtime folder: start cold
        return None
    if path.with_suffix(".cold").exists():  # a server for this code found it could not fork safely
        return None
    try:
        request = {"module": module, "argv": ["run", str(Path(job_dir).resolve())], "env": dict(env),
                   "cwd": os.getcwd(), "log": str((Path(job_dir) / "log.txt").resolve())}
        reply = _ask(path, request)
    except FileNotFoundError:
        _start_server(path, env)
        return None
    except ConnectionRefusedError:  # the socket of a server that died (killed, out of memory)
        path.unlink(missing_ok=True)
        _start_server(path, env)
        return None
    except (OSError, ValueError):  # a timeout, a server going away mid-answer: start cold
        return None
    if not isinstance(reply.get("pid"), int):
        return None
    return WarmProcess(reply["pid"], Path(job_dir))


def _ask(path: Path, request: dict, timeout: float = 10.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data or b"{}")


def _start_server(path: Path, env: dict) -> None:
    """Start one server for this socket, unless another launch is already starting it."""
    starting = path.with_suffix(".starting")
    try:
        fd = os.open(starting, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        try:
            if time.time() - starting.stat().st_mtime >= 120:
                starting.unlink(missing_ok=True)  # a start that never finished (killed while importing)
        except OSError:  # the server just became ready and removed it
            pass
        return
    try:
        with open(path.with_suffix(".log"), "a", encoding="utf-8") as log:
            server = subprocess.Popen([sys.executable, "-m", "core.warm", "serve", str(path)],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=str(REPO), start_new_session=True)
        os.write(fd, str(server.pid).encode())  # so that stop_all can stop a server still importing
    except OSError:  # could not start one: this launch and the next start cold, a later one retries
        pass
    finally:
        os.close(fd)


def ensure_server(env: dict, timeout: float = 120.0) -> Path | None:
    """Start the server for env if none answers and wait until it is ready (benchmarks and tests
    that want every launch warm); its socket, or None when warm starts are off or it never came."""
    if not enabled(env):
        return None
    path = socket_path(env)
    deadline = time.time() + timeout
    while not path.exists():
        if not path.with_suffix(".starting").exists():
            _start_server(path, env)
        if time.time() > deadline:
            return None
        time.sleep(0.1)
    return path


def stop_all() -> int:
    """Ask every warm server of this user to exit (a job it forked runs on); returns how many did."""
    stopped = 0
    for path in _runtime_dir().glob("warm-*.sock"):
        try:
            _ask(path, {"stop": True}, timeout=5)
            stopped += 1
        except (OSError, ValueError):  # a socket left by a server that died
            path.unlink(missing_ok=True)
    for starting in _runtime_dir().glob("warm-*.starting"):  # servers still importing
        try:
            pid = int(starting.read_text() or 0)
            if pid and time.time() - starting.stat().st_mtime < 120:  # fresh: no other process has that pid
                os.kill(pid, signal.SIGTERM)
                stopped += 1
        except (OSError, ValueError):
            pass
        starting.unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def serve(path: Path) -> None:
    path = Path(path)
    started = time.time()
    loaded = []
    # A CUDA driver initialised here would be inherited half-usable by every fork, so a library
    # that asks torch.cuda.is_available() while importing gets NVML's answer (as vLLM does it).
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 (an optional package absent, or broken: the job will say)
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # forks could not use the GPU: serve none
        reason = "an import initialised CUDA: a forked job could not use the GPU, so jobs start cold"
        print(f"warm server: {reason}", flush=True)
        path.with_suffix(".cold").write_text(reason + "\n", encoding="utf-8")  # no retry for this code
        path.with_suffix(".starting").unlink(missing_ok=True)
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(temporary))
    os.chmod(temporary, 0o600)
    listener.listen(16)
    os.replace(temporary, path)  # ready only now, with everything imported
    inode = path.stat().st_ino
    path.with_suffix(".starting").unlink(missing_ok=True)
    print(f"warm server {os.getpid()} ready in {time.time() - started:.1f} s with {', '.join(loaded)}", flush=True)
    last = time.time()
    listener.settimeout(5.0)
    server_path0 = sys.path[0] if sys.path else None
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if time.time() - last > IDLE_SECONDS or not _still_ours(path, inode):
                break
            continue
        last = time.time()
        with conn:
            if _handle(conn, listener, server_path0) == "stop":
                break
    listener.close()
    if _still_ours(path, inode):
        path.unlink(missing_ok=True)
        path.with_suffix(".log").unlink(missing_ok=True)  # kept only when a server fails to start


def _still_ours(path: Path, inode: int) -> bool:
    try:
        return path.stat().st_ino == inode
    except OSError:
        return False


def _handle(conn: socket.socket, listener: socket.socket, server_path0: str | None) -> str | None:
    conn.settimeout(10.0)
    data = b""
    try:
        while not data.endswith(b"\n") and len(data) < MAX_REQUEST_BYTES:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        request = json.loads(data)
    except (OSError, ValueError):
        return None
    if request.get("stop"):
        conn.sendall(b'{"stopped": true}\n')
        return "stop"
    if threading.active_count() > 1:  # a fork copies only this thread: refuse rather than risk a hang
        conn.sendall(json.dumps({"error": "the warm server has threads; start cold"}).encode() + b"\n")
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        _run_child(request, server_path0)  # never returns
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    return None


def _run_child(request: dict, server_path0: str | None) -> None:
    """Inside the forked child: become the job process the cold launch would have started."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if sys.path and sys.path[0] == server_path0:  # `python -m` put the server's folder first;
            sys.path[0] = request["cwd"]              # a cold job would have the caller's
        sys.argv = [request["module"], *request["argv"]]
        code = int(importlib.import_module(request["module"]).main(request["argv"]) or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (reported in the job's log, as a cold process would)
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "serve":
        serve(Path(args[1]))
        return 0
    if args == ["stop"]:
        print(f"stopped {stop_all()} warm server(s)")
        return 0
    print("usage: python -m core.warm serve SOCKET | stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
