"""Tracking and the model registry, on MLflow (AWS's recommended successor to Debugger's metric logging).

The embedded stack runs a real MLflow server; on AWS the tracking URI is a SageMaker managed MLflow tracking
server ARN or any MLflow URI. With an ARN, the `sagemaker-mlflow` plugin signs each request with the boto3
session it is given: the Airflow connection's (as every other AWS call of the DAG), never the worker's ambient
credentials. Artifacts whose URI is `s3://` (a managed server's artifact store) are written with the
connection's S3 client for the same reason (MLflow's own S3 client would use the ambient ones).

Every write here is idempotent and keyed by the training job's name (tag `job`), so a retried task finds what
an earlier try wrote instead of writing it twice.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPERIMENT = "inventory_retraining"
CHAMPION_ALIAS = "champion"


class TrackingError(RuntimeError):
    """The tracking server is not configured or refused a request."""


class RegistryUnavailable(TrackingError):
    """The registry could not be asked (connection refused, 5xx after MLflow's retries, 403, throttling): not the
    same as "there is none". The task fails, so Airflow retries it, and nothing is decided on it."""


def is_absent(exc: Exception) -> bool:
    """An MLflow answer that says "there is no such thing": a registered model or version that does not exist
    (RESOURCE_DOES_NOT_EXIST), or an alias nobody set (MLflow answers INVALID_PARAMETER_VALUE, "alias ... not
    found"). Everything else, a connection error included, is "could not ask"."""
    code = getattr(exc, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc))


def _unavailable(exc: Exception, what: str) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"could not read {what} from the MLflow registry ({getattr(exc, 'error_code', '')}: "
        f"{str(exc)[:300]}): not reading that as 'none'; the task will be retried"
    )


@dataclass(frozen=True)
class ModelVersionInfo:
    version: str
    source: str  # the model.tar.gz it was registered from
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def accuracy(self) -> float | None:
        value = self.tags.get("accuracy")
        return float(value) if value not in (None, "") else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "run_id": self.run_id,
            "aliases": list(self.aliases),
            **{k: self.tags.get(k) for k in LINEAGE_TAGS + ("decision", "accuracy", "rmse")},
        }


LINEAGE_TAGS = ("job", "dataset_version", "code_sha256", "params_sha256", "image_uri", "run_id")


def _quiet_mlflow_logs() -> None:
    # MLflow logs a warning per request when optional header providers are absent: noise in task logs.
    logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)


def is_sagemaker_arn(tracking_uri: str) -> bool:
    return tracking_uri.startswith("arn:") and ":sagemaker:" in tracking_uri


class _SignedWith:
    """The MLflow client with each call made inside `sagemaker_mlflow.use_session(session)`: the plugin's signer
    takes its credentials from there (a context variable), else from boto3's default chain."""

    def __init__(self, client: Any, session: Any):
        self._client, self._session = client, session

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def signed(*args: Any, **kwargs: Any) -> Any:
            from sagemaker_mlflow import use_session

            with use_session(self._session):
                return attr(*args, **kwargs)

        return signed


