"""One typed, validated settings object built from the DAG's Params plus the deployment's environment.

Params are what a person chooses per run (the UI form); the environment (or Airflow Variables of the same
names) holds what belongs to the deployment: the project bucket, the execution role, the network, the KMS
keys. Which fields are Params is decided in one place, the DAG's Params dict: the DAG passes its declared
names as `declared`, and nothing else a run carries is read. A run conf with any other key is refused
(`refuse_undeclared`), so whoever may trigger the DAG cannot redirect the deployment. Every invalid value is
reported with the name of the field it came from.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import InitVar, asdict, dataclass, field
from typing import Any

from inventory_pipeline.guardrails import Guardrails, RunShape
from inventory_pipeline.rules.applicability import DEBUGGER_RULES, PROFILER_RULES, why_not_evaluable

# When a would-be promotion waits for a person (GatePolicy.approval_when): the gain is better than the margins
# but not significant; a non-blocking rule warned; every promotion.
APPROVAL_CONDITIONS = ("not_significant", "rule_warned", "always")


@dataclass(frozen=True)
class GatePolicy:
    """What a candidate must show to be promoted (Settings holds the deployment's values; see the README)."""

    min_improvement: float = 0.0  # more than this share of the test images right than the champion
    min_relative_improvement: float = 0.0  # and more than this share of the champion's right answers
    significance: float = 0.05  # the paired test's level: p below it, or the gain may be chance
    baseline_margin: float = 0.0  # more than this share of the test images right than the trivial answer
    max_class_drop: float = 0.10  # a count whose recall falls by more than this against the champion blocks it
    min_class_images: int = 10  # ... when the test images hold at least this many of that count
    approval_when: tuple[str, ...] = ("not_significant",)  # see APPROVAL_CONDITIONS; () = never ask


KNOWN_MODELS = ("resnet50", "resnet18", "efficientnet_lite0", "small_cnn")
RULES_MODES = ("auto", "managed", "self_hosted")
DATA_RULES = ("ClassMixShift",)  # the dataset's class mix moved beyond class_mix_threshold (data report)
KNOWN_RULES = DEBUGGER_RULES + PROFILER_RULES + DATA_RULES
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_INSTANCE_RE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_SECURITY_GROUP_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
# A KMS key id, key ARN, alias name or alias ARN (what SageMaker's KmsKeyId accepts).
_KMS_RE = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]+"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[0-9a-f-]+|key/mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]+))$"
)


class RunConfError(ValueError):
    """A run's conf carries keys that are not declared Params (e.g. a deployment setting)."""

    def __init__(self, keys: list[str], declared: Iterable[str]):
        super().__init__(
            f"run conf has undeclared key(s) {', '.join(keys)}: only the DAG's Params may be set per run "
            f"({', '.join(sorted(declared))}); deployment settings (bucket, role, network, KMS, ...) come from "
            "the environment or Airflow Variables (see the README's settings table)"
        )
        self.keys = keys


