"""Findings -> policy, and the right-sizing advice, on the real report formats."""

import pytest

from inventory_pipeline.aws.pricing import advice
from inventory_pipeline.reports.findings import apply_policy, findings_from_job

DESCRIBE = {
    "TrainingJobName": "job",
    "DebugRuleConfigurations": [
        {"RuleConfigurationName": "Overfit", "RuleParameters": {"rule_to_invoke": "Overfit", "ratio_threshold": "0.1"}}
    ],
    "DebugRuleEvaluationStatuses": [
        {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "IssuesFound", "StatusDetails": "val >> train"},
        {"RuleConfigurationName": "VanishingGradient", "RuleEvaluationStatus": "NoIssuesFound"},
        {
            "RuleConfigurationName": "PoorWeightInitialization",
            "RuleEvaluationStatus": "Error",
            "StatusDetails": "no tensors",
        },
        {"RuleConfigurationName": "Overtraining", "RuleEvaluationStatus": "InProgress"},
    ],
    "ProfilerRuleEvaluationStatuses": [
        {"RuleConfigurationName": "ProfilerReport", "RuleEvaluationStatus": "IssuesFound"}
    ],
}
REPORTS = {
    "CPUBottleneck": {
        "RuleTriggered": 1,
        "Violations": 36,
        "Details": {"summary": "CPU above 90%"},
        "Datapoints": 65,
        "RuleParameters": "threshold:50",
    },
    "LowGPUUtilization": {
        "RuleTriggered": 0,
        "Violations": 0,
        "Details": {"summary": "not applicable: no GPU", "applicable": False},
        "Datapoints": 0,
        "RuleParameters": "",
    },
    "StepOutlier": {
        "RuleTriggered": 0,
        "Violations": 0,
        "Details": {"summary": "no outlier"},
        "Datapoints": 40,
        "RuleParameters": "stddev:3",
    },
}


def test_findings_cover_rules_and_profiler_subrules():
    findings = {f.rule: f for f in findings_from_job(DESCRIBE, REPORTS)}
    assert findings["Overfit"].status == "IssuesFound" and findings["Overfit"].parameters == {"ratio_threshold": "0.1"}
    assert "regularisation" in findings["Overfit"].recommendation
    assert findings["CPUBottleneck"].triggered == 36 and findings["CPUBottleneck"].parent == "ProfilerReport"
    assert findings["VanishingGradient"].recommendation == ""  # nothing to do when quiet
    # a GPU rule on a CPU instance measured nothing: not reported as a pass
    assert findings["LowGPUUtilization"].status == "NotEvaluated" and findings["StepOutlier"].status == "NoIssuesFound"
    # InProgress is not an outcome: the rule did not conclude
    assert findings["Overtraining"].status == "NotEvaluated" and "InProgress" in findings["Overtraining"].evidence


