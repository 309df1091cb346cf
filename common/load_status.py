"""What the handler tells servectl about loading the model, through a file, not a log line.

servectl sets ``MODEL_LOAD_STATUS`` to a path in the instance's run folder; a handler that
refuses to serve (e.g. a sha256 mismatch) writes the reason there before it raises, so
servectl can stop waiting at once and say why, instead of scraping ``model_log.log``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "MODEL_LOAD_STATUS"


def write_refusal(model_name: str, reason: str) -> None:
    """Record that ``model_name`` refused to load (no-op when servectl set no path)."""
    path = os.environ.get(ENV)
    if not path:
        return
    record = {"model": model_name, "status": "refused", "reason": reason, "pid": os.getpid(), "time": time.time()}
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # atomic: a reader never sees half a record


def read_refusal(path: Path, model_name: str, since: float = 0.0) -> str | None:
    """The reason ``model_name`` refused to load, if the handler wrote one to ``path`` (at
    ``since``, a ``time.time()``, or later: an older refusal is another load's)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("model") == model_name and record.get("status") == "refused" \
            and float(record.get("time", 0)) >= since:
        return str(record.get("reason", "no reason given"))
    return None
