"""Our rule engine: SageMaker Debugger's built-in debugger rules on smdebug's Rule API, and the
ProfilerReport's rules over SageMaker-format system metrics. The local runner calls it while a job trains;
for accounts without Debugger (closed to new customers since 2026-07-30) the DAG calls it on a finished
AWS job's S3 output.

    evaluate_debugger_rule(rule_configuration, trial_path, s3_endpoint_url=None, ...) -> RuleOutcome
    evaluate_profiler_report(rule_configuration, profiler_path, output_dir, s3_endpoint_url=None,
                             trial_path=None, ...) -> RuleOutcome
    evaluate_job_rules(s3, describe, rules=None) -> DescribeTrainingJob-shaped rule statuses

The evaluators are imported lazily: importing this package does not import smdebug.
"""

from __future__ import annotations

from typing import Any

from inventory_pipeline.rules.outcome import ERROR, ISSUES_FOUND, NO_ISSUES_FOUND, RuleOutcome

__all__ = [
    "ERROR",
    "ISSUES_FOUND",
    "NO_ISSUES_FOUND",
    "RuleOutcome",
    "evaluate_debugger_rule",
    "evaluate_job_rules",
    "evaluate_profiler_report",
]
_LAZY = {
    "evaluate_debugger_rule": "debugger",
    "evaluate_profiler_report": "profiler",
    "evaluate_job_rules": "self_hosted",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"inventory_pipeline.rules.{_LAZY[name]}"), name)
    raise AttributeError(name)
