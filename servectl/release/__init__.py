"""Versions of the model on a running instance, and where a release decides.

- ``lifecycle``      rollout (pre-flight through the server), rollback, retire, restore
- ``canary``         the canary proxy's split, promote, abandon
- ``watcher``        automatic rollback: the thresholds of lifecycle.yaml ``watch`` (``breach``)
- ``watch_sources``  what the watcher reads: per-version metrics, the split log, worker pids
- ``oplock``         one lock around every lifecycle operation
"""