@pytest.mark.parametrize(
    ("fail_on", "failed", "blocking_prefix"),
    [
        ([], False, None),
        (["Overfit"], True, "Overfit"),
        (["CPUBottleneck"], True, "CPUBottleneck"),
        (["PoorWeightInitialization"], True, "PoorWeightInitialization (Error"),
        (["Overtraining"], True, "Overtraining (NotEvaluated: InProgress"),
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
    # BillableTimeInSeconds is per instance (as AWS reports it): 2 instances x 3600 s at the list price.
    assert idle["run_cost"] == pytest.approx(1.632) and idle["recommended_run_cost"] == pytest.approx(0.816)
    busy = advice("ml.c5.xlarge", 1, 1800, cpu_p95=97.0, memory_p95=10.0)
    assert busy["recommended"] == "ml.c5.2xlarge" and "too small" in busy["summary"]
    fits = advice("ml.c5.xlarge", 1, 60, cpu_p95=65.0, memory_p95=10.0)
    assert fits["recommended"] == "ml.c5.xlarge" and "fits" in fits["summary"]
    assert "no CPU utilisation" in advice("ml.c5.xlarge", 1, 60, None, None)["summary"]
    assert "not in the shipped price table" in advice("ml.x9.huge", 1, 60, 50.0, 10.0)["summary"]


# --- rule outcomes without holes (issue 13, points 1 and 2) ---------------------------------------------------

CPU_JOB = {
    "TrainingJobName": "job",
    "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
    "DebugRuleConfigurations": [{"RuleConfigurationName": "Overfit", "RuleParameters": {}}],
    "DebugRuleEvaluationStatuses": [{"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "NoIssuesFound"}],
    "ProfilerRuleConfigurations": [{"RuleConfigurationName": "ProfilerReport", "RuleParameters": {}}],
    "ProfilerRuleEvaluationStatuses": [
        {"RuleConfigurationName": "ProfilerReport", "RuleEvaluationStatus": "NoIssuesFound"}
    ],
}
# What SageMaker's own ProfilerReport writes on a CPU instance: no `applicable`/`evaluated` keys, 0 datapoints.
MANAGED_REPORTS = {
    "LowGPUUtilization": {
        "RuleTriggered": 0,
        "Violations": 0,
        "Details": {},
        "Datapoints": 0,
        "RuleParameters": "threshold_p95:70",
    },
    "GPUMemoryIncrease": {"RuleTriggered": 0, "Violations": 0, "Details": {}, "Datapoints": 0, "RuleParameters": ""},
    "CPUBottleneck": {"RuleTriggered": 0, "Violations": 0, "Details": {}, "Datapoints": 0, "RuleParameters": ""},
    "StepOutlier": {"RuleTriggered": 0, "Violations": 0, "Details": {}, "Datapoints": 0, "RuleParameters": ""},
    "MaxInitializationTime": {
        "RuleTriggered": 0,
        "Violations": 0,
        "Details": {},
        "Datapoints": 12,
        "RuleParameters": "threshold:20",
    },
}


def test_managed_profiler_report_on_a_cpu_instance_never_reads_as_passed():
    findings = {f.rule: f for f in findings_from_job(CPU_JOB, MANAGED_REPORTS)}
    for rule in ("LowGPUUtilization", "GPUMemoryIncrease", "CPUBottleneck"):
        assert findings[rule].status == "NotEvaluated" and "ml.c5.xlarge has no GPU" in findings[rule].evidence
    assert findings["StepOutlier"].status == "NotEvaluated" and "0 datapoints" in findings["StepOutlier"].evidence
    assert findings["MaxInitializationTime"].status == "NoIssuesFound"
    # sub-rules the ProfilerReport wrote no file for are listed as NotEvaluated, not left out
    assert findings["Dataloader"].status == "NotEvaluated" and "no result" in findings["Dataloader"].evidence
    assert {f.status for f in findings.values()} <= {"NoIssuesFound", "IssuesFound", "Error", "NotEvaluated"}


def test_our_engine_flags_a_rule_that_saw_too_little_as_not_evaluated():
    reports = {
        "StepOutlier": {
            "RuleTriggered": 0,
            "Violations": 0,
            "Datapoints": 40,
            "RuleParameters": "",
            "Details": {"summary": "too few steps to judge", "evaluated": False},
        }
    }
    finding = next(f for f in findings_from_job(CPU_JOB, reports) if f.rule == "StepOutlier")
    assert finding.status == "NotEvaluated"
    decision = apply_policy(findings_from_job(CPU_JOB, reports), ["StepOutlier"])
    assert decision.failed and "StepOutlier (NotEvaluated" in decision.blocking[0]


def test_a_listed_rule_without_any_result_blocks():
    # the ProfilerReport failed and left no folder: its sub-rules have no file at all
    failed_report = {
        **CPU_JOB,
        "ProfilerRuleEvaluationStatuses": [
            {"RuleConfigurationName": "ProfilerReport", "RuleEvaluationStatus": "Error", "StatusDetails": "crashed"}
        ],
    }
    decision = apply_policy(findings_from_job(failed_report, {}), ["MaxInitializationTime"])
    assert decision.failed and decision.blocking[0].startswith("MaxInitializationTime (NotEvaluated")
    # a listed rule the job never configured at all blocks too
    no_profiler = {k: v for k, v in CPU_JOB.items() if not k.startswith("Profiler")}
    decision = apply_policy(findings_from_job(no_profiler, {}), ["StepOutlier"])
    assert decision.failed and "no result" in decision.blocking[0]
    assert "passed" not in decision.message


@pytest.mark.parametrize(
    ("rule", "instance", "needle"),
    [
        ("LowGPUUtilization", "ml.c5.xlarge", "ml.c5.xlarge has no GPU"),
        ("Dataloader", "ml.g5.xlarge", "never evaluated"),
        ("LoadBalancing", "ml.g4dn.xlarge", "has 1"),
    ],
)
def test_a_blocking_rule_that_cannot_be_evaluated_is_refused_at_trigger_time(rule, instance, needle):
    from inventory_pipeline.settings import Settings, SettingsError

    with pytest.raises(SettingsError) as raised:
        Settings.from_sources({"fail_on_rules": [rule], "instance_type": instance}, env={})
    assert rule in str(raised.value) and needle in str(raised.value)
    assert Settings.from_sources({"fail_on_rules": ["LowGPUUtilization"], "instance_type": "ml.g5.xlarge"}, env={})


def test_gpu_rule_table_matches_the_engine():
    from inventory_pipeline.rules.applicability import GPU_RULES
    from inventory_pipeline.rules.profiler_rules import RULES

    assert set(GPU_RULES) == {name for name, rule in RULES.items() if rule.needs_gpu}


def test_spot_savings_as_aws_defines_them_and_the_job_facts():
    from inventory_pipeline.reports.job_facts import job_facts, spot_savings

    spot = {
        "EnableManagedSpotTraining": True,
        "TrainingTimeInSeconds": 500,
        "BillableTimeInSeconds": 100,
        "CheckpointConfig": {"S3Uri": "s3://b/j/checkpoints"},
        "SecondaryStatusTransitions": [{"Status": "Training"}, {"Status": "Interrupted"}],
    }
    assert spot_savings(spot) == pytest.approx(0.8)  # AWS's example: 100 billable of 500 s is 80% saved
    assert spot_savings({**spot, "EnableManagedSpotTraining": False}) is None
    facts = job_facts(spot)
    assert facts["spot_interruptions"] == 1 and facts["rules_mode"] == "self_hosted"
    assert facts["EnableNetworkIsolation"] is False and facts["CheckpointConfig"] == {"S3Uri": "s3://b/j/checkpoints"}
