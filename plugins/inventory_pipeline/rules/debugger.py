"""Run one of SageMaker's built-in debugger rules over a job's smdebug trial, as SageMaker's rule job would.

The trial may be a local directory or an `s3://` prefix (mirrored locally through `storage`), and may still
be written by a running job: steps are evaluated as they complete, until smdebug's end-of-training marker
appears (or `job_finished()` says no more will come). A trial that never completes ends in `Error` after
`timeout_s`, never in a hang; a rule that cannot be evaluated ends in `Error` with the reason, never in
`NoIssuesFound`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inventory_pipeline.rules.outcome import ERROR, ISSUES_FOUND, NO_ISSUES_FOUND, RuleOutcome
from inventory_pipeline.rules.storage import END_OF_JOB, LocalStorage, Storage, mirror, open_storage

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
# After the end marker smdebug sleeps this long before its last refresh (for S3's old eventual consistency);
# our mirror copies the marker last, so every file it covers is already local.
os.environ.setdefault("SMDEBUG_TRAINING_END_DELAY_REFRESH", "0")

from smdebug.exceptions import (  # noqa: E402
    RuleEvaluationConditionMet,
    StepUnavailable,
    TensorUnavailable,
    TensorUnavailableForStep,
)

from inventory_pipeline.rules.debugger_rules import (  # noqa: E402
    BuiltInRule,
    MissingData,
    RuleConfigError,
    resolve_rule,
)

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 300.0
COLLECTIONS_DIR = "collections"
NO_DATA = (
    "No debugging data was saved by the training job: check that the debugger hook was configured "
    "before training started"
)


class TrialSource:
    """A local view of the trial: the directory itself, or a temporary mirror of an S3 prefix kept current."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._mirror_dir: Path | None = None
        self._seen: dict[str, str] = {}
        if isinstance(storage, LocalStorage):
            self.path = storage.root
        else:
            self._mirror_dir = Path(tempfile.mkdtemp(prefix="trial-"))
            self.path = self._mirror_dir

    def sync(self) -> int:
        return mirror(self.storage, self.path, self._seen) if self._mirror_dir else 0

    def collection_files(self) -> tuple[int, int]:
        """(collection files written, workers the first one says will write one)."""
        folder = self.path / COLLECTIONS_DIR
        files = sorted(folder.rglob("*_collections.json")) if folder.is_dir() else []
        if not files:
            return 0, 1
        try:
            workers = int(json.loads(files[0].read_text()).get("_meta", {}).get("num_workers", 1))
        except (ValueError, OSError):
            workers = 1  # half-written: smdebug will read it again
        return len(files), workers

    def started(self) -> bool:
        """smdebug can open a trial once every worker wrote its collections file (it blocks until then)."""
        written, expected = self.collection_files()
        return written > 0 and written >= expected

    def ended(self) -> bool:
        return (self.path / END_OF_JOB).exists()

    def close(self) -> None:
        if self._mirror_dir:
            shutil.rmtree(self._mirror_dir, ignore_errors=True)

    def __enter__(self) -> TrialSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_trial(path: Path) -> Any:
    from smdebug.trials import create_trial

    return create_trial(str(path))


class _Run:
    """One evaluation: the rule, where it is in the trial, and how the outcome reads."""

    def __init__(self, config_name: str, rule_name: str, parameters: dict[str, Any], location: str):
        self.config_name, self.rule_name, self.parameters, self.location = (
            config_name,
            rule_name,
            parameters,
            location,
        )
        self.trial: Any = None
        self.rule: BuiltInRule | None = None
        self.evaluated: list[int] = []
        self.skipped = 0

    def outcome(self, status: str, details: str) -> RuleOutcome:
        checks = self.rule.checks if self.rule else 0
        return RuleOutcome(self.config_name, status, details, int(status == ISSUES_FOUND), checks, self.parameters)

    def issue(self, evidence: str) -> RuleOutcome:
        """IssuesFound, naming the parameters the rule ran with beside the values that crossed them."""
        ran_with = ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        return self.outcome(ISSUES_FOUND, f"{evidence} [{self.rule_name} ran with {ran_with}]")

    def error(self, details: str) -> RuleOutcome:
        return self.outcome(ERROR, f"{self.rule_name}: {details}")

    def evaluate_new_steps(self) -> RuleOutcome | None:
        steps = self.trial.steps()  # completed steps only; refreshes the trial's index
        done = set(self.evaluated)
        for step in steps:
            if step in done:
                continue
            try:
                self.rule.invoke(step)
            except RuleEvaluationConditionMet:
                self.evaluated.append(step)
                return self.issue(self.rule.evidence)
            except (StepUnavailable, TensorUnavailable, TensorUnavailableForStep) as exc:
                self.skipped += 1
                log.debug("%s: step %s skipped: %s", self.rule_name, step, exc)
            self.evaluated.append(step)
        return None

    def conclude(self) -> RuleOutcome:
        if self.rule.finish():
            return self.issue(f"{self.rule.evidence} (at the end of the trial)")
        try:
            self.rule.check_inputs()
        except MissingData as exc:
            return self.error(str(exc))
        if not self.evaluated:
            return self.error(f"the trial at {self.location} has no completed step")
        if self.rule.checks == 0:
            return self.error(f"none of the {len(self.evaluated)} saved steps held the tensors it needs")
        span = f"steps {min(self.evaluated)}-{max(self.evaluated)}"
        skipped = f", {self.skipped} step(s) skipped for missing tensors" if self.skipped else ""
        summary = self.rule.summary()
        return self.outcome(
            NO_ISSUES_FOUND,
            f"{self.rule_name}: no issue in {self.rule.checks} checks over "
            f"{len(self.evaluated)} steps ({span}{skipped})" + (f"; {summary}" if summary else ""),
        )


