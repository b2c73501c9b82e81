#!/bin/sh
# Container start latency: one create + start + wait + delete of /bin/true in a busybox rootfs,
# for `shoal-agent bench-run`, `runc run` and `crun run` on the same rootfs and the same namespaces
# (pid, mount, network, uts, ipc). Needs root, hyperfine, runc, crun, jq and /bin/busybox.
#
#   benches/container-start.sh [path/to/shoal-agent]      (default: target/release/shoal-agent)
#
# Env: RUNS (50), WARMUP (5), WORK (a fresh temporary directory, removed at the end).
#
# On a cgroup v1 "hybrid" host, crun sees the cgroup2 mount at /sys/fs/cgroup/unified and takes the
# host for v2; it runs in a private mount namespace where that mount is gone (this adds the cost of
# `unshare` + `sh` to crun's figure, ~1 ms).
set -eu

SHOAL=${1:-${SHOAL:-target/release/shoal-agent}}
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
WORK=${WORK:-$(mktemp -d /tmp/shoal-bench.XXXXXX)}
SHOAL=$(realpath "$SHOAL")
trap 'rm -rf "$WORK"' EXIT

bundle=$WORK/bundle
rootfs=$bundle/rootfs
mkdir -p "$rootfs/bin" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/etc" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for name in $(/bin/busybox --list); do
    [ "$name" = busybox ] || ln -sf busybox "$rootfs/bin/$name"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"

# runc's default spec, running /bin/true without a terminal, in pid/mount/net/uts/ipc namespaces only.
(cd "$bundle" && rm -f config.json && runc spec)
jq '.process.terminal = false
    | .process.args = ["/bin/true"]
    | .linux.namespaces = [{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]' \
    "$bundle/config.json" > "$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"

# Each tool once, so a broken setup fails here rather than inside hyperfine.
"$SHOAL" bench-run --rootfs "$rootfs" --root "$WORK/shoal"
runc --root "$WORK/runc" run --bundle "$bundle" bench-runc
unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root $WORK/crun run --bundle $bundle bench-crun"

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    --export-markdown "$WORK/results.md" --export-json "$WORK/results.json" \
    -n shoal "$SHOAL bench-run --rootfs $rootfs --root $WORK/shoal" \
    -n runc "runc --root $WORK/runc run --bundle $bundle bench-runc" \
    -n crun "unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root $WORK/crun run --bundle $bundle bench-crun'"
echo
cat "$WORK/results.md"
echo
jq -r '.results[] | "\(.command): median \(.median * 1000 | . * 100 | round / 100) ms, min \(.min * 1000 | . * 100 | round / 100) ms"' "$WORK/results.json"
