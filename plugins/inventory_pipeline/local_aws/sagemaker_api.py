"""The local SageMaker server: the training-job API in SageMaker's JSON 1.1 protocol.

The training-job API (`CreateTrainingJob`, `DescribeTrainingJob`, `StopTrainingJob`, `ListTrainingJobs`,
`UpdateTrainingJob`, `DeleteTrainingJob`) and the tags API for training jobs (`AddTags`, `ListTags`,
`DeleteTags`), validated against botocore's service model and answering AWS-shaped errors, so boto3 (and the
Amazon provider's operators, the sagemaker SDK, the AWS CLI) behave as against AWS. Any other operation answers
`UnknownOperationException` naming it. Each job runs in its own runner process (`runner.main`); state lives on
disk.

    python -m inventory_pipeline.local_aws.sagemaker_api --port P --state-dir D --s3-endpoint URL --logs-endpoint URL \
        [--cloudwatch-endpoint URL]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

from inventory_pipeline.aws.clients import service_model
from inventory_pipeline.local_aws.runner.job_store import NON_TERMINAL, JobStore

log = logging.getLogger("inventory_pipeline.local_aws.sagemaker_api")
ACCOUNT = "000000000000"
JSON_11 = "application/x-amz-json-1.1"


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def validate_input(operation: str, params: dict[str, Any]) -> None:
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    input_shape = service_model("sagemaker").operation_model(operation).input_shape
    try:
        validate_parameters(params, input_shape)
    except ParamValidationError as exc:
        raise ApiError("ValidationException", str(exc).replace("\n", " ")) from exc
    # botocore checks types, required members and minimums only; SageMaker's server also enforces enums,
    # patterns and maximums. Without these, a request SageMaker refuses (an unknown instance type, a role
    # ARN without a 12-digit account) would start a local job.
    problems = constraint_violations(input_shape, params, "")
    if problems:
        count = f"{len(problems)} validation error{'s' if len(problems) > 1 else ''} detected: "
        raise ApiError("ValidationException", count + "; ".join(problems[:5]))


def constraint_violations(shape: Any, value: Any, path: str) -> list[str]:
    """SageMaker-style messages for values outside the model's enum / pattern / max constraints."""
    problems: list[str] = []
    meta = shape.metadata
    where = f"Value {_shown(value)} at '{path}' failed to satisfy constraint: Member must"
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                member_path = f"{path}.{name[:1].lower()}{name[1:]}" if path else name[:1].lower() + name[1:]
                problems += constraint_violations(member, value[name], member_path)
    elif shape.type_name == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where} have length less than or equal to {meta['max']}")
        for index, item in enumerate(value):
            problems += constraint_violations(shape.member, item, f"{path}.{index + 1}.member")
    elif shape.type_name == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where} have length less than or equal to {meta['max']}")
        for key, item in value.items():
            problems += constraint_violations(shape.key, key, f"{path}.key")
            problems += constraint_violations(shape.value, item, f"{path}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            problems.append(f"{where} satisfy enum value set: [{', '.join(shape.enum)}]")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{where} have length less than or equal to {meta['max']}")
        pattern = _pattern(meta.get("pattern"))
        if pattern is not None and not pattern.search(value):  # model patterns are not anchored (Smithy)
            problems.append(f"{where} satisfy regular expression pattern: {meta['pattern']}")
    elif shape.type_name in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in meta and value > meta["max"]:
            problems.append(f"{where} have value less than or equal to {meta['max']}")
    return problems


_PATTERNS: dict[str, Any] = {}


def _pattern(source: str | None) -> Any:
    """The compiled model pattern, or None (none given, or Java syntax Python lacks, such as \\p{L})."""
    import re

    if source is None:
        return None
    if source not in _PATTERNS:
        try:
            _PATTERNS[source] = re.compile(source)
        except re.error:
            _PATTERNS[source] = None
    return _PATTERNS[source]


def _shown(value: Any) -> str:
    text = str(value)
    return f"'{text[:60]}...'" if len(text) > 60 else f"'{text}'"


