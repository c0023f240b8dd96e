#!/usr/bin/env bash
# Runs a command inside the Swift root that prepare-root.sh made:
#
#   run-in-root.sh [--bind DIR]... [--cd DIR] -- COMMAND [ARG]...
#
# Each --bind DIR is mounted at the same path inside the tree, so paths mean the same on both
# sides; --cd is the command's working directory (default /). The mounts (/proc, /dev, a tmpfs
# on /tmp and the binds) live in a private mount namespace and vanish when the command ends,
# however it ends: nothing is left mounted in the cached tree. The command runs in its own PID
# namespace too: when it ends, or this script is killed, every process it started is killed. The environment is cleared but
# for PATH, HOME, LANG, CI and every WEFT_* variable. The host's network is shared (loopback
# reaches a relay started on the host). Exit 2 when the tree is not prepared.
set -euo pipefail

ROOT=${WEFT_SWIFT_ROOT:-/var/cache/weft/swift-trixie}
binds=()
cwd=/
while [ $# -gt 0 ]; do
    case "$1" in
        --bind) binds+=("$(realpath "$2")"); shift 2 ;;
        --cd) cwd=$(realpath "$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "run-in-root.sh: unknown option $1" >&2; exit 1 ;;
    esac
done
if [ $# -eq 0 ]; then
    echo "usage: run-in-root.sh [--bind DIR]... [--cd DIR] -- COMMAND [ARG]..." >&2
    exit 1
fi
if [ ! -f "$ROOT/.weft-swift-root" ]; then
    echo "run-in-root.sh: no prepared Swift root at $ROOT (run peer/ffi/swift/prepare-root.sh)" >&2
    exit 2
fi

envs=(PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8)
[ -n "${CI:-}" ] && envs+=("CI=$CI")
while IFS= read -r name; do
    envs+=("$name=${!name}")
done < <(compgen -e | grep '^WEFT_' || true)

# Parents before children, so a bind inside another bind lands on top of it.
if [ ${#binds[@]} -gt 0 ]; then
    mapfile -t binds < <(printf '%s\n' "${binds[@]}" | sort -u)
fi

exec unshare --mount --propagation private --pid --fork --kill-child -- bash -c '
    set -euo pipefail
    root=$1 cwd=$2 nbinds=$3
    shift 3
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs tmpfs "$root/tmp"
    for ((i = 0; i < nbinds; i++)); do
        mkdir -p "$root$1"
        mount --bind "$1" "$root$1"
        shift
    done
    nenv=$1
    shift
    exec chroot "$root" env -i "${@:1:nenv}" sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "${@:nenv+1}"
' run-in-root "$ROOT" "$cwd" "${#binds[@]}" ${binds[@]+"${binds[@]}"} "${#envs[@]}" "${envs[@]}" "$@"