class Registry:
    """One registered model and its experiment on one tracking server.

    `aws_session`: the boto3 session requests to a SageMaker tracking server ARN are signed with; `s3`: a
    factory of the S3 client `s3://` artifacts are written with (both from the Airflow connection)."""

    def __init__(
        self, tracking_uri: str, model_name: str, aws_session: Any = None, s3: Callable[[], Any] | None = None
    ):
        if not tracking_uri:
            raise TrackingError(
                "no tracking server: set INVENTORY_TRACKING_URI to an MLflow URI or a SageMaker managed MLflow "
                "tracking server ARN (the embedded stack sets it for you)"
            )
        from mlflow import MlflowClient

        _quiet_mlflow_logs()
        self.tracking_uri, self.model_name, self._s3 = tracking_uri, model_name, s3
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if is_sagemaker_arn(tracking_uri):
            import mlflow

            # The plugin reads the server's region and kind from the global tracking URI, not the client's.
            mlflow.set_tracking_uri(tracking_uri)
            if aws_session is not None:
                self.client = _SignedWith(self.client, aws_session)

    # --- runs ---------------------------------------------------------------------------------------------

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(EXPERIMENT)
        except Exception:  # created by a concurrent or earlier, interrupted try
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return found.experiment_id

    def find_run(self, job: str, attempt: int = 1) -> Any | None:
        """The run of this job's decision attempt (a run without an `attempt` tag is attempt 1's)."""
        runs = self.client.search_runs([self._experiment_id()], filter_string=f"tags.job = '{job}'", max_results=50)
        return next((r for r in runs if r.data.tags.get("attempt", "1") == str(attempt)), None)

    def log_run(
        self,
        job: str,
        params: dict[str, Any],
        history: list[dict[str, Any]],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifacts: dict[str, bytes],
        attempt: int = 1,
    ) -> str:
        """The MLflow run of this job's decision attempt, created once; params, per-epoch metrics, final
        metrics, tags and artifacts are logged once (a run tagged `complete` is left as it is)."""
        from mlflow.entities import Metric, Param, RunTag

        run = self.find_run(job, attempt)
        if run is not None and run.data.tags.get("complete") == "true":
            return run.info.run_id
        if run is None:
            name = job if attempt == 1 else f"{job}-attempt-{attempt}"
            run = self.client.create_run(
                self._experiment_id(), run_name=name, tags={"job": job, "attempt": str(attempt)}
            )
        run_id = run.info.run_id
        logged = run.data.metrics if hasattr(run, "data") and run.data else {}
        stamp = int(run.info.start_time or 0)
        per_epoch = ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
        metric_rows = (
            []
            if logged
            else [
                *(
                    Metric(name, float(row[name]), stamp, int(row["epoch"]))
                    for row in history
                    for name in per_epoch
                    if row.get(name) is not None
                ),
                *(Metric(name, float(value), stamp, 0) for name, value in metrics.items() if value is not None),
            ]
        )
        self.client.log_batch(
            run_id,
            metrics=metric_rows,
            params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
            tags=[RunTag(k, str(v)[:5000]) for k, v in sorted(tags.items())],
        )
        for name, body in artifacts.items():
            self._log_artifact(run_id, run.info.artifact_uri or "", name, body)
        self.client.set_tag(run_id, "complete", "true")
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def _log_artifact(self, run_id: str, artifact_uri: str, name: str, body: bytes) -> None:
        import tempfile

        if artifact_uri.startswith("s3://") and self._s3 is not None:
            from inventory_pipeline.aws.s3_paths import split_s3_uri

            bucket, key = split_s3_uri(f"{artifact_uri.rstrip('/')}/{name}")
            self._s3().put_object(Bucket=bucket, Key=key, Body=body)
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(body)
            self.client.log_artifact(run_id, str(path))

    def run_url(self, run_id: str) -> str:
        if self.tracking_uri.startswith("http"):
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self._experiment_id()}/runs/{run_id}"
        return f"{self.tracking_uri} run {run_id}"

    # --- registry -----------------------------------------------------------------------------------------

    def _registered_model(self) -> Any | None:
        """The registered model, None when it does not exist (RegistryUnavailable when that cannot be known)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if is_absent(exc):
                return None
            raise _unavailable(exc, f"the registered model {self.model_name}") from exc

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        if self._registered_model() is not None:
            return
        try:
            self.client.create_registered_model(self.model_name, description="Counts objects (1-5) in bin photos")
        except MlflowException:
            if self._registered_model() is None:  # not created meanwhile by another try: the create's error stands
                raise

    def versions(self) -> list[ModelVersionInfo]:
        """Every version with the aliases the registry gives it (search results carry none: they come from the
        registered model's alias map)."""
        model = self._registered_model()
        if model is None:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in (getattr(model, "aliases", None) or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        found, token = [], None
        while True:
            page = self.client.search_model_versions(f"name = '{self.model_name}'", max_results=200, page_token=token)
            found += list(page)
            token = getattr(page, "token", None)
            if not token:
                break
        infos = [self._info(v, tuple(sorted(aliases.get(str(v.version), ())))) for v in found]
        return sorted(infos, key=lambda v: int(v.version))

    def _info(self, version: Any, aliases: tuple[str, ...] | None = None) -> ModelVersionInfo:
        aliases = tuple(getattr(version, "aliases", None) or ()) if aliases is None else aliases
        return ModelVersionInfo(
            str(version.version), version.source, version.run_id or "", dict(version.tags or {}), aliases
        )

    def version_for_job(self, job: str) -> ModelVersionInfo | None:
        return next((v for v in self.versions() if v.tags.get("job") == job), None)

    def register(self, job: str, source: str, run_id: str, tags: dict[str, str]) -> ModelVersionInfo:
        """The registry version of this job's model, created once."""
        existing = self.version_for_job(job)
        if existing is not None:
            return existing
        self._ensure_model()
        version = self.client.create_model_version(
            self.model_name,
            source=source,
            run_id=run_id or None,
            tags={**{k: str(v) for k, v in tags.items()}, "job": job},
        )
        return self._info(self.client.get_model_version(self.model_name, version.version))

    def champion(self) -> ModelVersionInfo | None:
        """The version the `champion` alias names; None only when the registry says there is none."""
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(self.model_name, CHAMPION_ALIAS)
        except MlflowException as exc:
            if is_absent(exc):
                return None
            raise _unavailable(exc, "the champion") from exc
        return self._info(version)

    def set_champion(self, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, version)

    def version_aliases(self, version: str) -> tuple[str, ...]:
        return self._info(self.client.get_model_version(self.model_name, version)).aliases

    def tag_version(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)


def summary_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """The metrics a registry version carries as tags (so listing versions needs no run lookups)."""
    return {
        k: json.dumps(metrics.get(k)) if isinstance(metrics.get(k), dict) else str(metrics.get(k))
        for k in ("accuracy", "rmse")
        if metrics.get(k) is not None
    }


def registry_for(settings: Any) -> Registry:
    """The registry, signed with (and writing `s3://` artifacts through) the settings' Airflow connection."""
    session = None
    if is_sagemaker_arn(settings.tracking_uri):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        session = AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type="sagemaker").get_session()
    from inventory_pipeline.aws.clients import s3_client

    return Registry(settings.tracking_uri, settings.registered_model, session, lambda: s3_client(settings))
