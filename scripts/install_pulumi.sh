#!/usr/bin/env bash
# Make a Pulumi CLI available for `make up` / `make preview` / `make down`:
#   * a `pulumi` already on PATH is used as it is;
#   * otherwise the pinned version below is installed into .tools/pulumi (git-ignored), after saying so, from
#     https://get.pulumi.com/releases/sdk/pulumi-v<version>-<os>-<arch>.tar.gz, and only if the archive's
#     SHA-256 matches the pinned checksum.
#
#   bash scripts/install_pulumi.sh          install if needed; prints nothing when a CLI is already there
#   bash scripts/install_pulumi.sh --url    print the archive URL it would download, and exit
#
# Overrides (environment): PULUMI_VERSION with PULUMI_SHA256 (another version and its checksum),
# PULUMI_DOWNLOAD_URL (a mirror or a local file:// copy of the same archive; the checksum is still checked),
# TOOLS_DIR (default: <repo>/.tools), PULUMI_DOWNLOAD_TIMEOUT (seconds, default 300).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PINNED_VERSION=3.170.0
# SHA-256 of each pinned release archive, by <version>-<os>-<arch>. Source: nixpkgs
# pkgs/tools/admin/pulumi-bin/data.nix (generated from the release files), converted from Nix base32 to hex.
# To pin another version: add its line here from pulumi-<version>-checksums.txt of the GitHub release.
# (A `case`, not an associative array: macOS still ships bash 3.2.)
pinned_checksum() {
    case "$1" in
        3.170.0-linux-x64) echo c4b24a12106c101a68435728aa40d4a0cbf4fae70f25a5cb9f46cf1f5db3f8e5 ;;
    esac
}

VERSION="${PULUMI_VERSION:-$PINNED_VERSION}"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
TIMEOUT="${PULUMI_DOWNLOAD_TIMEOUT:-300}"
INSTALL_DOCS="https://www.pulumi.com/docs/install/"

fail() {
    echo "error: $*" >&2
    exit 1
}

platform() {
    local os arch
    case "$(uname -s)" in
        Linux) os=linux ;;
        Darwin) os=darwin ;;
        *) fail "no Pulumi CLI for $(uname -s) here: install it yourself ($INSTALL_DOCS) and re-run" ;;
    esac
    case "$(uname -m)" in
        x86_64 | amd64) arch=x64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) fail "no Pulumi CLI for $(uname -m) here: install it yourself ($INSTALL_DOCS) and re-run" ;;
    esac
    echo "$os-$arch"
}

PLATFORM="$(platform)"
URL="${PULUMI_DOWNLOAD_URL:-https://get.pulumi.com/releases/sdk/pulumi-v$VERSION-$PLATFORM.tar.gz}"
if [[ "${1:-}" == "--url" ]]; then
    echo "$URL"
    exit 0
fi

TARGET="$TOOLS_DIR/pulumi"
found="$(command -v pulumi 2>/dev/null || true)"
if [[ -n "$found" && "$found" != "$TARGET/pulumi" ]]; then
    exit 0 # the user's own CLI
fi
if [[ -x "$TARGET/pulumi" ]] && [[ "$("$TARGET/pulumi" version 2>/dev/null || true)" == "v$VERSION" ]]; then
    exit 0 # installed by an earlier run
fi

EXPECTED="${PULUMI_SHA256:-$(pinned_checksum "$VERSION-$PLATFORM")}"
if [[ -z "$EXPECTED" ]]; then
    fail "the Pulumi CLI is not installed, and there is no pinned checksum for pulumi v$VERSION ($PLATFORM) to" \
        "install it safely. Install it yourself ($INSTALL_DOCS), or set PULUMI_SHA256 to the archive's SHA-256" \
        "(from pulumi-$VERSION-checksums.txt of the release)."
fi

echo "The Pulumi CLI is not installed: installing Pulumi v$VERSION ($PLATFORM) into ${TARGET#"$ROOT"/}"
echo "  from $URL (SHA-256 checked; waiting at most ${TIMEOUT} s)."
echo "  (To use your own instead: install it from $INSTALL_DOCS so that \`pulumi\` is on PATH.)"

mkdir -p "$TOOLS_DIR"
STAGING="$(mktemp -d "$TOOLS_DIR/.pulumi-download.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
ARCHIVE="$STAGING/pulumi.tar.gz"

if command -v curl >/dev/null 2>&1; then
    if ! detail="$(curl --fail --silent --show-error --location --connect-timeout 20 --max-time "$TIMEOUT" \
        --output "$ARCHIVE" "$URL" 2>&1)"; then
        fail "could not download the Pulumi CLI from $URL ($detail). Install it yourself ($INSTALL_DOCS)," \
            "or set PULUMI_DOWNLOAD_URL to a reachable copy of pulumi-v$VERSION-$PLATFORM.tar.gz."
    fi
else
    if ! detail="$(python3 - "$URL" "$ARCHIVE" "$TIMEOUT" 2>&1 <<'PY'
import shutil, sys, urllib.request
url, target, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out)
except Exception as exc:  # one line for the shell to show
    sys.exit(f"{type(exc).__name__}: {exc}")
PY
    )"; then
        fail "could not download the Pulumi CLI from $URL ($detail). Install it yourself ($INSTALL_DOCS)," \
            "or set PULUMI_DOWNLOAD_URL to a reachable copy of pulumi-v$VERSION-$PLATFORM.tar.gz."
    fi
fi

if command -v sha256sum >/dev/null 2>&1; then
    ACTUAL="$(sha256sum "$ARCHIVE" | cut -d' ' -f1)"
else
    ACTUAL="$(shasum -a 256 "$ARCHIVE" | cut -d' ' -f1)" # macOS
fi
if [[ "$ACTUAL" != "$EXPECTED" ]]; then
    fail "checksum mismatch for $URL: expected SHA-256 $EXPECTED, got $ACTUAL. Nothing was installed." \
        "The download is corrupt or not the pinned release; retry, or install the CLI yourself ($INSTALL_DOCS)."
fi

tar -xzf "$ARCHIVE" -C "$STAGING" || fail "$URL is not a readable .tar.gz archive. Nothing was installed."
[[ -x "$STAGING/pulumi/pulumi" ]] || fail "$URL has no pulumi/pulumi executable. Nothing was installed."
rm -rf "$TARGET"
mv "$STAGING/pulumi" "$TARGET"
echo "Installed $("$TARGET/pulumi" version) into ${TARGET#"$ROOT"/}"
