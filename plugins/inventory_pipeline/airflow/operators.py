"""Airflow operators: the Amazon provider's own, subclassed in the provider's style (thin, over the hook).

`TrainingJobOperator` is a `SageMakerTrainingOperator` that builds its CreateTrainingJob request from the run's
settings when it executes, and re-attaches to the job its run already created instead of starting a second one.

Parse cost: the provider's modules import boto3 at module level. The DAG file imports them itself, as
`airflow.providers...` imports, so the DAG processor pre-imports them once in its long-lived process before it
forks each parse (`[dag_processor] parsing_pre_import_modules`, on by default); each parse then pays only for
these class definitions (`benchmarks/dag_parse.py` measures it that way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook
from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import BaseOperator

from inventory_pipeline.airflow.links import MlflowRunLink, ReportLink, TrainingJobLink


class ChannelCheckingSageMakerHook(SageMakerHook):
    """The provider's hook, with its pre-create check of each input URI telling "access denied" apart from
    "does not exist": the provider reads S3's 403 on HeadBucket as a missing bucket and lets a 403 on HeadObject
    out as a bare ClientError, which then reads as SageMaker refusing the job."""

    def check_s3_url(self, s3url: str) -> bool:
        """The provider's check (the bucket, then the key or else the prefix), each answer named."""
        from airflow.sdk.exceptions import AirflowFailException
        from botocore.exceptions import ClientError

        from inventory_pipeline.aws.s3_paths import is_missing, split_s3_uri

        bucket, key = split_s3_uri(s3url, require_key=False)
        s3 = self.s3_hook.get_conn()
        try:
            s3.head_bucket(Bucket=bucket)
            if not key:
                return True
            try:
                s3.head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as exc:
                if not is_missing(exc):
                    raise
            if s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0):
                return True
        except ClientError as exc:
            if is_missing(exc):
                raise AirflowFailException(f"the input bucket of {s3url} does not exist; not retrying") from exc
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
                raise AirflowFailException(
                    f"access denied to {s3url} ({exc.operation_name}): the identity of the connection "
                    f"{self.aws_conn_id!r} needs s3:ListBucket on s3://{bucket} and s3:GetObject on the keys "
                    "(docs/iam.md, docs/airflow-policy.json); not retrying"
                ) from exc
            raise
        raise AirflowFailException(f"the input {s3url} does not exist (no key, no key under it); not retrying")


# A cleared train meets its run's earlier job: re-attached unless it ended this way, then the next attempt's job.
ENDED_UNSUCCESSFULLY = frozenset({"Failed", "Stopped"})
MAX_JOB_ATTEMPTS = 10


