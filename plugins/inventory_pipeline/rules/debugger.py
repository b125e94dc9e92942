"""SageMaker Debugger's four built-in rules we run, on smdebug's `Rule` API, with SageMaker's parameters.

Each rule keeps its parameters in `__init__` and makes one decision per step in `invoke_at_step`;
`evaluate_debugger_rule` drives it over the job's trial (local directory or S3) with `invoke_rule`, while
training is still writing steps or after it ended. A rule that cannot be evaluated ends in `Error` with the
reason, never in `NoIssuesFound`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inventory_pipeline.rules.outcome import (
    ERROR,
    ISSUES_FOUND,
    NO_ISSUES_FOUND,
    RuleOutcome,
    rule_parameters,
)

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

from smdebug.core.modes import ModeKeys  # noqa: E402
from smdebug.exceptions import NoMoreData, RuleEvaluationConditionMet  # noqa: E402
from smdebug.rules.rule import Rule  # noqa: E402
from smdebug.rules.rule_invoker import invoke_rule  # noqa: E402

log = logging.getLogger(__name__)


def _losses(trial, step: int) -> list[float]:
    values = []
    for name in trial.tensor_names(collection="losses"):
        tensor = trial.tensor(name)
        if step in tensor.steps():
            values.append(float(np.mean(tensor.value(step))))
    return values


class VanishingGradient(Rule):
    """Triggers when the mean absolute value of a gradient falls below `threshold` (default 1e-7)."""

    def __init__(self, base_trial, threshold: float = 0.0000001):
        super().__init__(base_trial, action_str="")
        self.threshold = float(threshold)
        self.checked = 0
        self.evidence = ""

    def invoke_at_step(self, step: int) -> bool:
        for name in self.base_trial.tensor_names(collection="gradients"):
            tensor = self.base_trial.tensor(name)
            if step not in tensor.steps():
                continue
            self.checked += 1
            value = tensor.reduction_value(step, "mean", abs=True)
            if value < self.threshold:
                self.evidence = f"{name} has mean |gradient| {value:.3g} < {self.threshold:g} at step {step}"
                return True
        return False


class Overfit(Rule):
    """Triggers when validation loss exceeds training loss by more than `ratio_threshold` (relative) for
    `patience` consecutive evaluations, counting from `start_step`."""

    def __init__(self, base_trial, start_step: int = 0, patience: int = 1, ratio_threshold: float = 0.1):
        super().__init__(base_trial, action_str="")
        self.start_step, self.patience, self.ratio_threshold = (
            int(start_step),
            int(patience),
            float(ratio_threshold),
        )
        self.train_losses: list[float] = []
        self.eval_losses: list[float] = []
        self.last_mode: Any = None
        self.strikes = 0
        self.checked = 0
        self.evidence = ""

    def _close_evaluation(self) -> bool:
        if not (self.train_losses and self.eval_losses):
            return False
        train, valid = float(np.mean(self.train_losses)), float(np.mean(self.eval_losses))
        self.train_losses, self.eval_losses = [], []
        self.checked += 1
        ratio = (valid - train) / abs(train) if train else 0.0
        self.strikes = self.strikes + 1 if ratio > self.ratio_threshold else 0
        if self.strikes >= self.patience:
            self.evidence = (f"validation loss {valid:.4f} vs training loss {train:.4f} (ratio {ratio:.2f} > "
                             f"{self.ratio_threshold}) for {self.strikes} evaluation(s)")  # fmt: skip
            return True
        return False

    def invoke_at_step(self, step: int) -> bool:
        if step < self.start_step:
            return False
        mode = self.base_trial.mode(step)
        triggered = False
        if mode == ModeKeys.TRAIN and self.last_mode == ModeKeys.EVAL:
            triggered = self._close_evaluation()
        losses = _losses(self.base_trial, step)
        (self.eval_losses if mode == ModeKeys.EVAL else self.train_losses).extend(losses)
        self.last_mode = mode
        return triggered

    def finish(self) -> bool:
        """The last evaluation has no training step after it: close it when the trial ends."""
        return self._close_evaluation()


class Overtraining(Rule):
    """Triggers when training loss has not improved by `delta` within `patience_train` training steps, or
    validation loss within `patience_validation` evaluation steps (SageMaker's defaults 5, 10, 0.01)."""

    def __init__(self, base_trial, patience_train: int = 5, patience_validation: int = 10, delta: float = 0.01):
        super().__init__(base_trial, action_str="")
        self.patience = {ModeKeys.TRAIN: int(patience_train), ModeKeys.EVAL: int(patience_validation)}
        self.delta = float(delta)
        self.best = {ModeKeys.TRAIN: float("inf"), ModeKeys.EVAL: float("inf")}
        self.stale = {ModeKeys.TRAIN: 0, ModeKeys.EVAL: 0}
        self.checked = 0
        self.evidence = ""

    def invoke_at_step(self, step: int) -> bool:
        mode = self.base_trial.mode(step)
        if mode not in self.best:
            return False
        losses = _losses(self.base_trial, step)
        if not losses:
            return False
        self.checked += 1
        loss = float(np.mean(losses))
        if loss < self.best[mode] - self.delta:
            self.best[mode], self.stale[mode] = loss, 0
            return False
        self.stale[mode] += 1
        if self.stale[mode] >= self.patience[mode]:
            which = "training" if mode == ModeKeys.TRAIN else "validation"
            self.evidence = (f"{which} loss has not improved by {self.delta} for {self.stale[mode]} steps "
                             f"(best {self.best[mode]:.4f}, now {loss:.4f}, step {step})")  # fmt: skip
            return True
        return False


class PoorWeightInitialization(Rule):
    """Triggers when the variance of activation inputs differs across layers by more than `threshold` (x),
    when a layer's gradients span less than `distribution_range`, or when the loss has not decreased after
    `steps` training steps (SageMaker's defaults: 10, 0.001, 10)."""

    def __init__(self, base_trial, activation_inputs_regex: str = ".*relu_input", threshold: float = 10.0,
                 distribution_range: float = 0.001, patience: int = 5, steps: int = 10):  # fmt: skip
        super().__init__(base_trial, action_str="")
        self.regex, self.threshold = activation_inputs_regex, float(threshold)
        self.distribution_range, self.patience, self.steps = (
            float(distribution_range),
            int(patience),
            int(steps),
        )
        self.train_steps_seen = 0
        self.first_loss: float | None = None
        self.done = False
        self.checked = 0
        self.evidence = ""

    def invoke_at_step(self, step: int) -> bool:
        if self.done or self.base_trial.mode(step) != ModeKeys.TRAIN:
            return False
        self.train_steps_seen += 1
        self.checked += 1
        if self.train_steps_seen == 1:
            variances = {}
            for name in self.base_trial.tensor_names(regex=self.regex):
                tensor = self.base_trial.tensor(name)
                if step in tensor.steps():
                    variances[name] = float(np.var(tensor.value(step)))
            positive = [v for v in variances.values() if v > 0]
            if len(positive) >= 2 and max(positive) / min(positive) > self.threshold:
                self.evidence = (f"activation-input variance ratio {max(positive) / min(positive):.1f} > "
                                 f"{self.threshold:g} across {len(positive)} layers at step {step}")  # fmt: skip
                return True
            for name in self.base_trial.tensor_names(collection="gradients"):
                tensor = self.base_trial.tensor(name)
                if step in tensor.steps():
                    values = tensor.value(step)
                    if values.size > 1 and float(np.max(values) - np.min(values)) < self.distribution_range:
                        self.evidence = f"{name} spans only {float(np.ptp(values)):.3g} at step {step}"
                        return True
        losses = _losses(self.base_trial, step)
        if losses and self.first_loss is None:
            self.first_loss = float(np.mean(losses))
        if self.train_steps_seen >= self.steps and losses and self.first_loss is not None:
            self.done = True
            if float(np.mean(losses)) >= self.first_loss:
                self.evidence = (f"loss did not decrease over the first {self.steps} training steps "
                                 f"({self.first_loss:.4f} -> {float(np.mean(losses)):.4f})")  # fmt: skip
                return True
        return False


RULES: dict[str, Callable[..., Rule]] = {
    "VanishingGradient": VanishingGradient,
    "Overfit": Overfit,
    "Overtraining": Overtraining,
    "PoorWeightInitialization": PoorWeightInitialization,
}
_PARAMETER_TYPES = {"threshold": float, "ratio_threshold": float, "delta": float, "distribution_range": float,
                    "start_step": int, "patience": int, "patience_train": int, "patience_validation": int,
                    "steps": int, "activation_inputs_regex": str}  # fmt: skip


def build_rule(trial, rule_configuration: dict[str, Any]) -> tuple[str, Rule, dict[str, Any]]:
    name = (rule_configuration.get("RuleParameters") or {}).get("rule_to_invoke") or rule_configuration.get(
        "RuleConfigurationName"
    )
    if name not in RULES:
        raise ValueError(f"unknown debugger rule {name!r}; this engine runs {', '.join(RULES)}")
    params = {k: _PARAMETER_TYPES.get(k, str)(v) for k, v in rule_parameters(rule_configuration).items()
              if k in _PARAMETER_TYPES}  # fmt: skip
    return name, RULES[name](trial, **params), params


def create_trial(trial_path: str):
    from smdebug.trials import create_trial as smdebug_trial

    return smdebug_trial(trial_path)


def evaluate_debugger_rule(rule_configuration: dict[str, Any], trial_path: str) -> RuleOutcome:
    """Run one rule over every step of a finished job's trial (a local directory or an s3:// prefix);
    IssuesFound at the first step whose condition is met."""
    config_name = rule_configuration.get("RuleConfigurationName", "?")
    if not trial_path.startswith("s3://") and not (Path(trial_path) / "index").is_dir():
        # smdebug would wait for the trial to appear; a finished job's missing output is an error now.
        return RuleOutcome(config_name, ERROR, f"no debugger output at {trial_path}")
    try:
        trial = create_trial(trial_path)
        name, rule, params = build_rule(trial, rule_configuration)
        steps = trial.steps()
    except Exception as exc:
        return RuleOutcome(config_name, ERROR, f"could not start the rule: {type(exc).__name__}: {exc}")
    if not steps:
        return RuleOutcome(config_name, ERROR, f"no saved steps in {trial_path}: the debugger hook wrote nothing",
                           parameters=params)  # fmt: skip
    try:
        invoke_rule(rule, start_step=0, end_step=max(steps) + 1, raise_eval_cond=True)
    except RuleEvaluationConditionMet as met:
        return RuleOutcome(config_name, ISSUES_FOUND, rule.evidence or str(met), 1, rule.checked, params)
    except NoMoreData:
        pass  # the trial ended before the last step we asked for
    except Exception as exc:
        return RuleOutcome(config_name, ERROR, f"{name} failed: {type(exc).__name__}: {exc}", 0, rule.checked, params)
    if isinstance(rule, Overfit) and rule.finish():
        return RuleOutcome(config_name, ISSUES_FOUND, rule.evidence, 1, rule.checked, params)
    if rule.checked == 0:
        return RuleOutcome(config_name, ERROR, f"{name} found none of the tensors it needs in {trial_path}", 0, 0,
                           params)  # fmt: skip
    return RuleOutcome(config_name, NO_ISSUES_FOUND, f"{name}: no issue in {rule.checked} checks over "
                       f"{len(steps)} steps", 0, rule.checked, params)  # fmt: skip
