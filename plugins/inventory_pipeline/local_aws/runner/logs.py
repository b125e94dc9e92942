"""Ship each host's output to CloudWatch Logs where SageMaker puts it, while the job runs.

Group `/aws/sagemaker/TrainingJobs`, stream `<job>/algo-N-<epoch>`; lines are batched (at most every second)
so the Amazon provider's log tailing (`print_log=True`) sees them as the job goes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class LogShipper:
    def __init__(self, logs: Any, job_name: str, host: str, flush_every_s: float = 1.0):
        self.logs, self.group = logs, LOG_GROUP
        self.stream = f"{job_name}/{host}-{int(time.time())}"
        self.flush_every_s = flush_every_s
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ensure_stream()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"logs-{host}")
        self._thread.start()

    def _ensure_stream(self) -> None:
        for create in (
            lambda: self.logs.create_log_group(logGroupName=self.group),
            lambda: self.logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream),
        ):
            try:
                create()
            except self.logs.exceptions.ResourceAlreadyExistsException:
                pass

    def write(self, line: str) -> None:
        with self._lock:
            self._pending.append({"timestamp": int(time.time() * 1000), "message": line.rstrip("\n") or " "})

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for start in range(0, len(batch), 1000):
            try:
                self.logs.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=batch[start : start + 1000]
                )
            except Exception:  # logs are best effort: the job must not fail because a log line did not ship
                log.exception("could not ship %d log lines to %s", len(batch), self.stream)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
