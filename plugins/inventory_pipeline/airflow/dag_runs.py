"""One Airflow process that runs `airflow dags test` once per request: the demo's weeks pay Airflow's start-up
(imports, DAG parse, plugins, `db migrate`) once instead of once per week.

Run as `python -m inventory_pipeline.airflow.dag_runs <dag_id> [--migrate]` with the Airflow home's environment
(`runner.DagRunSession` does it). Each stdin line is a JSON request {"conf", "logical_date", "env"}: `env` is added
to this process's environment first (the local stack's endpoints, known only once it is up), then the CLI's own
`dags test` command runs, parsed by Airflow's own parser, exactly as `airflow dags test` would. After each run one
line `MARK {"returncode", "run"}` follows (`run`: `run_summary.latest_run`), so the caller reads the run back
without starting another Airflow process. While it waits for its first request, the process imports what the
tasks import on first use and builds the in-process execution API its tasks talk to (`_warm_up`). `--migrate`
runs `airflow db migrate` first, in this process. A process of its own for it imports Airflow a second time: with
the demo's stack starting beside it, that CPU made the first run answer 0.7-6.7 s later (2.9 s on average, later in
each of nine alternating pairs), though it looked a little quicker on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

MARK = "@@inventory-dag-run "
# What the DAG's tasks import on first use (MLflow alone is a second of CPU): imported while the process waits
# for its first request (the demo seeds its source meanwhile), so the first run's tasks do not pay for it.
WARM_UP_MODULES = (
    "airflow.sdk.execution_time.task_runner",  # imported by the first task's start, 1-2 s
    "inventory_pipeline.airflow.tasks",
    "inventory_pipeline.dataset.stages",
    "inventory_pipeline.decision.gate",
    "inventory_pipeline.reports.build",
    "inventory_pipeline.training.request",
    "mlflow",
    "mlflow.entities",
    "sagemaker.core.image_uris",
    "sagemaker.core.debugger",
)


def _exit_code(exc: SystemExit) -> int:
    """`dags test` ends a failed run with SystemExit("DagRun failed"): any non-integer code is a failure."""
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _report(payload: dict[str, Any]) -> None:
    sys.stderr.flush()
    sys.stdout.flush()
    print(MARK + json.dumps(payload, default=str), flush=True)


def _warm_up() -> None:
    import importlib

    import matplotlib

    matplotlib.use("Agg")  # as the report sets it, before pyplot is imported
    importlib.import_module("matplotlib.pyplot")
    for name in WARM_UP_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra not installed: the task that needs it says so
            pass
    import httpx  # Airflow's own HTTP client

    try:  # the in-process execution API `dags test` serves its tasks from: built on its first request, 2-4 s
        from airflow.sdk.execution_time.supervisor import in_process_api_server

        with httpx.Client(transport=in_process_api_server().transport, base_url="http://in-process.invalid") as api:
            api.get("/health")
    except (ImportError, AttributeError, httpx.HTTPError):  # another Airflow version: the first task builds it
        pass


def _migrate(migrate: Callable[[], None]) -> bool:
    """Runs the migration; False, after its traceback and a line saying so, when it failed."""
    try:
        migrate()
    except SystemExit as exc:
        if _exit_code(exc) == 0:
            return True
        print(f"airflow db migrate failed (exit {_exit_code(exc)}): no run can start", flush=True)
        return False
    except Exception as exc:
        traceback.print_exc()
        print(f"airflow db migrate failed ({type(exc).__name__}): no run can start", flush=True)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    dag_id = next((a for a in args if not a.startswith("--")), "inventory_retraining")
    from airflow.cli.cli_parser import get_parser

    from inventory_pipeline.airflow.run_summary import latest_run

    parser = get_parser()
    if "--migrate" in args:
        migrate = parser.parse_args(["db", "migrate"])
        if not _migrate(lambda: migrate.func(migrate)):
            return 1
    _warm_up()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        command = ["dags", "test", dag_id]
        if request.get("logical_date"):
            command.append(request["logical_date"])
        if request.get("conf"):
            command += ["-c", json.dumps(request["conf"])]
        before = latest_run(dag_id).get("dag_run_id")
        returncode = 0
        try:
            parsed = parser.parse_args(command)
            parsed.func(parsed)
        except SystemExit as exc:
            returncode = _exit_code(exc)
        except Exception:  # the caller sees the traceback in the run's log and a failed run
            traceback.print_exc()
            returncode = 1
        run = latest_run(dag_id)
        # No new run (refused before it was created, e.g. by a Param's schema): never report the previous one.
        new_run = run if run.get("dag_run_id") not in (None, before) else None
        _report({"returncode": returncode if new_run else (returncode or 1), "run": new_run})
    return 0


def _exit_now(code: int) -> None:
    """Every run is over and recorded: skip the interpreter's finalisation of Airflow, MLflow and the rest of
    what the tasks imported (2-3 s of tearing down modules, for nothing)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
