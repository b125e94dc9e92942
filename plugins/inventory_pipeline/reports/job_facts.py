"""The training job's own facts, as DescribeTrainingJob states them: how it ran (network isolation, Managed Spot,
checkpoints, which rules engine) and what it cost in time, with the Spot savings as AWS defines them."""

from __future__ import annotations

from typing import Any

FIELDS = (
    "EnableNetworkIsolation",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "TrainingTimeInSeconds",
    "BillableTimeInSeconds",
)


def spot_savings(describe: dict[str, Any]) -> float | None:
    """1 - BillableTimeInSeconds / TrainingTimeInSeconds (AWS's definition) for a Spot job; None otherwise or
    while the job has no times yet."""
    billable, training = describe.get("BillableTimeInSeconds"), describe.get("TrainingTimeInSeconds")
    if not describe.get("EnableManagedSpotTraining") or not billable or not training:
        return None
    return round(1 - float(billable) / float(training), 4)


def job_facts(describe: dict[str, Any]) -> dict[str, Any]:
    """The fields the run summary and the report show (absent fields as SageMaker's defaults)."""
    facts: dict[str, Any] = {field: describe.get(field) for field in FIELDS}
    facts["EnableNetworkIsolation"] = bool(describe.get("EnableNetworkIsolation"))
    facts["EnableManagedSpotTraining"] = bool(describe.get("EnableManagedSpotTraining"))
    facts["spot_savings"] = spot_savings(describe)
    # rules_mode=auto decides per run: SageMaker evaluates rules only for a job created with rule configurations.
    facts["rules_mode"] = "managed" if describe.get("DebugRuleConfigurations") else "self_hosted"
    interruptions = [t for t in describe.get("SecondaryStatusTransitions", []) if t.get("Status") == "Interrupted"]
    facts["spot_interruptions"] = len(interruptions)
    return facts
