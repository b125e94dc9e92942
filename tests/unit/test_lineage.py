"""What counts as "the same inputs" for skip-unchanged (issue 25, point 8)."""

from __future__ import annotations

import dataclasses

import pytest

from inventory_pipeline.decision.lineage import run_lineage, unchanged_reason
from inventory_pipeline.decision.registry import ModelVersionInfo
from inventory_pipeline.settings import Settings

BASE = Settings(model="small_cnn", instance_count=1)


@pytest.mark.parametrize(
    "change",
    [
        {"pretrained_s3_uri": "s3://b/pretrained/other.pth"},
        {"enable_network_isolation": True},
        {"rules_mode": "self_hosted"},
        {"use_spot": True},
        {"max_runtime_s": 7200},
        {"max_wait_s": 7200},
        {"fail_on_rules": ("Overfit",)},
    ],
)
def test_every_setting_that_changes_the_model_or_its_judgement_changes_the_lineage(change):
    before = run_lineage(BASE, "ds", "code")
    assert run_lineage(dataclasses.replace(BASE, **change), "ds", "code") != before


def test_new_weights_under_the_same_uri_are_new_inputs():
    with_weights = dataclasses.replace(BASE, pretrained_s3_uri="s3://b/pretrained/lite0.pth")
    assert run_lineage(with_weights, "ds", "code", "etag-1") != run_lineage(with_weights, "ds", "code", "etag-2")


def _version(number: str, lineage: dict[str, str], decision: str) -> ModelVersionInfo:
    return ModelVersionInfo(
        number, "s3://b/m.tar.gz", "r", {**lineage, "decision": decision, "job": f"job-{number}"}, ()
    )


def test_inputs_already_judged_are_not_trained_again_and_the_reason_names_the_judgement():
    lineage = run_lineage(BASE, "ds", "code")
    champion = run_lineage(dataclasses.replace(BASE, epochs=9), "ds", "code")
    judged = [_version("2", champion, "promoted"), _version("3", lineage, "below_baseline")]
    reason = unchanged_reason(lineage, {**champion, "job": "job-2"}, judged)
    assert reason is not None and "v3" in reason and "already judged below_baseline" in reason
    for decision in ("not_better", "blocked"):
        assert unchanged_reason(lineage, None, [_version("3", lineage, decision)]) is not None
    # other inputs, or a model that was never judged on them, train
    assert unchanged_reason(lineage, None, [_version("3", champion, "not_better")]) is None
    assert unchanged_reason(lineage, None, [_version("3", lineage, "failed")]) is None
    # the champion's own inputs: the champion's reason
    assert "equal the champion's" in unchanged_reason(lineage, {**lineage, "job": "job-1"}, judged)
