"""The canary of ``make canary``: a real nginx on a loopback port of its own, configured from
the stack's proxy template (docker/nginx), in front of this instance's inference API. Its
``split_clients`` sends PERCENT of the requests on the default path
(``/predictions/NAME``) to the candidate (``/predictions/NAME/VERSION``) and the rest to the
default; every other path passes through as the template says. ``promote`` makes the
candidate the default and the split 0; ``rollback`` sets the split to 0 and keeps the default.
Changes reach nginx by ``nginx -s reload``: old workers finish their requests, none fails.

Clients that want the split send to the proxy's port (``canary_proxy_address`` in
serve_config/servectl.yaml); the inference port itself always answers with the default.
Pinned-version paths answer 404 on the proxy unless serve_config/lifecycle.yaml
``proxy.expose_pinned_versions`` says otherwise, so its clients reach the candidate only through
the split. Every answer the split gave is one JSON line in ``split.log`` (the status the client
saw, TorchServe's own 5xx and nginx's 502/504 included): the watcher judges the canary on those.
Every file is written beside the old one and renamed over it, so a reload never reads half a file.
"""

from __future__ import annotations

import os
import shutil
import signal
import string
import subprocess
from contextlib import suppress
from pathlib import Path

import psutil
import requests

from servectl.config.settings import REPO, Endpoint, ServeSettings
from servectl.errors import ServeError
from servectl.instance.management import Management
from servectl.release import lifecycle
from servectl.store import versions
from servectl.store.versions import State, write_atomic
from servectl.waiting import WaitTimeout, wait_for

TEMPLATE = REPO / "docker" / "nginx" / "templates" / "default.conf.template"
SPLIT_LOG = "split.log"
# the template's resolver: the canary proxy's upstream is an address, so nothing is ever looked up
RESOLVER = "127.0.0.1"
ACCESS_LOG = "access.log"  # every answer, with its request ID (the template's request_id format)
TEMPLATE_ACCESS_LOG = "access_log /var/log/nginx/access.log request_id;"
# one line per answer the split sent to the candidate: when, the status the client saw, the path it went to
SPLIT_LOG_FORMAT = """log_format canary_split escape=json '{"time":$msec,"status":$status,"uri":"$uri"}';"""


def proxy_dir(settings: ServeSettings) -> Path:
    return (settings.run_dir / "canary-proxy").resolve()


def proxy_endpoint(settings: ServeSettings, port: int | None = None) -> Endpoint:
    endpoint = settings.canary_proxy
    return Endpoint(endpoint.host, port) if port else endpoint


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if not found:
        raise ServeError("the canary needs nginx: 'make deploy-tools' installs it (apt-get install -y nginx)")
    return found


def split_config(settings: ServeSettings, version: str | None, percent: float) -> str:
    """The location-level snippet: PERCENT of the default path to ``version`` (none: no split)."""
    unmarked = 'set $canary_split "";\n'  # declared even without a split: the access log tests it
    if version is None or percent <= 0:
        return unmarked + "# no canary\n"
    path = f"/predictions/{settings.model_name}"
    target = f"{path}/{versions.check_version(version)}"
    return unmarked + f"if ($canary_share) {{\n    set $canary_split 1;\n    rewrite ^{path}$ {target} break;\n}}\n"


def pinned_config(settings: ServeSettings) -> str:
    """The template's pinned-version switch (docker/nginx): 404 unless the setting exposes them."""
    if settings.lifecycle.proxy.expose_pinned_versions:
        return 'set $refuse_pinned "";  # serve_config/lifecycle.yaml proxy.expose_pinned_versions: true\n'
    return "# pinned-version paths answer 404 (serve_config/lifecycle.yaml proxy.expose_pinned_versions)\n"


