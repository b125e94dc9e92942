"""Fault injection: every scenario of tests/reliability/fault_scenarios.py against a local stack of its own.

Each fault (bad input, S3 throttling and an outage, killed tasks and processes, a lost SageMaker answer, refused
requests, unsafe code archives and checkpoints, a re-run) is injected into the code the DAG's tasks run, and
audited the same way: handled (a clear error, a counted reject or skip, or a recovery), objects lost, objects
duplicated, training jobs duplicated, inconsistent published state. With --json prints one JSON object:
faults_tried, handled, objects_lost, objects_duplicated, jobs_duplicated, inconsistent_states, rows; without,
a table. Exit status 1 when any row is not handled or has a non-zero counter.

    .venv/bin/python benchmarks/faults.py --json [--only "corrupt JPEG" ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
sys.path.insert(0, str(ROOT / "tests"))  # the helpers the scenarios share with the tests
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

from fault_scenarios import SCENARIOS, FaultEnv, run_scenario, summarize  # noqa: E402

from inventory_pipeline.local_aws.stack import LocalStack  # noqa: E402


@contextlib.contextmanager
def stdout_to_stderr():
    """Logs of the code under test (Airflow writes some to stdout) go to stderr; stdout carries only the result."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield os.fdopen(os.dup(saved), "w")
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def table(result: dict) -> str:
    lines = [f"{'fault':<48} {'ok':<3} {'lost':>4} {'dup':>4} {'jobs':>4} {'inc':>4}  outcome"]
    for row in result["rows"]:
        lines.append(
            f"{row['fault'][:48]:<48} {'yes' if row['handled'] else 'NO':<3} {row['objects_lost']:>4} "
            f"{row['objects_duplicated']:>4} {row['jobs_duplicated']:>4} {int(row['inconsistent_state']):>4}  "
            f"{row['outcome'][:110]}"
        )
    totals = {k: v for k, v in result.items() if k != "rows"}
    return "\n".join([*lines, json.dumps(totals)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    started = time.monotonic()
    with stdout_to_stderr() as out:
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp, LocalStack(Path(tmp) / "stack") as stack:
            env = FaultEnv(stack, Path(tmp) / "work")
            rows = []
            for item in chosen:
                row = run_scenario(env, item)
                print(f"{row.fault}: handled={row.handled} {row.outcome} | {row.detail}", file=sys.stderr, flush=True)
                rows.append(row)
        result = {**summarize(rows), "seconds": round(time.monotonic() - started, 1)}
        out.write((json.dumps(result, indent=1) if args.json else table(result)) + "\n")
        out.flush()
    return 0 if all(row.clean for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
