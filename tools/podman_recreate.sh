#!/bin/sh
# Re-create worker containers under real podman and check they come back as the
# same Raft members with every acknowledged write (issue 15). Run as root:
#
#   sudo unshare -m --propagation private tools/podman_recreate.sh
#
# What it takes on our machines (no image registry, cgroup v1 + v2 "hybrid"):
# - crun refuses hybrid cgroups, so the script runs in a private mount namespace
#   (the unshare above) and unmounts /sys/fs/cgroup/unified there only;
# - cgroups and podman's default ulimits are turned off (a containers.conf of its
#   own), since this root may not raise RLIMIT_NOFILE/NPROC;
# - no base image can be pulled: each container's root is an empty folder with the
#   host's /usr, Python (PYTHON_HOME) and virtualenv (VENV) mounted read-only, and
#   this checkout on PYTHONPATH. The Dockerfile (python:3.11-slim) is not built.
# It starts an introducer and 2 workers on a podman network, writes a key, removes
# both workers' containers, starts 2 new ones (new names, addresses) on the same
# worker volume, and checks the voters and the key. Exit 0 when they are the same.
# A run killed half-way leaves CNI state behind (next run: "requested IP address
# ... is not available"): podman rm -f the containers, rm -rf /var/lib/cni/networks/lkpod.
set -u
WT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$WT/.venv}"
PYTHON_HOME="${PYTHON_HOME:-$(dirname "$(dirname "$(readlink -f "$VENV/bin/python")")")}"
P="$(mktemp -d /tmp/leeky-podman.XXXXXX)"
if mountpoint -q /sys/fs/cgroup/unified; then
    umount /sys/fs/cgroup/unified || { echo "run me under: unshare -m --propagation private" >&2; exit 2; }
fi
cat > "$P/containers.conf" <<'CONF'
[containers]
default_ulimits = []
pids_limit = 0
cgroups = "disabled"
[engine]
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$P/containers.conf"
mkdir -p "$P/rootfs/proc" "$P/rootfs/sys" "$P/rootfs/dev" "$P/rootfs/etc" "$P/rootfs/tmp" \
    "$P/rootfs/usr" "$P/introducer-data" "$P/worker-data" "$P/secret"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$P/rootfs/$d"; done
podman network rm -f lkpod >/dev/null 2>&1
podman network create --subnet 10.77.0.0/24 lkpod >/dev/null || exit 2
HOSTS="--add-host introducer:10.77.0.10"
for i in 1 2 3 4; do HOSTS="$HOSTS --add-host worker-$i:10.77.0.1$i"; done

start() {  # NAME IP ROLE VOLUME [podman options...]
    name=$1 ip=$2 role=$3 vol=$4
    shift 4
    # shellcheck disable=SC2086 # $HOSTS is an option list
    podman run -d --name "$name" --hostname "$name" --network lkpod --ip "$ip" $HOSTS \
        -v /usr:/usr:ro -v "$PYTHON_HOME:$PYTHON_HOME:ro" -v "$VENV:$VENV:ro" -v "$WT:$WT:ro" \
        -v "$P/$vol:/data" -v "$P/secret:/secret" -e PYTHONPATH="$WT" \
        -e LEEKY_PYTHON_BIN="$VENV/bin" -e LEEKY_EXTRA="--stabilization 1" "$@" \
        --rootfs "$P/rootfs" /bin/sh "$WT/docker/entrypoint.sh" "$role" >/dev/null
}
cli() { podman exec introducer "$VENV/bin/leekyraft" --cluster 127.0.0.1:7000 "$@"; }
voters() {
    cli status --json 2>/dev/null | "$VENV/bin/python" -c \
        'import json,sys; s=json.load(sys.stdin)[0]["status"]; print(s.get("leader") and ",".join(s["voters"]))' \
        2>/dev/null
}
wait_voters() {  # N: print the voters once there are N under a leader
    v=""
    for _ in $(seq 1 120); do
        v=$(voters)
        if [ "$(echo "$v" | tr ',' '\n' | grep -c .)" = "$1" ]; then
            echo "$v"
            return 0
        fi
        sleep 1
    done
    echo "timed out; voters: $v" >&2
    return 1
}
cleanup() {
    podman rm -f -t 5 introducer worker-1 worker-2 worker-3 worker-4 >/dev/null 2>&1
    podman network rm -f lkpod >/dev/null 2>&1
}
trap cleanup EXIT

start introducer 10.77.0.10 introducer introducer-data -e LEEKY_NODE_ID=introducer
start worker-1 10.77.0.11 worker worker-data
start worker-2 10.77.0.12 worker worker-data
before=$(wait_voters 3) || exit 1
echo "voters: $before"
cli put survived yes || exit 1
podman stop -t 10 worker-1 worker-2 >/dev/null && podman rm worker-1 worker-2 >/dev/null
start worker-3 10.77.0.13 worker worker-data
start worker-4 10.77.0.14 worker worker-data
after=$(wait_voters 3) || exit 1
echo "voters after re-creating the workers (now worker-3, worker-4): $after"
got=$(cli get survived)
echo "get survived: $got"
cleanup
trap - EXIT
if [ "$before" = "$after" ] && [ "$got" = yes ]; then
    echo "same members, no write lost"
    rm -rf "$P"
    exit 0
fi
echo "FAILED; the volumes are in $P" >&2
exit 1
