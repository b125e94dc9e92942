"""Which IAM permissions a recorded AWS API call needs, and a tiny evaluator of the project's policies
(Allow statements, and unconditional Deny statements that win over them).

Operation names are mapped to IAM actions as AWS authorizes them (HeadObject is s3:GetObject, CopyObject is
s3:GetObject on the source plus s3:PutObject on the destination, CreateTrainingJob also needs iam:PassRole on
the role it names and sagemaker:AddTags when it carries tags). An operation with no mapping is an error, so
a new kind of call can never pass unchecked.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

_S3_OBJECT = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}
_S3_BUCKET = {"HeadBucket": "s3:ListBucket", "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket"}
_LOGS_GROUP = ("CreateLogGroup", "CreateLogStream", "DescribeLogStreams")
_LOGS_STREAM = ("PutLogEvents", "GetLogEvents")
_SAGEMAKER_JOB = ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob")
# SageMaker managed MLflow authorizes each MLflow REST call as `sagemaker-mlflow:<Operation>` on the tracking
# server's ARN (Service Authorization Reference, "Amazon SageMaker with MLflow"): (method, path) -> operation.
_MLFLOW = {
    ("GET", "experiments/get-by-name"): "GetExperimentByName",
    ("GET", "experiments/get"): "GetExperiment",
    ("POST", "experiments/create"): "CreateExperiment",
    ("POST", "experiments/search"): "SearchExperiments",
    ("POST", "runs/create"): "CreateRun",
    ("GET", "runs/get"): "GetRun",
    ("POST", "runs/search"): "SearchRuns",
    ("POST", "runs/log-batch"): "LogBatch",
    ("POST", "runs/set-tag"): "SetTag",
    ("POST", "runs/update"): "UpdateRun",
    ("GET", "registered-models/get"): "GetRegisteredModel",
    ("POST", "registered-models/create"): "CreateRegisteredModel",
    ("GET", "model-versions/search"): "SearchModelVersions",
    ("POST", "model-versions/create"): "CreateModelVersion",
    ("GET", "model-versions/get"): "GetModelVersion",
    ("POST", "model-versions/set-tag"): "SetModelVersionTag",
    ("POST", "registered-models/alias"): "SetRegisteredModelAlias",
    ("GET", "registered-models/alias"): "GetModelVersionByAlias",
    ("DELETE", "registered-models/alias"): "DeleteRegisteredModelAlias",
}
_STATEMENT_KEYS = {"Sid", "Effect", "Action", "Resource", "Condition"}
_OPERATORS = {
    "StringEquals": lambda value, want: value == want,
    "StringLike": lambda value, want: _glob(want).fullmatch(value),
    # a request carries one value per key here (one instance type per job), so ForAllValues is StringEquals
    "ForAllValues:StringEquals": lambda value, want: value == want,
    "NumericLessThanEquals": lambda value, want: float(value) <= float(want),
    # reached only for a key the request carries (a missing key fails every condition here, as Null=false does)
    "Null": lambda value, want: want == "false",
}


class UnmappedCall(Exception):
    """A recorded operation this module cannot translate into IAM permissions (add it to the mapping)."""


@dataclass(frozen=True)
class Permission:
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()  # the condition keys the request carries

    def __str__(self) -> str:
        extra = "".join(f" [{k}={v}]" for k, v in self.context)
        return f"{self.action} on {self.resource}{extra}"


def required_permissions(call: dict[str, Any], region: str, account: str) -> list[Permission]:
    service, operation, params = call["service"], call["operation"], call["params"]
    if service == "s3" and operation in _S3_OBJECT:
        return [Permission(_S3_OBJECT[operation], f"arn:aws:s3:::{params['Bucket']}/{params['Key']}")]
    if service == "s3" and operation in _S3_BUCKET:
        context = (("s3:prefix", params.get("Prefix", "")),) if operation != "HeadBucket" else ()
        return [Permission("s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}", context)]
    if service == "s3" and operation == "CopyObject":
        source = unquote(params["CopySource"].lstrip("/").split("?versionId=")[0])
        return [
            Permission("s3:GetObject", f"arn:aws:s3:::{source}"),
            Permission("s3:PutObject", f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"),
        ]
    if service == "logs" and operation in _LOGS_GROUP + _LOGS_STREAM:
        # CloudWatch Logs authorizes log-group actions against the group ARN with its ":*" suffix.
        group = f"arn:aws:logs:{region}:{account}:log-group:{params['logGroupName']}"
        resource = f"{group}:log-stream:{params['logStreamName']}" if operation in _LOGS_STREAM else f"{group}:*"
        return [Permission(f"logs:{operation}", resource)]
    if service == "sagemaker" and operation in _SAGEMAKER_JOB:
        job = f"arn:aws:sagemaker:{region}:{account}:training-job/{params['TrainingJobName'].lower()}"
        needed = [Permission(f"sagemaker:{operation}", job)]
        if operation == "CreateTrainingJob":  # the condition keys SageMaker sets for the guardrails' statement
            instance_type = (params.get("ResourceConfig") or {}).get("InstanceType")
            runtime = (params.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
            keys = (("sagemaker:InstanceTypes", instance_type), ("sagemaker:MaxRuntimeInSeconds", runtime))
            # a key the request does not carry is absent from the context, as in IAM
            present = tuple((key, str(value)) for key, value in keys if value is not None)
            needed[0] = Permission(f"sagemaker:{operation}", job, present)
            needed.append(
                Permission("iam:PassRole", params["RoleArn"], (("iam:PassedToService", "sagemaker.amazonaws.com"),))
            )
            if params.get("Tags"):  # tag-on-create is authorized as sagemaker:AddTags
                needed.append(Permission("sagemaker:AddTags", job))
        return needed
    if service == "sagemaker" and operation == "ListTags":
        return [Permission("sagemaker:ListTags", params["ResourceArn"])]
    if service == "sagemaker" and operation == "ListTrainingJobs":
        return [Permission("sagemaker:ListTrainingJobs", "*")]
    if service == "cloudwatch" and operation == "PutMetricData":  # no resource ARN; scoped by namespace
        return [Permission("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", params["Namespace"]),))]
    if service == "sagemaker-mlflow":
        method, _, path = operation.partition(" ")
        name = _MLFLOW.get((method, path.split("/mlflow/", 1)[-1]))
        if name is None:
            raise UnmappedCall(f"{service}:{operation}")
        return [Permission(f"sagemaker-mlflow:{name}", params["TrackingServerArn"])]
    if service == "sns" and operation == "Publish":
        return [Permission("sns:Publish", params.get("TargetArn") or params["TopicArn"])]
    raise UnmappedCall(f"{service}:{operation}")


def _glob(pattern: str) -> re.Pattern[str]:
    """IAM wildcards: `*` any run of characters (slashes included), `?` one character."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass
class Policy:
    name: str
    statements: list[dict[str, Any]]
    used: set[tuple[str, str, str]] = field(default_factory=set)  # (Sid, "action" | "resource", value)

    @classmethod
    def load(cls, path: Path, values: dict[str, str]) -> Policy:
        """The policy file with its ${Placeholders} filled in (an unknown placeholder raises KeyError)."""
        document = json.loads(string.Template(path.read_text()).substitute(values))
        for statement in document["Statement"]:
            # Only what this evaluator understands: anything else would make its verdict meaningless.
            assert set(statement) <= _STATEMENT_KEYS and "Sid" in statement, statement
            assert statement["Effect"] in ("Allow", "Deny"), statement
            assert set(statement.get("Condition", {})) <= set(_OPERATORS), statement
            assert statement["Effect"] == "Allow" or "Condition" not in statement, statement  # unconditional denies
        return cls(path.name, document["Statement"])

    def allows(self, permission: Permission) -> bool:
        """True when some Allow statement grants it and no Deny statement names it (an explicit deny wins, as in
        IAM); marks every granting statement's action and resource as used."""
        granted, denied = False, False
        for statement in self.statements:
            actions = [a for a in _listed(statement["Action"]) if _glob(a.lower()).fullmatch(permission.action.lower())]
            resources = [r for r in _listed(statement["Resource"]) if _glob(r).fullmatch(permission.resource)]
            if not (actions and resources and self._conditions_hold(statement, dict(permission.context))):
                continue
            if statement["Effect"] == "Deny":
                denied = True
                continue
            granted = True
            sid = statement["Sid"]
            self.used |= {(sid, "action", a) for a in actions} | {(sid, "resource", r) for r in resources}
        return granted and not denied

    @staticmethod
    def _conditions_hold(statement: dict[str, Any], context: dict[str, str]) -> bool:
        for operator, tests in statement.get("Condition", {}).items():
            for key, wanted in tests.items():
                # As in IAM: a key the request does not carry fails the condition.
                if key not in context or not any(_OPERATORS[operator](context[key], w) for w in _listed(wanted)):
                    return False
        return True

    def unused(self, allowlist: dict[str, str]) -> list[str]:
        """Each action and resource of a statement no call needed (statements in `allowlist` excepted)."""
        gaps = []
        for statement in self.statements:
            sid = statement["Sid"]
            if sid in allowlist or statement["Effect"] == "Deny":  # a deny grants nothing
                continue
            gaps += [
                f"{self.name} {sid}: {kind} {value} is granted but never needed"
                for kind in ("action", "resource")
                for value in _listed(statement[kind.title()])
                if (sid, kind, value) not in self.used
            ]
        return gaps
