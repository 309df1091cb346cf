"""Command line for the server: ``python -m servectl COMMAND [options]`` (``--help`` lists them).

Each command is one small function of the parsed options. The options that name the instance
(``servectl.options``) are shared; the others belong to the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from servectl import errors
from servectl.config.settings import REPO, ServeSettings
from servectl.instance import draining, launch, processes, readiness, tokens
from servectl.instance.java import JavaError, find_java
from servectl.options import instance, instance_options
from servectl.release import canary, lifecycle, watcher


def banner(settings: ServeSettings, status: dict[str, Any]) -> str:
    """What to try once READY. It never holds a secret (terminal scrollback, CI and container
    logs keep it): with token auth on, the curl reads the key with ``servectl token`` itself."""
    auth = f' -H "Authorization: Bearer $({token_command(settings)})"' if settings.token_auth else ""
    ready = readiness.ready_workers(status)
    url = f"{settings.inference.url}/predictions/{settings.model_name}"
    return (
        f"\n{settings.model_name} {status.get('modelVersion', '')} is READY "
        f"({ready} workers) at {url}\n"
        f"  try:  curl -s {url}{auth} -H 'Content-Type: application/json' "
        "-d @artifacts/example-request.json\n"
        f"  model card:  curl -s '{settings.management.url}/models/{settings.model_name}?customized=true'\n"
        f"  metrics:     {settings.metrics.url}/metrics (TorchServe), "
        f"{settings.model_metrics.url}/metrics (model: latency histograms, drift)\n"
        f"  logs:        {settings.log_dir}/\n"
    )


def token_command(settings: ServeSettings) -> str:
    """The shell command that prints this instance's inference key (run from the repo)."""
    return f"{shlex.quote(sys.executable)} -m servectl token --run-dir {shlex.quote(str(settings.run_dir))}"


def cmd_java(args: argparse.Namespace) -> int:
    java = find_java(allow_install=True)
    print(f"java {java.version}: {java.executable}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    token = tokens.keys(instance(args)).get("inference")
    if token:
        print(token)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = readiness.model_status(instance(args), timeout=args.timeout)
    print(json.dumps(status, indent=2) if status else "not running")
    if args.ready:  # a health check: registered is not enough, the workers must be READY
        return 0 if readiness.is_ready(status) else 1
    return 0 if status else 1


def cmd_stop(args: argparse.Namespace) -> int:
    settings = instance(args)
    canary.stop_proxy(settings)
    stopped = processes.stop(settings, timeout=args.timeout)
    print("stopped" if stopped else "no server of this project was running")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    settings = instance(args)
    if processes.instance_group(settings) is not None:
        raise errors.ServeError("already running ('make stop' first)")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.run_dir / "torchserve.out", "ab") as log:
        proc = launch.start(settings, stdout=log)
    try:
        status = readiness.wait_ready(settings, args.timeout, alive=running(proc))
        lifecycle.restore(settings, args.timeout)
    except errors.ServeError:
        processes.stop(settings)
        raise
    print(banner(settings, status))
    return 0


class Stopping(Exception):
    """SIGTERM (docker stop, pod deletion): drain, then stop."""