def write_config(settings: ServeSettings, endpoint: Endpoint, version: str | None, percent: float) -> Path:
    """The proxy's main config (every path in its folder), the stack's server block, the split."""
    prefix = proxy_dir(settings)
    prefix.mkdir(parents=True, exist_ok=True)
    upstream = f"{settings.inference.host}:{settings.inference.port}"
    listen = f"{endpoint.host}:{endpoint.port}"
    server = string.Template(TEMPLATE.read_text()).safe_substitute(
        TS_UPSTREAM=upstream, NGINX_PORT=listen, NGINX_RESOLVER=RESOLVER
    )
    split_log = f"access_log {prefix / SPLIT_LOG} canary_split if=$canary_split;"
    server = with_access_log(server, prefix / ACCESS_LOG, split_log)
    write_atomic(prefix / "default.conf", without_client_keepalive(server))
    write_atomic(prefix / "canary.conf", split_config(settings, version, percent))
    write_atomic(prefix / "pinned-versions.conf", pinned_config(settings))
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};" for kind in kinds)
    share_line = f"{percent:g}% 1;\n        " if version is not None and percent > 0 else ""  # nginx refuses 0%
    share = f'split_clients "$request_id" $canary_share {{\n        {share_line}* "";\n    }}'
    logs = f"    {SPLIT_LOG_FORMAT}\n"
    main = prefix / "nginx.conf"
    write_atomic(
        main,
        f"worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n    uninitialized_variable_warn off;\n{logs}{temp}\n    {share}\n"
        f"    include {prefix}/default.conf;\n}}\n",
    )
    return main


def with_access_log(server: str, path: Path, *more: str) -> str:
    """The stack's server block logging its access lines (with the request ID) to ``path``
    instead of the image's stdout path, plus ``more`` access_log lines: a server-level
    access_log replaces every http-level one, so the split log is named here too."""
    if server.count(TEMPLATE_ACCESS_LOG) != 1:
        raise ServeError(f"the proxy template no longer holds one {TEMPLATE_ACCESS_LOG!r}: update {__name__}")
    lines = "\n    ".join((f"access_log {path} request_id;", *more))
    return server.replace(TEMPLATE_ACCESS_LOG, lines)


def without_client_keepalive(server: str) -> str:
    """The stack's server block with client keep-alive off. Every split change reloads this
    proxy, and a reload closes the old workers' idle keep-alive connections: a request a
    client sends on one as it closes gets no answer (1 in ~2,300 under the lifecycle test's
    load). A new connection per request is accepted by whichever workers run, so none is lost."""
    keepalive = "keepalive_timeout 65s;"
    if server.count(keepalive) != 1:
        raise ServeError(f"the proxy template no longer holds one {keepalive!r}: update servectl.release.canary")
    return server.replace(keepalive, "keepalive_timeout 0;  # servectl.release.canary: reloads must not drop requests")


def nginx(conf: Path, *extra: str) -> None:
    result = subprocess.run(
        [nginx_binary(), "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf), *extra],
        capture_output=True, text=True, timeout=30,
    )
    if result.returncode != 0:
        raise ServeError(f"nginx {' '.join(extra) or 'start'} failed: {result.stderr.strip()}")


def proxy_pid(settings: ServeSettings) -> int | None:
    """The canary proxy's nginx master, if it runs (its pid file, checked against the process)."""
    try:
        pid = int((proxy_dir(settings) / "nginx.pid").read_text().strip())
        proc = psutil.Process(pid)
        return pid if "nginx" in proc.name() and proc.status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, psutil.Error):
        return None


def proxy_running(settings: ServeSettings) -> bool:
    return proxy_pid(settings) is not None


