"""Getting the model onto disk so that it loads with the Hub offline.

What `scripts/download_models.py`, `scripts/download_reranker_local.py` and the image build do, as library
code:

* `fetch_to_cache`: download a model repository into the Hugging Face cache (`HF_HOME`), together with every
  *second* repository that its `auto_map` names for remote code (the real model's `config.json` says
  `"jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig"`). Offline loading needs both.
* `save_to_directory`: write a plain, self-contained model directory (the value of `RERANK_MODEL_PATH`) from a
  Hub id (through the cache) or from another local directory. The remote code of a second repository is
  *localized*: its `.py` files are copied next to the weights and `auto_map` is rewritten to local references,
  so the directory loads without any Hugging Face cache.
* `verify_offline`: prove it by loading the model through `service.model_store.load_reranker` (the code
  path the service runs) in a child process with `HF_HUB_OFFLINE=1`, and scoring one pair. Loading also
  prepares `$HF_HOME/modules` (the remote-code modules cache), which the image ships ready-made so that a
  read-only container never has to write it.

Every failure is a `ModelDownloadError` whose message says what failed and what to try.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from service import hub
from service.hub import LOCAL_SAVE_COMMAND, HubTimeouts, hub_failure_message  # noqa: F401 - re-exported
from service.model_store import ModelNotAvailableError, ModelSource
from service.settings import PROJECT_ROOT, Settings, SettingsError

# Never needed by the service: other frameworks' weights. (onnx/model.onnx and onnx/model_quantized.onnx are
# kept: RERANK_BACKEND=onnx and RERANK_PRECISION=int8 run them.)
IGNORED_FILES: tuple[str, ...] = (
    ".gitattributes",
    "*.msgpack",
    "*.h5",
    "*.ot",
    "*.tflite",
    "*.gguf",
    "openvino/*",
    "coreml/*",
)
# pytorch_model*.bin duplicates model*.safetensors in most repositories: skipped when safetensors exist.
LEGACY_WEIGHTS = "pytorch_model*.bin"
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
# Files that may carry an `auto_map` pointing at remote code.
AUTO_MAP_FILES = ("config.json", "tokenizer_config.json")



class ModelDownloadError(ModelNotAvailableError):
    """Downloading, copying or verifying the model failed; the message says what failed and what to try."""


class DownloadSettings(Settings):
    """The service settings plus where the download scripts put a plain model directory."""

    rerank_local_dir: str | None = Field(
        None,
        alias="RERANK_LOCAL_DIR",
        description="Save the model as a plain directory here instead of into the Hugging Face cache",
    )

    @property
    def local_dir(self) -> Path | None:
        if not self.rerank_local_dir or not self.rerank_local_dir.strip():
            return None
        return resolve_project_path(self.rerank_local_dir)


def load_download_settings() -> DownloadSettings:
    try:
        return DownloadSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"Invalid configuration: {problems}") from None


def add_model_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    """--model and --revision, defaulting to the service's RERANK_MODEL and RERANK_MODEL_REVISION."""
    parser.add_argument(
        "--model",
        default=settings.rerank_model,
        help="Hugging Face model id or local model directory (default: RERANK_MODEL, %(default)s)",
    )
    parser.add_argument(
        "--revision",
        default=settings.rerank_model_revision,
        help="branch, tag or commit to pin (default: RERANK_MODEL_REVISION, %(default)s)",
    )


def resolve_project_path(value: str | os.PathLike[str]) -> Path:
    """Like RERANK_MODEL_PATH: relative paths resolve against the project root; forward slashes work on every
    OS."""
    path = Path(str(value).replace("\\", "/")).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def source_from_spec(
    spec: str, revision: str | None = None, timeouts: HubTimeouts = HubTimeouts()
) -> ModelSource:
    """`spec` is a Hub model id (`org/name`) or an existing local directory (which wins)."""
    candidate = Path(spec).expanduser()
    if candidate.is_dir():
        return ModelSource(model_id=candidate.resolve().name, path=candidate.resolve(), timeouts=timeouts)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec:
        raise ModelDownloadError(
            f"{spec} is not a directory (and not a Hugging Face model id like org/name). "
            f"Pass an existing model directory or a model id."
        )
    return ModelSource(model_id=spec, revision=revision or None, timeouts=timeouts)


# ----------------------------------------------------------------------------------------------------------
# Remote code references
# ----------------------------------------------------------------------------------------------------------


def _auto_map_values(auto_map: dict[str, Any]) -> Iterator[str]:
    for value in auto_map.values():  # tokenizers map to [slow, fast], either may be None
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str):
                yield item


