"""scripts/install_pulumi.sh: the pinned Pulumi CLI into .tools/ when none is on PATH, only with the right
checksum. Tested with local archives (PULUMI_DOWNLOAD_URL=file://...); get.pulumi.com is never contacted."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.support.network import closed_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_pulumi.sh"


def fake_pulumi_archive(path: Path, version: str = "v9.9.9") -> str:
    """A .tar.gz laid out like the real release (pulumi/pulumi, pulumi/pulumi-language-python); returns its
    SHA-256."""
    with tarfile.open(path, "w:gz") as archive:
        for name, body in {
            "pulumi/pulumi": f"#!/bin/sh\n[ \"$1\" = version ] && echo {version}\n",
            "pulumi/pulumi-language-python": "#!/bin/sh\n",
        }.items():
            data = body.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_pulumi_path(tmp_path: Path) -> str:
    """PATH with the system tools the script uses and certainly no `pulumi`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "curl", "sha256sum", "tar", "gzip", "mktemp", "uname", "cut", "rm", "mv", "mkdir",
                 "python3", "dirname", "sh", "cat", "make", "timeout", "touch", "test", "echo", "env"):
        found = shutil.which(tool) or ""
        if found.startswith("/") and not (bin_dir / tool).is_symlink():
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**base, "PATH": no_pulumi_path(tmp_path), "TOOLS_DIR": str(tmp_path / "tools"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_default_download_is_the_real_pinned_release_with_a_pinned_checksum():
    text = SCRIPT.read_text()
    version = re.search(r"^PINNED_VERSION=(\S+)$", text, re.MULTILINE).group(1)
    assert re.fullmatch(r"3\.\d+\.\d+", version)
    assert re.search(rf"^\s+{re.escape(version)}-linux-x64\) echo [0-9a-f]{{64}} ;;$", text, re.MULTILINE)
    result = subprocess.run(["bash", str(SCRIPT), "--url"], capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")})
    if os.uname().machine in ("x86_64", "amd64") and os.uname().sysname == "Linux":
        expected = f"https://get.pulumi.com/releases/sdk/pulumi-v{version}-linux-x64.tar.gz"
        assert result.stdout.strip() == expected


def test_an_archive_with_the_wrong_checksum_is_refused_and_nothing_is_installed(tmp_path):
    archive = tmp_path / "pulumi-v3-linux-x64.tar.gz"
    actual = fake_pulumi_archive(archive)  # not the pinned release: its checksum differs
    result = run(tmp_path, PULUMI_DOWNLOAD_URL=archive.as_uri())
    assert result.returncode == 1
    assert result.stdout.startswith("The Pulumi CLI is not installed: installing Pulumi v3.")  # said first
    assert f"from {archive.as_uri()} (SHA-256 checked" in result.stdout
    assert result.stderr.startswith(f"error: checksum mismatch for {archive.as_uri()}: expected SHA-256 ")
    assert f"got {actual}. Nothing was installed." in result.stderr
    assert not (tmp_path / "tools" / "pulumi").exists()
    assert list((tmp_path / "tools").iterdir()) == []  # no partial download left behind


def test_an_archive_with_the_right_checksum_is_installed_once(tmp_path):
    archive = tmp_path / "pulumi.tar.gz"
    checksum = fake_pulumi_archive(archive, "v9.9.9")
    env = {"PULUMI_DOWNLOAD_URL": archive.as_uri(), "PULUMI_VERSION": "9.9.9", "PULUMI_SHA256": checksum}
    result = run(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert "installing Pulumi v9.9.9" in result.stdout
    assert result.stdout.rstrip().endswith("Installed v9.9.9 into " + str(tmp_path / "tools" / "pulumi"))
    installed = tmp_path / "tools" / "pulumi"
    version = subprocess.run([installed / "pulumi", "version"], capture_output=True, text=True).stdout
    assert version == "v9.9.9\n"
    assert (installed / "pulumi-language-python").is_file()  # the language host travels with the CLI
    archive.unlink()  # a second run needs no download
    again = run(tmp_path, **env)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""


def test_a_cli_on_path_is_used_as_is(tmp_path):
    bin_dir = Path(no_pulumi_path(tmp_path))
    (bin_dir / "pulumi").write_text("#!/bin/sh\necho v3.0.0\n")
    (bin_dir / "pulumi").chmod(0o755)
    result = run(tmp_path, PULUMI_DOWNLOAD_URL=f"http://127.0.0.1:{closed_port()}/never.tar.gz")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert not (tmp_path / "tools").exists()


def test_an_impossible_download_says_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/pulumi-v3-linux-x64.tar.gz"
    result = run(tmp_path, PULUMI_DOWNLOAD_URL=url)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: could not download the Pulumi CLI from {url} (")
    assert "Install it yourself (https://www.pulumi.com/docs/install/)" in result.stderr
    assert "PULUMI_DOWNLOAD_URL" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "tools" / "pulumi").exists()


def test_a_version_without_a_pinned_checksum_is_not_installed_blindly(tmp_path):
    result = run(tmp_path, PULUMI_VERSION="3.0.1", PULUMI_DOWNLOAD_URL="file:///nonexistent")
    assert result.returncode == 1
    assert "no pinned checksum for pulumi v3.0.1" in result.stderr
    assert "PULUMI_SHA256" in result.stderr
