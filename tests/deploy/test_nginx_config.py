"""The proxy's template renders into a config nginx accepts (`nginx -t`). The upstream is an
address here ("torchserve" resolves only on compose's network, through its resolver)."""

from __future__ import annotations

import subprocess

from tests.conftest import SHIPPED
from tests.deploy.conftest import NGINX_TEMPLATE, nginx_cmd, render_nginx

INFERENCE = f"{SHIPPED.inference.host}:{SHIPPED.inference.port}"  # any address does: nginx -t does not connect


def test_rendered_template_passes_nginx_t(tmp_path):
    conf = render_nginx(tmp_path / "nginx", upstream=INFERENCE, listen=INFERENCE)
    out = subprocess.run(nginx_cmd(conf, "-t"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "test is successful" in out.stderr, out.stderr


def test_nginx_t_rejects_a_broken_config(tmp_path):
    """`nginx -t` really checks: a typo in a directive is refused."""
    conf = render_nginx(tmp_path / "nginx", upstream=INFERENCE, listen=INFERENCE)
    server = conf.parent / "default.conf"
    server.write_text(server.read_text().replace("client_max_body_size", "client_max_body_sise"))
    out = subprocess.run(nginx_cmd(conf, "-t"), capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "client_max_body_sise" in out.stderr


def test_template_forwards_only_inference_and_health():
    text = NGINX_TEMPLATE.read_text()
    forwarded = [
        line.split()[1:-1]
        for block in text.split("location ")[1:]
        for line in ["location " + block.split("{", 1)[0] + "{"]
        if "proxy_pass" in block.split("}", 1)[0] or "limit_except" in block.split("}", 1)[0]
    ]
    assert forwarded == [
        ["/predictions/"],
        ["~", "^/v1/models/[A-Za-z0-9_.-]+:predict$"],
        ["~", "^/v2/models/[A-Za-z0-9_.-]+(/versions/[A-Za-z0-9_.-]+)?/infer$"],
        ["=", "/ping"],
    ]
