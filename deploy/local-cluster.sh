#!/usr/bin/env bash
# A one-host Shoal cluster on this machine, with a 3-replica demo web service.
#
#   sudo bash deploy/local-cluster.sh        # install, build, start, deploy the demo (idempotent)
#   sudo bash deploy/local-cluster.sh down   # stop everything and remove the cluster's state
#
# Run as root on Debian. Everything listens on 127.0.0.1 only: the registry on :5000, the manager on
# :4242 (and its Docker Engine API on :2376). State lives in /var/lib/shoal, logs in /var/log/shoal, pid files in /run/shoal.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=/var/lib/shoal
LOGS=/var/log/shoal
RUN=/run/shoal
REGISTRY=127.0.0.1:5000
MANAGER=127.0.0.1:4242
# The Docker Engine API (docker CLI, docker-py, ...): TLS with the admin certificate.
DOCKER_API=127.0.0.1:2376
IMAGE=shoal/demo:latest
ADMIN_CONF=$STATE/manager/admin.conf
# SHOAL_BIN_DIR=DIR: run the binaries in DIR (e.g. a debug build) instead of building release ones.
BIN=${SHOAL_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/release}

say() { printf '==> %s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }
ctl() { "$BIN/shoalctl" --config "$ADMIN_CONF" "$@"; }

# wait_until SECONDS WHAT CMD...: polls CMD until it succeeds, fails after SECONDS.
wait_until() {
    local secs=$1 what=$2; shift 2
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || die "timed out after ${secs}s waiting for $what (logs in $LOGS)"
        sleep 0.5
    done
}

running() { # running NAME: the process recorded in $RUN/NAME.pid is alive
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

# start NAME CMD...: starts CMD in the background (logs in $LOGS/NAME.log) unless it already runs.
start() {
    local name=$1; shift
    if running "$name"; then
        say "$name already running (pid $(cat "$RUN/$name.pid"))"
        return
    fi
    say "starting $name"
    nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
}

stop() { # stop NAME: SIGTERM, then SIGKILL after 10 s
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 0
    if kill -0 "$pid" 2>/dev/null; then
        say "stopping $1 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$1.pid"
}

# The addresses the agent's bridge IPAM handed to tasks (network/shoal0.ipam.json maps task ids to
# 10.88.x.y addresses; .0, .1 and .255 are never handed out).
task_ips() {
    grep -rhoE '10\.88\.[0-9]{1,3}\.[0-9]{1,3}' "$STATE/agent/network" 2>/dev/null \
        | grep -vE '\.(0|1|255)$' | sort -u || true
}

install_packages() {
    if [ "${SHOAL_SKIP_APT:-0}" = 1 ]; then return; fi
    say "installing packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        docker-registry busybox-static tini iproute2 nftables curl ca-certificates \
        build-essential pkg-config libseccomp-dev
    command -v cargo >/dev/null 2>&1 || die "Rust is not installed: install Rust >= 1.88 (rustup) first"
    # Debian's package starts its own registry on :5000 (with htpasswd auth): ours needs the port.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
        systemctl disable --now docker-registry
    elif [ -x /etc/init.d/docker-registry ]; then
        /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
}

up() {
    install_packages
    if [ -z "${SHOAL_BIN_DIR:-}" ]; then
        say "building release binaries"
        (cd "$REPO" && cargo build --release --workspace --bins)
    fi
    mkdir -p "$STATE/registry/data" "$LOGS" "$RUN"

    cat >"$STATE/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
YAML
    start registry docker-registry serve "$STATE/registry/config.yml"
    wait_until 30 "the registry" curl -sf "http://$REGISTRY/v2/"
    say "pushing $IMAGE"
    "$BIN/shoal-fixture" push-demo --registry "$REGISTRY" --image "$IMAGE"

    start manager "$BIN/shoal-manager" init --data-dir "$STATE/manager" --listen-addr "$MANAGER" \
        --docker-api-addr "$DOCKER_API"
    wait_until 60 "$ADMIN_CONF" test -s "$ADMIN_CONF"
    wait_until 60 "the manager" ctl node ls
    # The token goes through a root-only file, not the command line (which every user can read).
    (umask 077 && ctl cluster join-token worker -q >"$STATE/join-token")
    start agent "$BIN/shoal-agent" join --data-dir "$STATE/agent" --token-file "$STATE/join-token" \
        --insecure-registry "$REGISTRY" "$MANAGER"
    wait_until 60 "the node to be Ready" sh -c "'$BIN/shoalctl' --config '$ADMIN_CONF' node ls | grep -q Ready"

    if ctl service inspect demo >/dev/null 2>&1; then
        say "service demo already exists"
    else
        say "creating service demo"
        ctl service create --name demo --replicas 3 --publish 8080:80 "$REGISTRY/$IMAGE"
    fi
    ctl node ls
    ctl service ps demo

    local ips
    ips=$(task_ips)
    if [ -z "$ips" ]; then
        say "no task addresses found yet in $STATE/agent/network (see task_ips in $0)"
    fi
    for ip in $ips; do
        say "curl http://$ip/"
        curl -s --max-time 3 "http://$ip/" || echo "(no answer from $ip)"
    done
    # The published port (routing mesh): any local address, 127.0.0.1 included.
    say "curl http://127.0.0.1:8080/ (published port, balanced over the tasks)"
    local tries=0
    until curl -s --max-time 3 "http://127.0.0.1:8080/"; do
        tries=$((tries + 1))
        [ "$tries" -lt 20 ] || { echo "(no answer on 127.0.0.1:8080)"; break; }
        sleep 0.5
    done

    cat <<EOF

Shoal is running: manager $MANAGER, registry $REGISTRY, logs in $LOGS.
  export SHOAL_CONFIG=$ADMIN_CONF
  $BIN/shoalctl service ls
The docker CLI works too (Docker Engine API on $DOCKER_API):
  eval "\$($BIN/shoalctl --config $ADMIN_CONF cluster docker-env)" && docker service ls
Stop and clean up with:  sudo bash $0 down
EOF
}

down() {
    stop agent
    stop manager
    stop registry
    # Containers outlive their agent by design (shims): stop them through the runtime's state.
    local ids=()
    for state in "$STATE"/agent/runtime/*/state.json; do
        [ -f "$state" ] || continue
        ids+=("$(basename "$(dirname "$state")")")
        for key in shim_pid pid; do
            local pid
            pid=$(grep -oE "\"$key\"[[:space:]]*:[[:space:]]*[0-9]+" "$state" | grep -oE '[0-9]+$' || true)
            [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
        done
    done
    sleep 0.5
    # Overlay rootfs and other mounts under the state dir, deepest first.
    { grep -F " $STATE/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    for id in "${ids[@]}"; do
        for ns in $(ip netns list | awk '{print $1}' | grep -F "$id" || true); do
            ip netns del "$ns" 2>/dev/null || true
        done
        find /sys/fs/cgroup -depth -type d -name "*$id*" -exec rmdir {} \; 2>/dev/null || true
    done
    # The agent's cgroup parents (shoal/<node id>) once their tasks are gone.
    for parent in /sys/fs/cgroup/*/shoal /sys/fs/cgroup/shoal; do
        [ -d "$parent" ] && find "$parent" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    # The agent's local bridge (shoal0), overlay bridges and VXLAN devices, the WireGuard mesh
    # device, and its nftables tables (ip shoal, ip shoal_ports).
    ip link del shoal0 2>/dev/null || true
    for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(sbr|svx|swg)' || true); do
        ip link del "$link" 2>/dev/null || true
    done
    for table in $(nft list tables 2>/dev/null | awk '/shoal/ {print $2 " " $3}' | tr ' ' ':'); do
        nft delete table "${table%%:*}" "${table#*:}" 2>/dev/null || true
    done
    rm -rf "$STATE" "$RUN"
    say "stopped; logs kept in $LOGS"
}

[ "$(id -u)" -eq 0 ] || die "run as root"
case "${1:-up}" in
    up) up ;;
    down) down ;;
    *) die "usage: $0 [up|down]" ;;
esac
