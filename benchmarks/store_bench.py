"""How long storing one finished cell takes as the store grows: the 10th cell against the
10,000th, in a store of synthetic cells of the quick job's size (about 47 rows each).

    python -m flowbench.benchmarks.store_bench [--cells 10000] [--rows 47]

Medians over the 9 cells around each point (cells 6-14, and 9,996-10,004); the CSV file
the runner wrote before the store rewrote every stored row per cell, and its 10th and
500th cells are timed beside it for comparison (--csv-cells 0 leaves that out).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .results import append
from .store import Store


def synthetic_rows(i: int, rows: int) -> list[dict]:
    base = {"run_id": "bench", "cell": f"cell{i:06d}", "backend": "torch", "arch": "maf",
            "kind": "time", "dim": 2, "layers": 4, "hidden": "64x64", "status": "ok",
            "error": "", "statistic": "median", "unit": "s", "machine": "bench"}
    out = [{**base, "op": "log_prob", "metric": f"m{j}", "batch": 1024, "value": j * 1e-3}
           for j in range(rows - 1)]
    return out + [{**base, "op": "", "metric": "status", "value": float("nan")}]


def _around(times: dict[int, float], n: int) -> float:
    return statistics.median(times[i] for i in range(max(1, n - 4), n + 5) if i in times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowbench.benchmarks.store_bench")
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=47)
    p.add_argument("--csv-cells", type=int, default=500)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store, times = Store(Path(tmp) / "bench"), {}
        for i in range(1, args.cells + 5):
            rows = synthetic_rows(i, args.rows)
            t0 = time.perf_counter()
            store.put_cell(rows[0]["cell"], rows)
            times[i] = time.perf_counter() - t0
        print(f"store: cell 10 {_around(times, 10) * 1e3:.2f} ms, cell {args.cells} "
              f"{_around(times, args.cells) * 1e3:.2f} ms per cell ({args.rows} rows each)")
        if args.csv_cells:
            csv, times = Path(tmp) / "bench.csv", {}
            for i in range(1, args.csv_cells + 5):
                rows = synthetic_rows(i, args.rows)
                t0 = time.perf_counter()
                append(csv, rows)
                times[i] = time.perf_counter() - t0
            print(f"single CSV (before the store): cell 10 {_around(times, 10) * 1e3:.2f} ms, "
                  f"cell {args.csv_cells} {_around(times, args.csv_cells) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
