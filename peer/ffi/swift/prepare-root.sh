#!/usr/bin/env bash
# Prepares, once per machine, the Debian 13 (trixie) tree the Swift binding tests run in: Debian
# 12 has no Swift, trixie has `swiftlang` (6.0, XCTest included). The tree is made with
# debootstrap from the Debian mirror the host's apt uses and kept in
# ${WEFT_SWIFT_ROOT:-/var/cache/weft/swift-trixie}; a marker file written last says it is
# complete, so an interrupted run is redone from scratch. Needs root. Idempotent: a second run
# with the marker present returns at once. run-in-root.sh runs commands inside it.
set -euo pipefail

ROOT=${WEFT_SWIFT_ROOT:-/var/cache/weft/swift-trixie}
MARKER="$ROOT/.weft-swift-root"
PACKAGES="swiftlang libc6-dev"
# What the marker records: a tree made by another recipe is rebuilt (bump the version when the
# steps below change).
RECIPE="trixie minbase + $PACKAGES, v1"

ready() { [ "$(cat "$MARKER" 2>/dev/null)" = "$RECIPE" ]; }
if ready; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "prepare-root.sh: must run as root (debootstrap, chroot)" >&2
    exit 1
fi

mkdir -p "$(dirname "$ROOT")"
# One builder at a time (two test runs may start together); the second finds the marker.
exec 9>"$ROOT.lock"
flock 9
if ready; then
    exit 0
fi

started=$(date +%s)
if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# The mirror the host uses for its own release (not -updates or -security).
MIRROR=${WEFT_DEBIAN_MIRROR:-}
if [ -z "$MIRROR" ]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    MIRROR=$(apt-get indextargets --format '$(RELEASE) $(SITE)' 2>/dev/null \
        | awk -v c="$codename" '$1 == c { print $2; exit }')
fi
if [ -z "$MIRROR" ]; then
    # Older apt: the first Debian archive (not security) named in the sources.
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+/debian/?' | grep -v security \
        | head -n 1 || true)
fi
if [ -z "$MIRROR" ]; then
    echo "prepare-root.sh: no Debian mirror found in the host's apt sources; set WEFT_DEBIAN_MIRROR" >&2
    exit 1
fi

# Whatever a killed run left: its mounts first (never delete through a bind mount), then files.
unmount_all() {
    findmnt -rn -o TARGET | awk -v r="$ROOT" 'index($0, r "/") == 1' | sort -r \
        | while read -r m; do umount -l "$m" || true; done
}
unmount_all
rm -rf --one-file-system "$ROOT"
mkdir -p "$ROOT"

echo "== debootstrap trixie from $MIRROR into $ROOT"
log="$ROOT.log"
if ! debootstrap --variant=minbase --components=main trixie "$ROOT" "$MIRROR" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "prepare-root.sh: debootstrap failed (log: $log)" >&2
    exit 1
fi

echo "== installing $PACKAGES in the tree"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# A private mount namespace: /proc and /dev vanish with it, whatever happens.
if ! unshare --mount --propagation private -- sh -c '
        set -e
        mount -t proc proc "$0/proc"
        mount --rbind /dev "$0/dev"
        chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
            DEBIAN_FRONTEND=noninteractive sh -c "
                apt-get update -qq &&
                apt-get install -y -qq --no-install-recommends $* &&
                apt-get clean"
    ' "$ROOT" $PACKAGES >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "prepare-root.sh: installing $PACKAGES failed (log: $log)" >&2
    exit 1
fi
rm -rf "$ROOT/var/lib/apt/lists/"*

echo "$RECIPE" >"$MARKER"
echo "== Swift root ready in $(( $(date +%s) - started )) s: $(du -sh --one-file-system "$ROOT" | cut -f1) in $ROOT"
