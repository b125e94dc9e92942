"""Rule evaluations of a local job: our rule engine, reported the way DescribeTrainingJob reports them.

Statuses start InProgress at CreateTrainingJob and end IssuesFound / NoIssuesFound / Error, possibly after
the training job's own status (as on AWS). Debugger rules start with training and follow the trial step by
step, as SageMaker's rule jobs do (a rule may report IssuesFound while the job is still training); the
ProfilerReport reads the whole profile once training is over. Rule output goes where SageMaker writes it:
`<S3OutputPath>/<job>/rule-output/<RuleConfigurationName>/`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from inventory_pipeline.local_aws.runner import outputs, workspace
from inventory_pipeline.rules.outcome import ERROR, RuleOutcome

log = logging.getLogger(__name__)
# How long a debugger rule may wait past MaxRuntimeInSeconds for the trial's last steps.
RULE_MARGIN_S = 600.0
# How often a debugger rule looks for new steps while the job trains (each look costs the training CPU).
RULE_POLL_S = 5.0


class RuleEvaluations:
    def __init__(self, runner: Any):
        self.runner = runner
        self._training_over = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rule")  # every rule at once
        self._debugger_runs: list[Future] = []
        self._profiler_runs: list[Future] | None = None

    def start_debugger_rules(self) -> None:
        """Start following the trial now; each rule ends at a violation or once training is over."""
        job = self.runner.job
        output = self._hook_output()
        for config in job.get("DebugRuleConfigurations", []):
            self._debugger_runs.append(
                self._pool.submit(self._run, "DebugRuleEvaluationStatuses", config, self._debugger, output)
            )

    def training_over(self) -> None:
        """Training processes have exited (completed, failed, stopped): no more steps or samples will be written.
        The debugger rules conclude and the ProfilerReport starts, while the runner uploads the job's output."""
        self._training_over.set()
        if self._profiler_runs is None:
            job = self.runner.job
            output = (job.get("ProfilerConfig") or {}).get("S3OutputPath") or self._hook_output()
            self._profiler_runs = [
                self._pool.submit(self._run, "ProfilerRuleEvaluationStatuses", config, self._profiler, output)
                for config in job.get("ProfilerRuleConfigurations", [])
            ]

    def _hook_output(self) -> str:
        job = self.runner.job
        return (job.get("DebugHookConfig") or {}).get("S3OutputPath") or job["OutputDataConfig"]["S3OutputPath"]

    def _set_status(self, key: str, outcome: RuleOutcome) -> None:
        now = time.time()

        def change(job: dict[str, Any]) -> None:
            for status in job.get(key, []):
                if status["RuleConfigurationName"] == outcome.name:
                    status.update(
                        RuleEvaluationStatus=outcome.status, StatusDetails=outcome.details[:1000], LastModifiedTime=now
                    )

        self.runner.store.update(self.runner.name, change)
        log.info("rule %s: %s (%s)", outcome.name, outcome.status, outcome.details)

    def _debugger(self, config: dict[str, Any]) -> RuleOutcome:
        from inventory_pipeline.rules.debugger import evaluate_debugger_rule

        tensors = self.runner.host_dirs[self.runner.hosts[0]].tensors
        max_runtime = float(self.runner.job.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400))
        # The runner says when training is over: a stopped or timed-out job never writes smdebug's end marker.
        outcome = evaluate_debugger_rule(
            config,
            str(tensors),
            job_finished=self._training_over.is_set,
            timeout_s=max_runtime + RULE_MARGIN_S,
            poll_s=RULE_POLL_S,
            wait=self._training_over.wait,  # woken at once when training ends
        )
        if outcome.status == ERROR and not tensors.is_dir():
            return RuleOutcome(
                outcome.name,
                ERROR,
                "the training job wrote no debugger tensors (it may have failed before its first step)",
            )
        return outcome

    def _profiler(self, config: dict[str, Any]) -> RuleOutcome:
        from inventory_pipeline.rules.profiler import evaluate_profiler_report

        out_dir = self.runner.work / "rule-output" / config["RuleConfigurationName"]
        tensors = self.runner.host_dirs[self.runner.hosts[0]].tensors
        return evaluate_profiler_report(
            config,
            self.runner.work / "profiler-output",
            out_dir,
            trial_path=str(tensors),
            training_start=self.runner.training_started,
            job_name=self.runner.name,
        )

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
        """Wait for every rule evaluation to end (each reports its own status as it does)."""
        if not self._debugger_runs:  # training never started (the job failed while downloading)
            self.start_debugger_rules()
        self.training_over()
        for run in [*self._debugger_runs, *(self._profiler_runs or [])]:
            run.result()
        self._pool.shutdown()
