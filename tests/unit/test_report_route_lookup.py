"""The report route serves only this deployment's reports: the key comes from the deployment's bucket and
prefix and the job name, never from where SageMaker says some job of the account put its output (issue 26)."""

from __future__ import annotations

import pytest

from inventory_pipeline.airflow.plugin import REPORT_HEADERS, report_s3_uri
from inventory_pipeline.settings import SettingsError


def test_the_report_is_looked_up_under_this_deployments_verdicts_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVENTORY_BUCKET", "team-bucket")
    monkeypatch.setenv("INVENTORY_PREFIX", "counts/")
    assert report_s3_uri("inventory-job-1") == "s3://team-bucket/counts/verdicts/inventory-job-1/report.html"
    monkeypatch.delenv("INVENTORY_PREFIX")
    assert report_s3_uri("inventory-job-1") == "s3://team-bucket/abid/verdicts/inventory-job-1/report.html"
    # the route reads the settings the tasks read, so it refuses what they refuse
    monkeypatch.setenv("INVENTORY_PREFIX", "/counts/")
    with pytest.raises(SettingsError, match="prefix"):
        report_s3_uri("inventory-job-1")


def test_a_variable_names_the_bucket_before_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """One precedence for the route and the tasks: the Airflow Variable, then the environment."""
    from inventory_pipeline.airflow import plugin

    monkeypatch.setenv("INVENTORY_BUCKET", "env-bucket")
    monkeypatch.setattr(plugin, "_database_variable", {"INVENTORY_BUCKET": "variable-bucket"}.get)
    assert report_s3_uri("inventory-job-1").startswith("s3://variable-bucket/")


def test_the_report_is_sandboxed() -> None:
    assert REPORT_HEADERS == {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
