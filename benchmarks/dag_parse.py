"""How much the DAG file costs the DAG processor beyond importing `airflow.sdk` itself, measured as it runs.

The DAG processor (Airflow 3) pre-imports the `airflow.*` modules a DAG file names in its own long-lived
process (`[dag_processor] parsing_pre_import_modules`, on by default) and then forks a child per parse. So
each measurement starts a fresh interpreter that imports `airflow.sdk`, pre-imports what
`airflow.utils.file.iter_airflow_imports` finds in the DAG file (timed: paid once per processor, reported as
`pre_import_s`), forks, and times the DAG file's execution in the child (`overhead_ms`: what every parse pays).
For comparison it also times a cold parse in a fresh interpreter without pre-import (`cold_overhead_ms`: what
a one-off `python dags/inventory_retraining.py` pays). Medians over --runs. Target: overhead_ms <= 100.
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
import os, time, runpy, sys
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
pre = 0.0
if {pre_import}:
    import importlib
    from airflow.utils.file import iter_airflow_imports
    for module in iter_airflow_imports({dag!r}):
        importlib.import_module(module)
    pre = time.perf_counter() - t1
r, w = os.pipe()
loaded = {{m.split('.')[0] for m in sys.modules}}
if os.fork() == 0:  # the parse child, as the DAG processor forks it
    os.close(r)
    t2 = time.perf_counter()
    runpy.run_path({dag!r}, run_name="dag_parse_benchmark")
    t3 = time.perf_counter()
    heavy = ({{m.split('.')[0] for m in sys.modules}} - loaded) & set({heavy!r})
    os.write(w, f"{{t3 - t2}} {{','.join(sorted(heavy)) or '-'}}".encode())
    os._exit(0)
os.close(w)
child = os.read(r, 65536).decode()
os.wait()
print(t1 - t0, pre, child, ','.join(sorted(loaded & set({heavy!r}))) or '-')
"""


def _names(field: str) -> list[str]:
    return [name for name in field.split(",") if name != "-"]


def _measure(pre_import: bool) -> tuple[float, float, float, list[str], list[str]]:
    """(sdk import s, pre-import s, DAG file parse s in the forked child, heavy modules the parse itself
    imported, heavy modules already imported before the fork: by airflow.sdk or the pre-import)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    code = _TIMER.format(pre_import=pre_import, dag=str(DAG_FILE), heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    sdk_s, pre_s, dag_s, heavy, before = out.stdout.strip().splitlines()[-1].split(" ")
    return float(sdk_s), float(pre_s), float(dag_s), _names(heavy), _names(before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _measure(True)  # warm the OS file cache so neither side pays for the first read from disk
    sdk, pre, parse, cold, heavy_seen, pre_imported = [], [], [], [], set(), set()
    for _ in range(args.runs):
        sdk_s, pre_s, dag_s, heavy, before = _measure(True)
        sdk.append(sdk_s)
        pre.append(pre_s)
        parse.append(dag_s)
        heavy_seen.update(heavy)
        pre_imported.update(before)
        cold.append(_measure(False)[2])
    result = {
        "runs": args.runs,
        "sdk_import_s": round(statistics.median(sdk), 4),
        "pre_import_s": round(statistics.median(pre), 4),
        "overhead_ms": round(statistics.median(parse) * 1000, 1),
        "cold_overhead_ms": round(statistics.median(cold) * 1000, 1),
        "heavy_modules_imported_by_parse": sorted(heavy_seen),
        "heavy_modules_pre_imported": sorted(pre_imported),  # the provider's modules, once per processor
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
