#!/bin/sh
# `make image`: build docker/Dockerfile as IMAGE from the repo root, here or on a machine with
# registry access, with one Dockerfile. Each thing a build needs is checked first, and a missing
# one ends the build with one line naming it:
#   - an engine (docker/engine.sh: the one that answers, else the project's own dockerd)
#   - the base: PYTHON_IMAGE when the engine has it or can pull it, else a Debian bookworm base
#     bootstrapped from Debian's packages (docker/base-image.sh, LOCAL_BASE)
#   - the locked torch wheel (torch==X+cpu): from pip's find-links on this machine (copied into
#     docker/context/wheels/) or from the PyTorch CPU index
#   - the network: PyPI, for every other locked package
# The build runs with host networking (the project's own engine has no NAT for a bridge).
#
#   build-image.sh IMAGE
set -eu
cd "$(dirname "$0")/.."
IMAGE="$1"
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11.13-slim-bookworm}"
LOCAL_BASE="${LOCAL_BASE:-local/python:3.11-bookworm}"
CPU_INDEX="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
PYPI="${PYPI_URL:-https://pypi.org/simple}"
CONTEXT=docker/context

engine="$(docker/engine.sh env)"
export "${engine?}"

reachable() { timeout 20 python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" "$1" >/dev/null 2>&1; }

reachable "$PYPI/pip/" || { echo "no network: $PYPI does not answer (the build installs the locked packages from it)" >&2; exit 1; }

# the base image
if docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 || timeout 120 docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
  base="$PYTHON_IMAGE"
else
  echo "$PYTHON_IMAGE cannot be pulled: building FROM $LOCAL_BASE (Debian bookworm's Python 3.11)" >&2
  base="$(docker/base-image.sh "$LOCAL_BASE")"
fi

# the torch wheel of the serving lock
torch="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements-serve.lock)"
wheel_name="torch-$torch-cp311-cp311-manylinux_2_28_x86_64.whl"
mkdir -p "$CONTEXT/wheels"
find "$CONTEXT/wheels" -name 'torch-*.whl' ! -name "$wheel_name" -delete
index="$CPU_INDEX"; extra="$PYPI"
links="${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}"
found=""
for dir in $links; do
  dir="${dir#file://}"
  if [ -f "$dir/$wheel_name" ]; then found="$dir/$wheel_name"; break; fi
done
if [ -n "$found" ]; then
  # a hard link where the file system allows it: no second 190 MB copy
  [ -f "$CONTEXT/wheels/$wheel_name" ] || ln "$found" "$CONTEXT/wheels/" 2>/dev/null || cp "$found" "$CONTEXT/wheels/"
  index="$PYPI"; extra=""
else
  rm -f "$CONTEXT/wheels/$wheel_name"
  if ! reachable "$CPU_INDEX/torch/"; then
    echo "no torch wheel: torch==$torch is not in pip's find-links (${links:-none}) and $CPU_INDEX does not answer" >&2
    exit 1
  fi
fi

# the build machine's CA bundle, so pip inside the build trusts what this machine trusts
bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$bundle" ] || bundle="$(python3 -c 'import certifi; print(certifi.where())' 2>/dev/null || true)"
[ -n "$bundle" ] && [ -f "$bundle" ] || { echo "no CA bundle: neither /etc/ssl/certs/ca-certificates.crt nor certifi's" >&2; exit 1; }
cmp -s "$bundle" "$CONTEXT/ca-certificates.crt" || cp "$bundle" "$CONTEXT/ca-certificates.crt"

exec docker build --network host -f docker/Dockerfile -t "$IMAGE" \
  --build-arg PYTHON_IMAGE="$base" --build-arg PIP_INDEX_URL="$index" --build-arg PIP_EXTRA_INDEX_URL="$extra" .
