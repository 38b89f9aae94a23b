"""Session fixtures of the image tests: the Docker engine, the base image, the build inputs (a local wheel
directory with CPU torch, the test models as plain directories) and the built images.

Builds are air-gapped the documented way (docs/IMAGE.md): `--build-arg WHEEL_DIR=... MODEL_DIR=...` with both
folders under build/image-test/ in the repository's build context. An image is tagged with the hash of
everything it is built from, so a re-run with unchanged inputs reuses it and builds nothing. Measured numbers
(build time, size, time to healthy, peak memory) go to build/image-test/results.json and are printed at the
end of the run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.model_download import save_to_directory
from service.model_store import ModelSource
from tests.image.engine import (
    Container,
    build_image,
    docker,
    engine_problem,
    image_size,
    inputs_hash,
    remove_stale_tags,
)
from tests.support.model_factory import JINA_TINY_DIMS, cached_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = PROJECT_ROOT / "build" / "image-test"  # inside the build context; ignored by git
RESULTS_FILE = BUILD_ROOT / "results.json"
IMAGE_REPOSITORY = "reranker-image-test"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# The test models baked into the test images. "alibi" has the shape of jinaai/jina-reranker-v1-tiny-en
# (4 layers, hidden 384, 12 heads, ALiBi sized for 8,192 positions, remote code): uncapped, its ALiBi buffer
# alone would be 12 x 8192^2 x 4 bytes = 3.2 GB, three times the 1 GB memory limit of the memory test. Like
# the real repository it ships onnx/model.onnx and onnx/model_quantized.onnx (made by scripts/export_onnx.py).
TEST_MODELS: dict[str, dict] = {
    "bert": {"kind": "bert", "kwargs": {}, "onnx": False},
    "alibi": {"kind": "alibi", "kwargs": dict(JINA_TINY_DIMS), "onnx": True},
}
ONNX_FILES = ("onnx/model.onnx", "onnx/model_quantized.onnx")
REQUIREMENT_FILES = ("torch.txt", "service.txt", "service-onnx.txt", "onnx-export.txt")
# Dockerfile targets of the two flavours, and the tag prefix of each one's test images.
FLAVOUR_TARGETS = {"torch": "runtime", "onnx": "runtime-onnx"}

RESULTS = pytest.StashKey[dict]()


def dockerfile_default(name: str) -> str:
    """The default of `ARG name=...` in the Dockerfile (one source of truth for the base image name)."""
    match = re.search(rf"^ARG {name}=(\S+)$", (PROJECT_ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no `ARG {name}=<default>`"
    return match.group(1)


# ---- measured numbers --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def results(request: pytest.FixtureRequest) -> Iterator[dict]:
    data = request.config.stash.setdefault(RESULTS, {})
    yield data
    if data:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    data = config.stash.get(RESULTS, None)
    if not data:
        return
    terminalreporter.section("image measurements")
    for key in sorted(data):
        terminalreporter.write_line(f"{key}: {data[key]}")
    terminalreporter.write_line(f"(saved to {RESULTS_FILE.relative_to(PROJECT_ROOT)})")


# ---- engine and inputs -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true and the image tests cannot run: {problem}. .ci/run must start dockerd.")
    pytest.skip(f"image tests need a Docker engine: {problem} (.ci/run installs and starts one)")


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """The Dockerfile's BASE_IMAGE, pulled or (no registry here) built from Debian's mirror."""
    name = dockerfile_default("BASE_IMAGE")
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "ensure_base_image.sh"), name],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"ensure_base_image.sh {name} failed:\n{result.stdout}\n{result.stderr}"
    return name


@pytest.fixture(scope="session")
def wheel_dir() -> Path:
    """Every wheel the image needs, CPU torch included, downloaded once by the host's pip (which finds the
    torch CPU wheel in its find-links here) and reused while requirements/ is unchanged."""
    target = BUILD_ROOT / "wheels"
    requirements = PROJECT_ROOT / "requirements"
    stamp = target / ".requirements-sha256"
    wanted = inputs_hash(PROJECT_ROOT, [requirements / name for name in REQUIREMENT_FILES])
    if stamp.is_file() and stamp.read_text() == wanted:
        return target
    if target.exists():
        for old in target.iterdir():
            old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(target)]
    for step in (
        ["--no-deps", "-r", str(requirements / "torch.txt")],
        ["--find-links", str(target), "-r", str(requirements / "service.txt")],
        # the slim venv's pins are service.txt's; the model-onnx stage adds `onnx`
        ["--find-links", str(target), "-r", str(requirements / "onnx-export.txt")],
    ):
        result = subprocess.run(pip + step, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, (
            f"pip download failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    torch_wheels = [p.name for p in target.glob("torch-*.whl")]
    assert torch_wheels and all("+cpu" in name for name in torch_wheels), (
        f"pip found {torch_wheels or 'no torch wheel'}, not the CPU build: the image would carry GBs of "
        f"CUDA. "
        f"Give pip the torch CPU wheel (a find-links folder with torch-*+cpu-cp311-*.whl, or "
        f"PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) and delete {target}."
    )
    stamp.write_text(wanted)
    return target


@pytest.fixture(scope="session")
def test_model_dirs(model_cache: Path) -> dict[str, Path]:
    """The test models as plain model directories inside the build context (what download_reranker_local.py
    makes for an air-gapped build)."""
    models_root = BUILD_ROOT / "models"
    dirs = {}
    for name, spec in TEST_MODELS.items():
        source = cached_model(spec["kind"], model_cache, **spec["kwargs"])
        target = models_root / f"{name}-{source.name}"
        if not (target / "config.json").is_file():
            save_to_directory(ModelSource(model_id=source.name, path=source), target)
        if spec["onnx"] and not all((target / name).is_file() for name in ONNX_FILES):
            export = subprocess.run(
                [
                    sys.executable,
                    str(PROJECT_ROOT / "scripts" / "export_onnx.py"),
                    "--model-path",
                    str(target),
                    "--quantize",
                ],
                cwd=models_root,  # ONNX Runtime's quantizer leaves temporary files in the working directory
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert export.returncode == 0, f"export_onnx.py failed:\n{export.stdout}\n{export.stderr}"
        for stale in models_root.glob(f"{name}-*"):
            if stale != target:
                subprocess.run(["rm", "-rf", str(stale)], check=False)
        dirs[name] = target
    return dirs


@pytest.fixture(scope="session")
def build_test_image(
    base_image: str, wheel_dir: Path, test_model_dirs: dict[str, Path], results: dict
) -> Callable[[str], str]:
    """build_test_image("bert" | "alibi", flavour="torch" | "onnx") -> the image tag, built at most once per
    set of inputs. `onnx` builds the Dockerfile's runtime-onnx target (torch-free)."""
    built: dict[tuple[str, str], str] = {}
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base_image).stdout.strip()

    def get(name: str, flavour: str = "torch") -> str:
        if (name, flavour) in built:
            return built[name, flavour]
        model_dir = test_model_dirs[name]
        build_args = {
            "WHEEL_DIR": wheel_dir.relative_to(PROJECT_ROOT).as_posix(),
            "MODEL_DIR": model_dir.relative_to(PROJECT_ROOT).as_posix(),
            "RERANK_MODEL": f"testorg/{name}-reranker",
            "RERANK_MODEL_REVISION": model_dir.name.rsplit("-", 1)[-1],
        }
        digest = inputs_hash(
            PROJECT_ROOT,
            [
                PROJECT_ROOT / "Dockerfile",
                PROJECT_ROOT / ".dockerignore",
                PROJECT_ROOT / "requirements",
                PROJECT_ROOT / "service",
                PROJECT_ROOT / "scripts" / "download_models.py",
                PROJECT_ROOT / "scripts" / "build_onnx_bundle.py",
                wheel_dir,
                model_dir,
            ],
            extra={**build_args, "base": base_id, "target": FLAVOUR_TARGETS[flavour]},
        )
        label = name if flavour == "torch" else f"onnx-{name}"
        prefix = f"{label}-"
        tag = f"{IMAGE_REPOSITORY}:{prefix}{digest[:16]}"
        build = build_image(
            PROJECT_ROOT,
            tag,
            build_args,
            BUILD_ROOT / "logs" / f"build-{label}.log",
            target=FLAVOUR_TARGETS[flavour],
        )
        remove_stale_tags(IMAGE_REPOSITORY, prefix, keep=tag)
        if build.seconds is not None:
            results[f"{label}: build seconds (this run, shared deps layers cached after the first)"] = round(
                build.seconds, 1
            )
            results[f"{label}: build args"] = " ".join(f"--build-arg {k}={v}" for k, v in build_args.items())
        results[f"{label}: image size MB"] = round(image_size(tag) / 1e6)
        built[name, flavour] = tag
        return tag

    return get


@pytest.fixture
def run_container() -> Iterator[Callable[..., Container]]:
    """run_container(image, *docker_run_options, env={...}) -> a started container, removed afterwards."""
    started: list[Container] = []

    def run(image: str, *options: str, env: dict[str, str] | None = None) -> Container:
        container = Container.run(image, *options, env=env or {})
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove()