def refuse_undeclared(conf: Mapping[str, Any] | None, declared: Iterable[str]) -> None:
    """Raise RunConfError naming every key of `conf` that is not a declared Param."""
    declared = frozenset(declared)
    extra = sorted(set(conf or {}) - declared)
    if extra:
        raise RunConfError(extra, declared)


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the field."""

    def __init__(self, field_name: str, problem: str):
        super().__init__(f"invalid setting {field_name!r}: {problem}")
        self.field_name = field_name


@dataclass(frozen=True)
class Settings:
    # where the data comes from
    source_bucket: str = "aft-vbi-pds"
    source_prefix: str = ""
    file_list: str = ""
    # Where a run's file list may come from (deployment): s3:// in the source bucket or one of these buckets; a
    # local path only where the deployment allows it (the embedded stack does), never on a shared worker.
    file_list_buckets: tuple[str, ...] = ()
    allow_local_file_list: bool = False
    per_class_limit: int = 0  # 0 = no limit
    # where it goes (deployment)
    bucket: str = "inventory-retraining"
    prefix: str = "abid"
    aws_conn_id: str = "aws_default"
    region: str = "us-east-1"  # the train task sets it from the aws_conn_id connection (one source of truth)
    copy_workers: int = 64  # parallel S3 requests: a copy waits on a round trip, not on this machine
    reject_threshold: float = 0.05
    class_mix_threshold: float = 0.10  # a split's class share moving more than this is flagged (ClassMixShift)
    gc_keep_versions: int = 4  # storage gc keeps this many newest dataset versions (0: the weekly gc is off)
    # A run this soon after a full source listing, with the same file list, reuses that listing's published
    # selection (dataset/source_check.py); 0 lists the source every run.
    source_recheck_minutes: int = 60
    # training
    instance_type: str = "ml.c5.xlarge"
    instance_count: int = 2
    epochs: int = 3
    batch_size: int = 32
    lr: float = 0.001
    model: str = "resnet50"
    role_arn: str = "arn:aws:iam::000000000000:role/service-role/inventory-retraining-sagemaker"
    max_runtime_s: int = 3600
    # Managed Spot: SageMaker may interrupt the job and restart it from its checkpoints. max_wait_s bounds
    # training plus the time spent waiting for Spot capacity. The weekly default, 4 x the default runtime (4 h),
    # lets a job that needs the full hour survive several interruptions and a wait for capacity, and still
    # ends (MaxWaitTimeExceeded) long before the next week's run; SageMaker requires max_wait_s >= max_runtime_s.
    use_spot: bool = False
    max_wait_s: int = 4 * 3600
    wheelhouse: str = ""  # local dir of wheels for training_code/requirements.txt, shipped in sourcedir.tar.gz
    deployment_id: str = ""  # tags each job; '' = "<bucket>/<prefix>" (what the deployment's runs share)
    # Killing (or clearing) wait_for_training stops the job it waited for. Off by default: clearing the wait to
    # re-attach would stop the job; the stop_unwatched_job teardown stops a job no wait watches any more.
    stop_job_when_wait_killed: bool = False
    framework_version: str = "2.1"  # the SageMaker PyTorch training container
    volume_size_gb: int = 30
    pretrained_s3_uri: str = ""  # optional `pretrained` channel (a checkpoint file; no download in the job)
    # network and data protection (all optional; they reach the request unchanged)
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    enable_network_isolation: bool = False
    inter_container_encryption: bool = False
    output_kms_key_id: str = ""
    volume_kms_key_id: str = ""
    # rules and promotion
    rules_mode: str = "auto"  # auto: managed where the account has Debugger, self_hosted otherwise
    fail_on_rules: tuple[str, ...] = ()
    min_improvement: float = 0.0  # share of the test images the candidate must answer right beyond the champion
    # The rest of the gate's rule (decisions.GatePolicy) belongs to the deployment, not to a run.
    min_relative_improvement: float = 0.0
    significance: float = 0.05
    baseline_margin: float = 0.0
    max_class_drop: float = 0.10
    min_class_images: int = 10
    # When a would-be promotion waits for a person (decisions.APPROVAL_CONDITIONS, or "never"), and for how long
    # before the default answer, "do not promote", applies. Default: only a gain the paired test cannot call
    # significant (README, "The decision rule").
    approval_when: tuple[str, ...] = ("not_significant",)
    approval_timeout_s: int = 86400
    force_retrain: bool = False  # train even when data, code and Params equal the champion's lineage
    # Deployment guardrails (guardrails.py): environment or Variables only, never a Param, so no run crosses them.
    allowed_instance_types: tuple[str, ...] = ()  # () = the types the shipped price table knows
    max_instance_count: int = 4
    runtime_limit_s: int = 86400
    wait_limit_s: int = 2 * 86400
    max_run_cost_usd: float = 100.0  # 0 = no cost limit
    required_blocking_rules: tuple[str, ...] = ()  # a run's fail_on_rules may add to these, never remove them
    # tracking, registry, notifications (deployment)
    tracking_uri: str = ""  # an MLflow URI or a SageMaker managed MLflow tracking server ARN
    registered_model: str = "inventory-counting"
    sns_topic_arn: str = ""  # where decisions are announced ("" = nobody is told)
    report_base_url: str = ""  # e.g. the Airflow UI's address, for links in notifications
    extra: dict[str, Any] = field(default_factory=dict)
    # False only to record the decision of a run already refused (decision.facts.gather): nothing is started from it,
    # and a deployment's limits below the settings' defaults must not stop that record.
    enforce_guardrails: InitVar[bool] = True

    def __post_init__(self, enforce_guardrails: bool = True) -> None:
        _require(bool(_BUCKET_RE.match(self.source_bucket)), "source_bucket", "not a valid S3 bucket name")
        _require(bool(_BUCKET_RE.match(self.bucket)), "bucket", "not a valid S3 bucket name")
        _require(not self.prefix.startswith("/"), "prefix", "must not start with '/'")
        _require(not self.file_list or self.file_list_problem() is None, "file_list", self.file_list_problem() or "")
        _require(self.per_class_limit >= 0, "per_class_limit", "must be >= 0 (0 means no limit)")
        _require(1 <= self.copy_workers <= 256, "copy_workers", "must be between 1 and 256")
        _require(0.0 <= self.reject_threshold <= 1.0, "reject_threshold", "must be a fraction in [0, 1]")
        _require(0.0 < self.class_mix_threshold <= 1.0, "class_mix_threshold", "must be a fraction in (0, 1]")
        _require(self.gc_keep_versions >= 0, "gc_keep_versions", "must be >= 0 (0 turns the weekly gc off)")
        # at most a day: the weekly run always sees the source as it is
        _require(
            0 <= self.source_recheck_minutes <= 24 * 60,
            "source_recheck_minutes",
            "must be 0..1440 (0 lists the source every run)",
        )
        _require(bool(_INSTANCE_RE.match(self.instance_type)), "instance_type", "expected e.g. ml.c5.xlarge")
        _require(1 <= self.instance_count <= 20, "instance_count", "must be between 1 and 20")
        _require(1 <= self.epochs <= 1000, "epochs", "must be between 1 and 1000")
        _require(1 <= self.batch_size <= 4096, "batch_size", "must be between 1 and 4096")
        _require(0.0 < self.lr < 1.0, "lr", "must be in (0, 1)")
        _require(self.model in KNOWN_MODELS, "model", f"must be one of {', '.join(KNOWN_MODELS)}")
        _require(self.rules_mode in RULES_MODES, "rules_mode", f"must be one of {', '.join(RULES_MODES)}")
        unknown = sorted(set(self.fail_on_rules) - set(KNOWN_RULES))
        _require(not unknown, "fail_on_rules", f"unknown rule(s) {unknown}; known: {', '.join(KNOWN_RULES)}")
        _require(0.0 <= self.min_improvement < 1.0, "min_improvement", "must be a fraction in [0, 1)")
        _require(self.min_relative_improvement >= 0.0, "min_relative_improvement", "must be >= 0")
        # above 0.5 a one-sided test would call a coin flip significant
        _require(0.0 < self.significance <= 0.5, "significance", "must be in (0, 0.5]")
        _require(0.0 <= self.baseline_margin < 1.0, "baseline_margin", "must be a fraction in [0, 1)")
        _require(0.0 <= self.max_class_drop <= 1.0, "max_class_drop", "must be a fraction in [0, 1]")
        _require(self.min_class_images >= 1, "min_class_images", "must be >= 1")
        unknown = sorted(set(self.approval_when) - {"never", *APPROVAL_CONDITIONS})
        _require(
            not unknown,
            "approval_when",
            f"unknown condition(s) {unknown}; known: never, {', '.join(APPROVAL_CONDITIONS)} (comma-separated)",
        )
        _require(
            "never" not in self.approval_when or len(self.approval_when) == 1,
            "approval_when",
            "'never' cannot be combined with other conditions",
        )
        _require(10 <= self.approval_timeout_s <= 28 * 86400, "approval_timeout_s", "must be between 10 s and 28 days")
        _require(self.max_instance_count >= 1, "max_instance_count", "must be >= 1")
        _require(self.max_run_cost_usd >= 0, "max_run_cost_usd", "must be >= 0 (0: no cost limit)")
        unknown = sorted(set(self.required_blocking_rules) - set(KNOWN_RULES))
        _require(not unknown, "required_blocking_rules", f"unknown rule(s) {unknown}; known: {', '.join(KNOWN_RULES)}")
        run = RunShape(
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            max_runtime_s=self.max_runtime_s,
            use_spot=self.use_spot,
            max_wait_s=self.max_wait_s,
            fail_on_rules=self.fail_on_rules,
        )
        for setting, why in self.guardrails.problems(run) if enforce_guardrails else []:  # no Param crosses them
            _require(False, setting, why)
        for rule in self.fail_on_rules:  # refuse before any paid work a blocking rule that can never clear
            why = why_not_evaluable(rule, self.instance_type, self.rules_mode)
            _require(
                why is None,
                "fail_on_rules",
                f"{why}: it would block every run; remove it from "
                "fail_on_rules or choose an instance and rules mode that can measure it",
            )
        _require(
            bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", self.registered_model)),
            "registered_model",
            "letters, digits, '.', '_' and '-' only",
        )
        _require(
            not self.sns_topic_arn or self.sns_topic_arn.startswith("arn:"), "sns_topic_arn", "must be an SNS topic ARN"
        )
        _require(60 <= self.max_runtime_s <= 28 * 86400, "max_runtime_s", "must be between 60 s and 28 days")
        _require(
            not self.use_spot or self.max_wait_s >= self.max_runtime_s,
            "max_wait_s",
            f"must be >= max_runtime_s ({self.max_runtime_s}) for Spot training (SageMaker refuses less)",
        )
        _require(self.max_wait_s <= 28 * 86400 + 3600, "max_wait_s", "must be at most 28 days")
        _require(
            not (self.enable_network_isolation and self.rules_mode == "self_hosted"),
            "rules_mode",
            "self_hosted rules write tensors and system metrics to S3 from inside the job, which network "
            "isolation forbids: use managed (or auto) rules with network_isolation",
        )
        _require(len(self.effective_deployment_id) <= 256, "deployment_id", "must be at most 256 characters")
        _require(
            bool(re.match(r"^[\w.:/=+\-@ ]*$", self.effective_deployment_id)),
            "deployment_id",
            "may hold letters, digits, spaces and _ . : / = + - @ only (a SageMaker tag value)",
        )
        _require(
            bool(re.match(r"^\d+\.\d+(\.\d+)?$", self.framework_version)), "framework_version", "expected e.g. 2.1"
        )
        _require(1 <= self.volume_size_gb <= 16384, "volume_size_gb", "must be between 1 and 16384")
        _require(
            bool(self.subnets) == bool(self.security_group_ids),
            "subnets",
            "VPC mode needs both subnets and security_group_ids",
        )
        _require(len(self.subnets) <= 16, "subnets", "SageMaker accepts at most 16 subnets")
        _require(len(self.security_group_ids) <= 5, "security_group_ids", "SageMaker accepts at most 5 groups")
        bad = [s for s in self.subnets if not _SUBNET_RE.match(s)]
        _require(not bad, "subnets", f"{bad} are not subnet ids (expected e.g. subnet-0a1b2c3d)")
        bad = [g for g in self.security_group_ids if not _SECURITY_GROUP_RE.match(g)]
        _require(not bad, "security_group_ids", f"{bad} are not security group ids (expected e.g. sg-0a1b2c3d)")
        for name in ("output_kms_key_id", "volume_kms_key_id"):
            value = getattr(self, name)
            _require(not value or bool(_KMS_RE.match(value)), name, "expected a KMS key id, key ARN or alias")
        pretrained_ok = not self.pretrained_s3_uri or self.pretrained_s3_uri.startswith("s3://")
        _require(pretrained_ok, "pretrained_s3_uri", "must be an s3:// URI")

    def file_list_problem(self) -> str | None:
        """Why this deployment does not read the run's file list from there (None: it may)."""
        if self.file_list.startswith("s3://"):
            bucket = self.file_list[5:].split("/", 1)[0]
            allowed = (self.source_bucket, *self.file_list_buckets)
            if bucket in allowed:
                return None
            return (
                f"a file list is read from the source bucket or INVENTORY_FILE_LIST_BUCKETS "
                f"({', '.join(allowed)}), not from s3://{bucket}/"
            )
        if self.allow_local_file_list:
            return None
        return (
            "must be an s3:// URI: this deployment reads no file list from the worker's disk "
            "(INVENTORY_ALLOW_LOCAL_FILE_LIST is for the embedded stack)"
        )

    @property
    def guardrails(self) -> Guardrails:
        return Guardrails(
            self.allowed_instance_types,
            self.max_instance_count,
            self.runtime_limit_s,
            self.wait_limit_s,
            self.max_run_cost_usd,
            self.required_blocking_rules,
        )

    @property
    def gate_policy(self) -> GatePolicy:
        return GatePolicy(
            min_improvement=self.min_improvement,
            min_relative_improvement=self.min_relative_improvement,
            significance=self.significance,
            baseline_margin=self.baseline_margin,
            max_class_drop=self.max_class_drop,
            min_class_images=self.min_class_images,
            approval_when=tuple(c for c in self.approval_when if c != "never"),
        )

    @property
    def effective_deployment_id(self) -> str:
        """The deployment's tag on its jobs: the setting, or the bucket and prefix its runs share."""
        return self.deployment_id or f"{self.bucket}/{self.prefix.strip('/')}".rstrip("/")

    @property
    def root(self) -> str:
        """The project's key prefix inside the bucket ('' or 'abid/')."""
        return f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fail_on_rules"] = list(self.fail_on_rules)
        return data

    @classmethod
    def from_sources(
        cls,
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        declared: Iterable[str] | None = None,
        enforce_guardrails: bool = True,
    ) -> Settings:
        """The one precedence: a Param given in the run > the deployment's `INVENTORY_*` value (`env`: the
        Airflow Variable, else the environment, see DeploymentValues below) > the field's default. A Param
        left empty (None or "") is not given; `_SWITCH_ON_ONLY` Params given as false are not given either.

        `declared`: the DAG's Param names; only those are read from `params` (Airflow merges undeclared run-conf
        keys into a task's params). None means every key of `params` is the caller's own choice (the CLI, tests).
        """
        env = os.environ if env is None else env
        readable = set(params or {}) if declared is None else set(declared)
        values: dict[str, Any] = {}
        for name, env_name in _ENV_NAMES.items():
            if env.get(env_name, "") != "":
                values[name] = env[env_name]
        for name, value in (params or {}).items():
            if name not in readable:
                continue
            name = _PARAM_ALIASES.get(name, name)
            if name not in _FIELD_TYPES or value is None or value == "":
                continue  # an empty Param: the deployment's value
            if name in _SWITCH_ON_ONLY and not _coerce(name, value):
                continue  # off in the run: the deployment's value (a run may switch these on, never off)
            values[name] = value
        if not values.get("fail_on_rules") and "required_blocking_rules" in values:  # a run that names none
            values["fail_on_rules"] = values["required_blocking_rules"]
        coerced = {name: _coerce(name, value) for name, value in values.items()}
        return cls(**coerced, enforce_guardrails=enforce_guardrails)


