"""Publish the values MetricDefinitions' regexes find in a job's log to CloudWatch metrics, as SageMaker does.

Namespace `/aws/sagemaker/TrainingJobs`, one dimension `Host` = `<job>/algo-N`, the metric named as in the
request, timestamped when its log line appeared. That is where `TrainingJobAnalytics`, the console's metric
graphs and CloudWatch alarms read them. Values are batched (at most every second, 1000 per call) so a chatty
job costs few requests; publishing is best effort, like the log shipping: a job never fails because of it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from inventory_pipeline.local_aws.runner.batching import PeriodicBatcher

NAMESPACE = "/aws/sagemaker/TrainingJobs"


class MetricPublisher(PeriodicBatcher):
    what = "metric values to CloudWatch"

    def __init__(self, cloudwatch: Any, job_name: str, flush_every_s: float = 1.0):
        self.cloudwatch, self.job_name = cloudwatch, job_name
        super().__init__("metrics", flush_every_s)

    def record(self, host: str, values: dict[str, float]) -> None:
        now = dt.datetime.now(dt.UTC)
        dimensions = [{"Name": "Host", "Value": f"{self.job_name}/{host}"}]
        self._add(
            [
                {"MetricName": name, "Dimensions": dimensions, "Timestamp": now, "Value": value, "Unit": "None"}
                for name, value in values.items()
            ]
        )

    def _send(self, chunk: list[dict[str, Any]]) -> None:
        self.cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=chunk)
