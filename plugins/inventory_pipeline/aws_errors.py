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
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestThrottled", "SlowDown", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "TransactionInProgressException", "PriorRequestNotComplete",
    "RequestTimeout", "RequestTimeoutException", "InternalFailure", "InternalError", "InternalServerError",
    "ServiceUnavailable",
})  # fmt: skip


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