def external_code_repos(config: dict[str, Any]) -> list[str]:
    """Repositories that `auto_map` takes code from, other than the model's own: `repo--module.Class`."""
    repos = {
        value.split("--", 1)[0] for value in _auto_map_values(config.get("auto_map") or {}) if "--" in value
    }
    return sorted(repos)


def _read_auto_map_files(model_dir: Path) -> dict[str, dict[str, Any]]:
    configs = {}
    for name in AUTO_MAP_FILES:
        path = model_dir / name
        if path.is_file():
            configs[name] = json.loads(path.read_text(encoding="utf-8"))
    return configs


def code_repos_of_directory(model_dir: Path) -> list[str]:
    repos: set[str] = set()
    for config in _read_auto_map_files(model_dir).values():
        repos.update(external_code_repos(config))
    return sorted(repos)


def localize_remote_code(
    model_dir: Path, code_dirs: dict[str, Path], *, origin: Path | None = None
) -> list[str]:
    """Copy the `.py` files of each external code repository into `model_dir` and rewrite every
    `repo--module.Class` reference of `auto_map` (config.json, tokenizer_config.json) to `module.Class`.

    `code_dirs` maps repository id -> a directory holding its files; `origin` names the model in messages
    (default: `model_dir`). Returns the names of the copied files.
    """
    copied: list[str] = []
    for repo_id, code_dir in sorted(code_dirs.items()):
        sources = sorted(code_dir.glob("*.py"))
        if not sources:
            raise ModelDownloadError(f"The remote-code repository {repo_id} ({code_dir}) has no .py files.")
        for source in sources:
            target = model_dir / source.name
            if target.exists() and target.read_bytes() != source.read_bytes():
                raise ModelDownloadError(
                    f"Cannot localize the remote code of {repo_id}: {origin or model_dir} already has a "
                    f"different {source.name}. Remove one of them or keep auto_map pointing at {repo_id}."
                )
            shutil.copyfile(source, target)
            copied.append(source.name)

    for name, config in _read_auto_map_files(model_dir).items():
        auto_map = config.get("auto_map") or {}
        localized = {key: _localize_reference(value, code_dirs) for key, value in auto_map.items()}
        if localized != auto_map:
            config["auto_map"] = localized
            (model_dir / name).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return copied


def _localize_reference(value: Any, code_dirs: dict[str, Path]) -> Any:
    if isinstance(value, (list, tuple)):
        return [_localize_reference(item, code_dirs) for item in value]
    if isinstance(value, str) and "--" in value:
        repo_id, reference = value.split("--", 1)
        if repo_id in code_dirs:
            return reference
    return value


# ----------------------------------------------------------------------------------------------------------
# The Hub
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedModel:
    """A model in the Hugging Face cache: what to load, where its files are, and its code repositories."""

    source: ModelSource
    snapshot: Path
    code_snapshots: dict[str, Path]

    @property
    def commit(self) -> str:
        return self.snapshot.name


def _snapshot(repo_id: str, revision: str | None, what: str, *, model_id: str, timeouts: HubTimeouts,
              **kwargs: Any) -> Path:
    """`snapshot_download` with every wait bounded: the Hub is asked once first (announced, no retries); if it
    cannot be reached, the process goes offline and this is the cached snapshot or a clear error."""
    import requests
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    hub.bound_waits(timeouts)
    hub.check_reachable(repo_id, revision, timeouts)
    try:
        return Path(snapshot_download(repo_id, revision=revision, **kwargs))
    except (LocalEntryNotFoundError, HfHubHTTPError, requests.RequestException, OSError, ValueError) as exc:
        raise ModelDownloadError(hub_failure_message(what, exc, model_id=model_id)) from exc


def _has_weights(directory: Path) -> bool:
    return any(
        _matches(path.relative_to(directory).as_posix(), WEIGHT_FILES)
        for path in directory.rglob("*")
        if path.is_file()
    )


def fetch_to_cache(
    model_id: str, revision: str | None = None, timeouts: HubTimeouts = HubTimeouts()
) -> CachedModel:
    """Download `model_id` (at `revision`) and the remote-code repositories its auto_map names into the
    Hugging Face cache. Uses what the cache already has when the Hub cannot be reached or HF_HUB_OFFLINE=1.

    The code repositories are fetched at their default branch: transformers resolves `repo--module.Class` at
    `main` (it applies the model's revision only to the model's own code), so offline loading needs
    `refs/main`.
    """
    label = model_id + (f"@{revision}" if revision else "")
    snapshot = _snapshot(
        model_id, revision, label, model_id=model_id, timeouts=timeouts,
        ignore_patterns=[*IGNORED_FILES, LEGACY_WEIGHTS],
    )
    if not _has_weights(snapshot):  # the repository ships pytorch_model.bin only
        snapshot = _snapshot(
            model_id, revision, label, model_id=model_id, timeouts=timeouts,
            ignore_patterns=list(IGNORED_FILES),
        )
    if not (snapshot / "config.json").is_file() or not _has_weights(snapshot):
        raise ModelDownloadError(
            f"{label} has no config.json or no weights (*.safetensors, pytorch_model*.bin): it is not a "
            f"transformers model repository, or the cached snapshot {snapshot} is incomplete (delete it and "
            f"retry)."
        )
    code_snapshots = {
        repo: fetch_code_repo(repo, for_model=model_id, timeouts=timeouts)
        for repo in code_repos_of_directory(snapshot)
    }
    return CachedModel(ModelSource(model_id=model_id, revision=revision, timeouts=timeouts), snapshot,
                       code_snapshots)


