#!/usr/bin/env bash
# Regenerate the side-by-side figures of docs/benchmarks.md (takes ~35 minutes).
# Needs: this project installed in the active Python (twistd on PATH) with pysyncobj,
# etcd-server (apt-get install etcd-server), and ../shared/bench beside the project.
# Usage: tools/run_benchmarks.sh [OUTDIR]    (then paste OUTDIR/report-*.md)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/leeky-bench-final}"
mkdir -p "$out"
bench=../shared/bench
if [ ! -f "$bench/run.py" ]; then
    echo "run_benchmarks.sh: needs the shared yardstick at $bench (not part of a clone);" >&2
    echo "  measure Leeky Raft alone with 'leekyraft local' and 'leekyraft bench' (docs/benchmarks.md)" >&2
    exit 2
fi
# PySyncObj's fair setting for latency and throughput (see ../shared/bench/README.md)
opts() { if [ "$1" = pysyncobj ]; then echo "--opt no_batch=1"; fi; }
for n in 3 5; do
    for system in leekyraft etcd pysyncobj; do     # alternate systems in one sitting
        python "$bench/run.py" --system "$system" --nodes "$n" $(opts "$system") \
            --workload seq,conc,reads,large --repeats 3 --out "$out/$system-n$n.json"
    done
    python "$bench/report.py" "$out/leekyraft-n$n.json" "$out/etcd-n$n.json" \
        "$out/pysyncobj-n$n.json" > "$out/report-n$n.md"
done
for system in etcd leekyraft pysyncobj; do
    python "$bench/run.py" --system "$system" --nodes 3 --workload failover $(opts "$system") \
        --failover-trials 5 --repeats 1 --out "$out/$system-failover.json"
done
python "$bench/report.py" "$out/leekyraft-failover.json" "$out/etcd-failover.json" \
    "$out/pysyncobj-failover.json" > "$out/report-failover.md"
python tools/memory_keys.py 1000000 > "$out/memory.txt"
{ nproc; grep -m1 "model name" /proc/cpuinfo; } > "$out/machine.txt"
echo "results in $out"
