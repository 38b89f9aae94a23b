"""benchmarks/service_env.py: the service is measured from a venv with the image's packages only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import service_env
from benchmarks.service_env import ServiceEnvStatus


def test_a_venv_with_scikit_learn_is_refused_by_name():
    """The dev venv (this interpreter's) has sentence-transformers and so scikit-learn and SciPy."""
    status = service_env.check(ServiceEnvStatus(True, str(Path(sys.executable).parent.parent), "installed"))
    assert not status.ok
    assert "sklearn" in status.detail and "scipy" in status.detail and "memory would be measured wrong" in status.detail


def test_the_venv_is_rebuilt_when_the_pins_change(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    assert not service_env.is_current(venv)  # no stamp: built by something else, or half-built
    (venv / service_env.STAMP).write_text(service_env.requirements_hash() + "\n")
    assert service_env.is_current(venv)
    pins = tmp_path / "service.txt"
    pins.write_text("fastapi==0.1\n")
    monkeypatch.setattr(service_env, "PINNED_FILES", (pins,))
    assert not service_env.is_current(venv)


def test_the_interpreter_choice(tmp_path):
    assert service_env.resolve("current") == sys.executable
    assert service_env.resolve(sys.executable) == sys.executable
    with pytest.raises(SystemExit, match="no such interpreter"):
        service_env.resolve(str(tmp_path / "python"))


def test_an_install_step_that_fails_stops_the_rest_and_says_what_it_printed(tmp_path):
    from benchmarks.venvs import install

    marker = tmp_path / "ran"
    failure = install([["sh", "-c", "echo resolver said no; exit 3"], ["touch", str(marker)]], tmp_path / "log")
    assert failure is not None and "exit 3` failed" in failure and "resolver said no" in failure
    assert not marker.exists()
    assert install([["true"]], tmp_path / "log") is None