class TrainingJobOperator(SageMakerTrainingOperator):
    """Create this run's SageMaker training job (or re-attach to it on a retry); push its description.

    :param dataset: the `split_dataset` result (its `channels` become the train/valid/test inputs)
    :param code: the `package_code` result (`s3_uri` of sourcedir.tar.gz)
    :param lineage: the `check_lineage` result: skip when unchanged; the champion the job also scores
    :param selection: the `select_source` result: its `source_counts` (the source's class mix before
        per_class_limit) are the prior the job corrects its answers to
    """

    # The request is built in execute from the run's settings, so `config` is not a template field here.
    template_fields: Sequence[str] = aws_template_fields("dataset", "code", "lineage", "selection")
    operator_extra_links = (TrainingJobLink(),)
    aws_hook_class = ChannelCheckingSageMakerHook

    def __init__(self, *, dataset: Any, code: Any, lineage: Any = None, selection: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("wait_for_completion", False)  # wait_for_training waits (and tails the log)
        kwargs.setdefault("print_log", False)
        # Should a same-named job appear between our check and the create, fail rather than create a twin.
        kwargs.setdefault("action_if_job_exists", "fail")
        super().__init__(config={}, **kwargs)
        self.dataset = dataset
        self.code = code
        self.lineage = lineage
        self.selection = selection

    def build_request(self, context: Any, settings: Any, attempt: int = 1) -> dict:
        from inventory_pipeline.training.naming import job_name_for_run
        from inventory_pipeline.training.request import build_training_request

        dag_id = context["dag"].dag_id
        job_name = job_name_for_run(dag_id, context["run_id"], attempt=attempt)
        champion = (self.lineage if isinstance(self.lineage, dict) else {}).get("champion") or {}
        selection = self.selection if isinstance(self.selection, dict) else {}
        return build_training_request(
            settings,
            job_name,
            self.dataset["channels"],
            self.code["s3_uri"],
            run_id=context["run_id"],
            dag_id=dag_id,
            champion_model_uri=champion.get("source") or "",
            counts=self.dataset.get("counts"),
            population_counts=selection.get("source_counts"),
        )

    def execute(self, context: Any) -> dict:
        import dataclasses

        from airflow.sdk.exceptions import AirflowFailException
        from botocore.exceptions import BotoCoreError, ClientError

        from inventory_pipeline.aws.errors import connection_region, is_transient, managed_rules_refused
        from inventory_pipeline.settings import SettingsError, settings_from
        from inventory_pipeline.training.ownership import ForeignJobError
        from inventory_pipeline.training.request import RequestError

        lineage = self.lineage if isinstance(self.lineage, dict) else {}
        if lineage.get("skip"):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"no training job: {lineage['reason']}")
        # Retries are for what can change by itself (throttling, 5xx, a dropped connection). A request that
        # settings or SageMaker refuse is refused again on every attempt, and each attempt waits out the
        # retry delay first: AirflowFailException fails the task at once, with SageMaker's reason.
        try:
            settings = settings_from(context["params"])
            settings = dataclasses.replace(settings, region=connection_region(settings.aws_conn_id))
            mode = "managed" if settings.rules_mode == "auto" else settings.rules_mode
            try:
                result = self._create_or_attach(context, dataclasses.replace(settings, rules_mode=mode))
            except ClientError as exc:
                if settings.rules_mode != "auto" or not managed_rules_refused(exc):
                    raise
                if settings.enable_network_isolation:
                    raise AirflowFailException(
                        f"SageMaker refused managed rules for this account ({exc}), and self_hosted rules cannot run "
                        "in a network-isolated job (they write to S3 from inside it): turn network_isolation off "
                        "or run in an account with SageMaker Debugger"
                    ) from exc
                # rules_mode auto: this account cannot use SageMaker Debugger (AWS's own answer says so): the
                # same job with our rule engine instead, decided once per run and recorded in the report.
                self.log.warning("SageMaker refused managed rules (%s): using self_hosted rules", exc)
                result = self._create_or_attach(context, dataclasses.replace(settings, rules_mode="self_hosted"))
        except (SettingsError, RequestError, ValueError) as exc:
            raise AirflowFailException(f"the training request is invalid (not retrying): {exc}") from exc
        except ForeignJobError as exc:
            raise AirflowFailException(str(exc)) from exc
        except (ClientError, BotoCoreError) as exc:
            if not is_transient(exc):
                raise AirflowFailException(f"SageMaker refused the training job (not retrying): {exc}") from exc
            raise
        # What the job itself says decides the rule mode downstream (a retry may adopt a job an earlier attempt
        # created in either mode): managed when SageMaker evaluates rules for it.
        described = result.get("Training", {})
        decided = "managed" if described.get("DebugRuleConfigurations") else "self_hosted"
        context["ti"].xcom_push(key="rules_mode", value=decided)
        return result

    def _create_or_attach(self, context: Any, settings: Any) -> dict:
        """Re-attach to this run's job if it exists and is running or done (a retry, a lost answer); start the
        next attempt's job if it ended Failed or Stopped (the task was cleared to try again); else create it."""
        for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
            self.config = self.build_request(context, settings, attempt)
            attached = self._attach_or_create(context, settings)
            status = attached.get("Training", {}).get("TrainingJobStatus")
            if status not in ENDED_UNSUCCESSFULLY:
                return attached
            self.log.warning(
                "training job %s ended %s (%s): starting attempt %d",
                self.config["TrainingJobName"],
                status,
                attached["Training"].get("FailureReason", "no reason given"),
                attempt + 1,
            )
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"this run's last {MAX_JOB_ATTEMPTS} training jobs all ended Failed or Stopped")

    def _attach_or_create(self, context: Any, settings: Any) -> dict:
        from botocore.exceptions import ClientError

        from inventory_pipeline.aws.errors import is_resource_in_use

        job_name = self.config["TrainingJobName"]
        TrainingJobLink.persist(
            context,
            job_name=job_name,
            region_name=self.hook.conn_region_name or settings.region,
            partition=self.hook.conn_partition or "aws",
            local_endpoint=self.hook.conn_config.get_service_endpoint_url("sagemaker") or "",
        )
        attached = self.reattach_to_existing_job(job_name)
        if attached is not None:
            return attached
        try:
            return super().execute(context)
        except ClientError as exc:
            # CreateTrainingJob reached SageMaker but its answer was lost (a dropped connection); botocore
            # retried and SageMaker now says the name is taken: by this run's own job (names are unique per
            # run). Re-attach now, instead of failing into a task retry that would re-attach minutes later.
            attached = self.reattach_to_existing_job(job_name) if is_resource_in_use(exc) else None
            if attached is None:
                raise
            return attached

    def reattach_to_existing_job(self, job_name: str) -> dict | None:
        """The result for the job this run already created (a task retry, a lost answer), or None if none.
        Only this deployment's job for this run is adopted (ForeignJobError otherwise: never retried)."""
        from inventory_pipeline.aws.errors import is_not_found
        from inventory_pipeline.training.ownership import check_ownership

        try:
            existing = self.hook.describe_training_job(job_name)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        check_ownership(self.hook.conn, existing, self.config.get("Tags", []))
        self.log.info(
            "Training job %s already exists for this run (status %s): re-attaching instead of creating a second job.",
            job_name,
            existing["TrainingJobStatus"],
        )
        return self.serialize_result(job_name)

    def on_kill(self) -> None:
        """Killing this task stops the job, so no instance keeps billing for a run nobody waits for. (Killing
        or clearing the sensors never stops it: only this task, the one that started it, does.)"""
        name = (self.config or {}).get("TrainingJobName")
        if not name:
            return
        from inventory_pipeline.training.stop import stop_if_running

        try:
            stop_if_running(self.hook.conn, name, f"the task {self.task_id!r} that started it was killed")
        except Exception:  # on_kill must not raise; say what happened instead
            self.log.exception("Could not stop training job %s", name)


