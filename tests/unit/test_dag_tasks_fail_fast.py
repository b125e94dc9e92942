"""Which data-plane errors skip Airflow's retries: permanent ones fail the task at once, transient ones retry."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from inventory_pipeline.airflow.tasks import failing_fast_on_bad_input
from inventory_pipeline.dataset.errors import DatasetError, SourceChanged, SourceNotFound, TooManyRejects
from inventory_pipeline.settings import Settings


@pytest.mark.parametrize(
    "error",
    [
        SourceNotFound("bucket s3://nope does not exist"),
        TooManyRejects("3 of 40 images rejected", rejects=[]),
        SourceChanged("an object changed since it was selected"),
    ],
)
def test_permanent_data_plane_errors_fail_without_retries(error):
    with pytest.raises(AirflowFailException, match=type(error).__name__) as raised:
        with failing_fast_on_bad_input():
            raise error
    assert raised.value.__cause__ is error and str(error) in str(raised.value)


def test_invalid_params_fail_without_retries():
    with pytest.raises(AirflowFailException, match="epochs"):
        with failing_fast_on_bad_input():
            Settings.from_sources({"epochs": 0}, env={})


def test_transient_and_unknown_errors_keep_their_retries():
    transient = DatasetError("S3 error SlowDown while copying (s3://b)")
    with pytest.raises(DatasetError) as raised:
        with failing_fast_on_bad_input():
            raise transient
    assert raised.value is transient
    with pytest.raises(ConnectionError):
        with failing_fast_on_bad_input():
            raise ConnectionError("reset by peer")


def test_the_first_task_refuses_params_the_settings_refuse_once_without_retries(monkeypatch):
    from inventory_pipeline.airflow.tasks import check_run_conf

    monkeypatch.setenv("INVENTORY_TRACKING_URI", "http://127.0.0.1:5000")

    declared = frozenset({"epochs", "fail_on_rules", "instance_type"})
    with pytest.raises(AirflowFailException, match="'epochs'.*not retrying"):
        check_run_conf({"epochs": 0}, declared, {"epochs": 0})
    gpu_rule = {"fail_on_rules": ["LowGPUUtilization"], "instance_type": "ml.c5.xlarge"}
    with pytest.raises(AirflowFailException, match="LowGPUUtilization.*ml.c5.xlarge has no GPU"):
        check_run_conf(gpu_rule, declared, gpu_rule)
    assert check_run_conf({"epochs": 2}, declared, {"epochs": 2}) == {"conf_keys": ["epochs"]}


def test_the_first_task_refuses_a_deployment_without_a_tracking_server(monkeypatch):
    """Without it the gate could record no decision in a registry: refused before any work, naming the setting."""
    from inventory_pipeline.airflow.tasks import check_run_conf

    monkeypatch.delenv("INVENTORY_TRACKING_URI", raising=False)
    with pytest.raises(AirflowFailException, match="INVENTORY_TRACKING_URI is not set.*not retrying"):
        check_run_conf({}, frozenset(), {})