def _stopping(*_: object) -> None:
    raise Stopping


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve in the foreground. A stop that was asked for (SIGTERM, Ctrl-C) drains and exits 0;
    TorchServe ending by itself (a killed JVM) exits 1, so a restart policy brings it back."""
    settings = instance(args)
    proc = launch.start(settings)
    signal.signal(signal.SIGTERM, _stopping)
    try:
        status = readiness.wait_ready(settings, args.timeout, alive=running(proc))
        lifecycle.restore(settings, args.timeout)
        print(banner(settings, status), flush=True)
        print("Ctrl-C stops the server.", flush=True)
        code = proc.wait()
        print(f"servectl: error: TorchServe exited by itself (exit code {code})\n{readiness.log_tail(settings)}",
              file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Stopping):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the drain short
        print("\nstopping: draining requests...", flush=True)
        drained = draining.drain(settings)
        print("drained" if drained else "still busy after the drain timeout: stopping anyway", flush=True)
        return 0
    finally:
        processes.stop(settings)


def cmd_versions(args: argparse.Namespace) -> int:
    print(lifecycle.table(instance(args)))
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    settings = instance(args)
    lifecycle.rollout(settings, args.version, force=args.force, timeout=args.timeout)
    spawn_watcher(settings)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    watcher.watch(instance(args))
    return 0


def spawn_watcher(settings: ServeSettings) -> None:
    """Start ``servectl watch`` for this instance in the background (serve_config/lifecycle.yaml
    ``watch.auto``), logging to RUN_DIR/watcher.log; it ends with its window."""
    if not settings.lifecycle.watch.auto:
        return
    ports = [settings.inference.port, settings.management.port, settings.metrics.port, settings.model_metrics.port]
    argv = [sys.executable, "-m", "servectl", "watch", "--model", settings.model_name,
            "--run-dir", str(settings.run_dir), "--model-store", str(settings.model_store),
            "--ports", ",".join(map(str, ports))]  # fmt: skip
    with open(settings.run_dir / "watcher.log", "ab") as log:
        subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    print(f"servectl: watcher started (log: {settings.run_dir / 'watcher.log'})", flush=True)


def cmd_rollback(args: argparse.Namespace) -> int:
    """Abandon the canary VERSION, else roll the default VERSION back (refused when VERSION is
    neither any more: a compare-and-swap, so a rollback never undoes someone else's)."""
    canary.undo(instance(args), args.version)
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    settings = instance(args)
    percent = args.percent if args.percent is not None else settings.lifecycle.canary_percent
    canary.start_canary(settings, args.version, percent, port=args.proxy_port, force=args.force)
    spawn_watcher(settings)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    settings = instance(args)
    canary.promote(settings)
    spawn_watcher(settings)
    return 0


def cmd_retire(args: argparse.Namespace) -> int:
    lifecycle.retire(instance(args), args.version)
    return 0


def lifecycle_commands(commands: Any, shared: list[argparse.ArgumentParser]) -> None:
    """versions, rollout, rollback, retire: servectl.release.lifecycle against a running instance."""
    commands.add_parser("versions", parents=shared, help="versions built and loaded").set_defaults(func=cmd_versions)
    rollout = commands.add_parser("rollout", parents=shared, help="load a version, check it, make it the default")
    rollout.add_argument("version")
    rollout.add_argument("--force", action="store_true", help="roll out despite a failed pre-flight check")
    rollout.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for its workers")
    rollout.set_defaults(func=cmd_rollout)
    rollback = commands.add_parser("rollback", parents=shared, help="abandon the canary, else the previous default")
    rollback.add_argument("version", help="the version to undo: refused unless it is still the canary or the default")
    rollback.set_defaults(func=cmd_rollback)
    cany = commands.add_parser("canary", parents=shared, help="send a share of the default path to a version")
    cany.add_argument("version")
    cany.add_argument("--percent", type=float, help="share of the default path (default: serve_config/lifecycle.yaml)")
    cany.add_argument("--proxy-port", type=int, help="the canary proxy's loopback port (default canary_proxy_address)")
    cany.add_argument("--force", action="store_true", help="despite a failed pre-flight check")
    cany.set_defaults(func=cmd_canary)
    commands.add_parser("promote", parents=shared, help="the canary becomes the default").set_defaults(func=cmd_promote)
    watch_help = "roll back automatically on a breach (serve_config/lifecycle.yaml)"
    commands.add_parser("watch", parents=shared, help=watch_help).set_defaults(func=cmd_watch)
    retire = commands.add_parser("retire", parents=shared, help="unload a non-default version once drained")
    retire.add_argument("version")
    retire.set_defaults(func=cmd_retire)


def running(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="servectl", description=__doc__.split("\n\n")[0])
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = [instance_options()]
    for name, func, what in (
        ("serve", cmd_serve, "serve in the foreground until Ctrl-C"),
        ("start", cmd_start, "start in the background, return once READY"),
    ):
        sub = commands.add_parser(name, parents=shared, help=what)
        sub.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for READY")
        sub.set_defaults(func=func)
    stop = commands.add_parser("stop", parents=shared, help="stop this run folder's server")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds TorchServe gets to exit before SIGKILL")
    stop.set_defaults(func=cmd_stop)
    status = commands.add_parser("status", parents=shared, help="the model's status")
    status.add_argument("--ready", action="store_true", help="exit 1 unless minWorkers are READY")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the management API")
    status.set_defaults(func=cmd_status)
    commands.add_parser("token", parents=shared, help="print the inference key").set_defaults(func=cmd_token)
    commands.add_parser("java", help="find or install Java 11+").set_defaults(func=cmd_java)
    lifecycle_commands(commands, shared)
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (errors.ServeError, JavaError) as exc:
        print(f"servectl: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
