#!/bin/sh
# Start one Leeky Raft node, as the introducer or as a worker.
#
#   entrypoint.sh introducer      start a new cluster (this node is its first voter)
#   entrypoint.sh worker          join the cluster through $LEEKY_JOIN
#
# The same script runs in the containers (docker-compose.yml) and in the tests,
# which start it in network namespaces named like the compose services.
# Environment (all optional):
#   LEEKY_NODE_ID    node id (default: the host name, unique per container)
#   LEEKY_HOST       address the others reach this node at (default: the host name)
#   LEEKY_JOIN       gossip address of a live member (default: introducer:7300)
#   LEEKY_DATA       data folder (default: /data/NODE_ID, so scaled workers sharing
#                    one volume keep separate folders)
#   LEEKY_KEY_FILE   the cluster key, on a volume every container shares
#                    (default: /secret/cluster.key). The introducer creates it on
#                    its first start (--bootstrap); a worker waits for it to
#                    appear (up to LEEKY_KEY_WAIT seconds, default 120)
#   LEEKY_PYTHON_BIN folder holding twistd (default: found on PATH)
#   LEEKY_EXTRA      extra node options, space separated
set -eu

role="${1:-worker}"
node_id="${LEEKY_NODE_ID:-$(hostname)}"
host="${LEEKY_HOST:-$(hostname)}"
data="${LEEKY_DATA:-/data/$node_id}"
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

mkdir -p "$data" "$(dirname "$key")"
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
# shellcheck disable=SC2086 # $membership and $LEEKY_EXTRA are option lists
exec "$twistd" -n --pidfile= leekyraft \
    --id "$node_id" --address "$host:7100" --gossip-port 7300 \
    --client-host 0.0.0.0 --client-port 7000 --http-port 7200 \
    --data-dir "$data" --gossip-key-file "$key" $membership ${LEEKY_EXTRA:-}
