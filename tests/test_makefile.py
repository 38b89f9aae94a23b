"""The Makefile as a newcomer meets it: `make help` names every target the README mentions, and `make up`
checks Docker and the Pulumi CLI before it builds .venv (1.7 GB)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.scripts.test_install_pulumi import fake_pulumi_archive, no_pulumi_path
from tests.support.network import closed_port

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def readme_targets() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"(?<![\w-])make ([a-z][a-z-]*)\b", text))


def test_make_help_lists_every_target_the_readme_names():
    help_text = make("help").stdout
    listed = set(re.findall(r"^make ([a-z-]+)", help_text, re.MULTILINE))
    named = readme_targets()
    assert {"install", "up", "down", "test", "test-fast", "bench", "image"} <= named  # the parse works
    assert named <= listed, f"README names {sorted(named - listed)} but make help does not list them"
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1).split()
    for target in listed:
        assert target in phony, f"make help lists {target}: not a target"
    assert {"preview", "test-image", "lint", "clean", "install"} <= listed


def project_copy(tmp_path: Path) -> Path:
    """The Makefile and what it calls, in a fresh folder (so that a .venv it might build is visible)."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "Makefile", project / "Makefile")
    shutil.copytree(ROOT / "scripts", project / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "requirements", project / "requirements")
    return project


def fake_docker(bin_dir: Path, *, engine_up: bool) -> None:
    script = "#!/bin/sh\necho 20.10.24\n" if engine_up else (
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n")
    (bin_dir / "docker").write_text(script)
    (bin_dir / "docker").chmod(0o755)


def up_env(tmp_path: Path, *, engine_up: bool, **extra: str) -> dict[str, str]:
    path = no_pulumi_path(tmp_path)
    fake_docker(Path(path), engine_up=engine_up)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    return {**base, "PATH": path, **extra}


def test_make_up_without_a_docker_engine_stops_before_building_the_venv(tmp_path):
    project = project_copy(tmp_path)
    result = make("up", cwd=project, env=up_env(tmp_path, engine_up=False))
    assert result.returncode != 0
    assert "error: no Docker engine is reachable (docker info: Cannot connect to the Docker" in result.stderr
    assert not (project / ".venv").exists()


def test_make_up_without_pulumi_says_it_installs_it_and_stops_clearly_when_it_cannot(tmp_path):
    project = project_copy(tmp_path)
    url = f"http://127.0.0.1:{closed_port()}/pulumi.tar.gz"
    result = make("up", cwd=project, env=up_env(tmp_path, engine_up=True, PULUMI_DOWNLOAD_URL=url))
    assert result.returncode != 0
    assert result.stdout.startswith("The Pulumi CLI is not installed: installing Pulumi v3.")
    assert f"error: could not download the Pulumi CLI from {url}" in result.stderr
    assert not (project / ".venv").exists()


def test_make_up_installs_the_cli_into_tools_then_builds_the_venv(tmp_path):
    project = project_copy(tmp_path)
    archive = tmp_path / "pulumi.tar.gz"
    checksum = fake_pulumi_archive(archive, "v9.9.9")
    env = up_env(tmp_path, engine_up=True, PULUMI_DOWNLOAD_URL=archive.as_uri(), PULUMI_VERSION="9.9.9",
                 PULUMI_SHA256=checksum)
    # PYTHON that is not 3.11: the install step fails at once, which shows it runs after the prerequisites.
    result = make("up", "PYTHON=false", cwd=project, env=env)
    assert result.returncode != 0
    assert "Installed v9.9.9 into .tools/pulumi" in result.stdout
    assert "error: false not found" in result.stderr or "Python 3.11 is required" in result.stderr
    assert (project / ".tools" / "pulumi" / "pulumi").is_file()
    assert not (project / ".venv").exists()
