"""Each lifecycle step (rollout, rollback, retire, canary, promote) under the mixed load, measured
(tests/support/lifecycle.py: the server, the load, the checks): how long the step took, and every
answer during it checked against the in-process output of the version that gave it.

    python -m benchmarks.lifecycle [--seconds 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from common.model_card import METADATA_FILE, ModelCard
from servectl.config.settings import REPO, free_loopback_ports
from servectl.release import canary, lifecycle
from tests.support.lifecycle import lifecycle_server, under_load
from tests.support.loadmix import Mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="load before and after each step")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lifecycle-"))
    failed = False
    try:
        with lifecycle_server(work) as (settings, expected, old, new):
            card = ModelCard.load(REPO / "artifacts" / METADATA_FILE)
            x = torch.load(REPO / "artifacts" / "test_split.pt", weights_only=True)["x"].numpy()
            mix = Mix(x, list(card.feature_names))
            proxy_port = free_loopback_ports(1)[0]
            canary.apply(settings, None, 0, proxy_port)  # the clients' way in, no split yet
            proxy = f"http://127.0.0.1:{proxy_port}"
            steps: list[tuple[str, Callable[[], object]]] = [
                (f"rollout {new}", lambda: lifecycle.rollout(settings, new)),
                ("rollback", lambda: lifecycle.rollback(settings, new)),
                (f"retire {new}", lambda: lifecycle.retire(settings, new)),
                (f"canary {new} 10%", lambda: canary.start_canary(settings, new, 10, port=proxy_port)),
                ("promote", lambda: canary.promote(settings)),
                ("rollback after promote", lambda: lifecycle.rollback(settings, new)),
            ]
            for name, action in steps:
                step = under_load(
                    settings, mix, expected, list(card.class_names), name, action,
                    settle=args.seconds, connections=args.connections, base_url=proxy,
                )
                print(json.dumps(step.summary()), flush=True)
                failed |= bool(step.report.problems or step.report.server_errors or step.report.no_answer)
            canary.stop_proxy(settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
