"""build/demo/summary.json: what a finished demo run did, assembled from the run's task states and XComs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inventory_pipeline.decision.comparison import p_text


def _describe(s3_or_none: Any, run: dict[str, Any]) -> dict[str, Any]:
    """The training job's last known description: the rule task's view if it ran, else the train task's."""
    xcom = run.get("xcom", {})
    for task_id in ("parse_rule_reports", "wait_for_rules", "train"):
        value = xcom.get(task_id)
        if isinstance(value, dict):
            desc = value.get("Training") or value.get("description")
            if isinstance(desc, dict):
                return desc
    return {}


def _numbers(side: dict[str, Any] | None) -> dict[str, Any] | None:
    if not side:
        return None
    keys = ("accuracy", "rmse", "dataset_version", "test_images", "version", "job", "scored_with")
    return {k: side.get(k) for k in keys if side.get(k) is not None}


def build_summary(run: dict[str, Any], s3: Any = None, bucket: str = "", conf: dict | None = None) -> dict:
    xcom = run.get("xcom", {})
    manifest = xcom.get("split_dataset") or {}
    report = xcom.get("parse_rule_reports") or {}
    promotion = xcom.get("evaluate_and_promote") or {}
    copy = xcom.get("copy_images") or {}
    describe = _describe(s3, run)
    rules = report.get("rules") or []
    summary: dict[str, Any] = {
        "dag_run_id": run.get("dag_run_id"),
        "state": run.get("state"),
        "tasks": run.get("tasks", {}),
        "timings": run.get("timings", {}),
        "conf": conf or {},
        "dataset": {
            "version": manifest.get("version"),
            "counts": manifest.get("counts"),
            "rejected": manifest.get("rejected"),
            "manifest_key": manifest.get("manifest_key"),
            "changes": manifest.get("changes"),  # added/removed per class, mix shift and flag vs the previous
            "class_mix": (report.get("data") or {}).get("class_mix"),
        },
        "training_job_name": report.get("job") or describe.get("TrainingJobName"),
        "training_job_status": report.get("status") or describe.get("TrainingJobStatus"),
        "debug_rules": [{"name": r["name"], "status": r["status"]} for r in rules if r.get("kind") == "debugger"],
        "profiler_rules": [{"name": r["name"], "status": r["status"]} for r in rules if r.get("kind") != "debugger"],
        "triggered": report.get("triggered", []),
        "report_path": report.get("html_path"),
        "report_s3_uri": report.get("s3_uri"),
        "policy": report.get("decision"),
        "metrics": report.get("metrics") or {},
        "copied": copy.get("new"),
        "decision": {
            "status": promotion.get("status"),
            "reason": promotion.get("reason"),
            "candidate": _numbers(promotion.get("candidate")),
            "champion": _numbers(promotion.get("champion")),
            # what the rule rests on: the trivial answer, the paired test against the champion, who approved
            "baseline": promotion.get("baseline"),
            "comparison": promotion.get("comparison"),
            "approval": promotion.get("approval"),
        }
        if promotion
        else None,
        "tracking": {k: (promotion.get("tracking") or {}).get(k) for k in ("uri", "run_id", "run_url")},
        "registry": promotion.get("registry"),
        "job": job_section(report, describe),
    }
    return summary


def job_section(report: dict[str, Any], describe: dict[str, Any]) -> dict[str, Any]:
    """DescribeTrainingJob's flags and times for the run's job: the report's (final) view, else the train task's."""
    from inventory_pipeline.reports.job_facts import job_facts

    return report.get("job_facts") or job_facts(describe)


def print_summary(summary: dict[str, Any], summary_path: Path, log_path: Path) -> None:
    print("\n==================== inventory_retraining demo ====================")
    print(f"run:      {summary['dag_run_id']}  ->  {summary['state']}")
    for task_id, state in summary["tasks"].items():
        seconds = summary["timings"].get(task_id)
        print(f"  {task_id:24s} {state or '-':10s} {'' if seconds is None else f'{seconds:7.1f} s'}")
    dataset = summary["dataset"]
    if dataset.get("version"):
        print(f"dataset:  version {dataset['version']}  counts {dataset['counts']}")
        print(f"          rejected {dataset['rejected']}  manifest {dataset['manifest_key']}")
    if summary.get("training_job_name"):
        print(f"job:      {summary['training_job_name']}  {summary['training_job_status']}")
    if summary.get("metrics"):
        print(f"metrics:  {summary['metrics']}")
    for kind in ("debug_rules", "profiler_rules"):
        for rule in summary.get(kind) or []:
            print(f"  rule {rule['name']:28s} {rule['status']}")
    if summary.get("copied") is not None:
        print(f"copied:   {summary['copied']} new photo(s)")
    decision = summary.get("decision") or {}
    if decision.get("status"):
        print(f"decision: {decision['status']}  ({decision.get('reason')})")
        for side in ("candidate", "champion"):
            if decision.get(side):
                print(f"  {side:9s} {decision[side]}")
        baseline = decision.get("baseline") or {}
        if baseline.get("majority"):
            beats, majority = baseline.get("paired") or {}, baseline["majority"]
            middle = baseline["middle"]
            same = middle["answer"] == majority["answer"]
            also = "" if same else f"; always {middle['answer']}: RMSE {middle['rmse']:.4f}"
            print(
                f"  trivial   always {majority['answer']}: accuracy {majority['accuracy']:.4f}, RMSE "
                f"{majority['rmse']:.4f}{also}; candidate vs it: p {p_text(beats.get('p_value', 1.0))}"
            )
        comparison = decision.get("comparison") or {}
        if comparison:
            print(
                f"  paired    {comparison['only_first']} image(s) only the candidate got right, "
                f"{comparison['only_second']} only the champion: {comparison['test']} "
                f"p {p_text(comparison['p_value'])}"
            )
        if decision.get("approval"):
            print(f"  approval  {decision['approval']}")
    if (summary.get("registry") or {}).get("name"):
        print(f"registry: {summary['registry']}")
    if (summary.get("tracking") or {}).get("run_url"):
        print(f"mlflow:   {summary['tracking']['run_url']}")
    if summary.get("report_path"):
        print(f"report:   {summary['report_path']}")
    print(f"summary:  {summary_path}")
    print(f"run log:  {log_path}")
    print("====================================================================")
