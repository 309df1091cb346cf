"""Shared helpers of the deployment tests: the repo's deployment files, parsed."""

from __future__ import annotations

import shutil
import string
from pathlib import Path

import pytest
import yaml

from servectl.release.canary import with_access_log

REPO = Path(__file__).resolve().parent.parent.parent
DOCKER = REPO / "docker"
KUBERNETES = REPO / "deploy" / "kubernetes"
ENTRYPOINT = DOCKER / "entrypoint.sh"
OVERLAY = REPO / "serve_config" / "config.container.properties"
SERVECTL_OVERLAY = REPO / "serve_config" / "servectl.container.yaml"  # the same for servectl.yaml


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def dockerfile_instructions(path: Path = DOCKER / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            joined.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def exec_form(args: str) -> list[str]:
    """The JSON-array argument of CMD/ENTRYPOINT/HEALTHCHECK ... CMD."""
    import json

    return json.loads(args[args.index("[") :])


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if not found:
        pytest.fail("nginx is missing: 'make deploy-tools' installs it (apt-get install -y nginx)")
    return found


NGINX_TEMPLATE = DOCKER / "nginx" / "templates" / "default.conf.template"


def render_nginx(prefix: Path, upstream: str, listen: str, resolver: str = "127.0.0.1") -> Path:
    """The proxy's template rendered the way the nginx image does (envsubst of the defined
    variables only), inside a main config like the image's but with every path in ``prefix``.
    The resolver is only asked when ``upstream`` is a name (compose: Docker's DNS)."""
    prefix.mkdir(parents=True, exist_ok=True)
    server = string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(
        TS_UPSTREAM=upstream, NGINX_PORT=listen, NGINX_RESOLVER=resolver
    )
    assert "${" not in server, "a template variable was left unrendered"
    (prefix / "default.conf").write_text(with_access_log(server, prefix / "access.log"))
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = prefix / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\n    access_log {prefix}/access.log;\n{temp}\n    include {prefix}/default.conf;\n}}\n"
    )
    return main


def nginx_cmd(conf: Path, *extra: str) -> list[str]:
    return [nginx_binary(), "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf), *extra]
