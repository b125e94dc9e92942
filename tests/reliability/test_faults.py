"""Fault injection: every scenario of `fault_scenarios` against the session's local stack, each asserted the same
way: handled (a clear error, a counted reject or skip, or a recovery), and no object lost, no object or
training job duplicated, no inconsistent published state. `benchmarks/faults.py --json` runs the same
scenarios as one table."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from fault_scenarios import SCENARIOS, FaultEnv, run_scenario

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def fault_env(local_stack, tmp_path_factory) -> FaultEnv:
    return FaultEnv(local_stack, tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize(
    "scenario",
    [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.slow else []) for s in SCENARIOS],
)
def test_fault_is_handled_without_loss_duplication_or_inconsistency(fault_env, scenario):
    row = run_scenario(fault_env, scenario)
    assert row.handled, f"{row.outcome} | {row.detail}"
    counters = (row.objects_lost, row.objects_duplicated, row.jobs_duplicated, row.inconsistent_state)
    assert counters == (0, 0, 0, False), f"{row.outcome} | {row.detail}"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "CreateTrainingJob"
    )


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_client_error("ThrottlingException", 400), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalFailure", 500), True),
        (_client_error("ServiceUnavailable", 503), True),
        (EndpointConnectionError(endpoint_url="http://sagemaker"), True),
        (ConnectionClosedError(endpoint_url="http://sagemaker"), True),
        (ReadTimeoutError(endpoint_url="http://sagemaker"), True),
        (_client_error("ValidationException", 400), False),
        (_client_error("AccessDeniedException", 400), False),
        (_client_error("ResourceLimitExceeded", 400), False),
        (NoCredentialsError(), False),
        (ValueError("not from AWS"), False),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, bool) else str(value),
)
def test_only_transient_aws_errors_count_as_worth_a_retry(error, transient):
    from inventory_pipeline.aws.errors import is_transient

    assert is_transient(error) is transient
