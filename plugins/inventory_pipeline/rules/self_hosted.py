"""rules_mode=self_hosted: evaluate a finished job's rules ourselves, from its S3 output.

For accounts without SageMaker Debugger, the request carries no rule configuration; the training code
saves the same tensors (smdebug) and system metrics (our sampler) to the S3 locations SageMaker would use.
This module reads them through the same seam (download, then the local readers), runs the same engine
and writes the rule output where SageMaker would, answering in DescribeTrainingJob's status shape.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from inventory_pipeline.rules.outcome import ERROR, RuleOutcome

log = logging.getLogger(__name__)


def _download_prefix(s3: Any, uri: str, dest: Path) -> int:
    bucket, _, prefix = uri[5:].partition("/")
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for obj in page.get("Contents", []):
            target = dest / obj["Key"][len(prefix.rstrip("/")) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            count += 1
    return count


def _upload_dir(s3: Any, directory: Path, uri: str) -> None:
    bucket, _, prefix = uri[5:].partition("/")
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(directory).as_posix()}")


def _status(outcome: RuleOutcome) -> dict[str, Any]:
    return {"RuleConfigurationName": outcome.name, "RuleEvaluationStatus": outcome.status,
            "StatusDetails": outcome.details[:1000], "LastModifiedTime": time.time()}  # fmt: skip


def evaluate_job_rules(s3: Any, describe: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The job's rule statuses (+ the configurations and output path the report needs)."""
    from inventory_pipeline.rules.debugger import evaluate_debugger_rule
    from inventory_pipeline.rules.profiler import evaluate_profiler_report
    from inventory_pipeline.training.request import JobPaths, rule_objects

    job = describe["TrainingJobName"]
    paths = JobPaths(describe["OutputDataConfig"]["S3OutputPath"], job)
    rules, profiler_rules = rule_objects(settings)
    debug_configs = [r.to_debugger_rule_config_dict() for r in rules]
    profiler_configs = [r.to_profiler_rule_config_dict() for r in profiler_rules]
    debug, profiler = [], []
    with tempfile.TemporaryDirectory() as tmp:
        trial, system, out = Path(tmp, "trial"), Path(tmp, "profiler"), Path(tmp, "rule-output")
        saved = _download_prefix(s3, paths.debug_output, trial)
        _download_prefix(s3, paths.profiler_output, system)
        for config in debug_configs:
            if saved == 0:
                outcome = RuleOutcome(config["RuleConfigurationName"], ERROR,
                                      f"no debugger output under {paths.debug_output}")  # fmt: skip
            else:
                outcome = evaluate_debugger_rule(config, str(trial))
            debug.append(_status(outcome))
        for config in profiler_configs:
            name = config["RuleConfigurationName"]
            outcome = evaluate_profiler_report(config, system, out / name, trial_path=str(trial),
                                               training_start=_epoch(describe.get("TrainingStartTime")),
                                               job_name=job)  # fmt: skip
            profiler.append(_status(outcome))
        if out.is_dir():
            _upload_dir(s3, out, f"{paths.job_prefix}/rule-output")
    return {
        "DebugRuleEvaluationStatuses": debug,
        "ProfilerRuleEvaluationStatuses": profiler,
        "DebugRuleConfigurations": debug_configs,
        "ProfilerRuleConfigurations": profiler_configs,
        "ProfilerConfig": {"S3OutputPath": describe["OutputDataConfig"]["S3OutputPath"]},
    }


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)