def evaluate_debugger_rule(
    rule_configuration: dict[str, Any],
    trial_path: str,
    s3_endpoint_url: str | None = None,
    *,
    s3_client: Any = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = 2.0,
    job_finished: Callable[[], bool] | None = None,
    wait: Callable[[float], Any] = time.sleep,
) -> RuleOutcome:
    """Evaluate one DebugRuleConfigurations entry over the trial at `trial_path` (local or s3://).

    Steps are evaluated as they complete. The evaluation ends at the first violation (IssuesFound), or when
    the trial is complete: smdebug's end marker is present, or `job_finished()` returns True (pass
    `lambda: True` for a job known to be over). Still incomplete after `timeout_s`: Error. `wait(poll_s)`
    paces the polls; a caller that knows when the job ends passes e.g. `threading.Event.wait` to be woken then.
    """
    config_name = rule_configuration.get("RuleConfigurationName") or "?"
    try:
        rule_name, rule_class, parameters = resolve_rule(rule_configuration)
    except RuleConfigError as exc:
        return RuleOutcome(config_name, ERROR, f"invalid rule configuration: {exc}")
    run = _Run(config_name, rule_name, parameters, trial_path)
    try:
        storage = open_storage(trial_path, s3_client, s3_endpoint_url)
        with TrialSource(storage) as source:
            return _follow(run, rule_class, source, timeout_s, poll_s, job_finished, wait)
    except Exception as exc:  # a crash is an Error with its reason, never "no issues"
        log.exception("%s crashed on %s", rule_name, trial_path)
        return run.error(f"evaluation failed: {type(exc).__name__}: {exc}")


def _follow(
    run: _Run,
    rule_class: type[BuiltInRule],
    source: TrialSource,
    timeout_s: float,
    poll_s: float,
    job_finished: Callable[[], bool] | None,
    wait: Callable[[float], Any] = time.sleep,
) -> RuleOutcome:
    deadline = time.monotonic() + timeout_s
    while True:
        # Ask "finished?" before syncing: whatever the job wrote before finishing is then in this sync.
        finished = bool(job_finished and job_finished())
        source.sync()
        finished = finished or source.ended()
        if run.trial is None and source.started():
            run.trial = _open_trial(source.path)
            run.rule = rule_class(run.trial, **run.parameters)
        if run.trial is None and finished:
            written, expected = source.collection_files()
            if written:
                return run.error(f"only {written} of {expected} workers wrote their smdebug collections file")
            return run.error(f"{NO_DATA} (nothing under {run.location})")
        if run.trial is not None:
            if finished and not source.ended():
                run.trial.steps()  # one last refresh, then tell smdebug no more steps will come
                run.trial.loaded_all_steps = True
            outcome = run.evaluate_new_steps()
            if outcome is not None:
                return outcome
            if finished:
                return run.conclude()
        if time.monotonic() >= deadline:
            if run.trial is None:
                return run.error(f"no debugger output appeared at {run.location} within {timeout_s:g} s")
            last = f"last completed step {max(run.evaluated)}" if run.evaluated else "no completed step"
            return run.error(
                f"the trial at {run.location} did not complete within {timeout_s:g} s ({last}; no "
                f"{END_OF_JOB} end marker and the job was not reported finished)"
            )
        wait(poll_s)
