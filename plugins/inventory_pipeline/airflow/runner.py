"""Run Airflow commands (`db migrate`, `dags test`) against this project, for the demo and the tests.

One place decides the environment an Airflow process gets: its home inside the build folder, this project's
dags/ and plugins/, no examples, and whatever connection variables the caller adds (the local stack's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DAG_ID = "inventory_retraining"


def airflow_env(airflow_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            # Keep the CLI's own process light: no unit-test mode, no example connections.
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
        }
    )
    env.update(extra or {})
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def db_migrate(env: dict[str, str]) -> None:
    """Create or upgrade the metadata DB (SQLite under AIRFLOW_HOME unless the env says otherwise)."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([airflow_bin(), "db", "migrate"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@dataclass
class DagTestResult:
    returncode: int
    output: str
    log_path: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def dags_test(
    env: dict[str, str],
    conf: dict[str, Any] | None = None,
    log_path: Path | None = None,
    dag_id: str = DAG_ID,
    echo: bool = False,
    logical_date: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> DagTestResult:
    """`airflow dags test <dag_id> [logical_date] -c <conf>`; its output is kept in `log_path` (and echoed when
    asked). Runs with distinct logical dates are distinct runs (the weekly schedule's). `on_line` sees each
    output line as it comes (approvals.Reviewer answers approval requests from there)."""
    cmd = [airflow_bin(), "dags", "test", dag_id, *([logical_date] if logical_date else [])]
    if conf:
        cmd += ["-c", json.dumps(conf)]
    log_path = log_path or Path(env["AIRFLOW_HOME"]) / "dags-test.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            lines.append(line)
            if on_line is not None:
                on_line(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
        returncode = proc.wait()
    return DagTestResult(returncode, "".join(lines), log_path)
