"""`profiler-report.html`: one self-contained page summarising the profiler rules (no scripts, nothing
to download)."""

from __future__ import annotations

import html
from typing import Any

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
.triggered{background:#fde2e1}.quiet{background:#e6f4ea}.na{background:#f4f4f4;color:#666}
pre{margin:0;font-size:.85em}"""


def _state(report: dict[str, Any]) -> tuple[str, str]:
    details = report.get("Details", {})
    if report["RuleTriggered"]:
        return "triggered", "Issues found"
    if details.get("applicable") is False:
        return "na", "Not applicable"
    if details.get("evaluated") is False:
        return "na", "Not evaluated"
    return "quiet", "No issues found"


def _usage_table(usage: dict[str, Any]) -> str:
    rows = []
    for metric, nodes in usage.items():
        if not isinstance(nodes, dict):
            continue
        for node, stats in nodes.items():
            if isinstance(stats, dict) and "p50" in stats:
                cells = "".join(f"<td>{stats[k]}</td>" for k in ("min", "p50", "p95", "p99", "max"))
                rows.append(f"<tr><td>{html.escape(metric)}</td><td>{html.escape(node)}</td>{cells}</tr>")
    if not rows:
        return ""
    return (
        "<h2>System usage</h2><table><tr><th>Metric</th><th>Node</th><th>min</th><th>p50</th><th>p95</th>"
        f"<th>p99</th><th>max</th></tr>{''.join(rows)}</table>"
    )


def render_profiler_report(job_name: str, reports: dict[str, dict[str, Any]], notes: list[str]) -> str:
    rows = []
    for name, report in sorted(reports.items()):
        css, label = _state(report)
        rows.append(
            f"<tr class='{css}'><td>{html.escape(name)}</td><td>{label}</td><td>{report['Violations']}</td>"
            f"<td>{report['Datapoints']}</td>"
            f"<td>{html.escape(str(report['Details'].get('summary', '')))}</td>"
            f"<td><pre>{html.escape(report['RuleParameters'])}</pre></td></tr>"
        )
    triggered = [name for name, r in sorted(reports.items()) if r["RuleTriggered"]]
    verdict = f"Rules that found issues: {', '.join(triggered)}" if triggered else "No profiler rule found an issue"
    usage = _usage_table(reports.get("OverallSystemUsage", {}).get("Details", {}))
    note_list = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    title = html.escape(f"Profiler report {job_name}".strip())
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style>"
        f"</head><body><h1>{title}</h1><p><strong>{html.escape(verdict)}</strong></p>"
        "<table><tr><th>Rule</th><th>Result</th><th>Violations</th><th>Datapoints</th><th>Details</th>"
        f"<th>Parameters</th></tr>{''.join(rows)}</table>{usage}"
        f"{'<h2>Notes</h2><ul>' + note_list + '</ul>' if notes else ''}</body></html>"
    )
