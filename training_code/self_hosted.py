"""Self-hosted rules mode on SageMaker: sample system metrics ourselves and upload them where SageMaker's
profiler would have written them (`INVENTORY_PROFILER_S3_OUTPUT`), for our rule engine to read after the job."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("train.self_hosted")


class SelfHostedProfiler:
    def __init__(self, node_id: str):
        self.target = os.environ.get("INVENTORY_PROFILER_S3_OUTPUT", "")
        self.node_id = node_id
        self.sampler = None
        self.dir = Path(tempfile.mkdtemp(prefix="profiler-"))

    def __enter__(self) -> SelfHostedProfiler:
        if self.target:
            from system_metrics import SystemMetricsSampler

            interval = int(os.environ.get("INVENTORY_PROFILER_INTERVAL_MS", "500"))
            self.sampler = SystemMetricsSampler(self.dir, interval, self.node_id).start()
            log.info("self-hosted profiler: sampling every %d ms, uploading to %s", interval, self.target)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sampler is None:
            return
        self.sampler.stop()
        import boto3

        bucket, _, prefix = self.target[5:].partition("/")
        s3 = boto3.client("s3")
        for path in sorted(self.dir.rglob("*")):
            if path.is_file():
                s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(self.dir).as_posix()}")
