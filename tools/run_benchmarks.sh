#!/usr/bin/env bash
# Regenerate the side-by-side figures of docs/benchmarks.md (takes ~15 minutes).
# Needs: this project installed in the active Python (twistd on PATH), etcd-server
# (apt-get install etcd-server), and ../shared/bench beside the project.
# Usage: tools/run_benchmarks.sh [OUTDIR]    (then paste OUTDIR/report-*.md)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/leeky-bench-final}"
mkdir -p "$out"
bench=../shared/bench
for n in 3 5; do
    for system in leekyraft etcd; do     # alternate systems in one sitting
        python "$bench/run.py" --system "$system" --nodes "$n" \
            --workload seq,conc,reads,large --repeats 3 --out "$out/$system-n$n.json"
    done
    python "$bench/report.py" "$out/leekyraft-n$n.json" "$out/etcd-n$n.json" > "$out/report-n$n.md"
done
for system in etcd leekyraft; do
    python "$bench/run.py" --system "$system" --nodes 3 --workload failover \
        --failover-trials 5 --repeats 1 --out "$out/$system-failover.json"
done
python "$bench/report.py" "$out/leekyraft-failover.json" "$out/etcd-failover.json" \
    > "$out/report-failover.md"
python tools/memory_keys.py 1000000 > "$out/memory.txt"
{ nproc; grep -m1 "model name" /proc/cpuinfo; } > "$out/machine.txt"
echo "results in $out"
