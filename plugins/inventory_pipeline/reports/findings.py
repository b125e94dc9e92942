"""Rule results -> findings -> a policy decision.

A finding is one rule (or one ProfilerReport sub-rule) with its status, how often it triggered, on how
many datapoints, its parameters, what SageMaker recommends doing about it, and the evidence. The policy
fails the run on the rules the user listed and warns on the rest; a rule that could not be evaluated is
reported as `Error`, never as passed, and blocks when it is one of the listed rules.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# What to do when a rule fires, in our words, after AWS's guidance for each built-in rule.
RECOMMENDATIONS = {
    "VanishingGradient": "Gradients are vanishing: use ReLU-family activations, batch normalisation or residual "
    "connections, check the initialisation, and consider a larger learning rate.",
    "Overfit": "Validation loss is well above training loss: add regularisation (dropout, weight decay), "
    "augment the data or get more of it, or stop earlier.",
    "Overtraining": "The loss stopped improving: stop earlier (early stopping) or lower the learning rate.",
    "PoorWeightInitialization": "Activations or gradients are badly scaled from the start: use a variance-"
    "preserving initialisation (Xavier/He) or start from pretrained weights.",
    "CPUBottleneck": "The CPU is saturated: move preprocessing off the training loop (more data-loader workers, "
    "pre-resized images) or choose an instance with more vCPUs.",
    "IOBottleneck": "The job waits on I/O: use a faster data source or input mode, prefetch, or larger files.",
    "LowGPUUtilization": "The GPU is under-used: increase the batch size or choose a smaller GPU instance.",
    "GPUMemoryIncrease": "GPU memory grows during training: look for tensors kept across steps.",
    "BatchSize": "The hardware is under-used: increase the batch size or choose a smaller instance.",
    "Dataloader": "Data-loader processes do not match the vCPUs: adjust num_workers.",
    "LoadBalancing": "Work is unevenly spread across GPUs: check the distribution strategy.",
    "MaxInitializationTime": "Training took long to start: check data download and the input pipeline setup.",
    "StepOutlier": "Some steps were much slower than the rest: look for stragglers, checkpointing or GC pauses.",
    "OverallSystemUsage": "Utilisation statistics for right-sizing (informational).",
}
TERMINAL_BAD = ("Error", "InProgress", "Stopping", "Stopped")
NOT_APPLICABLE = "NotApplicable"  # a ProfilerReport sub-rule that needs what this instance lacks (a GPU)


@dataclass
class Finding:
    rule: str
    kind: str  # "debugger" | "profiler" (the ProfilerReport) | "profiler-rule" (one of its sub-rules)
    status: str
    triggered: int = 0
    datapoints: int = 0
    parameters: dict[str, Any] | str = field(default_factory=dict)
    recommendation: str = ""
    evidence: str = ""
    parent: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def findings_from_job(describe: dict[str, Any], profiler_reports: dict[str, dict[str, Any]]) -> list[Finding]:
    """One finding per rule status in the job's description, plus one per ProfilerReport sub-rule."""
    parameters = {
        r["RuleConfigurationName"]: r.get("RuleParameters", {})
        for r in describe.get("DebugRuleConfigurations", []) + describe.get("ProfilerRuleConfigurations", [])
    }
    findings = []
    for kind, key in (("debugger", "DebugRuleEvaluationStatuses"), ("profiler", "ProfilerRuleEvaluationStatuses")):
        for status in describe.get(key, []):
            name = status["RuleConfigurationName"]
            findings.append(
                Finding(
                    rule=name, kind=kind, status=status["RuleEvaluationStatus"],
                    triggered=int(status["RuleEvaluationStatus"] == "IssuesFound"),
                    parameters={k: v for k, v in parameters.get(name, {}).items() if k != "rule_to_invoke"},
                    recommendation=RECOMMENDATIONS.get(name, "") if status["RuleEvaluationStatus"] == "IssuesFound"
                    else "",
                    evidence=status.get("StatusDetails", ""),
                )
            )  # fmt: skip
    for rule, report in sorted(profiler_reports.items()):
        triggered = int(report.get("RuleTriggered", 0))
        details = report.get("Details", {})
        # A GPU rule on a CPU instance measured nothing: say so, rather than "no issues found".
        idle = isinstance(details, dict) and details.get("applicable") is False
        findings.append(
            Finding(
                rule=rule, kind="profiler-rule",
                status="IssuesFound" if triggered else NOT_APPLICABLE if idle else "NoIssuesFound",
                triggered=int(report.get("Violations", 0)) if triggered else 0,
                datapoints=int(report.get("Datapoints", 0)), parameters=report.get("RuleParameters", ""),
                recommendation=RECOMMENDATIONS.get(rule, "") if triggered else "",
                evidence=details.get("summary", json.dumps(details)[:300])
                if isinstance(details, dict) else str(details),
                parent="ProfilerReport",
            )
        )  # fmt: skip
    return findings


@dataclass
class PolicyDecision:
    failed: bool
    blocking: list[str]
    warnings: list[str]
    errors: list[str]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_policy(findings: list[Finding], fail_on_rules: list[str] | tuple[str, ...]) -> PolicyDecision:
    listed = set(fail_on_rules)
    blocking, warnings, errors = [], [], []
    for finding in findings:
        if finding.status in TERMINAL_BAD:
            errors.append(finding.rule)
            if finding.rule in listed:
                blocking.append(f"{finding.rule} ({finding.status}: it could not show the model is fine)")
        elif finding.status == "IssuesFound":
            (blocking if finding.rule in listed else warnings).append(finding.rule)
    if blocking:
        message = "failing the run: " + "; ".join(blocking)
    elif warnings or errors:
        message = "passing with warnings: " + ", ".join(warnings + [f"{e} (Error)" for e in errors])
    else:
        message = "all rules passed"
    return PolicyDecision(bool(blocking), blocking, warnings, errors, message)
