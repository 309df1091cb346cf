"""``make audit``: PyPI's pip-audit over every lock, ending in one line that says what happened.

    python -m checks.audit [--doc docs/security.md] LOCK...

Exit 0: every pinned package was looked up and none has a known vulnerability beyond those
accepted in docs/security.md (the IDs of its "Accepted findings" table, each with its reason);
1: findings (one line each); 3: NOT audited, because the service could not be reached or had no
record of some packages. pip-audit alone reads the last two wrong: it exits 0 ("No known
vulnerabilities found") when it skipped every package, and fails with a traceback, like a finding,
when the service cannot be reached. A pinned local build (``torch==2.13.0+cpu``) is looked up as
the release it is a build of: pip-audit would skip it, and the release's records apply to it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SECURITY_DOC = REPO / "docs" / "security.md"
NOT_AUDITED = 3
ACCEPTED_ROW = re.compile(r"^\| `((?:CVE|GHSA|PYSEC)-[0-9A-Za-z-]+)` \|", re.M)
LOCAL_VERSION = re.compile(r"^([A-Za-z0-9_.-]+==[^+\s;]+)\+[A-Za-z0-9.]+", re.M)


def accepted(doc: Path = SECURITY_DOC) -> list[str]:
    """The IDs of the accepted findings: the first cell of each row of the doc's table."""
    return ACCEPTED_ROW.findall(doc.read_text())


def release_pins(lock: Path, out: Path) -> Path:
    """A copy of ``lock`` with local version labels dropped (``2.13.0+cpu`` -> ``2.13.0``)."""
    out.write_text(LOCAL_VERSION.sub(r"\1", lock.read_text()))
    return out


@dataclass(frozen=True)
class Outcome:
    code: int
    lines: list[str]


def judge(report: dict[str, Any], locks: int, ignored: list[str]) -> Outcome:
    """The outcome of pip-audit's JSON report (``--format json``)."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    unrecorded = (f"the vulnerability service had no record of {len(skipped)} of {len(deps)} pinned packages "
                  f"(e.g. {skipped[0]['skip_reason']})") if skipped else ""
    found = [(d, v) for d in deps for v in d.get("vulns", [])]
    if found:
        lines = [f"audit: {d['name']} {d['version']}: {v['id']} ({', '.join(v.get('aliases', [])) or 'no alias'}); "
                 f"fixed in {', '.join(v.get('fix_versions', [])) or 'no release'}" for d, v in found]
        lines += [f"audit: and {unrecorded}"] if skipped else []
        return Outcome(1, [*lines, f"audit: {len(found)} known vulnerabilities not accepted in docs/security.md"])
    if skipped:
        return Outcome(NOT_AUDITED, [f"audit: NOT audited: {unrecorded}"])
    return Outcome(0, [f"audit: {len(deps)} packages in {locks} locks: no known vulnerability "
                       f"(accepted in docs/security.md: {', '.join(ignored) or 'none'})"])


def pip_audit(lock: Path, ignored: list[str], work: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    report = work / "report.json"
    command = [str(Path(sys.executable).with_name("pip-audit")), "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "--format", "json", "--output", str(report),
               "--cache-dir", str(cache), "-r", str(release_pins(lock, work / lock.name))]
    for vuln in ignored:
        command += ["--ignore-vuln", vuln]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def audit(locks: list[Path], doc: Path = SECURITY_DOC) -> Outcome:
    """Each lock audited on its own (pip-audit refuses one run over locks that pin a package at
    two versions, as the Triton peer's lock does beside the project's), the reports judged as one."""
    ignored = accepted(doc)
    deps: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
        for i, lock in enumerate(locks):
            work = Path(tmp) / str(i)
            work.mkdir()
            proc = pip_audit(lock, ignored, work, Path(tmp) / "cache")
            report = work / "report.json"
            if not report.is_file() or not report.read_text().strip():
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                return Outcome(NOT_AUDITED, [f"audit: NOT audited: pip-audit could not query the vulnerability service "
                                             f"for {lock.name} (exit {proc.returncode}: {last[:300]})"])
            for dep in json.loads(report.read_text()).get("dependencies", []):
                deps.setdefault((dep.get("name", ""), dep.get("version", "")), dep)
    return judge({"dependencies": list(deps.values())}, len(locks), ignored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locks", nargs="+", type=Path)
    parser.add_argument("--doc", type=Path, default=SECURITY_DOC, help="the accepted findings (docs/security.md)")
    args = parser.parse_args(argv)
    outcome = audit(args.locks, args.doc)
    for line in outcome.lines:
        print(line, file=sys.stderr if outcome.code else sys.stdout)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
