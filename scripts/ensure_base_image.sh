#!/usr/bin/env bash
# Make sure the Dockerfile's base image is in the local Docker engine.
#
#   scripts/ensure_base_image.sh [IMAGE]        (default: debian:bookworm-slim, the Dockerfile's BASE_IMAGE)
#
# 1. present locally        -> nothing to do;
# 2. `docker pull` works    -> pulled;
# 3. otherwise (no registry) -> an equivalent image is built from a Debian mirror with debootstrap
#    (--variant=minbase, docs/man/locales excluded like the official -slim images) and `docker import`ed
#    under the same name. Only debian:<suite> and debian:<suite>-slim names can be built this way.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian) and DEBIAN_SECURITY_MIRROR (default
# http://deb.debian.org/debian-security; "none" leaves security updates out). Step 3 needs root and debootstrap.
set -euo pipefail

image="${1:-debian:bookworm-slim}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

die() { echo "ensure_base_image: $*" >&2; exit 1; }

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "ensure_base_image: $image is present"
    exit 0
fi

echo "ensure_base_image: $image is not present; trying docker pull"
if docker pull "$image"; then
    exit 0
fi

if [[ ! "$image" =~ ^(docker\.io/)?(library/)?debian:([a-z]+)(-slim)?$ ]]; then
    die "cannot pull $image and can only build debian:<suite>[-slim] locally. Pull or load $image yourself (docker load -i ...), or build with --build-arg BASE_IMAGE=debian:bookworm-slim."
fi
suite="${BASH_REMATCH[3]}"

command -v debootstrap >/dev/null || die "cannot pull $image and debootstrap is missing: apt-get install -y debootstrap"
[[ $(id -u) == 0 ]] || die "cannot pull $image; building it with debootstrap needs root"

rootfs="$(mktemp -d /tmp/base-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "ensure_base_image: building $image from $mirror ($suite, minbase) with debootstrap"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/tmp/ensure_base_image.debootstrap.log 2>&1 \
    || { tail -20 /tmp/ensure_base_image.debootstrap.log >&2; die "debootstrap failed (log: /tmp/ensure_base_image.debootstrap.log)"; }

# Apt sources as in the official image: the suite, its updates and its security updates.
rm -f "$rootfs/etc/apt/sources.list"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n' \
        "$mirror" "$suite" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg
    if [[ "$security_mirror" != none ]]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
            "$security_mirror" "$suite" /usr/share/keyrings/debian-archive-keyring.gpg
    fi
} >"$rootfs/etc/apt/sources.list.d/debian.sources"

# What the official -slim images add: no docs, man pages or locales from later apt installs; no apt lists.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
CFG
echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,locale,groff,lintian}/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log

tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$image" >/dev/null
echo "ensure_base_image: built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
