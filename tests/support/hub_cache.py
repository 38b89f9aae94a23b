"""Put a local model folder into a Hugging Face Hub cache (HF_HOME/hub) as if it had been downloaded,
so that code loading by model id can be tested offline."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path


def install_in_hub_cache(src_dir: Path, hf_home: Path, repo_id: str, names: Iterable[str] | None = None) -> Path:
    """Copy the files of `src_dir` (every file, or only `names`) into
    hf_home/hub/models--org--name/snapshots/<commit>/ and point refs/main at it: what huggingface_hub
    leaves after a download, minus the optional blob symlinks. The commit is derived from the contents.
    Returns the snapshot folder."""
    src_dir = Path(src_dir)
    if names is None:
        files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    else:
        files = [src_dir / name for name in names]
    digest = hashlib.sha1()
    for path in files:
        digest.update(str(path.relative_to(src_dir)).encode() + b"\0" + path.read_bytes())
    commit = digest.hexdigest()
    repo_dir = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    for path in files:
        target = snapshot / path.relative_to(src_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot
