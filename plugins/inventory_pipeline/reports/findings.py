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

from inventory_pipeline.rules.applicability import PROFILER_RULES, why_not_evaluable

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
# Every rule ends in exactly one of these. A rule that did not run, or whose result is missing, is NotEvaluated
# with the reason: never a pass by absence.
NO_ISSUES, ISSUES, ERROR, NOT_EVALUATED = "NoIssuesFound", "IssuesFound", "Error", "NotEvaluated"
OUTCOMES = (NO_ISSUES, ISSUES, ERROR, NOT_EVALUATED)
# DescribeTrainingJob's rule statuses that are not a result, and what they mean once the job is over.
UNFINISHED = {
    "InProgress": "still in progress when the report was written",
    "Stopping": "being stopped when the report was written",
    "Stopped": "its evaluation was stopped before it concluded",
}


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


def _job_rule_finding(kind: str, status: dict[str, Any], parameters: dict[str, Any]) -> Finding:
    name, raw = status["RuleConfigurationName"], status["RuleEvaluationStatus"]
    details = status.get("StatusDetails", "")
    outcome = raw if raw in OUTCOMES else NOT_EVALUATED
    if raw in UNFINISHED:
        details = f"{raw}: {UNFINISHED[raw]}" + (f" ({details})" if details else "")
    return Finding(
        rule=name,
        kind=kind,
        status=outcome,
        triggered=int(outcome == ISSUES),
        parameters={k: v for k, v in parameters.get(name, {}).items() if k != "rule_to_invoke"},
        recommendation=RECOMMENDATIONS.get(name, "") if outcome == ISSUES else "",
        evidence=details,
    )


def profiler_rule_outcome(rule: str, report: dict[str, Any], instance_type: str) -> tuple[str, str]:
    """(outcome, evidence) of one ProfilerReport sub-rule file, ours or SageMaker's. SageMaker's files carry no
    `applicable`/`evaluated` flags: a GPU rule on a CPU instance just reports 0 datapoints, so the instance type
    and the datapoints decide too."""
    details = report.get("Details", {})
    summary = details.get("summary", json.dumps(details)[:300]) if isinstance(details, dict) else str(details)
    flags = details if isinstance(details, dict) else {}
    if int(report.get("RuleTriggered", 0)):
        return ISSUES, summary
    unavailable = why_not_evaluable(rule, instance_type) if instance_type else None
    if unavailable:
        return NOT_EVALUATED, unavailable
    if flags.get("applicable") is False or flags.get("evaluated") is False:
        return NOT_EVALUATED, summary
    if int(report.get("Datapoints", 0)) == 0:
        return NOT_EVALUATED, f"0 datapoints: nothing was measured ({summary})"
    return NO_ISSUES, summary


def findings_from_job(describe: dict[str, Any], profiler_reports: dict[str, dict[str, Any]]) -> list[Finding]:
    """One finding per rule status in the job's description, one per ProfilerReport sub-rule, and one
    NotEvaluated finding for every configured rule that left no result at all."""
    parameters = {
        r["RuleConfigurationName"]: r.get("RuleParameters", {})
        for r in describe.get("DebugRuleConfigurations", []) + describe.get("ProfilerRuleConfigurations", [])
    }
    instance_type = (describe.get("ResourceConfig") or {}).get("InstanceType", "")
    findings = []
    for kind, key in (("debugger", "DebugRuleEvaluationStatuses"), ("profiler", "ProfilerRuleEvaluationStatuses")):
        for status in describe.get(key, []):
            findings.append(_job_rule_finding(kind, status, parameters))
    seen = {f.rule for f in findings}
    for config in describe.get("DebugRuleConfigurations", []) + describe.get("ProfilerRuleConfigurations", []):
        name = config["RuleConfigurationName"]
        if name not in seen:
            kind = "debugger" if config in describe.get("DebugRuleConfigurations", []) else "profiler"
            findings.append(
                Finding(
                    rule=name, kind=kind, status=NOT_EVALUATED, evidence="no evaluation status: the rule never reported"
                )
            )
    for rule, report in sorted(profiler_reports.items()):
        status, evidence = profiler_rule_outcome(rule, report, instance_type)
        findings.append(
            Finding(
                rule=rule,
                kind="profiler-rule",
                status=status,
                triggered=int(report.get("Violations", 0)) if status == ISSUES else 0,
                datapoints=int(report.get("Datapoints", 0)),
                parameters=report.get("RuleParameters", ""),
                recommendation=RECOMMENDATIONS.get(rule, "") if status == ISSUES else "",
                evidence=evidence,
                parent="ProfilerReport",
            )
        )
    if "ProfilerReport" in parameters:
        for rule in PROFILER_RULES:
            if rule not in profiler_reports:
                why = "no result: the ProfilerReport wrote no file for this rule"
                findings.append(Finding(rule, "profiler-rule", NOT_EVALUATED, evidence=why, parent="ProfilerReport"))
    return findings


@dataclass
class PolicyDecision:
    failed: bool
    blocking: list[str]
    warnings: list[str]
    errors: list[str]  # rules that ended Error or NotEvaluated (with why in `not_evaluated`)
    message: str
    not_evaluated: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_policy(findings: list[Finding], fail_on_rules: list[str] | tuple[str, ...]) -> PolicyDecision:
    """Listed rules block on IssuesFound, Error, NotEvaluated or no result at all; the others warn."""
    listed = set(fail_on_rules)
    blocking, warnings, errors, unevaluated = [], [], [], {}
    by_rule = {f.rule: f for f in findings}
    for rule in sorted(listed - set(by_rule)):
        blocking.append(f"{rule} (no result: this job never evaluated it)")
    for finding in findings:
        if finding.status in (ERROR, NOT_EVALUATED):
            errors.append(finding.rule)
            unevaluated[finding.rule] = f"{finding.status}: {finding.evidence}"
            if finding.rule in listed:
                blocking.append(
                    f"{finding.rule} ({finding.status}: {finding.evidence or 'no reason given'}; "
                    "it could not show the model is fine)"
                )
        elif finding.status == ISSUES:
            (blocking if finding.rule in listed else warnings).append(finding.rule)
    if blocking:
        message = "blocked: " + "; ".join(blocking)
    elif warnings or errors:
        parts = warnings + [f"{e} ({by_rule[e].status})" for e in errors]
        message = "no blocking rule fired; warnings: " + ", ".join(parts)
    else:
        message = "every rule was evaluated and found no issues"
    return PolicyDecision(bool(blocking), blocking, warnings, errors, message, unevaluated)