def _require(ok: bool, field_name: str, problem: str) -> None:
    if not ok:
        raise SettingsError(field_name, problem)


_FIELD_TYPES: dict[str, type] = {
    name: tp
    for name, tp in {
        "source_bucket": str,
        "source_prefix": str,
        "file_list": str,
        "per_class_limit": int,
        "bucket": str,
        "prefix": str,
        "aws_conn_id": str,
        "region": str,
        "copy_workers": int,
        "reject_threshold": float,
        "instance_type": str,
        "instance_count": int,
        "epochs": int,
        "batch_size": int,
        "lr": float,
        "model": str,
        "role_arn": str,
        "max_runtime_s": int,
        "rules_mode": str,
        "fail_on_rules": tuple,
        "min_improvement": float,
        "framework_version": str,
        "volume_size_gb": int,
        "pretrained_s3_uri": str,
        "subnets": tuple,
        "security_group_ids": tuple,
        "enable_network_isolation": bool,
        "inter_container_encryption": bool,
        "output_kms_key_id": str,
        "volume_kms_key_id": str,
        "force_retrain": bool,
        "tracking_uri": str,
        "registered_model": str,
        "sns_topic_arn": str,
        "report_base_url": str,
        "class_mix_threshold": float,
        "gc_keep_versions": int,
        "use_spot": bool,
        "max_wait_s": int,
        "deployment_id": str,
        "wheelhouse": str,
        "source_recheck_minutes": int,
        "min_relative_improvement": float,
        "significance": float,
        "baseline_margin": float,
        "max_class_drop": float,
        "min_class_images": int,
        "approval_when": tuple,
        "approval_timeout_s": int,
        "file_list_buckets": tuple,
        "allow_local_file_list": bool,
        "allowed_instance_types": tuple,
        "max_instance_count": int,
        "runtime_limit_s": int,
        "wait_limit_s": int,
        "max_run_cost_usd": float,
        "required_blocking_rules": tuple,
        "stop_job_when_wait_killed": bool,
    }.items()
}

