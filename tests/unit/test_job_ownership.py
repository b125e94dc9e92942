"""Which job a retry may adopt: the ownership tags must all match."""

import pytest

from inventory_pipeline.training.ownership import (
    DEPLOYMENT_TAG,
    RUN_TAG,
    ForeignJobError,
    expected_from,
    mismatches,
    ownership_tags,
)


def test_matching_tags_adopt_and_any_difference_or_absence_refuses():
    ours = expected_from([{"Key": "project", "Value": "x"}, *ownership_tags("prod", "dag", "run-1")])
    assert set(ours) == {DEPLOYMENT_TAG, "inventory:dag-id", RUN_TAG}
    assert mismatches(ours, ownership_tags("prod", "dag", "run-1")) == {}
    assert mismatches(ours, ownership_tags("staging", "dag", "run-1")) == {DEPLOYMENT_TAG: ("prod", "staging")}
    assert mismatches(ours, []) == {key: (value, None) for key, value in ours.items()}


def test_the_error_names_the_job_and_each_differing_tag():
    error = ForeignJobError("inventory-run-1-abc", {DEPLOYMENT_TAG: ("prod", "staging")})
    assert "inventory-run-1-abc" in str(error) and "expected 'prod', job has 'staging'" in str(error)


@pytest.mark.parametrize("value", ["x" * 300])
def test_tag_values_fit_sagemakers_limit(value):
    assert all(len(t["Value"]) <= 256 for t in ownership_tags(value, value, value))
