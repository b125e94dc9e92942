"""Stopping a paid training job that nobody will wait for: one place that says why, and only when it runs."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)
RUNNING = frozenset({"InProgress"})


def stop_if_running(sagemaker: Any, job_name: str, why: str) -> str:
    """Stop the job if it is InProgress; returns the status it had. `why` goes to the log."""
    status = sagemaker.describe_training_job(TrainingJobName=job_name)["TrainingJobStatus"]
    if status in RUNNING:
        log.warning("stopping training job %s (was %s): %s", job_name, status, why)
        sagemaker.stop_training_job(TrainingJobName=job_name)
    else:
        log.info("training job %s is %s: nothing to stop (%s)", job_name, status, why)
    return status
