"""checks.audit ends in one line that says what happened: pip-audit's report judged, and a
service that cannot be reached (a proxy on a closed loopback port: nothing leaves the machine)."""

from __future__ import annotations

import os
import subprocess
import sys

from checks.audit import NOT_AUDITED, judge, release_pins
from tests.conftest import REPO, free_ports


def test_a_local_build_is_looked_up_as_its_release(tmp_path):
    lock = tmp_path / "r.lock"
    lock.write_text("torch==2.13.0+cpu\n    # via x\nnumpy==2.4.6\n")
    assert release_pins(lock, tmp_path / "out").read_text() == "torch==2.13.0\n    # via x\nnumpy==2.4.6\n"


def test_skipped_packages_are_not_a_pass():
    """pip-audit says "No known vulnerabilities found" and exits 0 here."""
    report = {"dependencies": [{"name": "torch", "skip_reason": "Dependency not found on PyPI: torch (2.13.0)"},
                               {"name": "numpy", "version": "2.4.6", "vulns": []}], "fixes": []}
    outcome = judge(report, 1, [])
    assert outcome.code == NOT_AUDITED
    assert outcome.lines == ["audit: NOT audited: the vulnerability service had no record of 1 of 2 pinned packages "
                             "(e.g. Dependency not found on PyPI: torch (2.13.0))"]


def test_findings_fail_and_a_clean_report_passes():
    vuln = {"id": "PYSEC-1", "aliases": ["CVE-1"], "fix_versions": ["2.0"]}
    found = judge({"dependencies": [{"name": "x", "version": "1.0", "vulns": [vuln]}]}, 1, [])
    assert found.code == 1 and found.lines == ["audit: x 1.0: PYSEC-1 (CVE-1); fixed in 2.0",
                                               "audit: 1 known vulnerabilities not accepted in docs/security.md"]
    clean = judge({"dependencies": [{"name": "x", "version": "1.0", "vulns": []}]}, 2, ["CVE-2"])
    assert clean.code == 0 and clean.lines == [
        "audit: 1 packages in 2 locks: no known vulnerability (accepted in docs/security.md: CVE-2)"]


def closed_proxy_env() -> dict[str, str]:
    """The environment with every request sent to a loopback port nothing listens on."""
    (port,) = free_ports(1)
    proxy = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    return env | {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy}


def test_locks_that_pin_a_package_at_two_versions_are_each_audited(tmp_path):
    """One pip-audit run over both refuses them ("duplicate requirements") before it asks the
    service: the audit then never ran, and said the service could not be reached."""
    locks = [tmp_path / "a.lock", tmp_path / "b.lock"]
    locks[0].write_text("certifi==2026.10.18\n")
    locks[1].write_text("certifi==2026.10.19.post1\n")
    proc = subprocess.run([sys.executable, "-m", "checks.audit", *map(str, locks)], cwd=REPO, env=closed_proxy_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == NOT_AUDITED, proc.stdout + proc.stderr
    assert "duplicate requirements" not in proc.stderr
    assert proc.stderr.startswith("audit: NOT audited: pip-audit could not query the vulnerability service for a.lock")


def test_an_unreachable_service_is_one_clear_line_and_exit_3(tmp_path):
    lock = tmp_path / "r.lock"
    lock.write_text("requests==2.34.2\n")
    (port,) = free_ports(1)
    proxy = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(HTTPS_PROXY=proxy, HTTP_PROXY=proxy)
    proc = subprocess.run([sys.executable, "-m", "checks.audit", str(lock)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == NOT_AUDITED, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit: NOT audited: pip-audit could not query"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
