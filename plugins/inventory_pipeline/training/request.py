"""The CreateTrainingJob request: one function from settings to the dict the provider's operator sends.

Image URIs and rule configurations come from the sagemaker SDK (not typed by hand); MetricDefinitions come
from the training code's own `metric_definitions.json`; the result is validated against botocore's service
model before anything is sent, so a bad setting fails here with the field named, not in a paid job.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inventory_pipeline.rules.calibration import SCHEDULE_ENV, Schedule
from inventory_pipeline.rules.sdk_rules import rule_objects
from inventory_pipeline.settings import Settings
from inventory_pipeline.training.naming import validate_job_name
from inventory_pipeline.training.ownership import ownership_tags
from inventory_pipeline.training.package import TRAINING_CODE_DIR

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

METRIC_DEFINITIONS_FILE = TRAINING_CODE_DIR / "metric_definitions.json"
ENTRY_POINT = "train.py"
CHANNELS = ("train", "valid", "test")
# Besides the collections the rules ask for, the report plots the losses (and Overfit/Overtraining read them).
_EXTRA_COLLECTIONS = ("losses",)
# Where SageMaker keeps a job's checkpoints on the instance (CheckpointConfig.LocalPath's default), synced to S3.
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"


class RequestError(ValueError):
    """The request would be rejected by SageMaker; the message names the field."""


@dataclass(frozen=True)
class JobPaths:
    """Where SageMaker puts a job's outputs, given the request's S3OutputPath (it appends `<job>/...`)."""

    output_path: str  # s3://bucket/<root>training-jobs
    job_name: str

    @property
    def job_prefix(self) -> str:
        return f"{self.output_path.rstrip('/')}/{self.job_name}"

    @property
    def model_artifact(self) -> str:
        return f"{self.job_prefix}/output/model.tar.gz"

    @property
    def output_artifact(self) -> str:
        return f"{self.job_prefix}/output/output.tar.gz"

    @property
    def debug_output(self) -> str:
        return f"{self.job_prefix}/debug-output"

    @property
    def profiler_output(self) -> str:
        return f"{self.job_prefix}/profiler-output"

    @property
    def checkpoints(self) -> str:
        return f"{self.job_prefix}/checkpoints"

    def rule_output(self, rule_name: str) -> str:
        return f"{self.job_prefix}/rule-output/{rule_name}"


def output_path(settings: Settings) -> str:
    return f"s3://{settings.bucket}/{settings.root}training-jobs"


def metric_definitions(path: Path = METRIC_DEFINITIONS_FILE) -> list[dict[str, str]]:
    """The metric log lines train.py prints, as SageMaker MetricDefinitions (documented in one file)."""
    definitions = json.loads(Path(path).read_text())
    if not isinstance(definitions, list) or not all({"Name", "Regex"} <= set(d) for d in definitions):
        raise RequestError(f"{path} must be a list of {{'Name', 'Regex'}} objects")
    return [{"Name": d["Name"], "Regex": d["Regex"]} for d in definitions]


def training_image_uri(settings: Settings) -> str:
    try:
        return _framework_image(settings.region, settings.framework_version, settings.instance_type)
    except ValueError as exc:
        raise RequestError(f"invalid setting 'framework_version' / 'instance_type': {exc}") from exc


@functools.cache  # the SDK re-reads botocore's endpoints file on every lookup
def _framework_image(region: str, framework_version: str, instance_type: str) -> str:
    from sagemaker.core import image_uris

    return image_uris.retrieve(
        "pytorch",
        region=region,
        version=framework_version,
        instance_type=instance_type,
        image_scope="training",
        py_version=_py_version(framework_version),
    )


def _py_version(framework_version: str) -> str:
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework("pytorch")["training"]
    full = config.get("version_aliases", {}).get(framework_version, framework_version)
    versions = config["versions"].get(full)
    if versions is None:
        known = ", ".join(sorted(config.get("version_aliases", {})))
        raise RequestError(f"invalid setting 'framework_version': {framework_version!r}; known: {known}")
    return sorted(versions["py_versions"], key=lambda v: int(v[2:] or 0))[-1]


def debug_hook_config(settings: Settings, rules: list[Any]) -> dict[str, Any]:
    """The hook configuration the SDK's estimator sends: save_interval 1 for train and eval (the study's
    setting, which the losses follow) plus each rule's collections with the rule's own parameters.

    The rules' collections keep their `save_interval=500` as on SageMaker (a collection's interval overrides
    the hook's): saving every ReLU input and gradient at every step writes gigabytes for a small job
    (1.8 GB for 41 steps of small_cnn here) and makes the job and its rules many times slower.
    """
    collections: dict[str, dict[str, str]] = {}
    for rule in rules:
        for collection in rule.collection_configs or []:
            collections.setdefault(collection.name, {}).update(collection.parameters or {})
    for name in _EXTRA_COLLECTIONS:
        collections.setdefault(name, {})
    config = {
        "S3OutputPath": output_path(settings),
        "HookParameters": {"train.save_interval": "1", "eval.save_interval": "1"},
        "CollectionConfigurations": [
            {"CollectionName": name, **({"CollectionParameters": params} if params else {})}
            for name, params in sorted(collections.items())
        ],
    }
    return config


def channel_data_type(uri: str) -> str:
    """A dataset version's channel is a SageMaker ManifestFile (`<split>.manifest`, see dataset.split); any other
    URI (a prefix such as the pretrained channel's) is an S3Prefix."""
    return "ManifestFile" if uri.endswith(".manifest") else "S3Prefix"


def build_training_request(
    settings: Settings,
    job_name: str,
    channels: dict[str, str],
    sourcedir_uri: str,
    run_id: str = "",
    champion_model_uri: str = "",
    dag_id: str = "",
    counts: dict[str, dict[str, int]] | None = None,
    population_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The full CreateTrainingJob request for one run (validated; raises RequestError naming the field).

    `champion_model_uri` (the current champion's model.tar.gz) becomes the `champion` channel: the job scores
    that model on this run's test images too, so the gate compares two numbers measured on the same images.
    `rules_mode="auto"` builds the managed request; the train task falls back to self_hosted when SageMaker
    refuses managed rules for the account (`managed_rules_refused`). `counts` (the dataset version's images per
    split and count) size the debugger rules' parameters to the schedule; without them they keep SageMaker's
    defaults for the step-based ones. `population_counts` (the selection's `source_counts`: counts 1..5 in the
    source before per_class_limit) become the `population-counts` hyperparameter, the class mix the job corrects
    its answers to; without them the job uses ABID's population mix (training_code/class_prior.py)."""
    validate_job_name(job_name)
    missing = [c for c in CHANNELS if not channels.get(c, "").startswith("s3://")]
    if missing:
        raise RequestError(f"invalid channels: {missing} need an s3:// URI")
    if not sourcedir_uri.startswith("s3://"):
        raise RequestError("invalid 'sourcedir_uri': must be an s3:// URI")

    out = output_path(settings)
    hyperparameters = {
        "epochs": settings.epochs,
        "batch-size": settings.batch_size,
        "lr": settings.lr,
        "model": settings.model,
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": sourcedir_uri,
        "sagemaker_region": settings.region,
        "sagemaker_container_log_level": 20,
    }
    population = population_hyperparameter(population_counts)
    if population:
        hyperparameters["population-counts"] = population
    input_channels = {**{c: channels[c] for c in CHANNELS}}
    if settings.pretrained_s3_uri:
        input_channels["pretrained"] = settings.pretrained_s3_uri
    if champion_model_uri:
        if not champion_model_uri.startswith("s3://"):
            raise RequestError("invalid 'champion_model_uri': must be an s3:// URI")
        input_channels["champion"] = champion_model_uri
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": {
            "TrainingImage": training_image_uri(settings),
            "TrainingInputMode": "File",
            "MetricDefinitions": metric_definitions(),
            "EnableSageMakerMetricsTimeSeries": True,
        },
        "RoleArn": settings.role_arn,
        # The SDK JSON-encodes every value; the training toolkit decodes them before building the CLI args.
        "HyperParameters": {k: json.dumps(v) for k, v in hyperparameters.items()},
        "InputDataConfig": [
            {
                "ChannelName": name,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": channel_data_type(uri),
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": "File",
            }
            for name, uri in input_channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": out},
        "ResourceConfig": {
            "InstanceType": settings.instance_type,
            "InstanceCount": settings.instance_count,
            "VolumeSizeInGB": settings.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_s},
        **spot_training(settings, JobPaths(out, job_name)),
        "EnableNetworkIsolation": settings.enable_network_isolation,
        "EnableInterContainerTrafficEncryption": settings.inter_container_encryption,
        "Environment": {"INVENTORY_RULES_MODE": "self_hosted" if settings.rules_mode == "self_hosted" else "managed"},
        "Tags": [
            {"Key": "project", "Value": "inventory-retraining"},
            *ownership_tags(settings.effective_deployment_id, dag_id, run_id),
        ],
    }
    if settings.use_spot:
        request["Environment"]["INVENTORY_CHECKPOINT_DIR"] = CHECKPOINT_LOCAL_PATH
    if settings.enable_network_isolation:  # no torchvision download can work: weights come from `pretrained`
        request["Environment"]["INVENTORY_OFFLINE"] = "1"
    if settings.output_kms_key_id:
        request["OutputDataConfig"]["KmsKeyId"] = settings.output_kms_key_id
    if settings.volume_kms_key_id:
        request["ResourceConfig"]["VolumeKmsKeyId"] = settings.volume_kms_key_id
    if settings.subnets:
        request["VpcConfig"] = {
            "Subnets": list(settings.subnets),
            "SecurityGroupIds": list(settings.security_group_ids),
        }

    schedule = rule_schedule(settings, counts)
    rules, profiler_rules = rule_objects(settings.region, schedule)
    hook = debug_hook_config(settings, rules)
    if settings.rules_mode != "self_hosted":
        request["DebugHookConfig"] = hook
        request["DebugRuleConfigurations"] = [r.to_debugger_rule_config_dict() for r in rules]
        request["ProfilerConfig"] = {"S3OutputPath": out, "ProfilingIntervalInMilliseconds": 500}
        request["ProfilerRuleConfigurations"] = [r.to_profiler_rule_config_dict() for r in profiler_rules]
    else:
        # self_hosted: no Debugger configuration reaches SageMaker (accounts opened after 2026-07-30 cannot
        # use it); the training code saves the same tensors and system metrics itself, to the same S3
        # locations, and our rule engine evaluates them after the job. Environment values are capped at 512
        # characters, so the hook configuration travels as a few short variables.
        paths = JobPaths(out, job_name)
        request["Environment"].update(
            {
                "INVENTORY_DEBUG_S3_OUTPUT": paths.debug_output,
                "INVENTORY_DEBUG_SAVE_INTERVAL": "1",
                "INVENTORY_DEBUG_COLLECTIONS": json.dumps(
                    {c["CollectionName"]: c.get("CollectionParameters", {}) for c in hook["CollectionConfigurations"]},
                    separators=(",", ":"),
                ),
                "INVENTORY_PROFILER_S3_OUTPUT": paths.profiler_output,
                "INVENTORY_PROFILER_INTERVAL_MS": "500",
                **({SCHEDULE_ENV: schedule.encode()} if schedule else {}),
            }
        )
    return validate_request(request)


def population_hyperparameter(counts: dict[str, int] | None) -> str | None:
    """`n1,n2,n3,n4,n5` for train.py's --population-counts; None when unknown or a count is absent from the
    source (no positive prior for it: the job falls back to ABID's mix rather than fail)."""
    values = [int((counts or {}).get(str(c), 0) or 0) for c in range(1, 6)]
    return ",".join(map(str, values)) if all(v > 0 for v in values) else None


def rule_schedule(settings: Settings, counts: dict[str, dict[str, int]] | None) -> Schedule | None:
    if not counts or "train" not in counts or "valid" not in counts:
        return None
    return Schedule.for_data(
        settings.epochs,
        settings.batch_size,
        settings.instance_count,
        sum(counts["train"].values()),
        sum(counts["valid"].values()),
    )


def spot_training(settings: Settings, paths: JobPaths) -> dict[str, Any]:
    """Managed Spot: the flag, MaxWaitTimeInSeconds (training plus waiting for capacity) and where the job's
    checkpoints live, under the job's own S3 prefix so a restart restores this job's and no other's."""
    if not settings.use_spot:
        return {}
    return {
        "EnableManagedSpotTraining": True,
        "StoppingCondition": {
            "MaxRuntimeInSeconds": settings.max_runtime_s,
            "MaxWaitTimeInSeconds": settings.max_wait_s,
        },
        "CheckpointConfig": {"S3Uri": paths.checkpoints, "LocalPath": CHECKPOINT_LOCAL_PATH},
    }


def validate_request(request: dict[str, Any]) -> dict[str, Any]:
    """Check the request against botocore's SageMaker model (types, enums, lengths, required fields)."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters

    from inventory_pipeline.aws.clients import service_model

    model = service_model("sagemaker")
    # botocore's validator checks types and required fields but not enums: check the instance type here.
    instance_type = request.get("ResourceConfig", {}).get("InstanceType")
    allowed = model.shape_for("TrainingInstanceType").enum
    if instance_type is not None and instance_type not in allowed:
        raise RequestError(
            f"invalid setting 'instance_type': {instance_type!r} is not a SageMaker training instance type "
            f"(e.g. {', '.join(t for t in allowed if t.startswith('ml.c5.'))})"
        )
    data_types = model.shape_for("S3DataType").enum
    for channel in request.get("InputDataConfig", []):
        data_type = channel.get("DataSource", {}).get("S3DataSource", {}).get("S3DataType")
        if data_type is not None and data_type not in data_types:
            raise RequestError(
                f"channel {channel.get('ChannelName')!r}: S3DataType {data_type!r} is not one of "
                f"{', '.join(data_types)}"
            )
    try:
        validate_parameters(request, model.operation_model("CreateTrainingJob").input_shape)
    except ParamValidationError as exc:
        raise RequestError(f"CreateTrainingJob request is invalid: {exc.kwargs.get('report', exc)}") from exc
    return request


def rule_names(request: dict[str, Any]) -> dict[str, list[str]]:
    """The rule configuration names a request asks SageMaker to evaluate (empty lists in self_hosted mode)."""
    return {
        "debug": [r["RuleConfigurationName"] for r in request.get("DebugRuleConfigurations", [])],
        "profiler": [r["RuleConfigurationName"] for r in request.get("ProfilerRuleConfigurations", [])],
    }
