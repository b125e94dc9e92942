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

from inventory_pipeline.airflow.dag_runs import MARK

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DAG_ID = "inventory_retraining"


def airflow_env(airflow_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    _ensure_home_secrets(Path(airflow_home))
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


def _ensure_home_secrets(airflow_home: Path) -> None:
    """A new Airflow home gets an `airflow.cfg` holding the two secrets Airflow would generate into one (the
    Fernet key, the API's JWT secret), so every process on the home encrypts and reads Variables and Connections
    alike and trusts the same tokens. Without it, a process started before the `airflow` CLI first writes its
    airflow.cfg runs with no key and reads a Variable the CLI then sets as its ciphertext."""
    cfg = airflow_home / "airflow.cfg"
    if cfg.exists():
        return
    import base64

    from cryptography.fernet import Fernet

    airflow_home.mkdir(parents=True, exist_ok=True)
    jwt_secret = base64.b64encode(os.urandom(16)).decode()
    cfg.write_text(f"[core]\nfernet_key = {Fernet.generate_key().decode()}\n\n[api_auth]\njwt_secret = {jwt_secret}\n")
    cfg.chmod(0o600)


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
    run: dict[str, Any] | None = None  # run_summary.latest_run, when the run was read back in the same process

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
            _relay(line, log_file, lines, echo, on_line)
        returncode = proc.wait()
    return DagTestResult(returncode, "".join(lines), log_path)


def _relay(line: str, log_file: Any, lines: list[str], echo: bool, on_line: Callable[[str], None] | None) -> None:
    """An output line of a run: to its log, kept, echoed when asked and shown to `on_line`."""
    log_file.write(line)
    lines.append(line)
    if on_line is not None:
        on_line(line)
    if echo:
        sys.stdout.write(line)
        sys.stdout.flush()


class DagRunSession:
    """`airflow dags test` runs in one long-lived Airflow process (`dag_runs`), which starts importing Airflow
    and migrating the metadata DB as soon as the session is created, while the caller does other work (the
    demo starts its stack and seeds its data meanwhile). Use as a context manager; `run` is one week's run."""

    def __init__(self, env: dict[str, str], dag_id: str = DAG_ID, migrate: bool = True):
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "inventory_pipeline.airflow.dag_runs",
            dag_id,
            *(["--migrate"] if migrate else []),
        ]
        self._proc = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def __enter__(self) -> DagRunSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self,
        conf: dict[str, Any] | None,
        log_path: Path,
        logical_date: str | None = None,
        env: dict[str, str] | None = None,
        echo: bool = False,
        on_line: Callable[[str], None] | None = None,
    ) -> DagTestResult:
        """One `dags test` run with `conf`, `env` added to the process's environment first. Its output (and, for
        the first run, the process's start-up output) goes to `log_path`, `echo` and `on_line` as it comes."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        request = {"conf": conf or {}, "logical_date": logical_date, "env": env or {}}
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the process is gone: reading below ends at once with its exit code
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        with open(log_path, "w") as log_file:
            for line in proc.stdout:
                if line.startswith(MARK):  # the run is over: its exit code and the run read back
                    answer = json.loads(line[len(MARK) :])
                    return DagTestResult(answer["returncode"], "".join(lines), log_path, answer.get("run"))
                _relay(line, log_file, lines, echo, on_line)
        returncode = proc.wait()
        return DagTestResult(returncode or 1, "".join(lines), log_path)

    def close(self, timeout_s: float = 30) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()  # end of requests: the process exits
            except BrokenPipeError:
                pass
        try:
            self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
