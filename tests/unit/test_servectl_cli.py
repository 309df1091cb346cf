"""servectl without a TorchServe: its command line, finding and stopping an instance's process
group by its config path, and stopping the READY wait as soon as the handler refuses the model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from common.load_status import ENV, write_refusal
from servectl import errors
from servectl.__main__ import parser
from servectl.config.settings import ServeSettings
from servectl.instance import processes, readiness
from servectl.instance.java import Java
from servectl.waiting import wait_for
from tests.conftest import free_ports


def parse(*argv: str):
    return parser().parse_args(list(argv))


@pytest.mark.parametrize("command", ["serve", "start", "stop", "status", "token"])
def test_every_instance_command_takes_the_makefile_options(command, tmp_path):
    args = parse(command, "--model", "m", "--run-dir", str(tmp_path), "--ports", "1,2,3,4",
                 "--config-overlay", "o.properties", "--model-store", "store", "--set", "a=b=c", "--set", "d=")
    assert (args.model, args.run_dir, args.ports, args.set) == ("m", tmp_path, [1, 2, 3, 4], [("a", "b=c"), ("d", "")])


def test_each_command_takes_only_its_own_options(capsys):
    assert parse("start", "--timeout", "5").timeout == 5 and parse("serve").timeout == 120
    assert parse("status", "--ready").ready and parse("stop").timeout == 30
    for argv in (["token", "--ready"], ["token", "--timeout", "1"], ["start", "--ready"], ["java", "--model", "m"]):
        with pytest.raises(SystemExit) as exc:
            parse(*argv)
        assert exc.value.code == 2, argv
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["status", "--set", "no-equals-sign"], "--set takes KEY=VALUE"),
    (["stop", "--ports", "1,2"], "--ports takes INFERENCE,MANAGEMENT,METRICS[,MODEL_METRICS]"),
    (["stop", "--ports", "a,b,c"], "--ports takes INFERENCE,MANAGEMENT,METRICS[,MODEL_METRICS]"),
    ([], "required: COMMAND"),
])
def test_malformed_command_lines_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def fake_instance(settings: ServeSettings, orphan_ignores_sigterm: bool) -> subprocess.Popen:
    """A process group shaped like servectl's: a leader named by ``--ts-config CONFIG`` that
    exits on SIGTERM, and a child (a respawned worker) that may ignore SIGTERM."""
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)" if orphan_ignores_sigterm else "import time"
    leader = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child + '; time.sleep(60)'!r}])\n"
        "time.sleep(60)\n"
    )
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", leader, "--ts-config", str(settings.config_file)],
                            start_new_session=True)


def settled_group(pgid: int, size: int) -> list[psutil.Process]:
    """The group's members once all ``size`` of them run."""
    return wait_for(lambda: len(m := processes.group_members(pgid)) >= size and m, 10, f"{size} processes in group {pgid}")


@pytest.mark.parametrize("orphan_ignores_sigterm", [False, True])
def test_stop_finds_the_instance_by_its_config_and_ends_its_whole_group(tmp_path, orphan_ignores_sigterm):
    settings = ServeSettings.load("m", run_dir=tmp_path / "run")
    other = ServeSettings.load("m", run_dir=tmp_path / "other")
    assert processes.running_pid(settings) is None and not processes.stop(settings)
    proc = fake_instance(settings, orphan_ignores_sigterm)
    try:
        members = settled_group(proc.pid, 2)
        assert processes.running_pid(settings) == proc.pid == processes.instance_group(settings)
        assert processes.running_pid(other) is None  # another run folder is another instance
        t0 = time.monotonic()
        assert processes.stop(settings, timeout=60)
        took = time.monotonic() - t0
        assert not processes.group_members(proc.pid) and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)
        # far under the 60 s SIGTERM grace: the orphan was killed once the leader was gone, not waited for
        assert took < 30, f"stop took {took:.1f} s: a SIGTERM-deaf orphan must be killed once the leader is gone"
        assert processes.running_pid(settings) is None and not processes.stop(settings)
    finally:
        if processes.group_members(proc.pid):
            os.killpg(proc.pid, 9)
        proc.wait()


