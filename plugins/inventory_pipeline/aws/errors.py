"""Which AWS errors mean what: a job that does not exist, a name already taken, a fault worth a retry.

Imported only when a task runs (botocore).
"""

from __future__ import annotations

from botocore.exceptions import ClientError


def is_not_found(exc: Exception) -> bool:
    """SageMaker answers DescribeTrainingJob for an unknown name with a ValidationException."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    return error.get("Code") == "ValidationException" and "not found" in error.get("Message", "").lower()


# What retrying can fix: throttling, a server-side 5xx, a connection that failed. (botocore has already
# retried these a few times when they reach us; a task retry minutes later often succeeds.) Anything else from
# SageMaker (ValidationException, AccessDenied, ResourceLimitExceeded, ...) fails the same way every time.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "SlowDown",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "PriorRequestNotComplete",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for AWS errors worth another task attempt: throttling, 5xx, connection and timeout errors."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # refused, reset, read/connect timeouts
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return exc.response.get("Error", {}).get("Code") in TRANSIENT_CODES or status >= 500
    return False


def is_resource_in_use(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ResourceInUse"


def managed_rules_refused(exc: BaseException) -> bool:
    """SageMaker's answer to a request with Debugger rules from an account that cannot use them (closed to new
    customers since 2026-07-30): a ValidationException or access denial that names Debugger or the rules."""
    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    code, message = error.get("Code", ""), error.get("Message", "").lower()
    refused = code in ("ValidationException", "AccessDeniedException", "AccessDenied")
    return refused and any(word in message for word in ("debugger", "debugrule", "rule configuration"))


def connection_region(aws_conn_id: str) -> str:
    """The region the connection's clients use (its `region_name`, else botocore's chain): the one source of
    the region for the request (image URIs, rule images) as for the API calls, so they cannot disagree."""
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    hook = SageMakerHook(aws_conn_id=aws_conn_id)
    region = hook.conn_region_name or hook.get_session().region_name
    if not region:
        raise ValueError(f"the connection {aws_conn_id!r} names no region (set its extra 'region_name')")
    return region
