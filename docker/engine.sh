#!/bin/sh
# A Docker engine for `make image`, the container tier and the compose stack, and the one line
# saying what is missing when there is none.
#
#   engine.sh env     print DOCKER_HOST=... of an engine that answers (starting the project's own)
#   engine.sh stop    stop the project's own daemon (by its pid file), if this script started it
#
# An engine that already answers (DOCKER_HOST, or the default socket) is used as it is. Otherwise,
# where dockerd is installed and this runs as root, the project starts its own daemon: its own
# socket and data root (layers survive across runs and clones: /var/cache by default), no
# iptables/NAT changes on the host and no default bridge (builds use --network host; tests use
# a user network of their own), so it can run beside another engine.
set -eu
STATE="${TS_DOCKER_STATE:-/run/torchserve-tabular-docker}"
DATA_ROOT="${TS_DOCKER_DATA_ROOT:-/var/cache/torchserve-tabular-docker}"
SOCKET="unix://$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
DEADLINE="${TS_DOCKER_START_SECONDS:-60}"

answers() { DOCKER_HOST="$1" timeout 10 docker info >/dev/null 2>&1; }

start_own() {
  command -v docker >/dev/null || { echo "no Docker engine: the docker CLI is not installed (apt-get install docker.io)" >&2; exit 1; }
  command -v dockerd >/dev/null || { echo "no Docker engine: none answers and dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "no Docker engine: none answers and starting the project's own dockerd needs root" >&2; exit 1; }
  mkdir -p "$STATE" "$DATA_ROOT"
  # a stale pid file of a daemon that died: start afresh
  if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fi
  if [ ! -f "$PIDFILE" ]; then
    setsid dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
      --data-root "$DATA_ROOT" --exec-root "$STATE/exec" --pidfile "$PIDFILE" -H "$SOCKET" \
      >>"$STATE/dockerd.log" 2>&1 </dev/null &
  fi
  # readiness with a deadline: the daemon answers `docker info`
  end=$(( $(date +%s) + DEADLINE ))
  until answers "$SOCKET"; do
    if [ "$(date +%s)" -ge "$end" ]; then
      echo "no Docker engine: the project's dockerd did not answer within ${DEADLINE}s (see $STATE/dockerd.log)" >&2
      exit 1
    fi
    sleep 0.5
  done
}

case "${1:-env}" in
  env)
    if [ -n "${DOCKER_HOST:-}" ] && answers "$DOCKER_HOST"; then echo "DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
    if [ -z "${DOCKER_HOST:-}" ] && timeout 10 docker info >/dev/null 2>&1; then echo "DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}"; exit 0; fi
    answers "$SOCKET" || start_own
    echo "DOCKER_HOST=$SOCKET" ;;
  stop)
    if [ -f "$PIDFILE" ]; then
      pid="$(cat "$PIDFILE")"
      kill "$pid" 2>/dev/null || true
      end=$(( $(date +%s) + DEADLINE ))
      while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
    fi ;;
  *) echo "usage: $0 [env|stop]" >&2; exit 2 ;;
esac
