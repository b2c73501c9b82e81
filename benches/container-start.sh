#!/bin/sh
# Container start latency: one create + start + wait + delete of /bin/true in a busybox rootfs,
# for `shoal-agent bench-run`, `runc run` and `crun run` on the same rootfs and the same namespaces
# (pid, mount, network, uts, ipc). Needs root, hyperfine, runc, crun, jq and /bin/busybox.
#
# Protections on each side:
#   shoal          Shoal's defaults: device cgroup, Docker's seccomp profile (compiled once per
#                  profile and capability set, then read from the runtime's cache), Docker's
#                  capabilities, masked and read-only /proc paths, read-only /sys.
#   runc, crun     `runc spec`'s defaults: device cgroup (deny all, then the default devices),
#                  noNewPrivileges, a small capability set, masked and read-only paths; no seccomp.
#   runc+seccomp,  the same plus Docker's seccomp profile as dockerd hands it to them (the rules that
#   crun+seccomp   apply to amd64 and Docker's capability set, in the OCI format).
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
# The runtime's cgroup parent goes too (bench-run removes each container's own cgroups).
trap 'rm -rf "$WORK"; rmdir /sys/fs/cgroup/*/shoal-bench /sys/fs/cgroup/shoal-bench 2>/dev/null || true' EXIT

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

# The same bundle with Docker's seccomp profile, resolved for amd64 and Docker's default capabilities
# (rules whose includes hold and whose excludes do not), as dockerd writes it into the OCI spec.
PROFILE=${PROFILE:-$(dirname "$0")/../agent/src/runtime/seccomp_default.json}
sbundle=$WORK/bundle-seccomp
mkdir -p "$sbundle"
jq --slurpfile p "$PROFILE" --arg rootfs "$rootfs" '
    ["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_SETGID","CAP_SETUID",
     "CAP_SETPCAP","CAP_NET_BIND_SERVICE","CAP_NET_RAW","CAP_SYS_CHROOT","CAP_MKNOD","CAP_AUDIT_WRITE",
     "CAP_SETFCAP"] as $caps
    | def holds: (.caps // []) as $c | ($c | all(. as $x | $caps | index($x))) ;
    def any_cap: (.caps // []) | any(. as $x | $caps | index($x));
    def arch_ok: (.arches // []) | (length == 0 or index("amd64"));
    .root.path = $rootfs
    | .linux.seccomp = {
        defaultAction: $p[0].defaultAction,
        defaultErrnoRet: $p[0].defaultErrnoRet,
        architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        syscalls: [$p[0].syscalls[]
            | select((.includes // {}) | holds and arch_ok)
            | select(((.excludes // {}) | any_cap or ((.arches // []) | index("amd64"))) | not)
            | {names, action} + (if .errnoRet then {errnoRet} else {} end)
                + (if .args then {args: [.args[] | {index, value, valueTwo: (.valueTwo // 0), op}]} else {} end)]
    }' "$bundle/config.json" > "$sbundle/config.json"

# Each tool once, so a broken setup fails here rather than inside hyperfine.
"$SHOAL" bench-run --rootfs "$rootfs" --root "$WORK/shoal"
runc --root "$WORK/runc" run --bundle "$bundle" bench-runc
unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root $WORK/crun run --bundle $bundle bench-crun"
runc --root "$WORK/runc" run --bundle "$sbundle" bench-runc-s
unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root $WORK/crun run --bundle $sbundle bench-crun-s"

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    --export-markdown "$WORK/results.md" --export-json "$WORK/results.json" \
    -n shoal "$SHOAL bench-run --rootfs $rootfs --root $WORK/shoal" \
    -n runc "runc --root $WORK/runc run --bundle $bundle bench-runc" \
    -n crun "unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root $WORK/crun run --bundle $bundle bench-crun'" \
    -n runc+seccomp "runc --root $WORK/runc run --bundle $sbundle bench-runc-s" \
    -n crun+seccomp "unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root $WORK/crun run --bundle $sbundle bench-crun-s'"
echo
cat "$WORK/results.md"
echo
jq -r '.results[] | "\(.command): median \(.median * 1000 | . * 100 | round / 100) ms, min \(.min * 1000 | . * 100 | round / 100) ms"' "$WORK/results.json"