# ----------------------------------------------------------------------------------------------------------
# Plain directories
# ----------------------------------------------------------------------------------------------------------


def _matches(relative: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def model_files(directory: Path) -> list[str]:
    """The files of a model directory that the service needs (relative paths): no hidden files, no other
    frameworks' weights, and no pytorch_model*.bin when safetensors are there."""
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if not path.is_file() or any(
            part.startswith(".") or part == "__pycache__" for part in relative.split("/")
        ):
            continue
        if not _matches(relative, IGNORED_FILES):
            files.append(relative)
    if any(_matches(name, ["*.safetensors"]) for name in files):
        files = [name for name in files if not _matches(name, [LEGACY_WEIGHTS])]
    return files


@dataclass(frozen=True)
class SavedModel:
    path: Path
    code_repos: tuple[str, ...]  # remote-code repositories whose files were localized into `path`
    commit: str | None  # the Hub commit it came from (None for a local source)


def save_to_directory(source: ModelSource, output_dir: Path) -> SavedModel:
    """Write a self-contained model directory at `output_dir` from a Hub id (through the cache) or a local
    directory, with remote code localized. An existing model directory there is replaced (atomically)."""
    output_dir = Path(output_dir).resolve()
    commit = None
    if source.path is not None:
        if source.path.resolve() == output_dir:
            raise ModelDownloadError(f"The source and the output directory are the same: {output_dir}")
        if not (source.path / "config.json").is_file():
            raise ModelDownloadError(f"{source.path} has no config.json: it is not a model directory.")
        origin = source.path
        code_dirs = {
            repo: fetch_code_repo(repo, for_model=str(source.path), timeouts=source.timeouts)
            for repo in code_repos_of_directory(source.path)
        }
    else:
        cached = fetch_to_cache(source.model_id, source.revision, source.timeouts)
        origin, code_dirs, commit = cached.snapshot, cached.code_snapshots, cached.commit

    _check_replaceable(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        for relative in model_files(origin):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin / relative, target)  # follows the cache's symlinks to the blobs
        localize_remote_code(staging, code_dirs, origin=origin)
        _make_readable(staging)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SavedModel(output_dir, tuple(sorted(code_dirs)), commit)


def fetch_code_repo(repo_id: str, *, for_model: str, timeouts: HubTimeouts = HubTimeouts()) -> Path:
    """The files of a remote-code repository (from the cache, or downloaded)."""
    return _snapshot(
        repo_id,
        None,
        f"{repo_id} (remote code named by {for_model}'s auto_map)",
        model_id=for_model,
        timeouts=timeouts,
        allow_patterns=["*.py"],
    )


def _check_replaceable(output_dir: Path) -> None:
    if output_dir.is_file():
        raise ModelDownloadError(f"{output_dir} is a file; choose a directory for the model.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / "config.json").is_file():
        raise ModelDownloadError(
            f"{output_dir} exists and is not a model directory (no config.json): refusing to replace it. "
            f"Choose an empty or new directory."
        )


def _make_readable(directory: Path) -> None:
    """mkdtemp makes 0700 folders; the image runs as another user than the one that built the folder."""
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


# ----------------------------------------------------------------------------------------------------------
# Proof: load it offline, as the service does
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    model_class: str
    max_length: int
    score: float


def verify_offline(source: ModelSource, *, max_length: int = 512, timeout: float = 900) -> Verification:
    """Load the model with `load_reranker` in a child process with HF_HUB_OFFLINE=1 and
    TRANSFORMERS_OFFLINE=1, and score one pair. huggingface_hub reads those variables at import time, hence
    the child process.

    The child inherits HF_HOME, so this also fills `$HF_HOME/modules` with the remote code."""
    request = {
        "model_id": source.model_id,
        "path": str(source.path) if source.path else None,
        "revision": source.revision,
        "max_length": max_length,
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    code = "import sys; from service.model_download import _verify_here; _verify_here(sys.argv[1])"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, json.dumps(request)],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ModelDownloadError(
            f"Loading {source.display} offline took more than {timeout:.0f} s."
        ) from None
    if result.returncode != 0:
        detail = _last_error_line(result.stderr)
        raise ModelDownloadError(
            f"{source.display} was downloaded but does not load with the Hub offline: {detail}"
        )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    return Verification(**outcome)


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return line
    return lines[-1] if lines else "(no output)"


def _verify_here(request_json: str) -> None:
    """Child-process side of `verify_offline`: prints one JSON line on success, exits non-zero otherwise."""
    from service.model_store import load_reranker

    request = json.loads(request_json)
    source = ModelSource(
        model_id=request["model_id"],
        path=Path(request["path"]) if request["path"] else None,
        revision=request["revision"],
    )
    model, max_length = load_reranker(
        source, device="cpu", max_length=request["max_length"], local_files_only=True
    )
    score = model.score([("what is a reranker", "A reranker scores documents for a query.")])[0]
    print(json.dumps({"model_class": type(model.model).__name__, "max_length": max_length, "score": score}))


# ----------------------------------------------------------------------------------------------------------
# What the scripts run
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedModel:
    """A model on disk that has been loaded with the Hub offline."""

    source: ModelSource  # how the service should load it
    verification: Verification
    code_repos: tuple[str, ...] = ()
    commit: str | None = None  # the Hub commit that was downloaded (Hugging Face cache only)
    fidelity: Any = None  # the precision verdict written next to the model (service.fidelity_gate.Verdict)
    native: Any = None  # the native implementation's verdict (service.native_gate.NativeVerdict)

    def env_lines(self) -> list[str]:
        """The settings that make the service load exactly this (for `.env` or `docker run -e`)."""
        if self.source.path is not None:
            return [f"RERANK_MODEL_PATH={display_path(self.source.path)}"]
        return [
            f"RERANK_MODEL={self.source.model_id}",
            f"RERANK_MODEL_REVISION={self.commit or self.source.revision}",
        ]


def print_verdict(prepared: PreparedModel) -> None:
    """One line per gated option, and the native implementation's verdict (the download scripts print them)."""
    verdict = prepared.fidelity
    if verdict is None:
        print("Precision gate: no verdict (RERANK_PRECISION=auto will run fp32)")
    else:
        print(f"Precision gate ({verdict.path}):")
        for option in verdict.options:
            if option != verdict.reference:
                print(f"  {verdict.summary(option)}")
    native = prepared.native
    if native is None:
        print("Native implementation: no verdict (the torch flavour will run the model's remote code)")
    else:
        print(f"Native implementation ({native.path}): {'passed' if native.passed else 'not used'}: {native.reason}")


def display_path(path: Path) -> str:
    """Relative to the project root when inside it (as RERANK_MODEL_PATH accepts), with forward slashes."""
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def prepare_model(
    spec: str, *, revision: str | None = None, local_dir: Path | None = None, max_length: int = 512,
    timeouts: HubTimeouts = HubTimeouts(), fidelity_gate: bool = True,
) -> PreparedModel:
    """Get `spec` (a Hub id or a local directory) onto disk and prove it loads offline.

    * `local_dir` set: a plain, self-contained directory there (remote code localized);
    * otherwise a Hub id goes into the Hugging Face cache (with its remote-code repositories), and a local
      directory is only verified where it is.

    Then, unless `fidelity_gate=False`, the precision gate (service/fidelity_gate.py) scores its calibration
    set on these weights and writes `fidelity.json` next to them (the verdict `auto` follows), and the native
    implementation's check (service/native_gate.py) writes `native.json`.
    """
    source = source_from_spec(spec, revision, timeouts)
    if local_dir is not None:
        saved = save_to_directory(source, local_dir)
        target = ModelSource(model_id=source.model_id, path=saved.path, revision=source.revision, timeouts=timeouts)
        code_repos, commit, model_dir = saved.code_repos, saved.commit, saved.path
    elif source.path is not None:
        target, code_repos, commit = source, tuple(code_repos_of_directory(source.path)), None
        model_dir = source.path
    else:
        cached = fetch_to_cache(source.model_id, source.revision, timeouts)
        target, code_repos, commit = cached.source, tuple(cached.code_snapshots), cached.commit
        model_dir = cached.snapshot
    verification = verify_offline(target, max_length=max_length)
    verdict = native = None
    if fidelity_gate:
        from service.fidelity_gate import gate_in_child
        from service.native_gate import check_in_child

        verdict = gate_in_child(model_dir, max_length=max_length)
        native = check_in_child(model_dir, max_length=max_length)
    return PreparedModel(target, verification, code_repos, commit, verdict, native)
