"""The run's report: one self-contained HTML file people want to read, plus a compact summary for XCom.

Inputs, all read from S3 where SageMaker (or the local runner) left them: the job's description, the rule
files of the ProfilerReport evaluation its statuses record, the system metrics, metrics.json
inside output.tar.gz, and the dataset manifest. Every number shown comes from those inputs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import statistics
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inventory_pipeline.aws import pricing as cost
from inventory_pipeline.aws.s3_paths import split_s3_uri
from inventory_pipeline.reports.findings import Finding, PolicyDecision, apply_policy, findings_from_job
from inventory_pipeline.reports.job_facts import job_facts

log = logging.getLogger(__name__)


def _list(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def profiler_reports(s3: Any, describe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`<Rule>.json` of the ProfilerReport evaluation recorded for this job: the configuration named in its
    ProfilerRuleEvaluationStatuses (SageMaker's, or our engine's), read under the base that evaluation wrote to
    (`RuleOutputPath` for our engine, beside the job's output for SageMaker's). Never "the newest folder": a
    folder the job wrote itself (`ProfilerReport-99999999`) is not an evaluation anyone recorded."""
    base = describe.get("RuleOutputPath") or (describe.get("ProfilerConfig") or {}).get("S3OutputPath")
    recorded = [s.get("RuleConfigurationName", "") for s in describe.get("ProfilerRuleEvaluationStatuses") or []]
    names = [n for n in recorded if n == "ProfilerReport" or n.startswith("ProfilerReport-")]
    if not base or not names:
        return {}
    bucket, prefix = split_s3_uri(f"{base.rstrip('/')}/{describe['TrainingJobName']}/rule-output/{names[-1]}/")
    keys = [k for k in _list(s3, bucket, prefix) if "/profiler-output/profiler-reports/" in k and k.endswith(".json")]
    return {Path(k).stem: json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys}


