#!/bin/sh
# The container's command. tini is PID 1 and reaps orphans; this script replaces itself
# (exec) with servectl, which starts TorchServe in its own process group, waits until the
# model is READY, and on SIGTERM/SIGINT (docker stop, pod deletion) drains the requests it
# holds, stops the whole group and exits 0; when TorchServe ends by itself (a killed JVM) it
# exits 1, so the platform's restart policy starts the container again.
#
#   entrypoint.sh [serve] [servectl options]   serve in the foreground (the default)
#   entrypoint.sh health                       exit 0 only when minWorkers are READY
#
# It runs unchanged outside a container (tests/deploy/test_entrypoint.py) with the
# project's .venv/bin first on PATH.
set -eu
cd "$(dirname "$0")/.."
MODEL_NAME="${MODEL_NAME:-tabular_classifier}"
RUN_DIR="${RUN_DIR:-.run/container}"
OVERLAY=serve_config/config.container.properties
SERVECTL_OVERLAY=serve_config/servectl.container.yaml

command="${1:-serve}"
[ "$#" -gt 0 ] && shift
case "$command" in
  serve)
    exec python -m servectl serve --model "$MODEL_NAME" --run-dir "$RUN_DIR" --config-overlay "$OVERLAY" --servectl-overlay "$SERVECTL_OVERLAY" "$@" ;;
  health)
    exec python -m servectl status --ready --model "$MODEL_NAME" --run-dir "$RUN_DIR" --config-overlay "$OVERLAY" --servectl-overlay "$SERVECTL_OVERLAY" "$@" ;;
  *)
    echo "usage: $0 [serve|health] [servectl options]" >&2
    exit 2 ;;
esac
