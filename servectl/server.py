"""Start, wait for, and stop one TorchServe instance: the names callers import, each defined
in the module that does that one job.

- ``servectl.launch``     preflight checks, environment, command line, ``start``
- ``servectl.readiness``  model status, the READY rule, ``wait_ready``, log tail
- ``servectl.processes``  finding an instance by its config path, ``stop``, ``stop_group``
- ``servectl.tokens``     TorchServe's API keys when token auth is on
"""

from __future__ import annotations

from servectl.errors import ServeError
from servectl.launch import EXPORTER, exporter_launcher, is_model_archive, port_in_use, preflight, start
from servectl.processes import group_members, instance_group, running_pid, stop, stop_group
from servectl.readiness import (
    is_ready,
    load_refusal,
    log_tail,
    model_metrics_up,
    model_status,
    ready_workers,
    wait_ready,
)
from servectl.tokens import auth_headers, keys

__all__ = [
    "EXPORTER",
    "ServeError",
    "auth_headers",
    "exporter_launcher",
    "group_members",
    "instance_group",
    "is_model_archive",
    "is_ready",
    "keys",
    "load_refusal",
    "log_tail",
    "model_metrics_up",
    "model_status",
    "port_in_use",
    "preflight",
    "ready_workers",
    "running_pid",
    "start",
    "stop",
    "stop_group",
    "wait_ready",
]
