"""Find one instance's processes and stop them, across CLI invocations and without a PID file.

An instance is the process group whose TorchServe was started with that run folder's
rendered config (``--ts-config CONFIG``; its Java frontend has ``-f CONFIG``): psutil finds it
by that absolute path in the command lines, so ``make serve-bg`` in one shell and ``make stop``
in another agree on it, and a stale file can never point at a reused pid.
"""

from __future__ import annotations

import os
import signal
from contextlib import suppress

import psutil

from servectl.config.settings import ServeSettings
from servectl.errors import ServeError
from servectl.waiting import WaitTimeout, wait_for

CONFIG_FLAGS = ("--ts-config", "-f")  # torchserve's launcher, its Java frontend (ModelServer)


def launched_with(cmdline: list[str], config: str) -> bool:
    """True when ``cmdline`` passes ``config`` to TorchServe (the launcher or the frontend)."""
    return any(flag in CONFIG_FLAGS and value == config for flag, value in zip(cmdline, cmdline[1:]))


def instance_processes(settings: ServeSettings) -> list[psutil.Process]:
    """The live processes started with this run folder's config (zombies have no command line)."""
    config = str(settings.config_file)
    return [p for p in psutil.process_iter(["cmdline"]) if launched_with(p.info["cmdline"] or [], config)]


def instance_group(settings: ServeSettings) -> int | None:
    """The process group of this run folder's TorchServe, also when only orphans of it are left."""
    for proc in instance_processes(settings):
        with suppress(ProcessLookupError):
            return os.getpgid(proc.pid)
    return None


def running_pid(settings: ServeSettings) -> int | None:
    """The pid of this run folder's TorchServe (its process group's leader), if it runs."""
    for proc in instance_processes(settings):
        with suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                return proc.pid
    return None


def group_members(pgid: int) -> list[psutil.Process]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with suppress(ProcessLookupError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
    return members


def stop(settings: ServeSettings, timeout: float = 30.0) -> bool:
    """Stop this run folder's TorchServe and its workers; True if one was running."""
    pgid = instance_group(settings)
    if pgid is None:
        return False
    stop_group(pgid, timeout)
    settings.key_file.unlink(missing_ok=True)
    return True


def stop_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process group and wait for its leader (TorchServe); then SIGKILL the rest.

    While it shuts down, TorchServe may respawn a worker for a connection it just closed;
    that orphan would idle in accept() for 30 s. Once the leader is gone nothing left in
    the group is wanted, so it is killed at once instead of being waited for.
    """
    leader = _process(pgid)
    if not _signal_group(pgid, signal.SIGTERM):
        return
    if leader is not None:
        with suppress(WaitTimeout):  # then SIGKILL decides
            wait_for(lambda: exited(leader), timeout, f"TorchServe (pid {pgid}) to exit", interval=0.05)
    if not _signal_group(pgid, signal.SIGKILL):
        return
    # until no live member is left; zombies are not waited for (their parent, or init, reaps
    # them whenever it does, and they hold nothing but a pid)
    try:
        wait_for(lambda: not group_members(pgid), 5.0, f"process group {pgid} to end after SIGKILL", interval=0.05)
    except WaitTimeout as exc:
        raise ServeError(str(exc)) from None


def exited(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited: reaped here if it is our child; a zombie counts as gone."""
    try:
        proc.wait(timeout=0)
    except psutil.TimeoutExpired:
        with suppress(psutil.NoSuchProcess):  # reaped meanwhile: gone
            return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    return True


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group (0: none, a probe); False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
