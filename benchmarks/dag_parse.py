"""How much the DAG file costs the DAG processor beyond importing `airflow.sdk` itself.

Each measurement runs in a fresh interpreter (what a DAG-processor child pays): (a) `import airflow.sdk`
alone, (b) `import airflow.sdk` then executing dags/inventory_retraining.py. In (b) the process also times
its own two phases, so the DAG file's share is measured within one process rather than as the difference of
two noisy process timings. Runs alternate (a)/(b) to share the machine's noise; medians are reported.
Prints one JSON object: sdk_import_s, dag_parse_s, overhead_ms (the DAG file's share). Target: <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_FILE = ROOT / "dags" / "inventory_retraining.py"
HEAVY = ("torch", "sagemaker", "boto3", "botocore", "matplotlib", "pandas", "smdebug")

_TIMER = """
import time, runpy, sys
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
if {parse}:
    runpy.run_path({dag!r}, run_name="dag_parse_benchmark")
t2 = time.perf_counter()
heavy = {{m.split('.')[0] for m in sys.modules}} & set({heavy!r})
print(t1 - t0, t2 - t1, ",".join(sorted(heavy)) or "-")
"""


def _measure(parse: bool) -> tuple[float, float, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    code = _TIMER.format(parse=parse, dag=str(DAG_FILE), heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    sdk_s, dag_s, heavy = out.stdout.strip().splitlines()[-1].split(" ")
    return float(sdk_s), float(dag_s), [h for h in heavy.split(",") if h != "-"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _measure(True)  # warm the OS file cache so neither side pays for the first read from disk
    sdk_only, parse_total, dag_share, heavy_seen = [], [], [], set()
    for _ in range(args.runs):
        sdk_only.append(_measure(False)[0])
        sdk_s, dag_s, heavy = _measure(True)
        parse_total.append(sdk_s + dag_s)
        dag_share.append(dag_s)
        heavy_seen.update(heavy)
    result = {
        "runs": args.runs,
        "sdk_import_s": round(statistics.median(sdk_only), 4),
        "dag_parse_s": round(statistics.median(parse_total), 4),
        "overhead_ms": round(statistics.median(dag_share) * 1000, 1),
        "heavy_modules_loaded": sorted(heavy_seen),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
