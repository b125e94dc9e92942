"""Rule evaluations of a local job: our rule engine, reported the way DescribeTrainingJob reports them.

Statuses start InProgress at CreateTrainingJob and end IssuesFound / NoIssuesFound / Error, possibly after
the training job's own status (as on AWS). Rule output goes where SageMaker writes it:
`<S3OutputPath>/<job>/rule-output/<RuleConfigurationName>/`.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inventory_pipeline.local_aws.runner import outputs, workspace
from inventory_pipeline.rules.outcome import ERROR, RuleOutcome

log = logging.getLogger(__name__)


class RuleEvaluations:
    def __init__(self, runner: Any):
        self.runner = runner

    def start_debugger_rules(self) -> None:
        """Debugger rules read the trial once training has written it (see finish)."""

    def _set_status(self, key: str, outcome: RuleOutcome) -> None:
        now = time.time()

        def change(job: dict[str, Any]) -> None:
            for status in job.get(key, []):
                if status["RuleConfigurationName"] == outcome.name:
                    status.update(RuleEvaluationStatus=outcome.status, StatusDetails=outcome.details[:1000],
                                  LastModifiedTime=now)  # fmt: skip

        self.runner.store.update(self.runner.name, change)
        log.info("rule %s: %s (%s)", outcome.name, outcome.status, outcome.details)

    def _debugger(self, config: dict[str, Any]) -> RuleOutcome:
        from inventory_pipeline.rules.debugger import evaluate_debugger_rule

        tensors = self.runner.host_dirs[self.runner.hosts[0]].tensors
        if not tensors.is_dir():
            return RuleOutcome(
                config["RuleConfigurationName"],
                ERROR,
                "the training job wrote no debugger tensors (it may have failed before its first step)",
            )
        # Called once training is over: a stopped or timed-out job never writes smdebug's end marker.
        return evaluate_debugger_rule(config, str(tensors), job_finished=lambda: True)

    def _profiler(self, config: dict[str, Any]) -> RuleOutcome:
        from inventory_pipeline.rules.profiler import evaluate_profiler_report

        out_dir = self.runner.work / "rule-output" / config["RuleConfigurationName"]
        tensors = self.runner.host_dirs[self.runner.hosts[0]].tensors
        return evaluate_profiler_report(
            config, self.runner.work / "profiler-output", out_dir, trial_path=str(tensors),
            training_start=self.runner.training_started, job_name=self.runner.name,
        )  # fmt: skip

    def _run(self, key: str, config: dict[str, Any], evaluate, s3_output: str) -> None:
        try:
            outcome = evaluate(config)
        except Exception as exc:  # a crash is an Error with its reason, never "no issues"
            log.exception("rule %s crashed", config.get("RuleConfigurationName"))
            outcome = RuleOutcome(config["RuleConfigurationName"], ERROR, f"rule evaluation crashed: {exc}")
        out_dir = self.runner.work / "rule-output" / outcome.name
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "outcome.json").write_text(json.dumps(outcome.to_dict(), indent=2))
        try:
            bucket, prefix = workspace.split_s3_uri(
                f"{s3_output.rstrip('/')}/{self.runner.name}/rule-output/{outcome.name}"
            )
            outputs.upload_tree(self.runner.s3, out_dir, bucket, prefix)
        except Exception as exc:
            outcome = RuleOutcome(outcome.name, ERROR, f"could not upload the rule output: {exc}")
        self._set_status(key, outcome)

    def finish(self) -> None:
        job = self.runner.job
        hook_output = (job.get("DebugHookConfig") or {}).get("S3OutputPath") or job["OutputDataConfig"]["S3OutputPath"]
        profiler_output = (job.get("ProfilerConfig") or {}).get("S3OutputPath") or hook_output
        tasks = [
            ("DebugRuleEvaluationStatuses", c, self._debugger, hook_output)
            for c in job.get("DebugRuleConfigurations", [])
        ]
        tasks += [("ProfilerRuleEvaluationStatuses", c, self._profiler, profiler_output)
                  for c in job.get("ProfilerRuleConfigurations", [])]  # fmt: skip
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda t: self._run(*t), tasks))
