# Stand-in for the official Prometheus image where no registry can be reached (make compose-up
# builds it only then): Debian bookworm's Prometheus 2.42, the same binary as entry point, run as
# nobody with its data in /prometheus like the official image.
ARG BASE_IMAGE=local/python:3.11-bookworm
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Not pinned: bookworm's security updates replace these versions (an exact pin would stop the
# build at the next one); this image is a local stand-in, never shipped.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
