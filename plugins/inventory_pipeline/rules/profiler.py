"""The ProfilerReport rule (or one of its rules on its own), as SageMaker runs it for a training job.

Reads SageMaker-format system metrics under `profiler_path` and, for the step-based rules, the step timeline
of the job's smdebug trial (`trial_path`); writes `<output_dir>/profiler-output/profiler-reports/<Rule>.json`
and `<output_dir>/profiler-output/profiler-report.html`. Defaults are SageMaker's, read from the
`smdebug_rulesconfig` package the SDK uses; a ProfilerReport configuration may override any of them as
`<RuleName>_<parameter>` (e.g. `CPUBottleneck_cpu_threshold`), exactly as `rule_configs.ProfilerReport(...)`
writes them.
"""

from __future__ import annotations

import inspect
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from inventory_pipeline.rules.outcome import ERROR, ISSUES_FOUND, NO_ISSUES_FOUND, RuleOutcome
from inventory_pipeline.rules.profiler_html import render_profiler_report
from inventory_pipeline.rules.profiler_rules import RULES, ProfilerData
from inventory_pipeline.rules.step_timeline import read_step_timeline
from inventory_pipeline.rules.storage import LocalStorage, open_storage
from inventory_pipeline.rules.system_metrics_reader import read_system_metrics

log = logging.getLogger(__name__)
REPORT = "ProfilerReport"


class ProfilerConfigError(ValueError):
    """Unknown profiler rule or parameter, or a value that is not a number where one is needed."""


@cache
def profiler_defaults() -> dict[str, dict[str, Any]]:
    """Each rule's parameters and SageMaker's defaults, from smdebug_rulesconfig's rule classes."""
    from smdebug_rulesconfig.profiler_rules import rules as configured

    defaults = {}
    for name in RULES:
        signature = inspect.signature(getattr(configured, name).__init__)
        defaults[name] = {p.name: p.default for p in list(signature.parameters.values())[1:]}
    return defaults


def _typed(rule: str, name: str, default: Any, text: Any) -> Any:
    if default is None or isinstance(default, str):
        return None if text in (None, "", "None") else str(text)
    try:
        number = float(text)
    except (TypeError, ValueError) as exc:
        raise ProfilerConfigError(f"{rule}_{name}={text!r} is not a number") from exc
    return int(number) if isinstance(default, int) and number.is_integer() else number


def resolve_parameters(rule_configuration: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{rule: effective parameters} for the rules this configuration runs."""
    parameters = dict(rule_configuration.get("RuleParameters") or {})
    invoked = parameters.pop("rule_to_invoke", None) or rule_configuration.get("RuleConfigurationName") or REPORT
    defaults = profiler_defaults()
    by_lower = {name.lower(): name for name in defaults}
    if invoked == REPORT:
        chosen = {name: dict(values) for name, values in defaults.items()}
        for key, text in parameters.items():
            prefix, _, parameter = key.partition("_")
            rule = by_lower.get(prefix.lower())
            if rule is None or parameter not in defaults[rule]:
                raise ProfilerConfigError(
                    f"{key} is not <RuleName>_<parameter> of a profiler rule ({', '.join(sorted(defaults))})"
                )
            chosen[rule][parameter] = _typed(rule, parameter, defaults[rule][parameter], text)
        return chosen
    if invoked not in defaults:
        raise ProfilerConfigError(
            f"unknown profiler rule {invoked!r}: this engine runs {REPORT} and {', '.join(sorted(defaults))}"
        )
    unknown = sorted(set(parameters) - set(defaults[invoked]))
    if unknown:
        raise ProfilerConfigError(f"{invoked} has no parameter(s) {', '.join(unknown)}")
    values = dict(defaults[invoked])
    values.update({k: _typed(invoked, k, defaults[invoked][k], v) for k, v in parameters.items()})
    return {invoked: values}


def _write_reports(output_dir: Path, reports: dict[str, dict[str, Any]], html_text: str) -> None:
    out = LocalStorage(Path(output_dir) / "profiler-output")
    for rule, report in reports.items():
        out.write(f"profiler-reports/{rule}.json", json.dumps(report, indent=2, default=float).encode())
    out.write("profiler-report.html", html_text.encode())


def evaluate_profiler_report(
    rule_configuration: dict[str, Any],
    profiler_path: str | Path,
    output_dir: Path,
    s3_endpoint_url: str | None = None,
    trial_path: str | Path | None = None,
    *,
    s3_client: Any = None,
    training_start: float | None = None,
    job_name: str = "",
) -> RuleOutcome:
    """Run the configured profiler rule(s) and write their reports; IssuesFound when any rule triggered."""
    name = rule_configuration.get("RuleConfigurationName") or REPORT
    try:
        chosen = resolve_parameters(rule_configuration)
    except ProfilerConfigError as exc:
        return RuleOutcome(name, ERROR, f"invalid rule configuration: {exc}")
    try:
        metrics = read_system_metrics(open_storage(profiler_path, s3_client, s3_endpoint_url))
        if not metrics.events:
            extra = f" ({metrics.skip_note()})" if metrics.skip_note() else ""
            return RuleOutcome(
                name,
                ERROR,
                f"no system metrics under {profiler_path}/system: the profiler wrote nothing the rules can read{extra}",
                parameters=chosen,
            )
        trial = open_storage(trial_path, s3_client, s3_endpoint_url) if trial_path else None
        timeline = read_step_timeline(trial)
        data = ProfilerData(metrics, timeline, training_start)
        reports = {rule: RULES[rule](**parameters).evaluate(data) for rule, parameters in chosen.items()}
        notes = [n for n in (metrics.skip_note(),) if n]
        if timeline.problems:
            notes.append(
                f"{len(timeline.problems)} step(s) of the trial could not be timed, e.g. {timeline.problems[0]}"
            )
        if trial_path is None:
            notes.append("no smdebug trial given: step-based rules had no step timings")
        _write_reports(Path(output_dir), reports, render_profiler_report(job_name, reports, notes))
    except Exception as exc:  # a crash is an Error with its reason, never "no issues"
        log.exception("profiler rules crashed on %s", profiler_path)
        return RuleOutcome(name, ERROR, f"profiler rules failed: {type(exc).__name__}: {exc}", parameters=chosen)
    samples = len({(e.node, e.timestamp) for e in metrics.events})
    triggered = [rule for rule, report in sorted(reports.items()) if report["RuleTriggered"]]
    if triggered:
        details = "; ".join(f"{rule}: {reports[rule]['Details']['summary']}" for rule in triggered)
        return RuleOutcome(name, ISSUES_FOUND, details, len(triggered), samples, chosen)
    idle = [rule for rule, r in sorted(reports.items()) if r["Details"].get("applicable") is False]
    unjudged = [rule for rule, r in sorted(reports.items()) if r["Details"].get("evaluated") is False]
    details = f"{len(reports)} profiler rule(s) over {samples} samples, none triggered"
    if idle:
        details += f"; not applicable: {', '.join(idle)}"
    if unjudged:
        details += f"; not evaluated (insufficient data): {', '.join(unjudged)}"
    return RuleOutcome(name, NO_ISSUES_FOUND, details, 0, samples, chosen)
