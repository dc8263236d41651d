"""Quick sequential-put latency probe against a fresh local cluster (development aid)."""

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from leeky_twisted.localcluster import LocalCluster


METHOD = "put"


def main() -> None:
    global METHOD
    import os

    METHOD = os.environ.get("METHOD", "put")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    extra = sys.argv[2:]
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d), 3, extra)
        try:
            c.start()
            leader = c.wait_for_leader()
            conn = http.client.HTTPConnection("127.0.0.1", leader.http_port)
            lat = []
            for i in range(n + 100):
                method = sys.argv[0] if False else METHOD
                params = (
                    [f"k{i % 100}", "x" * 100]
                    if method == "put"
                    else ([f"k{i % 100}"] if method == "get" else [])
                )
                body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": i})
                t = time.perf_counter()
                conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if i >= 100:
                    lat.append(time.perf_counter() - t)
            lat.sort()
            print(
                f"seq puts: n={n} p50={lat[n // 2] * 1000:.2f}ms "
                f"p99={lat[int(n * 0.99)] * 1000:.2f}ms mean={statistics.mean(lat) * 1000:.2f}ms"
            )
        finally:
            c.stop()


if __name__ == "__main__":
    main()
