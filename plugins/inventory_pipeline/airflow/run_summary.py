"""Read a finished DAG run back from Airflow's metadata DB: task states, timings and return values.

Run as `python -m inventory_pipeline.airflow.run_summary [dag_id]` with the same AIRFLOW_HOME as the run; prints one
JSON object. A separate process, so the caller never has to import Airflow with the right configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any


def latest_run(dag_id: str) -> dict[str, Any]:
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.start_date.desc()).first()
        if run is None:
            return {
                "dag_id": dag_id,
                "dag_run_id": None,
                "state": None,
                "tasks": {},
                "timings": {},
                "xcom": {},
            }
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        tasks, timings = {}, {}
        for ti in tis:
            tasks[ti.task_id] = str(ti.state) if ti.state is not None else None
            if ti.start_date and ti.end_date:
                timings[ti.task_id] = round((ti.end_date - ti.start_date).total_seconds(), 2)
        xcom = {}
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run.run_id,
            XComModel.key.in_(("return_value", "report", "decision")),
        )
        for row in rows:
            value = row.value
            if isinstance(value, (str, bytes)):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            if row.key == "return_value" or row.task_id not in xcom:  # "report"/"decision" stand in when a task failed
                xcom[row.task_id] = value
        return {
            "dag_id": dag_id,
            "dag_run_id": run.run_id,
            "state": str(run.state),
            "tasks": tasks,
            "timings": timings,
            "xcom": xcom,
        }


def read_latest_run(env: Mapping[str, str], dag_id: str = "inventory_retraining") -> dict[str, Any]:
    """`latest_run` read in a process of its own with `env` (an Airflow home's database and settings): how the
    demo and the tests read a run back after `airflow dags test`."""
    proc = subprocess.run(
        [sys.executable, "-m", "inventory_pipeline.airflow.run_summary", dag_id],
        env=dict(env),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"could not read the run back from Airflow's DB: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(latest_run(args[0] if args else "inventory_retraining"), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
