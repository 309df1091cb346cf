"""Start, wait for, and stop one TorchServe instance.

Readiness is the model's workers reported READY by the management API, polled against
a deadline: ``/ping`` answers Healthy while workers crash-loop, so it proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import requests

from servectl.java import find_java, install_allowed
from servectl.settings import ServeSettings

PID_FILE = "torchserve.pid"
EXPORTER = Path(__file__).resolve().with_name("exporter.py")


class ServeError(RuntimeError):
    """The server could not be started or did not become ready; the message says why."""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def preflight(settings: ServeSettings) -> None:
    """Fail before starting Java, with a message a person can act on."""
    if not settings.mar.is_file():
        raise ServeError(f"{settings.mar} does not exist: run 'make archive' first")
    if not is_model_archive(settings.mar):
        raise ServeError(
            f"{settings.mar} is not a model archive (not a zip with MAR-INF/MANIFEST.json): "
            "rebuild it with 'make archive'"
        )
    for name in ("inference", "management", "metrics", "model_metrics"):
        endpoint = getattr(settings, name)
        if port_in_use(endpoint.host, endpoint.port):
            raise ServeError(
                f"{name} port {endpoint.host}:{endpoint.port} is already in use "
                "(another TorchServe? 'make stop' stops this project's)"
            )


def is_model_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "MAR-INF/MANIFEST.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def keys(settings: ServeSettings) -> dict[str, str]:
    """TorchServe's current keys from the run dir's key_file.json ({} when token auth is off).

    TorchServe 0.12 writes ``{"management": {"key": ..., "expiration time": ...},
    "inference": {...}, "API": {"key": ...}}`` into its working directory (the run dir) at
    start-up; read while it is being written the file can be empty or cut short, which
    means "no keys yet", not an error.
    """
    path = settings.run_dir / "key_file.json"
    if not path.is_file():  # start() removes a stale one; only a token-auth server writes it
        return {}
    try:
        data = json.loads(path.read_text())
        return {kind: data[kind]["key"] for kind in ("inference", "management", "API") if kind in data}
    except (ValueError, KeyError, TypeError):
        return {}


def auth_headers(settings: ServeSettings, kind: str) -> dict[str, str]:
    key = keys(settings).get(kind)
    return {"Authorization": f"Bearer {key}"} if key else {}


def start(settings: ServeSettings, stdout=None, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Launch TorchServe in its own session (so stopping it stops its workers too)."""
    preflight(settings)
    java = find_java(allow_install=install_allowed())
    run_dir = settings.run_dir
    (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "key_file.json").unlink(missing_ok=True)
    config = settings.render()
    env = dict(os.environ)
    env.update(
        {
            # torchserve keeps a global pid file in $TMPDIR: one per instance lets several run
            "TMPDIR": str(run_dir / "tmp"),
            "TEMP": str(run_dir / "tmp"),  # java.io.tmpdir: worker sockets, unpacked .mar
            "LOG_LOCATION": str(settings.log_dir),
            "METRICS_LOCATION": str(settings.log_dir),
            # the handler parses raw bytes itself: faster, and invalid JSON gets a clear 400
            "TS_DECODE_INPUT_REQUEST": "false",
            # threads per worker; a deployment sets it so workers x threads = its CPU limit
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONUNBUFFERED": "1",
            # handlers.telemetry: each worker writes here, servectl.exporter merges and serves
            "PROMETHEUS_MULTIPROC_DIR": str(settings.multiproc_dir),
        }
    )
    shutil.rmtree(settings.multiproc_dir, ignore_errors=True)  # counters start at zero
    settings.multiproc_dir.mkdir(parents=True)
    if java.java_home is not None:
        env["JAVA_HOME"] = str(java.java_home)
    env.update(extra_env or {})
    torchserve = Path(sys.executable).with_name("torchserve")
    cmd = [
        str(torchserve),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config),
        "--model-store",
        str(settings.model_store),
        "--models",
        f"{settings.model_name}={settings.mar.name}",
        "--log-config",
        str(settings.log_config),
    ]
    cmd = exporter_launcher(settings) + ["--", *cmd]
    proc = subprocess.Popen(
        cmd, cwd=run_dir, env=env, start_new_session=True, stdout=stdout, stderr=subprocess.STDOUT
    )
    (run_dir / PID_FILE).write_text(str(proc.pid))
    return proc