def training_metrics(s3: Any, describe: dict[str, Any]) -> dict[str, Any]:
    """metrics.json from output.tar.gz beside model.tar.gz; {} when the job produced none."""
    artifact = (describe.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or ""
    if not artifact:
        return {}
    bucket, key = split_s3_uri(artifact.replace("model.tar.gz", "output.tar.gz"))
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            member = tar.extractfile("metrics.json")
            return json.loads(member.read()) if member else {}
    except Exception as exc:
        log.warning("no metrics.json for %s: %s", describe["TrainingJobName"], exc)
        return {}


def system_metrics(s3: Any, describe: dict[str, Any]) -> list[dict[str, Any]]:
    base = (describe.get("ProfilerConfig") or {}).get("S3OutputPath")
    if not base:
        return []
    bucket, prefix = split_s3_uri(f"{base.rstrip('/')}/{describe['TrainingJobName']}/profiler-output/system/")
    records = []
    for key in _list(s3, bucket, prefix):
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def utilisation(records: list[dict[str, Any]]) -> dict[str, dict[float, float]]:
    series: dict[str, dict[float, list[float]]] = {"cpu": {}, "memory": {}, "disk": {}}
    for r in records:  # SageMaker's record names (the sampler writes the same)
        key = None
        if r["Dimension"] == "CPUUtilization":
            key = "cpu"
        elif r["Name"] == "MemoryUsedPercent":
            key = "memory"
        elif r["Type"] == "i/o" and r["Name"].endswith("InBytesPerSecond"):
            key = "disk"  # throughput only: IOPS would not add up with bytes
        if key:
            series[key].setdefault(r["Timestamp"], []).append(float(r["Value"]))
    out: dict[str, dict[float, float]] = {}
    for key, points in series.items():
        reduce = sum if key == "disk" else statistics.fmean
        out[key] = {t: reduce(v) for t, v in sorted(points.items())}
    return out


def _p95(values: list[float]) -> float | None:
    return sorted(values)[int(0.95 * (len(values) - 1))] if values else None


# --- plots --------------------------------------------------------------------------------------------------


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def plot_curves(history: list[dict[str, Any]]) -> str | None:
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (loss, acc) = plt.subplots(1, 2, figsize=(10, 3.2))
    loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    loss.plot(epochs, [h["valid_loss"] for h in history], "o-", label="valid")
    loss.set_title("loss per epoch")
    loss.set_xlabel("epoch")
    loss.legend()
    acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    acc.plot(epochs, [h["valid_accuracy"] for h in history], "o-", label="valid")
    acc.set_title("accuracy per epoch")
    acc.set_xlabel("epoch")
    acc.set_ylim(0, 1)
    acc.legend()
    return _png(fig)


def plot_utilisation(series: dict[str, dict[float, float]]) -> str | None:
    if not series.get("cpu"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = min(series["cpu"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True)
    for key, label in (("cpu", "CPU % (mean of cores)"), ("memory", "memory %")):
        points = series.get(key) or {}
        top.plot([t - start for t in points], list(points.values()), label=label)
    top.set_ylim(0, 100)
    top.set_ylabel("%")
    top.legend(loc="upper right")
    disk = series.get("disk") or {}
    bottom.plot([t - start for t in disk], [v / 1e6 for v in disk.values()], color="tab:green")
    bottom.set_ylabel("disk MB/s")
    bottom.set_xlabel("seconds since profiling started")
    return _png(fig)


def plot_confusion(matrix: list[list[int]] | None) -> str | None:
    if not matrix:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center")
    ax.set_xticks(range(5), [str(c) for c in range(1, 6)])
    ax.set_yticks(range(5), [str(c) for c in range(1, 6)])
    ax.set_xlabel("predicted count")
    ax.set_ylabel("true count")
    return _png(fig)


# --- the report -------------------------------------------------------------------------------------------

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Retraining report: {{ job }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
.IssuesFound { background: #fdecea; } .Error, .NotEvaluated { background: #fff4e5; }
.NoIssuesFound { background: #edf7ed; } .headline { font-size: 1.05em; }
.decision-fail { color: #b71c1c; font-weight: bold; } .decision-pass { color: #1b5e20; font-weight: bold; }
</style></head><body>
<h1>Weekly retraining report</h1>
<p class="headline">Job <b>{{ job }}</b>: {{ status }}{% if failure %} ({{ failure }}){% endif %}.
{% if metrics.accuracy is not none %} Test accuracy <b>{{ '%.1f' % (100 * metrics.accuracy) }}%</b>,
RMSE of the count <b>{{ '%.3f' % metrics.rmse }}</b>.{% endif %}</p>
<p class="{{ 'decision-fail' if decision.failed else 'decision-pass' }}">Policy: {{ decision.message }}</p>
<h2>Rules</h2>
<table><tr><th>rule</th><th>kind</th><th>status</th><th>violations</th><th>datapoints</th><th>evidence</th>
<th>recommendation</th></tr>
{% for f in findings %}<tr class="{{ f.status }}"><td>{{ f.rule }}</td><td>{{ f.kind }}</td><td>{{ f.status }}</td>
<td>{{ f.triggered }}</td><td>{{ f.datapoints }}</td><td>{{ f.evidence }}</td><td>{{ f.recommendation }}</td></tr>
{% endfor %}</table>
{% if curves %}<h2>Training curves</h2>
<img alt="loss and accuracy per epoch" src="data:image/png;base64,{{ curves }}">
{% endif %}
{% if usage %}<h2>System utilisation</h2>
<img alt="CPU, memory and disk over time" src="data:image/png;base64,{{ usage }}">
{% endif %}
<h2>The job</h2><p>Rules evaluated by {{ 'SageMaker Debugger' if facts.rules_mode == 'managed' else 'our rule engine
(self_hosted)' }}. Network isolation {{ 'on' if facts.EnableNetworkIsolation else 'off' }}.
{% if facts.EnableManagedSpotTraining %}Managed Spot: {{ facts.spot_interruptions }} interruption(s),
billable {{ facts.BillableTimeInSeconds }} s of {{ facts.TrainingTimeInSeconds }} s training{% if facts.spot_savings
is not none %}: Spot savings {{ '%.1f' % (100 * facts.spot_savings) }}% (1 - billable / training time){% endif %}.
{% else %}On-demand instances.{% endif %}</p>
{% if guardrails %}<p>The deployment's limits this run stayed within: {{ guardrails.max_instance_count }} instance(s)
of {{ guardrails.allowed_instance_types | join(', ') }}; runtime {{ guardrails.runtime_limit_s }} s, Spot wait
{{ guardrails.wait_limit_s }} s; {{ 'no cost limit' if not guardrails.max_run_cost_usd else
'%.2f USD per job' % guardrails.max_run_cost_usd }}; always blocking:
{{ guardrails.required_blocking_rules | join(', ') or 'none' }}.</p>{% endif %}
<h2>Right-sizing and cost</h2><p>{{ advice.summary }}</p>
{% if advice.run_cost is defined %}<p>This run: {{ advice.instance_count }} x {{ advice.instance_type }},
estimated {{ '%.4f' % advice.run_cost }} USD at the list price recorded {{ advice.prices_recorded }}
({{ advice.prices_source }}).{% if profiled_locally %} Utilisation was measured on the local runner's host.{% endif %}
</p>{% endif %}
{% if confusion %}<h2>Confusion matrix (test split)</h2>
<img alt="confusion matrix" src="data:image/png;base64,{{ confusion }}">
{% endif %}
{% if metrics.per_class_accuracy %}<table><tr><th>count</th>{% for k in metrics.per_class_accuracy %}<th>{{ k }}</th>
{% endfor %}</tr><tr><td>accuracy</td>{% for v in metrics.per_class_accuracy.values() %}<td>
{{ '-' if v is none else '%.2f' % v }}</td>{% endfor %}</tr></table>{% endif %}
<h2>Dataset</h2>
{% if manifest %}<p>Version <b>{{ manifest.version }}</b>, created {{ manifest.created }}.</p>
<table><tr><th>split</th>{% for c in ['1','2','3','4','5'] %}<th>count {{ c }}</th>{% endfor %}</tr>
{% for split, row in manifest.counts.items() %}<tr><td>{{ split }}</td>{% for c in ['1','2','3','4','5'] %}
<td>{{ row[c] }}</td>{% endfor %}</tr>{% endfor %}</table>
<p>{{ manifest.rejects | length }} rejected image(s).</p>
{% if manifest.rejects %}<table><tr><th>key</th><th>reason</th></tr>{% for r in manifest.rejects[:50] %}
<tr><td>{{ r.key }}</td><td>{{ r.reason }}</td></tr>{% endfor %}</table>{% endif %}
{% else %}<p>No manifest available.</p>{% endif %}
{{ data_changes }}
</body></html>
"""


@dataclass
class ReportResult:
    html_path: Path
    s3_uri: str
    decision: PolicyDecision
    findings: list[Finding]
    summary: dict[str, Any]


def build_report(
    s3: Any,
    describe: dict[str, Any],
    manifest_key: str | None,
    bucket: str,
    out_dir: Path,
    fail_on_rules: list[str] | tuple[str, ...] = (),
    profiled_locally: bool = False,
    champion_data: dict[str, Any] | None = None,
    *,
    mix_threshold: float,
    guardrails: dict[str, Any] | None = None,
    verdicts: str,
) -> ReportResult:
    """The report of one job, written to `<verdicts>/report.html` (aws.s3_paths.verdicts_uri: out of the job's
    reach). `champion_data`: the champion's dataset (data_section.champion_dataset; None when there is no
    champion), which this run's class mix is compared with (ClassMixShift)."""
    from jinja2 import Environment
    from markupsafe import Markup

    from inventory_pipeline.reports import data_section

    job = describe["TrainingJobName"]
    manifest = None
    if manifest_key:
        try:
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        except Exception as exc:
            log.warning("could not read the manifest %s: %s", manifest_key, exc)
    findings = findings_from_job(describe, profiler_reports(s3, describe))
    # ClassMixShift against the champion's data: blocking when fail_on_rules lists it
    findings.append(data_section.data_finding(manifest, champion_data, mix_threshold))
    decision = apply_policy(findings, fail_on_rules)
    metrics = training_metrics(s3, describe)
    series = utilisation(system_metrics(s3, describe))
    resources = describe.get("ResourceConfig", {})
    advice = cost.advice(
        resources.get("InstanceType", ""),
        int(resources.get("InstanceCount", 1)),
        float(describe.get("BillableTimeInSeconds") or 0),
        _p95(list(series.get("cpu", {}).values())),
        _p95(list(series.get("memory", {}).values())),
    )
    html = (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            job=job,
            status=describe.get("TrainingJobStatus"),
            failure=describe.get("FailureReason"),
            metrics={
                "accuracy": metrics.get("accuracy"),
                "rmse": metrics.get("rmse"),
                "per_class_accuracy": metrics.get("per_class_accuracy"),
            },
            decision=decision,
            findings=findings,
            curves=plot_curves(metrics.get("history", [])),
            usage=plot_utilisation(series),
            confusion=plot_confusion(metrics.get("confusion_matrix")),
            advice=advice,
            manifest=manifest,
            profiled_locally=profiled_locally,
            facts=job_facts(describe),
            data_changes=Markup(data_section.render(manifest, champion_data, mix_threshold)),
            guardrails=guardrails,
        )
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / "report.html"
    html_path.write_text(html)
    report_bucket, report_prefix = split_s3_uri(f"{verdicts.rstrip('/')}/report.html")
    s3.put_object(Bucket=report_bucket, Key=report_prefix, Body=html.encode(), ContentType="text/html")
    rules = [{"name": f.rule, "kind": f.kind, "status": f.status} for f in findings]
    summary = {
        "job": job,
        "status": describe.get("TrainingJobStatus"),
        "rules": rules,
        "triggered": sorted({f.rule for f in findings if f.status == "IssuesFound"}),
        "errors": decision.errors,
        "decision": decision.to_dict(),
        "metrics": {k: metrics.get(k) for k in ("accuracy", "rmse", "per_class_accuracy")},
        "html_path": str(html_path),
        "s3_uri": f"s3://{report_bucket}/{report_prefix}",
        "advice": advice.get("summary"),
        "job_facts": job_facts(describe),
        "data": data_section.data_summary(manifest, champion_data, mix_threshold),
    }
    return ReportResult(html_path, summary["s3_uri"], decision, findings, summary)
