#!/usr/bin/env bash
# Makes the debian:bookworm-slim base image from Debian's own packages, for a host that reaches
# Debian's apt repositories but no container registry. The Dockerfile stays as it is: podman
# resolves `FROM debian:bookworm-slim` to docker.io/library/debian:bookworm-slim, the name this
# imports under, and finds it locally. Does nothing when that image already exists.
#
#   bash container/base-image.sh          # as root; needs debootstrap and podman
#
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
# (http://deb.debian.org/debian-security), BASE_IMAGE (docker.io/library/debian:bookworm-slim).
# The result is shaped like the official slim image: minbase, documentation, manuals and
# translations left out by dpkg, apt's caches and lists emptied, PATH and CMD set.
set -euo pipefail

image=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm

if podman image exists "$image"; then
    echo "base-image: $image exists, nothing to do (podman rmi $image to make it again)"
    exit 0
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "base-image: $tool is not installed" >&2; exit 1; }
done

root=$(mktemp -d "${TMPDIR:-/var/tmp}/bookworm-slim.XXXXXX")
trap 'rm -rf "$root"' EXIT

# The slim variant's dpkg filter, in place before the first package is unpacked.
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# As the official "slim" image: no documentation, manuals or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF

echo "base-image: debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase --components=main "$suite" "$root" "$mirror" >/dev/null

# Apt as in the official image: the three suites, no downloaded .debs or caches left behind.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
# Services never start from package scripts in an image.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

# What the filter could not catch (files unpacked by debootstrap's first stage), the caches,
# logs, and the host's resolver and name, which the container runtime provides.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{man,info,groff,lintian,linda,locale}/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/ldconfig/aux-cache \
    "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.bash_history
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"

echo "base-image: importing as $image"
tar --numeric-owner --xattrs -C "$root" -c . |
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $suite $mirror" \
        - "$image" >/dev/null
podman image ls "$image"
