#!/bin/sh
# Bootstrap the image the Dockerfile builds FROM where no registry can be reached (make image
# chooses: the official python image when it can be pulled, this otherwise): Debian bookworm's
# minimal system with its Python 3.11, from Debian's packages, imported as IMAGE. Prints IMAGE.
#
#   base-image.sh IMAGE        (needs DOCKER_HOST of an engine, mmdebstrap and a Debian mirror)
#
# Docs, man pages and locales are left out, and apt keeps no downloaded packages, so a layer
# that installs packages keeps only the packages themselves.
set -eu
IMAGE="$1"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then echo "$IMAGE"; exit 0; fi
command -v mmdebstrap >/dev/null || { echo "no base image: $IMAGE cannot be pulled and mmdebstrap is not installed to bootstrap it (apt-get install mmdebstrap)" >&2; exit 1; }
timeout 20 python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)" "$MIRROR/dists/bookworm/Release" >/dev/null 2>&1 \
  || { echo "no network: neither a registry nor the Debian mirror $MIRROR answers, so no base image can be made" >&2; exit 1; }
tar="$(mktemp -d)/base.tar"
trap 'rm -rf "$(dirname "$tar")"' EXIT
mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3,python3-venv,passwd \
  --customize-hook='printf "%s\n" "APT::Keep-Downloaded-Packages \"false\";" "Binary::apt::APT::Keep-Downloaded-Packages \"false\";" >"$1/etc/apt/apt.conf.d/docker-clean"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  bookworm "$tar" "$MIRROR" >&2
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tar" "$IMAGE" >/dev/null
echo "$IMAGE"