def test_an_orphaned_frontend_is_still_found_and_stopped(tmp_path):
    """If TorchServe's launcher died, its Java frontend (``-f CONFIG``) still names the instance."""
    settings = ServeSettings.load("m", run_dir=tmp_path / "run")
    settings.run_dir.mkdir(parents=True)
    frontend = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-f", str(settings.config_file)],
                                start_new_session=True)
    try:
        settled_group(frontend.pid, 1)
        assert processes.instance_group(settings) == frontend.pid
        assert processes.stop(settings, timeout=10) and not processes.group_members(frontend.pid)
    finally:
        frontend.kill()
        frontend.wait()


def test_wait_ready_stops_at_once_with_the_handler_s_refusal(tmp_path, monkeypatch):
    settings = ServeSettings.load("m", run_dir=tmp_path).with_ports(*free_ports(4)[:3])
    monkeypatch.setenv(ENV, str(settings.load_status_file))  # what servectl gives the workers
    write_refusal("m", "sha256 of model.pt does not match the metadata")
    t0 = time.monotonic()
    with pytest.raises(errors.ServeError) as exc:
        readiness.wait_ready(settings, timeout=60)
    assert time.monotonic() - t0 < 5
    assert str(exc.value) == "model 'm' refused to load: sha256 of model.pt does not match the metadata"


def test_another_model_s_refusal_is_not_this_one_s(tmp_path, monkeypatch):
    settings = ServeSettings.load("m", run_dir=tmp_path).with_ports(*free_ports(4)[:3])
    monkeypatch.setenv(ENV, str(settings.load_status_file))
    write_refusal("other", "not mine")
    with pytest.raises(errors.ServeError) as exc:
        readiness.wait_ready(settings, timeout=1)
    assert "had no READY workers after 1s (workers: none registered)" in str(exc.value)


def test_start_clears_a_stale_refusal(tmp_path, monkeypatch):
    from servectl.instance.launch import prepare_run_dir

    settings = ServeSettings.load("m", run_dir=tmp_path)
    monkeypatch.setenv(ENV, str(settings.load_status_file))
    write_refusal("m", "from the last start")
    prepare_run_dir(settings)
    assert readiness.load_refusal(settings) is None and settings.config_file.is_file()


def test_torchserve_gets_the_status_path_and_no_thread_count(tmp_path, monkeypatch):
    from servectl.instance.launch import environment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    settings = ServeSettings.load("m", run_dir=tmp_path)
    env = environment(settings, Java(Path("/usr/bin/java"), 17, None))
    assert env[ENV] == str(settings.load_status_file) and Path(env[ENV]).parent == tmp_path
    assert "OMP_NUM_THREADS" not in env  # the handler takes its threads from model-config.yaml


def test_monitor_reads_the_same_instance_options(capsys, monkeypatch, tmp_path):
    """make monitor passes SERVE_ARGS too; exec of Prometheus is replaced to see its command line."""
    from servectl.metrics import monitor

    monkeypatch.setattr(monitor.os, "execv", lambda path, cmd: (_ for _ in ()).throw(SystemExit(cmd)))
    monkeypatch.setattr(monitor, "prometheus_binary", lambda: "prometheus")
    with pytest.raises(SystemExit) as exc:
        monitor.main(["--ports", "1,2,3"])
    assert exc.value.code == 2 and "give all four" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # SERVE_ARGS's --timeout is the server's: ignored here
        monitor.main(["--ports", "9100,9101,9102,9103", "--timeout", "60", "--run-dir", str(tmp_path)])
    config = Path(next(a for a in exc.value.code if a.startswith("--config.file=")).split("=", 1)[1])
    targets = "".join(p.read_text() for p in sorted((config.parent / "targets").glob("*.yml")))
    assert "127.0.0.1:9102" in targets and "127.0.0.1:9103" in targets  # the instance's metrics ports
