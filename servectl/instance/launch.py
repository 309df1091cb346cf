"""Launch one TorchServe instance: refuse early with a message a person can act on, then start
it, with the model-metrics exporter, in a process group of its own."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import IO

from common.load_status import ENV as LOAD_STATUS_ENV
from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.instance.java import Java, find_java, install_allowed
from servectl.store import digests
from servectl.store.versions import startup_archive

EVENTS_FILE = "auto_rollbacks.jsonl"  # servectl.release.watcher writes it, the exporter counts it

EXPORTER = Path(__file__).resolve().parents[1] / "metrics" / "exporter.py"


def port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails now: exactly TorchServe's question (psutil's socket
    list would miss other users' sockets and addresses that overlap 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def is_model_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "MAR-INF/MANIFEST.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def preflight(settings: ServeSettings) -> None:
    """Fail before starting Java, with a message a person can act on."""
    mar = startup_archive(settings)
    if not mar.is_file():
        raise ServeError(f"{mar} does not exist: run 'make archive' first")
    if not is_model_archive(mar):
        raise ServeError(
            f"{mar} is not a model archive (not a zip with MAR-INF/MANIFEST.json): "
            "rebuild it with 'make archive'"
        )
    digests.verify(mar)  # before TorchServe runs any of its code
    for name in ("inference", "management", "metrics", "model_metrics"):
        endpoint = getattr(settings, name)
        if port_in_use(endpoint.host, endpoint.port):
            raise ServeError(
                f"{name} port {endpoint.host}:{endpoint.port} is already in use "
                "(another TorchServe? 'make stop' stops this project's)"
            )


def environment(settings: ServeSettings, java: Java, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """TorchServe's environment; its workers inherit it from the Java frontend."""
    tmp = str(settings.run_dir / "tmp")
    # TS_CONFIG_FILE would override --ts-config; TS_SERVICE_ENVELOPE (KServe's runtime sets it)
    # would make the handler answer in an envelope format that this config's frontend never wraps
    inherited = {k: v for k, v in os.environ.items() if k not in ("TS_CONFIG_FILE", "TS_SERVICE_ENVELOPE")}
    env = {
        **inherited,
        "TMPDIR": tmp,  # torchserve keeps a global pid file in $TMPDIR: one per instance lets several run
        "TEMP": tmp,  # java.io.tmpdir: worker sockets, unpacked .mar
        "LOG_LOCATION": str(settings.log_dir),
        "METRICS_LOCATION": str(settings.log_dir),
        # the handler parses raw bytes itself: faster, and invalid JSON gets a clear 400
        "TS_DECODE_INPUT_REQUEST": "false",
        "PYTHONUNBUFFERED": "1",
        # handlers.telemetry: each worker writes here, servectl.metrics.exporter merges and serves
        "PROMETHEUS_MULTIPROC_DIR": str(settings.multiproc_dir),
        # common.load_status: a handler that refuses the model says why here
        LOAD_STATUS_ENV: str(settings.load_status_file),
    }
    if java.java_home is not None:
        env["JAVA_HOME"] = str(java.java_home)
    return {**env, **(extra_env or {})}


def torchserve_command(settings: ServeSettings) -> list[str]:
    """TorchServe in the foreground; ``--ts-config`` (absolute) is how servectl finds it again."""
    return [
        str(Path(sys.executable).with_name("torchserve")),
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(settings.config_file),
        "--model-store",
        str(settings.model_store),
        "--models",
        f"{settings.model_name}={startup_archive(settings).name}",
        "--log-config",
        str(settings.log_config),
    ]


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
        str(settings.key_file),
        "--events-file",
        str(settings.run_dir.resolve() / EVENTS_FILE),
    ]


def prepare_run_dir(settings: ServeSettings) -> None:
    """Fresh per-start state: no stale keys, load status or worker metrics (counters start at zero)."""
    (settings.run_dir / "tmp").mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.key_file.unlink(missing_ok=True)
    settings.load_status_file.unlink(missing_ok=True)
    (settings.run_dir / EVENTS_FILE).unlink(missing_ok=True)  # the counter starts at zero
    shutil.rmtree(settings.multiproc_dir, ignore_errors=True)
    settings.multiproc_dir.mkdir(parents=True)
    settings.render()


def start(
    settings: ServeSettings, stdout: IO[bytes] | int | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Launch TorchServe in a new session, so its process group holds the frontend, its workers
    and the exporter, and stopping the group stops them all."""
    preflight(settings)
    java = find_java(allow_install=install_allowed())
    prepare_run_dir(settings)
    return subprocess.Popen(
        [*exporter_launcher(settings), "--", *torchserve_command(settings)],
        cwd=settings.run_dir,
        env=environment(settings, java, extra_env),
        start_new_session=True,
        stdout=stdout,
        stderr=subprocess.STDOUT,
    )