def apply(settings: ServeSettings, version: str | None, percent: float, port: int | None = None) -> Endpoint:
    """Write the split and start the proxy, or reload it (gracefully) when it runs."""
    endpoint = proxy_endpoint(settings, port or recorded_port(settings))
    conf = write_config(settings, endpoint, version, percent)
    nginx(conf, "-t", "-q")
    if proxy_running(settings):
        nginx(conf, "-s", "reload")
    else:
        nginx(conf)
    (proxy_dir(settings) / "port").write_text(str(endpoint.port))
    try:
        wait_for(lambda: requests.get(f"{endpoint.url}/healthz", timeout=2).ok, 20, "the canary proxy /healthz",
                 retry_on=(requests.ConnectionError,))
    except WaitTimeout as exc:
        raise ServeError(str(exc)) from None
    return endpoint


def recorded_port(settings: ServeSettings) -> int | None:
    try:
        return int((proxy_dir(settings) / "port").read_text())
    except (OSError, ValueError):
        return None


def stop_proxy(settings: ServeSettings) -> bool:
    """Stop the canary proxy gracefully (SIGQUIT: finish the requests in flight) if it runs."""
    pid = proxy_pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGQUIT)
    with suppress(WaitTimeout):
        wait_for(lambda: proxy_pid(settings) is None, 30, "the canary proxy to exit", interval=0.1)
    return True


@lifecycle.exclusive
def start_canary(
    settings: ServeSettings, version: str, percent: float, port: int | None = None, force: bool = False
) -> State:
    """Load ``version`` beside the default, pre-flight it, send ``percent`` of the default path to it."""
    if not 0 < percent < 100:
        raise ServeError(f"PERCENT={percent:g}: a canary takes more than 0 and less than 100 percent")
    api = Management(settings)
    state = lifecycle.current_state(settings, api)
    if version == state.default:
        raise ServeError(f"{version} is already the default")
    lifecycle.prepare_candidate(settings, api, state, version, force)
    with suppress(FileNotFoundError):  # the log holds this canary's answers only (nginx appends)
        os.truncate(proxy_dir(settings) / SPLIT_LOG, 0)
    endpoint = apply(settings, version, percent, port)
    state.canary, state.canary_percent = version, percent
    state.loaded = sorted(set(state.loaded) | {version})
    state.save(settings)
    lifecycle.say(settings, f"canary: {percent:g}% of {endpoint.url}/predictions/{settings.model_name} go to "
                  f"{version}, the rest to {state.default} ('make promote' finishes, 'make rollback' abandons)")
    return state


@lifecycle.exclusive
def promote(settings: ServeSettings) -> State:
    """The canary becomes the default; the split ends (all of the default path to it)."""
    api = Management(settings)
    state = lifecycle.current_state(settings, api)
    if state.canary is None:
        raise ServeError("no canary is running ('make canary VERSION=x PERCENT=p' starts one)")
    api.set_default(state.canary)
    state.previous, state.default = state.default, state.canary
    state.canary, state.canary_percent = None, 0.0
    state.save(settings)
    apply(settings, None, 0)
    lifecycle.say(settings, f"promoted: {state.default} is the default "
                  f"({state.previous} stays loaded for 'make rollback')")
    return state


@lifecycle.exclusive
def abandon(settings: ServeSettings, expect: str) -> State:
    """End the split of the canary ``expect``: the whole default path to the default again; the
    candidate stays loaded. Refused when ``expect`` is no longer the canary (promoted or ended)."""
    state = lifecycle.current_state(settings, Management(settings))
    if state.canary != expect:
        now = f"{state.canary} is the canary" if state.canary else "no canary runs"
        raise ServeError(f"abandon of the canary {expect} refused: {now} (default {state.default})")
    apply(settings, None, 0)
    state.canary, state.canary_percent = None, 0.0
    state.save(settings)
    lifecycle.say(settings, f"canary of {expect} abandoned: all of the default path to {state.default} again")
    return state


@lifecycle.exclusive
def undo(settings: ServeSettings, expect: str) -> State:
    """``make rollback``: abandon the canary ``expect``, else roll the default ``expect`` back."""
    if lifecycle.current_state(settings, Management(settings)).canary is not None:
        return abandon(settings, expect)
    return lifecycle.rollback(settings, expect)
