"""Which training job belongs to which deployment and run: the tags a job is created with, and the check a
retry makes before re-attaching to a job that already has the run's name.

Job names are predictable (`job_name_for_run`) and unique only per account and region, so two Airflow
deployments sharing an account (staging and production, or a copy restored from a backup) can meet the same
name. A retry must adopt only a job that this deployment created for this run; any other job holding the name
is someone else's paid work, never ours to report as our result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEPLOYMENT_TAG = "inventory:deployment"
DAG_TAG = "inventory:dag-id"
RUN_TAG = "inventory:run-id"
OWNERSHIP_KEYS = (DEPLOYMENT_TAG, DAG_TAG, RUN_TAG)
_MAX_TAG_VALUE = 256  # SageMaker's limit on a tag value


class ForeignJobError(RuntimeError):
    """A training job with this run's name exists but was not created by this deployment for this run."""

    def __init__(self, job_name: str, mismatches: dict[str, tuple[str | None, str | None]]):
        shown = "; ".join(
            f"{key}: expected {want!r}, job has {got!r}" for key, (want, got) in sorted(mismatches.items())
        )
        super().__init__(
            f"training job {job_name!r} already exists but is not this run's job ({shown}); not adopting it. "
            "Another deployment or run created a job with this name: rename this deployment's jobs (a distinct "
            "INVENTORY_DEPLOYMENT_ID) or delete the foreign job if it is stale."
        )
        self.job_name, self.mismatches = job_name, mismatches


def ownership_tags(deployment_id: str, dag_id: str, run_id: str) -> list[dict[str, str]]:
    """The tags that say whose job this is (values cut to SageMaker's 256 characters)."""
    values = {DEPLOYMENT_TAG: deployment_id, DAG_TAG: dag_id, RUN_TAG: run_id}
    return [{"Key": key, "Value": value[:_MAX_TAG_VALUE]} for key, value in values.items() if value]


def expected_from(tags: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The ownership tags among a request's `Tags`."""
    return {t["Key"]: t["Value"] for t in tags if t.get("Key") in OWNERSHIP_KEYS}


def mismatches(expected: Mapping[str, str], actual: Iterable[Mapping[str, str]]) -> dict[str, tuple[Any, Any]]:
    """Each ownership tag whose value on the job differs from ours: {key: (ours, the job's)}. A missing tag
    differs too: a job without our tags was not created by this code for this run."""
    found = {t["Key"]: t["Value"] for t in actual}
    return {key: (want, found.get(key)) for key, want in expected.items() if found.get(key) != want}


def list_job_tags(sagemaker: Any, job_arn: str) -> list[dict[str, str]]:
    """Every tag of a job (ListTags pages)."""
    tags: list[dict[str, str]] = []
    for page in sagemaker.get_paginator("list_tags").paginate(ResourceArn=job_arn):
        tags += page.get("Tags", [])
    return tags


def check_ownership(sagemaker: Any, description: Mapping[str, Any], request_tags: Iterable[Mapping[str, str]]) -> None:
    """Raise ForeignJobError unless the described job carries this request's ownership tags."""
    expected = expected_from(request_tags)
    if not expected:  # a request without ownership tags has nothing to check against (never built by us)
        return
    wrong = mismatches(expected, list_job_tags(sagemaker, description["TrainingJobArn"]))
    if wrong:
        raise ForeignJobError(description["TrainingJobName"], wrong)