# Deployment settings: Airflow Variables of these names, else environment variables (DeploymentValues).
# A field that is also a declared Param (source_bucket, rules_mode, ...) takes a Param given in the run over these.
_ENV_NAMES = {
    "bucket": "INVENTORY_BUCKET",
    "prefix": "INVENTORY_PREFIX",
    "aws_conn_id": "INVENTORY_AWS_CONN_ID",
    "role_arn": "INVENTORY_ROLE_ARN",
    "copy_workers": "INVENTORY_COPY_WORKERS",
    "reject_threshold": "INVENTORY_REJECT_THRESHOLD",
    "source_bucket": "INVENTORY_SOURCE_BUCKET",
    "file_list": "INVENTORY_FILE_LIST",
    "rules_mode": "INVENTORY_RULES_MODE",
    "subnets": "INVENTORY_SUBNETS",
    "security_group_ids": "INVENTORY_SECURITY_GROUP_IDS",
    "output_kms_key_id": "INVENTORY_OUTPUT_KMS_KEY_ID",
    "volume_kms_key_id": "INVENTORY_VOLUME_KMS_KEY_ID",
    "enable_network_isolation": "INVENTORY_ENABLE_NETWORK_ISOLATION",
    "inter_container_encryption": "INVENTORY_INTER_CONTAINER_ENCRYPTION",
    "pretrained_s3_uri": "INVENTORY_PRETRAINED_S3_URI",
    "tracking_uri": "INVENTORY_TRACKING_URI",
    "registered_model": "INVENTORY_REGISTERED_MODEL",
    "sns_topic_arn": "INVENTORY_SNS_TOPIC_ARN",
    "report_base_url": "INVENTORY_REPORT_BASE_URL",
    "deployment_id": "INVENTORY_DEPLOYMENT_ID",
    "wheelhouse": "INVENTORY_WHEELHOUSE",
    "max_runtime_s": "INVENTORY_MAX_RUNTIME_S",
    "use_spot": "INVENTORY_USE_SPOT",
    "max_wait_s": "INVENTORY_MAX_WAIT_S",
    "class_mix_threshold": "INVENTORY_CLASS_MIX_THRESHOLD",
    "gc_keep_versions": "INVENTORY_GC_KEEP_VERSIONS",
    "source_recheck_minutes": "INVENTORY_SOURCE_RECHECK_MINUTES",
    "min_relative_improvement": "INVENTORY_MIN_RELATIVE_IMPROVEMENT",
    "significance": "INVENTORY_SIGNIFICANCE",
    "baseline_margin": "INVENTORY_BASELINE_MARGIN",
    "max_class_drop": "INVENTORY_MAX_CLASS_DROP",
    "min_class_images": "INVENTORY_MIN_CLASS_IMAGES",
    "approval_when": "INVENTORY_APPROVAL_WHEN",
    "approval_timeout_s": "INVENTORY_APPROVAL_TIMEOUT_S",
    "file_list_buckets": "INVENTORY_FILE_LIST_BUCKETS",
    "allow_local_file_list": "INVENTORY_ALLOW_LOCAL_FILE_LIST",
    "allowed_instance_types": "INVENTORY_ALLOWED_INSTANCE_TYPES",
    "max_instance_count": "INVENTORY_MAX_INSTANCE_COUNT",
    "runtime_limit_s": "INVENTORY_RUNTIME_LIMIT_S",
    "wait_limit_s": "INVENTORY_WAIT_LIMIT_S",
    "max_run_cost_usd": "INVENTORY_MAX_RUN_COST_USD",
    "required_blocking_rules": "INVENTORY_REQUIRED_BLOCKING_RULES",
    "stop_job_when_wait_killed": "INVENTORY_STOP_JOB_WHEN_WAIT_KILLED",
}
# Booleans a run may switch on but never off: false in a run means "the deployment's value".
_SWITCH_ON_ONLY = frozenset({"enable_network_isolation", "use_spot"})
# Params whose form name differs from the setting's.
_PARAM_ALIASES = {"network_isolation": "enable_network_isolation"}