class RuleReportOperator(BaseOperator):
    """Parse the rule results, apply the policy, write the HTML report (local + S3), push the summary.

    The summary is pushed (XCom key "report") before the policy may fail the task, so a failed run still
    says why; the "Rule report" extra link opens the report.
    """

    template_fields: Sequence[str] = ("job_name", "manifest", "self_hosted", "lineage")
    operator_extra_links = (ReportLink(),)
    ui_color = "#e8f4fd"

    def __init__(
        self, *, job_name: str, manifest: Any, self_hosted: Any = None, lineage: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.job_name, self.manifest, self.self_hosted, self.lineage = job_name, manifest, self_hosted, lineage

    def execute(self, context: Any) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from inventory_pipeline.airflow.tasks import parse_rule_reports

        self_hosted = self.self_hosted if isinstance(self.self_hosted, dict) else None
        lineage = self.lineage if isinstance(self.lineage, dict) else None
        summary = parse_rule_reports(context["params"], self.job_name, self.manifest, self_hosted, lineage)
        ReportLink.persist(context, self.job_name)
        context["ti"].xcom_push(key="report", value=summary)
        if summary["decision"]["failed"]:
            raise AirflowFailException(f"rule policy: {summary['decision']['message']}")
        return summary


class DecisionGateOperator(BaseOperator):
    """Record this run's one decision, apply and announce it (`decision.gate`); runs whatever happened upstream.

    The run ends failed when the decision is `blocked` or `failed`, after the decision is recorded; the
    "MLflow run" extra link opens the run's tracking record.
    """

    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#fdf3e8"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from inventory_pipeline.decision.decide import ENDS_RUN_FAILED
        from inventory_pipeline.decision.gate import evaluate_and_promote

        record = evaluate_and_promote(context)
        context["ti"].xcom_push(key="decision", value=record)
        MlflowRunLink.persist(context, (record.get("tracking") or {}).get("run_url", ""))
        if record["status"] in ENDS_RUN_FAILED:  # recorded, applied and announced first
            raise AirflowFailException(f"decision {record['status']}: {record['reason']}")
        return record


class PromotionReviewOperator(HITLOperator):
    """Ask a person whether to promote, when the policy says the numbers cannot decide alone (Airflow's
    human-in-the-loop: the UI's "Required actions" or the REST API's hitlDetails). Skips itself otherwise.

    It decides as the gate will, on the same facts; when that is a promotion the policy wants approved
    (`approval_when`), it waits up to `approval_timeout_s` (a deployment setting), whose default answer is "Do not
    promote". Its result (the answer, who gave it, when, whether it timed out) is what the gate records.
    """

    ui_color = "#fff4d6"

    def __init__(self, **kwargs: Any) -> None:
        from inventory_pipeline.decision.decide import KEEP_ANSWER, PROMOTE_ANSWER

        kwargs.setdefault("trigger_rule", "all_done")  # the gate runs after it whatever happened upstream
        super().__init__(
            subject="Promote this run's model?",
            options=[PROMOTE_ANSWER, KEEP_ANSWER],
            defaults=[KEEP_ANSWER],
            multiple=False,
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        from datetime import timedelta

        from airflow.sdk.exceptions import AirflowSkipException

        from inventory_pipeline.decision.gate import review_request

        request = review_request(context)
        if request is None:
            raise AirflowSkipException("the policy lets the numbers decide: no approval needed")
        self.subject, self.body = request["subject"], request["body"]
        # The deployment's setting, read when the question is asked (not when the DAG file is parsed).
        self.response_timeout = timedelta(seconds=request["timeout_s"])
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        answered = super().execute_complete(context, event)
        user = answered.get("responded_by_user") or {}
        at = answered.get("responded_at")
        outcome = {
            "answer": answered["chosen_options"][0],
            "by": user.get("name") or user.get("id"),
            "at": at.isoformat() if hasattr(at, "isoformat") else at,
            "timed_out": bool(event.get("timedout")),
        }
        self.log.info("review: %s", outcome)
        return outcome