def exporter_launcher(settings: ServeSettings) -> list[str]:
    """The exporter forks off and execs TorchServe: same pid, same process group."""
    endpoint = settings.model_metrics
    return [
        sys.executable,
        str(EXPORTER),
        "--listen",
        f"{endpoint.host}:{endpoint.port}",
        "--multiproc-dir",
        str(settings.multiproc_dir),
        "--management",
        settings.management.url,
        "--model",
        settings.model_name,
        "--key-file",
        str(settings.run_dir / "key_file.json"),
    ]


def model_metrics_up(settings: ServeSettings, timeout: float = 2.0) -> bool:
    try:
        return requests.get(f"{settings.model_metrics.url}/metrics", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def model_status(settings: ServeSettings, timeout: float = 2.0) -> dict | None:
    """The describe answer for the model, or None while it is not registered yet."""
    try:
        resp = requests.get(
            f"{settings.management.url}/models/{settings.model_name}",
            headers=auth_headers(settings, "management"),
            timeout=timeout,
        )
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    data = resp.json()
    return data[0] if isinstance(data, list) and data else None


def ready_workers(status: dict | None) -> int:
    if not status:
        return 0
    return sum(1 for w in status.get("workers", []) if w.get("status") == "READY")


def is_ready(status: dict | None) -> bool:
    """At least minWorkers (and at least one) workers READY: what start-up waits for."""
    wanted = max(1, int(status.get("minWorkers", 1))) if status else 1
    return ready_workers(status) >= wanted


def wait_ready(
    settings: ServeSettings,
    timeout: float = 120.0,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.25,
) -> dict:
    """Poll until the model has minWorkers READY workers; raise with the log tail if not."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        if not alive():
            raise ServeError("TorchServe exited during start-up\n" + log_tail(settings))
        status = model_status(settings)
        if is_ready(status) and model_metrics_up(settings):
            return status
        refused = load_refused(settings)
        if refused:  # workers would crash-loop until maxRetryTimeoutInSec: say why now
            raise ServeError(f"model {settings.model_name!r} refused to load: {refused}")
        time.sleep(interval)
    workers = [w.get("status") for w in (status or {}).get("workers", [])]
    if is_ready(status):
        raise ServeError(
            f"the model-metrics exporter did not answer on {settings.model_metrics.url}/metrics "
            f"after {timeout:.0f}s (see {settings.run_dir}/torchserve.out)"
        )
    raise ServeError(
        f"model {settings.model_name!r} had no READY workers after {timeout:.0f}s "
        f"(workers: {workers or 'none registered'})\n" + log_tail(settings)
    )


def load_refused(settings: ServeSettings) -> str | None:
    """The handler's refusal to serve (e.g. a sha256 mismatch) from the model log, if any
    since this instance started (the log folder outlives restarts)."""
    path = settings.log_dir / "model_log.log"
    try:
        started = (settings.run_dir / PID_FILE).stat().st_mtime - 1
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 65536))
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "ModelCardError:" in line and _log_time(line) >= started:
            return line.split("ModelCardError:", 1)[-1].strip()
    return None


def _log_time(line: str) -> float:
    """Epoch seconds of a log4j line ("2026-11-23T19:05:35,771 [INFO ] ..."); 0 if none."""
    try:
        return datetime.strptime(line[:19], "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return 0.0


def log_tail(settings: ServeSettings, lines: int = 25) -> str:
    chunks = []
    for name in ("model_log.log", "ts_log.log"):
        path = settings.log_dir / name
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- last lines of {path} ---\n" + "\n".join(tail))
    return "\n".join(chunks) or f"(no logs in {settings.log_dir})"


def running_pid(settings: ServeSettings) -> int | None:
    """The pid of this run folder's TorchServe, if that process is still ours and alive."""
    path = settings.run_dir / PID_FILE
    try:
        pid = int(path.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"torchserve" in cmdline else None


def stop(settings: ServeSettings, timeout: float = 30.0) -> bool:
    """Stop this run folder's TorchServe and its workers; True if one was running."""
    pid = running_pid(settings)
    (settings.run_dir / PID_FILE).unlink(missing_ok=True)
    if pid is None:
        return False
    stop_group(pid, timeout)
    (settings.run_dir / "key_file.json").unlink(missing_ok=True)
    return True


def stop_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process group and wait for its leader (TorchServe); then SIGKILL the rest.

    While it shuts down, TorchServe may respawn a worker for a connection it just closed;
    that orphan would idle in accept() for 30 s. Once the leader is gone nothing left in
    the group is wanted, so it is killed at once instead of being waited for.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pgid):
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    _reap(pid)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
