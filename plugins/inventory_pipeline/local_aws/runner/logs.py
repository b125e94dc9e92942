"""Ship each host's output to CloudWatch Logs where SageMaker puts it, while the job runs.

Group `/aws/sagemaker/TrainingJobs`, stream `<job>/algo-N-<epoch>`; lines are batched (at most every second)
so the Amazon provider's log tailing (`print_log=True`) sees them as the job goes.
"""

from __future__ import annotations

import time
from typing import Any

from inventory_pipeline.local_aws.runner.batching import PeriodicBatcher

LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class LogShipper(PeriodicBatcher):
    def __init__(self, logs: Any, job_name: str, host: str, flush_every_s: float = 1.0):
        self.logs, self.group = logs, LOG_GROUP
        self.stream = f"{job_name}/{host}-{int(time.time())}"
        self.what = f"log lines to {self.stream}"
        self._ensure_stream()
        super().__init__(f"logs-{host}", flush_every_s)

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
        self._add([{"timestamp": int(time.time() * 1000), "message": line.rstrip("\n") or " "}])

    def _send(self, chunk: list[dict[str, Any]]) -> None:
        self.logs.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=chunk)
