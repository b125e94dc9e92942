"""The job's system profiler: training_code/system_metrics.py sampling this host while the job trains."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from inventory_pipeline.local_aws.runner import outputs, workspace

log = logging.getLogger(__name__)
PROJECT_SAMPLER = Path(__file__).resolve().parents[4] / "training_code" / "system_metrics.py"


def load_sampler_class(code_dir: Path) -> Any:
    """The sampler shipped with the job's code, else the project's own copy."""
    path = code_dir / "system_metrics.py"
    path = path if path.is_file() else PROJECT_SAMPLER
    spec = importlib.util.spec_from_file_location("inventory_system_metrics", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.SystemMetricsSampler


class JobProfiler:
    def __init__(self, runner: Any):
        self.runner = runner
        config = runner.job.get("ProfilerConfig") or {}
        self.enabled = bool(config) and not config.get("DisableProfiler", False)
        self.interval_ms = int(config.get("ProfilingIntervalInMilliseconds", 500))
        self.s3_output = config.get("S3OutputPath", "")
        self.local_dir = runner.work / "profiler-output"
        self.sampler: Any = None
        self.uploaded = False

    def start(self) -> None:
        if not self.enabled:
            return
        sampler_class = load_sampler_class(self.runner.work / "code")
        # One machine hosts every "instance" here, so one sampler measures them all (as algo-1).
        self.sampler = sampler_class(self.local_dir, self.interval_ms, "algo-1").start()
        log.info("system profiler sampling every %d ms into %s", self.interval_ms, self.local_dir)

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None

    def apply_update(self, job: dict[str, Any]) -> None:
        """UpdateTrainingJob's ProfilerConfig while the job trains: disable, re-enable or change the interval."""
        config = job.get("ProfilerConfig") or {}
        enabled = bool(config) and not config.get("DisableProfiler", False)
        interval_ms = int(config.get("ProfilingIntervalInMilliseconds", self.interval_ms))
        if (enabled, interval_ms) == (self.enabled and self.sampler is not None, self.interval_ms):
            return
        self.stop()
        self.enabled, self.interval_ms = enabled or self.local_dir.is_dir(), interval_ms
        self.s3_output = config.get("S3OutputPath", self.s3_output)
        if enabled:
            self.start()
        log.info("profiler updated: %s", f"every {interval_ms} ms" if enabled else "disabled")

    def upload(self) -> None:
        """The profile to S3, once sampling has stopped (a second call does nothing)."""
        if self.uploaded or not self.enabled or not self.local_dir.is_dir():
            return
        bucket, prefix = workspace.split_s3_uri(f"{self.s3_output.rstrip('/')}/{self.runner.name}/profiler-output")
        count = outputs.upload_tree(self.runner.s3, self.local_dir, bucket, prefix)
        self.uploaded = True
        log.info("uploaded %d profiler files to s3://%s/%s", count, bucket, prefix)
