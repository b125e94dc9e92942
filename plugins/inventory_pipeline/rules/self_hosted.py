"""rules_mode=self_hosted: evaluate a finished job's rules ourselves, from its S3 output, and write the
results where SageMaker would.

Accounts without SageMaker Debugger (closed to new customers since 2026-07-30) send no rule configuration;
the training code saves the same smdebug tensors and our sampler's system metrics to the S3 locations
SageMaker uses (`<S3OutputPath>/<job>/debug-output`, `.../profiler-output`). This module mirrors them once
through the storage seam, runs the same engine as the local runner, writes the rule output to
`<output_base>/<job>/rule-output/<RuleConfigurationName>/` and answers in DescribeTrainingJob's shape. The DAG
passes the verdicts prefix (`aws.s3_paths.verdicts_uri`) as `output_base`: a place the job's execution role cannot
write, so nothing a training job writes can stand in for the evaluation of its rules.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inventory_pipeline.rules.outcome import ERROR, RuleOutcome
from inventory_pipeline.rules.storage import S3Storage, mirror, upload_tree

log = logging.getLogger(__name__)
MAX_STATUS_DETAILS = 1024  # DescribeTrainingJob's StatusDetails limit


def status_entry(outcome: RuleOutcome) -> dict[str, Any]:
    """One DebugRuleEvaluationStatuses / ProfilerRuleEvaluationStatuses entry."""
    return {
        "RuleConfigurationName": outcome.name,
        "RuleEvaluationStatus": outcome.status,
        "StatusDetails": outcome.details[:MAX_STATUS_DETAILS],
        "LastModifiedTime": time.time(),
    }


def _is_profiler_rule(configuration: Mapping[str, Any]) -> bool:
    from inventory_pipeline.rules.profiler import REPORT, profiler_defaults

    invoked = (configuration.get("RuleParameters") or {}).get("rule_to_invoke")
    return invoked == REPORT or invoked in profiler_defaults()


def rule_configurations(describe: Mapping[str, Any], rules: Any = None) -> tuple[list[dict], list[dict]]:
    """(debugger, profiler) configurations: from `rules` when given (a list of configuration dicts, or a
    Settings object whose rules the request builder would have sent), else from the DescribeTrainingJob."""
    if rules is None:
        return list(describe.get("DebugRuleConfigurations") or []), list(
            describe.get("ProfilerRuleConfigurations") or []
        )
    if not isinstance(rules, list | tuple):
        from inventory_pipeline.rules.calibration import SCHEDULE_ENV, Schedule
        from inventory_pipeline.rules.sdk_rules import rule_objects

        # the schedule the request sized the parameters for (recorded in the job's Environment)
        schedule = Schedule.decode((describe.get("Environment") or {}).get(SCHEDULE_ENV))
        debug, profiler = rule_objects(rules.region, schedule)
        return (
            [r.to_debugger_rule_config_dict() for r in debug],
            [r.to_profiler_rule_config_dict() for r in profiler],
        )
    debug = [dict(c) for c in rules if not _is_profiler_rule(c)]
    return debug, [dict(c) for c in rules if _is_profiler_rule(c)]


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def evaluate_job_rules(
    s3: Any, describe: Mapping[str, Any], rules: Any = None, output_base: str | None = None
) -> dict[str, Any]:
    """Evaluate a finished job's rules from S3 and write their output under `output_base` (default: where
    SageMaker would, beside the job's output).

    `describe` is a DescribeTrainingJob response (TrainingJobName, OutputDataConfig, and DebugHookConfig /
    ProfilerConfig when the request had them); `rules` as in `rule_configurations`. Returns
    {"DebugRuleEvaluationStatuses", "ProfilerRuleEvaluationStatuses"} in DescribeTrainingJob's shape, plus the
    configurations evaluated and `RuleOutputPath`, the base the rule output was written under."""
    job = describe["TrainingJobName"]
    output = describe["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    hook_base = ((describe.get("DebugHookConfig") or {}).get("S3OutputPath") or output).rstrip("/")
    profiler_base = ((describe.get("ProfilerConfig") or {}).get("S3OutputPath") or output).rstrip("/")
    rule_base = (output_base or output).rstrip("/")
    debug_configs, profiler_configs = rule_configurations(describe, rules)
    debug_statuses, profiler_statuses = [], []
    with tempfile.TemporaryDirectory(prefix=f"rules-{job[:40]}-") as tmp:
        trial, metrics = Path(tmp, "debug-output"), Path(tmp, "profiler-output")
        copied = mirror(S3Storage(s3, f"{hook_base}/{job}/debug-output"), trial)
        mirror(S3Storage(s3, f"{profiler_base}/{job}/profiler-output"), metrics)
        log.info("%s: %d debug-output file(s) mirrored for %d debugger rule(s)", job, copied, len(debug_configs))
        for config in debug_configs:
            outcome = _debugger(config, trial, copied)
            debug_statuses.append(_publish(s3, outcome, Path(tmp, "out", outcome.name), f"{rule_base}/{job}"))
        for config in profiler_configs:
            name = config.get("RuleConfigurationName") or "ProfilerReport"
            out_dir = Path(tmp, "out", name)
            outcome = _profiler(config, metrics, out_dir, trial if copied else None, describe, job)
            profiler_statuses.append(_publish(s3, outcome, out_dir, f"{rule_base}/{job}"))
    return {
        "DebugRuleEvaluationStatuses": debug_statuses,
        "ProfilerRuleEvaluationStatuses": profiler_statuses,
        "DebugRuleConfigurations": debug_configs,
        "ProfilerRuleConfigurations": profiler_configs,
        "ProfilerConfig": {"S3OutputPath": profiler_base},
        "RuleOutputPath": rule_base,
    }


def _debugger(config: dict[str, Any], trial: Path, copied: int) -> RuleOutcome:
    from inventory_pipeline.rules.debugger import NO_DATA, evaluate_debugger_rule

    if copied == 0:
        return RuleOutcome(config.get("RuleConfigurationName", "?"), ERROR, f"{NO_DATA} (no debug-output in S3)")
    # The job is over: evaluate what it saved, without waiting for an end marker a killed job never wrote.
    return evaluate_debugger_rule(config, str(trial), job_finished=lambda: True)


def _profiler(
    config: dict[str, Any],
    metrics: Path,
    out_dir: Path,
    trial: Path | None,
    describe: Mapping[str, Any],
    job: str,
) -> RuleOutcome:
    from inventory_pipeline.rules.profiler import evaluate_profiler_report

    return evaluate_profiler_report(
        config,
        metrics,
        out_dir,
        trial_path=str(trial) if trial else None,
        training_start=_epoch(describe.get("TrainingStartTime")),
        job_name=job,
    )


def _publish(s3: Any, outcome: RuleOutcome, out_dir: Path, job_prefix: str) -> dict[str, Any]:
    """Write the rule's files (and outcome.json, as the local runner does) under rule-output/<name>/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "outcome.json").write_text(json.dumps(outcome.to_dict(), indent=2, default=str))
    target = S3Storage(s3, f"{job_prefix}/rule-output/{outcome.name}")
    try:
        upload_tree(out_dir, target)
    except Exception as exc:  # the evaluation happened, but nobody could read it: say so
        outcome = RuleOutcome(
            outcome.name,
            ERROR,
            f"could not write the rule output to {target.uri}: {exc}",
            outcome.triggered,
            outcome.datapoints,
            outcome.parameters,
        )
    log.info("%s: %s (%s)", outcome.name, outcome.status, outcome.details)
    return status_entry(outcome)
