"""Airflow operators: thin adapters, light enough to import when the DAG is parsed.

The work is done by the Amazon provider's own classes (see `provider_adapters`), built when the task runs:
importing the provider's SageMaker modules pulls in boto3/botocore, which the DAG processor should not pay
for on every parse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from inventory_pipeline.links import MlflowRunLink, ReportLink, TrainingJobLink


def run_nested(operator: BaseOperator, context: Any) -> Any:
    """Execute another operator inside this task, telling Airflow's safeguard that it is deliberate."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    sentinel = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    return operator.execute(context, **sentinel)


class TrainingJobOperator(BaseOperator):
    """Create this run's SageMaker training job (or re-attach to it on a retry); push its description.

    :param dataset: the `split_dataset` result (its `channels` become the train/valid/test inputs)
    :param code: the `package_code` result (`s3_uri` of sourcedir.tar.gz)
    :param lineage: the `check_lineage` result: skip when unchanged; the champion the job also scores
    """

    template_fields: Sequence[str] = ("dataset", "code", "lineage")
    operator_extra_links = (TrainingJobLink(),)
    ui_color = "#ededed"

    def __init__(
        self, *, dataset: Any, code: Any, lineage: Any = None, aws_conn_id: str = "aws_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.code = code
        self.lineage = lineage
        self.aws_conn_id = aws_conn_id
        self._inner: Any = None

    def execute(self, context: Any) -> dict:
        import dataclasses

        from airflow.sdk.exceptions import AirflowFailException

        from inventory_pipeline.dag_tasks import settings_from
        from inventory_pipeline.provider_adapters import connection_region, managed_rules_refused
        from inventory_pipeline.settings import SettingsError
        from inventory_pipeline.training.ownership import ForeignJobError
        from inventory_pipeline.training.request import RequestError

        # Retries are for what can change by itself (throttling, 5xx, a dropped connection). A request that
        # settings or SageMaker refuse is refused again on every attempt, and each attempt waits out the
        # retry delay first: AirflowFailException fails the task at once, with SageMaker's reason.
        lineage = self.lineage if isinstance(self.lineage, dict) else {}
        if lineage.get("skip"):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"no training job: {lineage['reason']}")
        champion = lineage.get("champion") or {}
        try:
            settings = settings_from(context["params"])
            settings = dataclasses.replace(settings, region=connection_region(settings.aws_conn_id))
            mode = "managed" if settings.rules_mode == "auto" else settings.rules_mode
            try:
                result = self._create_or_attach(context, dataclasses.replace(settings, rules_mode=mode), champion)
            except Exception as exc:
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
                self_hosted = dataclasses.replace(settings, rules_mode="self_hosted")
                result = self._create_or_attach(context, self_hosted, champion)
        except (SettingsError, RequestError, ValueError) as exc:
            raise AirflowFailException(f"the training request is invalid (not retrying): {exc}") from exc
        except ForeignJobError as exc:
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            from botocore.exceptions import BotoCoreError, ClientError

            from inventory_pipeline.provider_adapters import is_transient

            if isinstance(exc, (ClientError, BotoCoreError)) and not is_transient(exc):
                raise AirflowFailException(f"SageMaker refused the training job (not retrying): {exc}") from exc
            raise
        # What the job itself says decides the rule mode downstream (a retry may adopt a job an earlier attempt
        # created in either mode): managed when SageMaker evaluates rules for it.
        described = result.get("Training", {})
        decided = "managed" if described.get("DebugRuleConfigurations") else "self_hosted"
        context["ti"].xcom_push(key="rules_mode", value=decided)
        return result

    def _create_or_attach(self, context: Any, settings: Any, champion: dict) -> dict:
        from inventory_pipeline.provider_adapters import ReattachingTrainingOperator
        from inventory_pipeline.training.naming import job_name_for_run
        from inventory_pipeline.training.request import build_training_request

        dag_id = context["dag"].dag_id
        job_name = job_name_for_run(dag_id, context["run_id"])
        config = build_training_request(
            settings, job_name, self.dataset["channels"], self.code["s3_uri"], run_id=context["run_id"], dag_id=dag_id,
            champion_model_uri=champion.get("source") or "",
        )
        self._inner = ReattachingTrainingOperator(task_id=self.task_id, config=config, aws_conn_id=settings.aws_conn_id)
        return run_nested(self._inner, context)

    def on_kill(self) -> None:
        if self._inner is not None:
            self._inner.on_kill()


class RuleReportOperator(BaseOperator):
    """Parse the rule results, apply the policy, write the HTML report (local + S3), push the summary.

    The summary is pushed (XCom key "report") before the policy may fail the task, so a failed run still
    says why; the "Rule report" extra link opens the report.
    """

    template_fields: Sequence[str] = ("job_name", "manifest", "self_hosted")
    operator_extra_links = (ReportLink(),)
    ui_color = "#e8f4fd"

    def __init__(self, *, job_name: str, manifest: Any, self_hosted: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_name, self.manifest, self.self_hosted = job_name, manifest, self_hosted

    def execute(self, context: Any) -> dict:
        from airflow.exceptions import AirflowFailException

        from inventory_pipeline.dag_tasks import parse_rule_reports

        self_hosted = self.self_hosted if isinstance(self.self_hosted, dict) else None
        summary = parse_rule_reports(context["params"], self.job_name, self.manifest, self_hosted)
        ReportLink.persist(context, self.job_name)
        context["ti"].xcom_push(key="report", value=summary)
        if summary["decision"]["failed"]:
            raise AirflowFailException(f"rule policy: {summary['decision']['message']}")
        return summary


class DecisionGateOperator(BaseOperator):
    """Record this run's one decision and apply it (see `promotion`); runs whatever happened upstream.

    The run ends failed when the decision is `blocked` or `failed`, after the decision is recorded; the
    "MLflow run" extra link opens the run's tracking record.
    """

    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#fdf3e8"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict:
        from inventory_pipeline.dag_tasks import evaluate_and_promote

        def link(record: dict) -> None:
            MlflowRunLink.persist(context, (record.get("tracking") or {}).get("run_url", ""))

        return evaluate_and_promote(context["params"], context["ti"], context["dag"].dag_id, context["run_id"], link)
