"""Record every AWS API call a process makes, and on whose behalf, for the least-privilege test.

Opt-in and inert by default: nothing is patched unless `INVENTORY_RECORD_AWS_CALLS` names a JSONL file.
`install_from_env()` wraps `botocore.session.Session.__init__`, so every session created afterwards (boto3's,
the Amazon provider's `AwsBaseHook` sessions, aiobotocore's) gets two event handlers:

- `before-parameter-build`: keeps the call's resource-naming parameters (bucket, key, log group, job name...);
- `request-created` (after botocore's signer): writes one line per call with the principal and the access key
  the request was signed with (the same evidence a server would attribute the call by).

Requests to a SageMaker managed MLflow tracking server are not botocore calls: the `sagemaker-mlflow` plugin
signs them (SigV4, service `sagemaker-mlflow`) and `requests` sends them. `requests`' adapter is wrapped too, and
each request signed for that service is written the same way (operation `<METHOD> <path>`, the tracking
server's ARN), so the least-privilege test can check them against the policy like any other call.

The principal is a label read from `INVENTORY_RECORD_AWS_PRINCIPAL` at call time ("airflow" for the DAG's
tasks, "execution_role" for the local SageMaker runner and the training processes it starts).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import time
from typing import Any

RECORD_ENV = "INVENTORY_RECORD_AWS_CALLS"
PRINCIPAL_ENV = "INVENTORY_RECORD_AWS_PRINCIPAL"
EXECUTION_ROLE = "execution_role"
# Only what names a resource or changes which IAM actions a call needs: never bodies, never credentials.
_KEPT_PARAMS = (
    "Bucket",
    "Key",
    "Prefix",
    "CopySource",
    "logGroupName",
    "logStreamName",
    "logStreamNamePrefix",
    "TrainingJobName",
    "RoleArn",
    "Tags",
    "TargetArn",
    "TopicArn",
    "Namespace",
    "ResourceConfig",
    "StoppingCondition",
)
# Of these, only the fields IAM condition keys read (sagemaker:InstanceTypes, sagemaker:MaxRuntimeInSeconds).
_CONDITION_FIELDS = {"ResourceConfig": ("InstanceType",), "StoppingCondition": ("MaxRuntimeInSeconds",)}
_CONTEXT_KEY = "inventory_recorded_call"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_lock = threading.Lock()
_target: dict[str, str] = {}  # the file, fixed at install: a handler must not depend on later env changes


def install_from_env(principal: str | None = None) -> bool:
    """Start recording when `INVENTORY_RECORD_AWS_CALLS` is set; `principal` also labels child processes."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return False
    if principal:
        # Exported so the processes this one starts (the runner's training processes) act as the same principal.
        os.environ[PRINCIPAL_ENV] = principal
    _target["path"] = path
    import botocore.session

    session_class = botocore.session.Session
    if getattr(session_class, "_inventory_recording", False):
        return True
    original_init = session_class.__init__

    @functools.wraps(original_init)
    def recording_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.register("before-parameter-build", _remember_call)
        self.register("request-created", _record_call)  # generic event: runs after the service's signer

    session_class.__init__ = recording_init
    session_class._inventory_recording = True
    _record_signed_mlflow_requests()
    return True


def _record_signed_mlflow_requests() -> None:
    from requests.adapters import HTTPAdapter

    original_send = HTTPAdapter.send

    @functools.wraps(original_send)
    def recording_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        authorization = _authorization(request.headers)
        if "/sagemaker-mlflow/aws4_request" in authorization:
            from urllib.parse import urlsplit

            mlflow = sys.modules.get("mlflow")
            arn = mlflow.get_tracking_uri() if mlflow is not None else ""
            call = {
                "service": "sagemaker-mlflow",
                "operation": f"{request.method} {urlsplit(request.url).path}",
                "params": {"TrackingServerArn": arn},
            }
            _write(call, authorization)
        return original_send(self, request, *args, **kwargs)

    HTTPAdapter.send = recording_send


def _remember_call(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    kept = {name: _plain(name, params[name]) for name in _KEPT_PARAMS if name in params}
    context[_CONTEXT_KEY] = {
        "service": model.service_model.service_name,
        "operation": model.name,
        "params": kept,
    }


def _plain(name: str, value: Any) -> Any:
    if name in _CONDITION_FIELDS and isinstance(value, dict):
        return {field: value[field] for field in _CONDITION_FIELDS[name] if field in value}
    if name == "Tags":
        return bool(value)
    if name == "CopySource" and isinstance(value, dict):
        return f"{value.get('Bucket')}/{value.get('Key')}"
    return str(value)[:1024]


def _record_call(request: Any, **_: Any) -> None:
    call = (getattr(request, "context", None) or {}).pop(_CONTEXT_KEY, None)
    if call is None:  # a retry of a call already recorded (or a request botocore made without an API call)
        return
    _write(call, _authorization(request.headers))


def _authorization(headers: Any) -> str:
    value = headers.get("Authorization") or ""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _write(call: dict[str, Any], authorization: str) -> None:
    match = _CREDENTIAL.search(authorization)
    call.update(
        principal=os.environ.get(PRINCIPAL_ENV, "unknown"),
        access_key=match.group(1) if match else None,
        pid=os.getpid(),
        time=time.time(),
    )
    line = json.dumps(call) + "\n"
    with _lock, open(_target["path"], "a") as out:  # one short append per call: safe across processes
        out.write(line)
