# Stand-in for the official nginx image (context: docker/standins/) where no registry can be reached (make compose-up
# builds it only then): Debian bookworm's nginx, rendering /etc/nginx/templates/*.template into
# /etc/nginx/conf.d/ at start like the official image's entrypoint (envsubst of the defined
# variables only), logging to the container's output.
ARG BASE_IMAGE=local/python:3.11-bookworm
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Not pinned: bookworm's security updates replace these versions (an exact pin would stop the
# build at the next one); this image is a local stand-in, never shipped.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light gettext-base wget \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
COPY nginx-entrypoint.sh /docker-entrypoint.sh
EXPOSE 8080
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]
