#!/bin/sh
# Start one Leeky Raft node, as the introducer or as a worker.
#
#   entrypoint.sh introducer      start a new cluster (this node is its first voter)
#   entrypoint.sh worker          join the cluster through $LEEKY_JOIN
#
# The same script runs in the containers (docker-compose.yml) and in the tests,
# which start it in network namespaces named like the compose services.
#
# A node's identity lives with its data, not with its container: the node
# stores its id in DATA/node-id at its first start and reads it back at every
# later one. Scaled workers share one volume; each container claims a folder
# of it that no running node holds (an flock on FOLDER/.claim, held by the
# node's process for its lifetime), or makes a new one. A re-created container
# (new image, --force-recreate, down/up) thus comes back as the same member.
# Environment (all optional):
#   LEEKY_NODE_ID    node id, checked against the stored one (default: the stored
#                    id, or a new random one stored at the first start)
#   LEEKY_HOST       address the others reach this node at (default: the host name)
#   LEEKY_JOIN       gossip address of a live member (default: introducer:7300)
#   LEEKY_DATA       data folder (default: /data/NODE_ID when LEEKY_NODE_ID is set,
#                    else a free folder claimed under LEEKY_DATA_ROOT)
#   LEEKY_DATA_ROOT  the volume scaled workers share (default: /data)
#   LEEKY_KEY_FILE   the cluster key, on a volume every container shares
#                    (default: /secret/cluster.key). The introducer creates it on
#                    its first start (--bootstrap); a worker waits for it to
#                    appear (up to LEEKY_KEY_WAIT seconds, default 120)
#   LEEKY_PYTHON_BIN folder holding twistd (default: found on PATH)
#   LEEKY_EXTRA      extra node options, space separated
set -eu

role="${1:-worker}"
node_id="${LEEKY_NODE_ID:-}"
host="${LEEKY_HOST:-$(hostname)}"
root="${LEEKY_DATA_ROOT:-/data}"
join="${LEEKY_JOIN:-introducer:7300}"
key="${LEEKY_KEY_FILE:-/secret/cluster.key}"
twistd="twistd"
if [ -n "${LEEKY_PYTHON_BIN:-}" ]; then
    twistd="$LEEKY_PYTHON_BIN/twistd"
fi

case "$role" in
    introducer) membership="--bootstrap" ;;
    worker) membership="--join $join" ;;
    *) echo "entrypoint.sh: role must be introducer or worker, not $role" >&2; exit 64 ;;
esac

# Hold an exclusive lock on FOLDER/.claim on file descriptor 9, which the node
# inherits (exec keeps it open): no second node can claim the folder while
# this one runs, and the kernel drops the lock when the node exits.
lock_folder() {
    exec 9>>"$1/.claim"
    if flock -n 9; then
        return 0
    fi
    exec 9>&-
    return 1
}

# Claim a folder $root/node.* that no running node holds: an old one first (a
# re-created container takes over the identity stored there), else a new one.
claim_folder() {
    mkdir -p "$root"
    tries=0
    while [ "$tries" -lt 20 ]; do
        for dir in "$root"/node.*/; do
            [ -d "$dir" ] || continue
            dir="${dir%/}"
            if lock_folder "$dir"; then
                data="$dir"
                claimed=1
                return 0
            fi
        done
        dir="$(mktemp -d "$root/node.XXXXXXXX")"
        if lock_folder "$dir"; then  # another container may have claimed it first
            data="$dir"
            claimed=1
            return 0
        fi
        tries=$((tries + 1))
    done
    echo "entrypoint.sh: could not claim a data folder under $root" >&2
    exit 73
}

claimed=0
if [ -n "${LEEKY_DATA:-}" ]; then
    data="$LEEKY_DATA"
elif [ -n "$node_id" ]; then
    data="$root/$node_id"
else
    data=""
    claim_folder
fi
mkdir -p "$data" "$(dirname "$key")"
if [ "$claimed" = 0 ] && ! lock_folder "$data"; then
    echo "entrypoint.sh: another node is running on $data" >&2
    exit 75
fi
id_option=""
if [ -n "$node_id" ]; then
    id_option="--id $node_id"
fi
if [ "$role" = worker ]; then
    waited=0
    while [ ! -s "$key" ]; do
        if [ "$waited" -ge "${LEEKY_KEY_WAIT:-120}" ]; then
            echo "entrypoint.sh: no cluster key at $key after ${waited}s (the introducer creates it)" >&2
            exit 69
        fi
        sleep 1
        waited=$((waited + 1))
    done
fi
# shellcheck disable=SC2086 # $id_option, $membership and $LEEKY_EXTRA are option lists
exec "$twistd" -n --pidfile= leekyraft $id_option \
    --address "$host:7100" --gossip-port 7300 \
    --client-host 0.0.0.0 --client-port 7000 --http-port 7200 \
    --data-dir "$data" --gossip-key-file "$key" $membership ${LEEKY_EXTRA:-}
