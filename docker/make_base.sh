#!/usr/bin/env bash
# Build a local Debian bookworm base image with debootstrap, for machines that cannot reach a container
# registry (CI here). The root Dockerfile takes it as `--build-arg BASE_IMAGE=local/debian:bookworm` and
# installs python3 into it with apt.
#
#   docker/make_base.sh [IMAGE]        # default IMAGE: local/debian:bookworm; FORCE=1 rebuilds
#
# Needs root, debootstrap and a running Docker daemon. The mirror is the host's own Debian mirror (first
# URIs line in /etc/apt/sources.list.d/debian.sources, else /etc/apt/sources.list), so this works wherever
# the host's apt works.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # dockerd, debootstrap

IMAGE="${1:-local/debian:bookworm}"
SUITE="${SUITE:-bookworm}"
DOCKER="${DOCKER:-/usr/bin/docker}"

if [[ "${FORCE:-0}" != 1 ]] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "make_base: $IMAGE already exists (FORCE=1 to rebuild)"
  exit 0
fi

mirror="${MIRROR:-}"
if [[ -z "$mirror" && -f /etc/apt/sources.list.d/debian.sources ]]; then
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
if [[ -z "$mirror" && -f /etc/apt/sources.list ]]; then
  mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

command -v debootstrap >/dev/null || { echo "make_base: debootstrap is not installed" >&2; exit 1; }

rootfs="$(mktemp -d /var/tmp/fnac-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "make_base: debootstrap --variant=minbase $SUITE from $mirror"
debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  exit 1
}
rm -f "$rootfs.log"

# Same apt sources inside the image as on the host (updates and security included), so apt-get in the
# Dockerfile sees what the host sees.
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list"
fi
# Keep the image small: no package cache, no downloaded lists (the Dockerfile runs apt-get update itself).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
# mktemp made the directory 0700 and tar records it as the image's "/": non-root users could not even exec.
chmod 0755 "$rootfs"

tar -C "$rootfs" --numeric-owner -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  - "$IMAGE" >/dev/null
"$DOCKER" run --rm --network none --user 65534:65534 "$IMAGE" /bin/true \
  || { echo "make_base: $IMAGE is not usable by a non-root user" >&2; exit 1; }
echo "make_base: built $IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
