"""Findings -> policy, and the right-sizing advice, on the real report formats."""

import pytest

from inventory_pipeline.reports.cost import advice
from inventory_pipeline.reports.findings import apply_policy, findings_from_job

DESCRIBE = {
    "TrainingJobName": "job",
    "DebugRuleConfigurations": [{"RuleConfigurationName": "Overfit", "RuleParameters": {"rule_to_invoke": "Overfit",
                                                                                         "ratio_threshold": "0.1"}}],
    "DebugRuleEvaluationStatuses": [
        {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "IssuesFound", "StatusDetails": "val >> train"},
        {"RuleConfigurationName": "VanishingGradient", "RuleEvaluationStatus": "NoIssuesFound"},
        {"RuleConfigurationName": "PoorWeightInitialization", "RuleEvaluationStatus": "Error",
         "StatusDetails": "no tensors"},
        {"RuleConfigurationName": "Overtraining", "RuleEvaluationStatus": "InProgress"},
    ],
    "ProfilerRuleEvaluationStatuses": [
        {"RuleConfigurationName": "ProfilerReport", "RuleEvaluationStatus": "IssuesFound"}
    ],
}  # fmt: skip
REPORTS = {
    "CPUBottleneck": {"RuleTriggered": 1, "Violations": 36, "Details": {"summary": "CPU above 90%"}, "Datapoints": 65,
                      "RuleParameters": "threshold:50"},
    "LowGPUUtilization": {"RuleTriggered": 0, "Violations": 0, "Details": {"summary": "not applicable: no GPU",
                          "applicable": False}, "Datapoints": 0, "RuleParameters": ""},
    "StepOutlier": {"RuleTriggered": 0, "Violations": 0, "Details": {"summary": "no outlier"}, "Datapoints": 40,
                    "RuleParameters": "stddev:3"},
}  # fmt: skip


def test_findings_cover_rules_and_profiler_subrules():
    findings = {f.rule: f for f in findings_from_job(DESCRIBE, REPORTS)}
    assert findings["Overfit"].status == "IssuesFound" and findings["Overfit"].parameters == {"ratio_threshold": "0.1"}
    assert "regularisation" in findings["Overfit"].recommendation
    assert findings["CPUBottleneck"].triggered == 36 and findings["CPUBottleneck"].parent == "ProfilerReport"
    assert findings["VanishingGradient"].recommendation == ""  # nothing to do when quiet
    # a GPU rule on a CPU instance measured nothing: not reported as a pass
    assert findings["LowGPUUtilization"].status == "NotApplicable" and findings["StepOutlier"].status == "NoIssuesFound"


@pytest.mark.parametrize(
    ("fail_on", "failed", "blocking_prefix"),
    [
        ([], False, None),
        (["Overfit"], True, "Overfit"),
        (["CPUBottleneck"], True, "CPUBottleneck"),
        (["PoorWeightInitialization"], True, "PoorWeightInitialization (Error"),
        (["Overtraining"], True, "Overtraining (InProgress"),
        (["VanishingGradient"], False, None),
    ],
)
def test_policy_fails_on_listed_rules_and_never_passes_an_error(fail_on, failed, blocking_prefix):
    decision = apply_policy(findings_from_job(DESCRIBE, REPORTS), fail_on)
    assert decision.failed is failed
    if blocking_prefix:
        assert decision.blocking[0].startswith(blocking_prefix)
    assert {"PoorWeightInitialization", "Overtraining"} <= set(decision.errors)  # reported, never as passed
    assert "Overfit" in decision.warnings or "Overfit" in " ".join(decision.blocking)


def test_right_sizing_from_measured_utilisation():
    idle = advice("ml.c5.4xlarge", 2, 3600, cpu_p95=20.0, memory_p95=10.0)
    # 16 vCPUs at 20% p95 need ceil(16 * 20 / 70) = 5 vCPUs: the cheapest instance with that many.
    assert idle["needed_vcpus"] == 5 and idle["recommended"] == "ml.c5.2xlarge"
    assert "larger than needed" in idle["summary"] and "50% less" in idle["summary"]
    # BillableTimeInSeconds already counts every instance: 3600 s at the list price.
    assert idle["run_cost"] == pytest.approx(0.816) and idle["recommended_run_cost"] == pytest.approx(0.408)
    busy = advice("ml.c5.xlarge", 1, 1800, cpu_p95=97.0, memory_p95=10.0)
    assert busy["recommended"] == "ml.c5.2xlarge" and "too small" in busy["summary"]
    fits = advice("ml.c5.xlarge", 1, 60, cpu_p95=65.0, memory_p95=10.0)
    assert fits["recommended"] == "ml.c5.xlarge" and "fits" in fits["summary"]
    assert "no CPU utilisation" in advice("ml.c5.xlarge", 1, 60, None, None)["summary"]
    assert "not in the shipped price table" in advice("ml.x9.huge", 1, 60, 50.0, 10.0)["summary"]