def describe(job: dict[str, Any]) -> dict[str, Any]:
    """DescribeTrainingJob's answer: the stored document minus our private fields (tags are `ListTags`'s)."""
    return {k: v for k, v in job.items() if not k.startswith("_")}


_SUMMARY_FIELDS = (
    "TrainingJobName",
    "TrainingJobArn",
    "CreationTime",
    "TrainingEndTime",
    "LastModifiedTime",
    "TrainingJobStatus",
    "SecondaryStatus",
    "WarmPoolStatus",
)


def summary(job: dict[str, Any]) -> dict[str, Any]:
    """A ListTrainingJobs entry (TrainingJobSummary)."""
    entry = {k: job[k] for k in _SUMMARY_FIELDS if k in job}
    plan = job.get("ResourceConfig", {}).get("TrainingPlanArn")
    return entry | ({"TrainingPlanArn": plan} if plan else {})


class LocalSageMaker:
    def __init__(
        self,
        state_dir: Path,
        s3_endpoint: str,
        logs_endpoint: str,
        region: str = "us-east-1",
        debugger_available: bool = True,
        cloudwatch_endpoint: str | None = None,
    ):
        self.store = JobStore(state_dir)
        # False plays an account opened after SageMaker Debugger closed to new customers (2026-07-30).
        self.debugger_available = debugger_available
        self.s3_endpoint, self.logs_endpoint, self.region = s3_endpoint, logs_endpoint, region
        # moto serves every service on one port: CloudWatch metrics are where the logs are unless told otherwise
        self.cloudwatch_endpoint = cloudwatch_endpoint or logs_endpoint
        self.runners: dict[str, subprocess.Popen] = {}
        self.recover()

    def recover(self) -> None:
        """Jobs left in progress by a previous server process lost their runner: they failed."""
        for name in self.store.names():
            job = self.store.read(name)
            if _unfinished(job) and not _alive(job.get("_runner_pid")):
                self.store.update(
                    name,
                    lambda j: _runner_lost(
                        j,
                        "InternalServerError: the local SageMaker server stopped while the job was running",
                        "the rule evaluation stopped with the server",
                    ),
                )
                log.warning("job %s was running when the server stopped: marked Failed", name)

    def reap_if_orphaned(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job, or its rule evaluations, still in progress although its runner process is gone: nothing will
        ever finish them, so they end now (the job Failed, the rules Error), as SageMaker ends a job whose
        instance died and a rule whose processing job crashed. Without this they stayed InProgress until the
        sensors timed out (hours), and a crashed rule evaluation could never be told from a slow one."""
        name, pid = job["TrainingJobName"], job.get("_runner_pid")
        if not pid or not _unfinished(job):  # no pid yet: CreateTrainingJob is still starting the runner
            return job
        runner = self.runners.get(name)
        alive = runner.poll() is None if runner is not None and runner.pid == pid else _alive(pid)
        if alive:
            return job
        code = runner.returncode if runner is not None and runner.pid == pid else None
        exit_text = f" (exit code {code})" if code is not None else ""
        log.warning("runner of job %s exited%s with work in progress: ending it", name, exit_text)
        return self.store.update(
            name,
            lambda j: _runner_lost(
                j,
                f"InternalServerError: the job's runner process exited unexpectedly{exit_text}",
                f"the rule evaluation process exited before reporting a result{exit_text}",
            ),
        )

    # --- operations -----------------------------------------------------------------------------------

    def create_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("CreateTrainingJob", params)
        refuse_managed_rules_if_unavailable(params, self.debugger_available)
        name = params["TrainingJobName"]
        if self.store.exists(name):
            raise ApiError(
                "ResourceInUse",
                f"Training job names must be unique within an AWS account and region, "
                f"and a training job with this name already exists ({self._arn(name)})",
            )
        _check_tags(params.get("Tags", []))
        now = time.time()
        job = {
            **{k: v for k, v in params.items() if k != "Tags"},
            "_Tags": params.get("Tags", []),
            "TrainingJobArn": self._arn(name),
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            "SecondaryStatusTransitions": [
                {"Status": "Starting", "StartTime": now, "StatusMessage": "Preparing the instances for training"}
            ],
            "CreationTime": now,
            "LastModifiedTime": now,
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "ProfilingStatus": "Disabled"
            if params.get("ProfilerConfig", {}).get("DisableProfiler", "ProfilerConfig" not in params)
            else "Enabled",
        }
        for key, statuses in (
            ("DebugRuleConfigurations", "DebugRuleEvaluationStatuses"),
            ("ProfilerRuleConfigurations", "ProfilerRuleEvaluationStatuses"),
        ):
            if params.get(key):
                job[statuses] = [
                    {
                        "RuleConfigurationName": rule["RuleConfigurationName"],
                        "RuleEvaluationJobArn": f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:processing-job/"
                        f"{name[:26]}-{rule['RuleConfigurationName'][:26]}",
                        "RuleEvaluationStatus": "InProgress",
                        "LastModifiedTime": now,
                    }
                    for rule in params[key]
                ]
        self.store.write(job)
        self.work_dir(name).mkdir(parents=True, exist_ok=True)
        with open(self.work_dir(name) / "runner.log", "ab") as runner_log:
            runner = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "inventory_pipeline.local_aws.runner.main",
                    "--state-dir",
                    str(self.store.root),
                    "--job",
                    name,
                    "--s3-endpoint",
                    self.s3_endpoint,
                    "--logs-endpoint",
                    self.logs_endpoint,
                    "--cloudwatch-endpoint",
                    self.cloudwatch_endpoint,
                    "--region",
                    self.region,
                ],
                stdout=runner_log,
                stderr=subprocess.STDOUT,
            )
        self.runners[name] = runner
        self.store.update(name, lambda j: j.update(_runner_pid=runner.pid))
        log.info("created training job %s (runner pid %d)", name, runner.pid)
        return {"TrainingJobArn": job["TrainingJobArn"]}

    def describe_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("DescribeTrainingJob", params)
        return describe(self._job(params["TrainingJobName"]))

    def stop_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("StopTrainingJob", params)
        job = self._job(params["TrainingJobName"])
        if job["TrainingJobStatus"] not in NON_TERMINAL:
            status = job["TrainingJobStatus"]
            raise ApiError("ValidationException", f"The request was rejected because the training job is {status}.")
        self.store.request_stop(job["TrainingJobName"])
        # Stopping at once, as SageMaker answers; the runner then sends SIGTERM, waits out the stop window,
        # uploads what the job saved and ends it Stopped.
        self.store.update(job["TrainingJobName"], mark_stopping)
        return {}

    def list_training_jobs(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("ListTrainingJobs", params)
        jobs = [self.reap_if_orphaned(self.store.read(n)) for n in self.store.names()]
        equals = (
            ("NameContains", lambda j, v: v in j["TrainingJobName"]),
            ("StatusEquals", lambda j, v: j["TrainingJobStatus"] == v),
            ("WarmPoolStatusEquals", lambda j, v: j.get("WarmPoolStatus", {}).get("Status") == v),
            ("TrainingPlanArnEquals", lambda j, v: j.get("ResourceConfig", {}).get("TrainingPlanArn") == v),
        )
        for field, matches in equals:
            if params.get(field):
                jobs = [j for j in jobs if matches(j, params[field])]
        for field, key, op in (
            ("CreationTimeAfter", "CreationTime", float.__gt__),
            ("CreationTimeBefore", "CreationTime", float.__lt__),
            ("LastModifiedTimeAfter", "LastModifiedTime", float.__gt__),
            ("LastModifiedTimeBefore", "LastModifiedTime", float.__lt__),
        ):
            if field in params:
                jobs = [j for j in jobs if op(float(j[key]), _epoch(params[field]))]
        sort_key = {"Name": "TrainingJobName", "Status": "TrainingJobStatus"}.get(params.get("SortBy"), "CreationTime")
        jobs.sort(key=lambda j: j[sort_key], reverse=params.get("SortOrder", "Ascending") == "Descending")
        start = int(params.get("NextToken") or 0)
        limit = int(params.get("MaxResults", 10))
        answer: dict[str, Any] = {"TrainingJobSummaries": [summary(j) for j in jobs[start : start + limit]]}
        if start + limit < len(jobs):
            answer["NextToken"] = str(start + limit)
        return answer

    def update_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        """The profiler's settings while the job runs (the runner applies them) and the warm pool's retention."""
        validate_input("UpdateTrainingJob", params)
        name = params["TrainingJobName"]
        job = self._job(name, missing="ResourceNotFound")
        for unsupported in ("ProfilerRuleConfigurations", "RemoteDebugConfig"):
            if unsupported in params:
                raise ApiError(
                    "ValidationException",
                    f"UpdateTrainingJob: {unsupported} is not supported by the local SageMaker server",
                )
        if not any(k in params for k in ("ProfilerConfig", "ResourceConfig")):
            raise ApiError(
                "ValidationException", "UpdateTrainingJob: nothing to update: give ProfilerConfig or ResourceConfig"
            )
        running = job["TrainingJobStatus"] == "InProgress"
        if "ProfilerConfig" in params and not running:
            raise ApiError(
                "ValidationException",
                f"The profiler of training job {name} can only be updated while "
                f"the job is InProgress; it is {job['TrainingJobStatus']}",
            )
        if "ResourceConfig" in params:
            if "KeepAlivePeriodInSeconds" not in job.get("ResourceConfig", {}):
                raise ApiError(
                    "ValidationException",
                    f"Training job {name} was not created with a warm pool "
                    "(KeepAlivePeriodInSeconds): there is no warm pool to update",
                )
            if not running and job.get("WarmPoolStatus", {}).get("Status") != "Available":
                raise ApiError(
                    "ValidationException",
                    f"The warm pool of training job {name} is not Available "
                    "(the local runner keeps no instances once a job ends)",
                )

        def change(j: dict[str, Any]) -> None:
            if "ProfilerConfig" in params:
                merged = {**j.get("ProfilerConfig", {}), **params["ProfilerConfig"]}
                j["ProfilerConfig"] = merged
                j["ProfilingStatus"] = "Disabled" if merged.get("DisableProfiler") else "Enabled"
            if "ResourceConfig" in params:
                j["ResourceConfig"]["KeepAlivePeriodInSeconds"] = params["ResourceConfig"]["KeepAlivePeriodInSeconds"]

        self.store.update(name, change)
        self.store.request_update(name)
        return {"TrainingJobArn": job["TrainingJobArn"]}

    def delete_training_job(self, params: dict[str, Any]) -> dict[str, Any]:
        """As SageMaker: only a job in a terminal state (and without an Available warm pool) can be deleted."""
        validate_input("DeleteTrainingJob", params)
        name = params["TrainingJobName"]
        job = self._job(name, missing="ResourceNotFound")
        if job["TrainingJobStatus"] in NON_TERMINAL:
            raise ApiError(
                "ResourceInUse",
                f"Training job {name} is {job['TrainingJobStatus']}: only a job that is "
                "Completed, Failed or Stopped can be deleted",
            )
        if _unfinished(job) or _alive(job.get("_runner_pid")):
            raise ApiError(
                "ResourceInUse",
                f"Training job {name} is still uploading its output or evaluating its "
                "rules; delete it once they have ended",
            )
        self.store.delete(name)
        self.runners.pop(name, None)
        log.info("deleted training job %s", name)
        return {}

    def add_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("AddTags", params)
        name = self._job_for_arn(params["ResourceArn"])
        new = {t["Key"]: t for t in params["Tags"]}
        _check_tags(list(new.values()))

        def change(job: dict[str, Any]) -> None:
            tags = {t["Key"]: t for t in job.get("_Tags", [])} | new  # a key given again takes the new value
            _check_tags(list(tags.values()))
            job["_Tags"] = list(tags.values())

        self.store.update(name, change)
        return {"Tags": params["Tags"]}

    def list_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("ListTags", params)
        tags = self.store.read(self._job_for_arn(params["ResourceArn"])).get("_Tags", [])
        start, limit = int(params.get("NextToken") or 0), int(params.get("MaxResults", 50))
        answer: dict[str, Any] = {"Tags": tags[start : start + limit]}
        if start + limit < len(tags):
            answer["NextToken"] = str(start + limit)
        return answer

    def delete_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        validate_input("DeleteTags", params)
        name = self._job_for_arn(params["ResourceArn"])
        keys = set(params["TagKeys"])
        self.store.update(name, lambda job: job.update(_Tags=[t for t in job.get("_Tags", []) if t["Key"] not in keys]))
        return {}

    # --- helpers --------------------------------------------------------------------------------------

    def work_dir(self, name: str) -> Path:
        return self.store.work_dir(name)

    def _arn(self, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:training-job/{name.lower()}"

    def _job(self, name: str, missing: str = "ValidationException") -> dict[str, Any]:
        if not self.store.exists(name):
            raise ApiError(missing, "Requested resource not found")
        return self.reap_if_orphaned(self.store.read(name))

    def _job_for_arn(self, arn: str) -> str:
        """The name of the training job an ARN names (ARNs carry the name in lower case, as SageMaker's do)."""
        resource = arn.split(":", 5)[-1]
        kind, _, wanted = resource.partition("/")
        if kind != "training-job":
            raise ApiError(
                "ValidationException",
                f"the local SageMaker server keeps tags for training jobs only, not for {kind!r} resources ({arn})",
            )
        for name in self.store.names():
            if name.lower() == wanted and self._arn(name) == arn:
                return name
        raise ApiError("ValidationException", f"Resource {arn} was not found")


def refuse_managed_rules_if_unavailable(params: dict[str, Any], debugger_available: bool) -> None:
    """An account without SageMaker Debugger is refused managed rule evaluations, AWS-shaped."""
    asked = [key for key in ("DebugRuleConfigurations", "ProfilerRuleConfigurations") if params.get(key)]
    if asked and not debugger_available:
        raise ApiError(
            "ValidationException",
            f"SageMaker Debugger is not available to this account: {' and '.join(asked)} cannot be used. "
            "Remove the rule configurations (Debugger is closed to new customers since 2026-07-30).",
        )


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _check_tags(tags: list[dict[str, Any]]) -> None:
    if len(tags) > 50:
        raise ApiError(
            "ValidationException", f"a resource can have at most 50 tags; this request would give it {len(tags)}"
        )
    reserved = sorted(t["Key"] for t in tags if t["Key"].lower().startswith("aws:"))
    if reserved:
        raise ApiError("ValidationException", f"Tag keys starting with 'aws:' are reserved for AWS use: {reserved}")


def mark_stopping(job: dict[str, Any]) -> None:
    """TrainingJobStatus and SecondaryStatus `Stopping` (once), as DescribeTrainingJob shows a job being stopped."""
    if job.get("TrainingJobStatus") != "InProgress":
        return
    now = time.time()
    job["TrainingJobStatus"] = job["SecondaryStatus"] = "Stopping"
    transitions = job.setdefault("SecondaryStatusTransitions", [])
    if transitions and "EndTime" not in transitions[-1]:
        transitions[-1]["EndTime"] = now
    transitions.append({"Status": "Stopping", "StartTime": now, "StatusMessage": "Stopping the training job"})


def _unfinished(job: dict[str, Any]) -> bool:
    statuses = job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", [])
    return job.get("TrainingJobStatus") in NON_TERMINAL or any(
        s["RuleEvaluationStatus"] in NON_TERMINAL for s in statuses
    )


def _runner_lost(job: dict[str, Any], job_reason: str, rule_reason: str) -> None:
    """End what a dead runner left unfinished: the job Failed (if it was still running), rules Error."""
    now = time.time()
    if job.get("TrainingJobStatus") in NON_TERMINAL:
        job["TrainingJobStatus"] = "Failed"
        job["FailureReason"] = job_reason
        job["SecondaryStatus"] = "Failed"
        transitions = job.setdefault("SecondaryStatusTransitions", [])
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = now
        transitions.append({"Status": "Failed", "StartTime": now, "EndTime": now, "StatusMessage": job_reason})
        job["TrainingEndTime"] = now
    for key in ("DebugRuleEvaluationStatuses", "ProfilerRuleEvaluationStatuses"):
        for status in job.get(key, []):
            if status["RuleEvaluationStatus"] in NON_TERMINAL:
                status.update(RuleEvaluationStatus="Error", LastModifiedTime=now, StatusDetails=rule_reason)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


OPERATIONS = {
    "CreateTrainingJob": LocalSageMaker.create_training_job,
    "DescribeTrainingJob": LocalSageMaker.describe_training_job,
    "StopTrainingJob": LocalSageMaker.stop_training_job,
    "ListTrainingJobs": LocalSageMaker.list_training_jobs,
    "UpdateTrainingJob": LocalSageMaker.update_training_job,
    "DeleteTrainingJob": LocalSageMaker.delete_training_job,
    "AddTags": LocalSageMaker.add_tags,
    "ListTags": LocalSageMaker.list_tags,
    "DeleteTags": LocalSageMaker.delete_tags,
}


def create_app(backend: LocalSageMaker) -> Flask:
    app = Flask("local-sagemaker")

    @app.get("/ping")
    def ping() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/jobs/<name>")
    def job_page(name: str) -> Response:
        """What the task's extra link opens on the local stack: the job as DescribeTrainingJob shows it."""
        try:
            job = describe(backend._job(name))
        except ApiError as exc:
            return Response(exc.message, status=404, mimetype="text/plain")
        return Response(json.dumps(job, indent=2, default=str), mimetype="application/json")

    @app.post("/")
    def dispatch() -> Response:
        target = request.headers.get("X-Amz-Target", "")
        operation = target.split(".", 1)[-1]
        try:
            if not target.startswith("SageMaker.") or operation not in OPERATIONS:
                raise ApiError(
                    "UnknownOperationException",
                    f"operation {operation or target!r} is not supported by the local SageMaker server",
                )
            params = json.loads(request.get_data() or b"{}")
            body = OPERATIONS[operation](backend, params)
            return Response(json.dumps(body, default=str), status=200, mimetype=JSON_11)
        except ApiError as exc:
            payload = {"__type": exc.code, "message": exc.message}
            return Response(json.dumps(payload), status=exc.status, mimetype=JSON_11)
        except Exception as exc:  # answer like AWS does, and keep the server up
            log.exception("internal error in %s", operation)
            payload = {"__type": "InternalFailure", "message": f"{type(exc).__name__}: {exc}"}
            return Response(json.dumps(payload), status=500, mimetype=JSON_11)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="local SageMaker training-job API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--logs-endpoint", required=True)
    parser.add_argument("--cloudwatch-endpoint", default=None, help="CloudWatch metrics (default: the logs endpoint)")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument(
        "--no-debugger",
        action="store_true",
        default=os.environ.get("INVENTORY_LOCAL_SAGEMAKER_DEBUGGER", "").lower() == "unavailable",
        help="answer CreateTrainingJob with rule configurations as AWS does for an account without Debugger",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = LocalSageMaker(
        args.state_dir,
        args.s3_endpoint,
        args.logs_endpoint,
        args.region,
        debugger_available=not args.no_debugger,
        cloudwatch_endpoint=args.cloudwatch_endpoint,
    )
    from werkzeug.serving import run_simple

    # Before answering: otherwise the first CreateTrainingJob waits ~0.5 s for the model to load, inside the
    # job's own time. The stack starts its servers together, and MLflow takes longer than this.
    service_model("sagemaker")
    run_simple(args.host, args.port, create_app(backend), threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
