"""Publish the values MetricDefinitions' regexes find in a job's log to CloudWatch metrics, as SageMaker does.

Namespace `/aws/sagemaker/TrainingJobs`, one dimension `Host` = `<job>/algo-N`, the metric named as in the
request, timestamped when its log line appeared. That is where `TrainingJobAnalytics`, the console's metric
graphs and CloudWatch alarms read them. Values are batched (at most every second, 1000 per call) so a chatty
job costs few requests; publishing is best effort, like the log shipping: a job never fails because of it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)
NAMESPACE = "/aws/sagemaker/TrainingJobs"
_PER_CALL = 1000  # PutMetricData's limit on MetricData entries


class MetricPublisher:
    def __init__(self, cloudwatch: Any, job_name: str, flush_every_s: float = 1.0):
        self.cloudwatch, self.job_name, self.flush_every_s = cloudwatch, job_name, flush_every_s
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="metrics")
        self._thread.start()
        self.published = 0

    def record(self, host: str, values: dict[str, float]) -> None:
        now = dt.datetime.now(dt.UTC)
        dimensions = [{"Name": "Host", "Value": f"{self.job_name}/{host}"}]
        with self._lock:
            self._pending += [
                {"MetricName": name, "Dimensions": dimensions, "Timestamp": now, "Value": value, "Unit": "None"}
                for name, value in values.items()
            ]

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for start in range(0, len(batch), _PER_CALL):
            chunk = batch[start : start + _PER_CALL]
            try:
                self.cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=chunk)
                self.published += len(chunk)
            except Exception:  # best effort, as for the logs
                log.exception("could not publish %d metric values to CloudWatch", len(chunk))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
