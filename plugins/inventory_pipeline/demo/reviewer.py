"""A reviewer that answers pending approval requests through Airflow's REST API, as a person would: for the demo
and the tests, which run the DAG with `airflow dags test` and have no one at the UI.

`airflow dags test` leaves a human-in-the-loop task parked in `awaiting_input` and logs "Waiting for
Human-in-the-loop input" until a response is recorded from outside (Airflow's own design). The reviewer starts
`airflow api-server` on the same metadata DB the first time it is needed, signs in as its own user (the simple auth
manager's users file under AIRFLOW_HOME), lists the run's pending requests (`GET .../hitlDetails`) and answers each
(`PATCH .../taskInstances/<task>/<map_index>/hitlDetails`), so the decision records that user as the one who
answered.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from inventory_pipeline.airflow.runner import DAG_ID, airflow_bin
from inventory_pipeline.local_aws.stack import free_port

log = logging.getLogger(__name__)
WAITING_LINE = "Waiting for Human-in-the-loop input"
MAX_FAILURES = 3


class Reviewer:
    """Answers every pending approval request of `dag_id` with `answer` (see module doc)."""

    def __init__(self, env: dict[str, str], answer: str = "Promote", user: str = "reviewer", dag_id: str = DAG_ID):
        self.env, self.answer, self.user, self.dag_id = env, answer, user, dag_id
        self.password = secrets.token_urlsafe(12)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.answered: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._busy = False
        self.failures = 0  # after MAX_FAILURES the reviewer stops trying and says how to answer by hand

    def __enter__(self) -> Reviewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_line(self, line: str) -> None:
        """A `dags test` output line: on the first sign of a wait, answer in the background (never blocks the
        reader of the output)."""
        if WAITING_LINE not in line:
            return
        with self._lock:
            if self._busy or self.failures >= MAX_FAILURES:
                return
            self._busy = True
        threading.Thread(target=self._answer_in_background, daemon=True).start()

    def _answer_in_background(self) -> None:
        try:
            self.answer_pending()
        except Exception:  # the run keeps waiting (and its log says so); the caller sees nothing answered
            self.failures += 1
            log.exception(
                "the reviewer could not answer the approval request (%d of %d tries)", self.failures, MAX_FAILURES
            )
            if self.failures >= MAX_FAILURES:
                log.error(
                    "the reviewer gives up: answer the request in the Airflow UI's 'Required actions' or with "
                    "PATCH /api/v2/dags/<dag>/dagRuns/<run>/taskInstances/review_promotion/-1/hitlDetails "
                    "from an api-server on this Airflow home, or stop the run"
                )
        finally:
            with self._lock:
                self._busy = False

    def start(self, timeout_s: float = 180) -> None:
        """`airflow api-server` on this env's metadata DB, with this reviewer as its only user."""
        if self._proc is not None:
            return
        home = Path(self.env["AIRFLOW_HOME"])
        passwords = home / "reviewer-passwords.json"
        passwords.write_text(json.dumps({self.user: self.password}))
        env = {
            **self.env,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
        log_path = home / "reviewer-api-server.log"
        log.info(
            "starting airflow api-server on %s to answer approval requests as %r (log: %s)",
            self.base,
            self.user,
            log_path,
        )
        with open(log_path, "w") as out:
            self._proc = subprocess.Popen(
                [airflow_bin(), "api-server", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"airflow api-server exited ({self._proc.returncode}); see {log_path}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/version", timeout=3):
                    return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"airflow api-server did not answer within {timeout_s:.0f} s; see {log_path}")

    def stop(self) -> None:
        if self._proc is None:
            return
        os.killpg(self._proc.pid, 15)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, 9)
        self._proc = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read()[:500]!r}") from exc

    def pending(self, token: str) -> list[dict[str, Any]]:
        found = self._request("GET", f"/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails", token=token)
        return [d for d in found.get("hitl_details", []) if d.get("responded_at") is None]

    def answer_pending(self, attempts: int = 30) -> list[dict[str, Any]]:
        """Answer what is pending now (the request may take a moment to become visible); returns the answers."""
        self.start()
        token = self._request("POST", "/auth/token", {"username": self.user, "password": self.password})
        token = token["access_token"]
        answered: list[dict[str, Any]] = []
        for _ in range(attempts):
            for detail in self.pending(token):
                ti = detail["task_instance"]
                path = (
                    f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
                    f"{ti.get('map_index', -1)}/hitlDetails"
                )
                response = self._request("PATCH", path, {"chosen_options": [self.answer]}, token=token)
                log.info(
                    "answered %r to %r (%s, run %s) through the REST API",
                    self.answer,
                    detail.get("subject"),
                    ti["task_id"],
                    ti["dag_run_id"],
                )
                answered.append(
                    {
                        "run_id": ti["dag_run_id"],
                        "task_id": ti["task_id"],
                        "subject": detail.get("subject"),
                        "answer": self.answer,
                        "by": (response.get("responded_by") or {}).get("name"),
                    }
                )
            if answered:
                self.answered += answered
                return answered
            time.sleep(1)
        return answered