def _coerce(name: str, value: Any) -> Any:
    target = _FIELD_TYPES[name]
    try:
        if target is tuple:
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            return tuple(str(v) for v in value)
        if target is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if target is float:
            return float(value)
        if target is bool:
            if isinstance(value, str):
                if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.strip().lower() in ("true", "1", "yes")
            return bool(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(name, f"expected {target.__name__}, got {value!r}") from exc


# --- a run's settings as a task reads them: Param > Airflow Variable > environment > default -----------


class DeploymentValues(Mapping[str, str]):
    """The deployment's `INVENTORY_*` values: the Airflow Variable of that name, else the environment variable
    (Settings.from_sources puts a Param given in the run above both, and the field's default below). Each name
    is looked up once per instance: one settings_from call asks the Variables once. `defined`: the names a
    Variable lookup can find (`_airflow_variable_names`); any other name is not asked for. None: ask every name."""

    def __init__(self, variable_get: Callable[[str], str | None] | None = None, defined: frozenset[str] | None = None):
        self._variable_get = variable_get or _airflow_variable
        self._defined = defined
        self._seen: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._seen:
            asked = self._defined is None or name in self._defined
            value = self._variable_get(name) if asked else None
            self._seen[name] = str(value) if value is not None else os.environ.get(name)
        if self._seen[name] is None:
            raise KeyError(name)
        return self._seen[name]

    def __iter__(self) -> Iterator[str]:  # only looked up by name; never listed
        return iter(())

    def __len__(self) -> int:
        return 0


def _airflow_variable(name: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(name, default=None)


_VARIABLE_PREFIX = "INVENTORY_"


def _airflow_variable_names() -> frozenset[str] | None:
    """The `INVENTORY_*` names an Airflow Variable lookup can find, in one request instead of one per setting:
    the metadata DB's (Variable.keys) and the `AIRFLOW_VAR_*` environment's. None, so that every name is asked
    for, where a listing could miss one: a secrets backend (Secrets Manager, Vault, ...) is configured, which
    Variable.keys does not consult, or the listing itself failed ("could not ask" is not "none defined")."""
    import importlib

    try:
        from airflow.sdk import Variable
        from airflow.sdk.execution_time.secrets import DEFAULT_SECRETS_SEARCH_PATH_WORKERS
        from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

        defaults = tuple(
            getattr(importlib.import_module(module), name)
            for module, name in (path.rsplit(".", 1) for path in DEFAULT_SECRETS_SEARCH_PATH_WORKERS)
        )
        if any(type(backend) not in defaults for backend in ensure_secrets_backend_loaded()):
            return None
        listed = set(Variable.keys(prefix=_VARIABLE_PREFIX))
    except Exception as exc:  # an Airflow without the listing, or the API did not answer: ask name by name
        import logging

        logging.getLogger(__name__).info("listing the %s* Variables failed (%s): asking each", _VARIABLE_PREFIX, exc)
        return None
    environment = {
        key.removeprefix("AIRFLOW_VAR_") for key in os.environ if key.startswith(f"AIRFLOW_VAR_{_VARIABLE_PREFIX}")
    }
    return frozenset(listed | environment)


def _task_context() -> Mapping[str, Any] | None:
    """The running task's context; None outside a task (the CLI, scripts, tests calling the code directly)."""
    from airflow.sdk import get_current_context

    try:
        return get_current_context()
    except RuntimeError:
        return None


class _DeploymentPerTry:
    """The deployment's values for the task try running in this process, read once.

    Inside a task each `INVENTORY_*` value is an Airflow Variable lookup (a round trip through the supervisor to
    the API server), and a task asks for its settings many times (each helper, each sensor poke): 44 lookups a
    call were seconds per task. Kept for the try, every step of it sees the same values; the next try (a retry,
    a clear) reads them afresh, so a Variable fixed before clearing a task is seen. A try first lists the
    Variables that exist (one request) and looks up only those."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._try: tuple[str, int] | None = None
        self._values: DeploymentValues | None = None

    def values(self, ti: Any) -> DeploymentValues:
        ti_id = getattr(ti, "id", None)
        if ti_id is None:  # not a running task instance: nothing to key the values on
            return DeploymentValues()
        key = (str(ti_id), int(getattr(ti, "try_number", 0) or 0))
        with self._lock:
            if key != self._try or self._values is None:
                self._try, self._values = key, DeploymentValues(defined=_airflow_variable_names())
            return self._values


_DEPLOYMENT_PER_TRY = _DeploymentPerTry()


def settings_from(params: Mapping[str, Any] | None, *, enforce_guardrails: bool = True) -> Settings:
    """This run's settings: its declared Params over the deployment's values (undeclared keys are never read).

    Inside a task, the declared Params are the running DAG's (its Params dict is the one place a Param is added)
    and the Airflow Variables are read once per try; outside one there is no run conf, the params are the
    calling code's own, and the environment alone is the deployment."""
    context = _task_context()
    if context is None:
        declared, deployment = None, None
    else:
        declared = frozenset(context["dag"].params)
        deployment = _DEPLOYMENT_PER_TRY.values(context.get("ti"))
    return Settings.from_sources(
        dict(params or {}), deployment, declared=declared, enforce_guardrails=enforce_guardrails
    )
