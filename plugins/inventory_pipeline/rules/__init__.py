"""Our rule engine: SageMaker Debugger's built-in debugger rules on smdebug's Rule API, and the
ProfilerReport's rules over SageMaker-format system metrics. Runs in the local runner and, for accounts
without Debugger (closed to new customers since 2026-07-30), on a finished AWS job's S3 output."""

from inventory_pipeline.rules.outcome import RuleOutcome

__all__ = ["RuleOutcome"]
