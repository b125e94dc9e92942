"""SageMaker Debugger's built-in VanishingGradient, Overfit, Overtraining and PoorWeightInitialization rules,
written on smdebug's `Rule` API with the parameters and defaults of AWS's "List of Debugger built-in rules".

Each rule keeps its parameters in `__init__` and decides one saved step at a time in `invoke_at_step`
(global step numbers, as smdebug passes them); `evidence` says what triggered, `checks` counts what was
looked at. Where the documentation leaves a choice open, the choice is written next to the code.
"""

from __future__ import annotations

import inspect
import os
import re
from typing import Any

import numpy as np

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

from smdebug.core.modes import ModeKeys  # noqa: E402
from smdebug.rules.rule import Rule  # noqa: E402


class RuleConfigError(ValueError):
    """The rule configuration names an unknown rule or parameter, or a value of the wrong type."""


class MissingData(RuntimeError):
    """The trial lacks what the rule needs (a collection, a mode): the rule cannot be evaluated."""


def _in_collection(trial: Any, collection: str, name: str) -> bool:
    """smdebug's own membership test: named in the collections file, or matching its include_regex."""
    members = trial.collection(collection)
    return name in members.tensor_names or any(re.match(regex, name) for regex in members.include_regex)


def collection_tensors(trial: Any, collection: str, step: int | None = None) -> list[str]:
    """Tensors of `collection` saved at all, or at `step`. (Filtered here rather than by smdebug, which logs a
    warning for every step that lacks the collection, e.g. every EVAL step for gradients.)"""
    if collection not in trial.collections():
        return []
    names = trial.tensor_names() if step is None else trial.tensor_names(step=step)
    return [name for name in names if _in_collection(trial, collection, name)]


def matching_tensors(trial: Any, regex: str, step: int | None = None) -> list[str]:
    names = trial.tensor_names() if step is None else trial.tensor_names(step=step)
    return [name for name in names if re.match(regex, name)]


def mean_loss(trial: Any, step: int, patterns: list[re.Pattern] | None = None) -> float | None:
    """Mean of the loss tensors saved at `step` (all of them, or those matching `patterns`)."""
    values = []
    for name in collection_tensors(trial, "losses", step):
        if patterns and not any(p.search(name) for p in patterns):
            continue
        values.append(float(np.mean(trial.tensor(name).value(step))))
    return float(np.mean(values)) if values else None


def no_training_steps(trial: Any) -> str:
    """Why a trial without a single training step has nothing for a rule to watch, or "" when it has steps."""
    if trial.steps(mode=ModeKeys.TRAIN):
        return ""
    return (
        ": the job took no training step (a head fitted in closed form, such as train.py's linear head, "
        "takes none), so this rule has nothing to watch on this recipe"
    )


class BuiltInRule(Rule):
    """Shared bookkeeping: evidence of the trigger, checks made, and what the rule needs from the trial."""

    required_collections: tuple[str, ...] = ()

    def __init__(self, base_trial: Any):
        super().__init__(base_trial, action_str="")
        self.evidence = ""
        self.checks = 0
        self.notes: list[str] = []

    def check_inputs(self) -> None:
        """Raise MissingData when the trial cannot feed this rule at all."""
        saved = sorted(self.base_trial.collections())
        for name in self.required_collections:
            if not collection_tensors(self.base_trial, name):
                raise MissingData(
                    f"{self.rule_name} needs tensors of the '{name}' collection; the hook saved "
                    f"tensors for none of them (collections configured: {', '.join(saved)})"
                    + no_training_steps(self.base_trial)
                )

    def finish(self) -> bool:
        """Called once when the trial has no more steps; True when the end itself completes a trigger."""
        return False

    def summary(self) -> str:
        return ""


class VanishingGradient(BuiltInRule):
    """True when the mean of the absolute values of a gradient drops below `threshold`."""

    required_collections = ("gradients",)

    def __init__(self, base_trial: Any, threshold: float = 0.0000001):
        super().__init__(base_trial)
        self.threshold = float(threshold)
        self.smallest: tuple[float, str, int] | None = None

    def invoke_at_step(self, step: int) -> bool:
        for name in collection_tensors(self.base_trial, "gradients", step):
            value = float(self.base_trial.tensor(name).reduction_value(step, "mean", abs=True))
            self.checks += 1
            if self.smallest is None or value < self.smallest[0]:
                self.smallest = (value, name, step)
            if value < self.threshold:
                self.evidence = f"{name} has mean |gradient| {value:.3g} < threshold {self.threshold:g} at step {step}"
                return True
        return False

    def summary(self) -> str:
        if self.smallest is None:
            return ""
        value, name, step = self.smallest
        return f"smallest mean |gradient| {value:.3g} ({name}, step {step}), threshold {self.threshold:g}"


class Overfit(BuiltInRule):
    """True when (mean validation loss - mean training loss) / mean training loss exceeds `ratio_threshold`
    for `patience` consecutive evaluations from `start_step` on.

    Choice: a "step" of patience is one evaluation pass (a run of EVAL-mode steps) compared with the training
    steps just before it; comparing single validation batches would measure batch-to-batch noise.
    """

    required_collections = ("losses",)

    def __init__(
        self,
        base_trial: Any,
        tensor_regex: str | None = None,
        start_step: int = 0,
        patience: int = 1,
        ratio_threshold: float = 0.1,
    ):
        super().__init__(base_trial)
        self.start_step, self.patience, self.ratio_threshold = (
            int(start_step),
            int(patience),
            float(ratio_threshold),
        )
        self.patterns = [re.compile(p.strip()) for p in (tensor_regex or "").split(",") if p.strip()] or None
        self.train: list[float] = []
        self.valid: list[float] = []
        self.train_mean: float | None = None
        self.previous_mode: Any = None
        self.strikes = 0
        self.evaluations = 0
        self.largest_ratio: float | None = None

    def _close_evaluation(self) -> bool:
        if not self.valid or self.train_mean is None or self.train_mean == 0:
            self.valid = []
            return False
        valid = float(np.mean(self.valid))
        ratio = (valid - self.train_mean) / abs(self.train_mean)
        self.valid, self.evaluations, self.checks = [], self.evaluations + 1, self.checks + 1
        self.largest_ratio = ratio if self.largest_ratio is None else max(ratio, self.largest_ratio)
        self.strikes = self.strikes + 1 if ratio > self.ratio_threshold else 0
        if self.strikes >= self.patience:
            self.evidence = (
                f"mean validation loss {valid:.4f} vs mean training loss {self.train_mean:.4f}: "
                f"ratio {ratio:.3f} > {self.ratio_threshold:g} for {self.strikes} evaluation(s)"
            )
            return True
        return False

    def invoke_at_step(self, step: int) -> bool:
        if step < self.start_step:
            return False
        mode = self.base_trial.mode(step)
        loss = mean_loss(self.base_trial, step, self.patterns)
        triggered = False
        if mode == ModeKeys.EVAL and self.previous_mode != ModeKeys.EVAL and self.train:
            self.train_mean, self.train = float(np.mean(self.train)), []
        if mode != ModeKeys.EVAL and self.previous_mode == ModeKeys.EVAL:
            triggered = self._close_evaluation()
        if loss is not None:
            (self.valid if mode == ModeKeys.EVAL else self.train).append(loss)
        self.previous_mode = mode
        return triggered

    def finish(self) -> bool:
        if self.previous_mode == ModeKeys.EVAL:
            return self._close_evaluation()
        return False

    def check_inputs(self) -> None:
        super().check_inputs()
        if not self.base_trial.steps(mode=ModeKeys.EVAL) or not self.base_trial.steps(mode=ModeKeys.TRAIN):
            raise MissingData(
                "Overfit compares validation with training loss, but the trial has no "
                f"{'EVAL' if not self.base_trial.steps(mode=ModeKeys.EVAL) else 'TRAIN'}-mode "
                "steps (the training code must call hook.set_mode for both)"
            )

    def summary(self) -> str:
        if self.largest_ratio is None:
            return "no evaluation had training steps before it to compare with"
        return (
            f"{self.evaluations} evaluation(s) compared; largest validation/training ratio "
            f"{self.largest_ratio:.3f} (threshold {self.ratio_threshold:g}, patience {self.patience})"
        )


class Overtraining(BuiltInRule):
    """True when the training loss has not improved by `delta` for `patience_train` steps, or the validation
    loss for `patience_validation` steps.

    Choice: training is judged per saved training step; validation per evaluation pass (its mean loss), since
    the model does not change within a pass.
    """

    required_collections = ("losses",)

    def __init__(self, base_trial: Any, patience_train: int = 5, patience_validation: int = 10, delta: float = 0.01):
        super().__init__(base_trial)
        self.patience_train, self.patience_validation, self.delta = (
            int(patience_train),
            int(patience_validation),
            float(delta),
        )
        self.best = {"training": float("inf"), "validation": float("inf")}
        self.stale = {"training": 0, "validation": 0}
        self.seen = {"training": 0, "validation": 0}
        self.valid: list[float] = []
        self.previous_mode: Any = None

    def _observe(self, which: str, loss: float, where: str) -> bool:
        self.checks += 1
        self.seen[which] += 1
        if loss < self.best[which] - self.delta:
            self.best[which], self.stale[which] = loss, 0
            return False
        self.stale[which] += 1
        patience = self.patience_train if which == "training" else self.patience_validation
        if self.stale[which] >= patience:
            self.evidence = (
                f"{which} loss has not improved by {self.delta:g} for {self.stale[which]} "
                f"{'steps' if which == 'training' else 'evaluations'} (best {self.best[which]:.4f}, "
                f"now {loss:.4f}, {where})"
            )
            return True
        return False

    def _close_evaluation(self, where: str) -> bool:
        if not self.valid:
            return False
        loss, self.valid = float(np.mean(self.valid)), []
        return self._observe("validation", loss, where)

    def invoke_at_step(self, step: int) -> bool:
        mode = self.base_trial.mode(step)
        triggered = False
        if mode != ModeKeys.EVAL and self.previous_mode == ModeKeys.EVAL:
            triggered = self._close_evaluation(f"evaluation before step {step}")
        self.previous_mode = mode
        loss = mean_loss(self.base_trial, step)
        if triggered or loss is None:
            return triggered
        if mode == ModeKeys.EVAL:
            self.valid.append(loss)
            return False
        return self._observe("training", loss, f"step {step}")

    def finish(self) -> bool:
        return self._close_evaluation("last evaluation") if self.previous_mode == ModeKeys.EVAL else False

    def summary(self) -> str:
        best = ", ".join(f"best {k} loss {v:.4f}" for k, v in self.best.items() if v != float("inf"))
        text = f"{best}; patience {self.patience_train} training steps / {self.patience_validation} evaluations"
        if self.seen["training"] < self.patience_train and self.seen["validation"] < self.patience_validation:
            text += (
                f" (the run, {self.seen['training']} training steps and {self.seen['validation']} evaluations, "
                "is shorter than either patience: it cannot be called overtrained)"
            )
        return text


class PoorWeightInitialization(BuiltInRule):
    """Over the first `steps` training steps: True when the variance of activation inputs (tensors matching
    `activation_inputs_regex`) differs across layers by more than `threshold` (max/min), when the smallest
    5th-95th percentile range of a layer's gradients is below `distribution_range`, or when the loss has not
    decreased for `patience` steps."""

    def __init__(
        self,
        base_trial: Any,
        activation_inputs_regex: str = ".*relu_input",
        threshold: float = 10.0,
        distribution_range: float = 0.001,
        patience: int = 5,
        steps: int = 10,
    ):
        super().__init__(base_trial)
        self.regex = activation_inputs_regex
        self.threshold, self.distribution_range = float(threshold), float(distribution_range)
        self.patience, self.steps = int(patience), int(steps)
        self.analysed = 0
        self.best_loss = float("inf")
        self.stale = 0
        self.largest_ratio: float | None = None
        self.smallest_range: float | None = None

    def check_inputs(self) -> None:
        has_activations = bool(matching_tensors(self.base_trial, self.regex))
        has_gradients = bool(collection_tensors(self.base_trial, "gradients"))
        has_losses = bool(collection_tensors(self.base_trial, "losses"))
        if not (has_activations or has_gradients or has_losses):
            raise MissingData(
                f"PoorWeightInitialization found no activation inputs matching "
                f"{self.regex!r}, no gradients and no losses in the trial" + no_training_steps(self.base_trial)
            )
        for present, what in (
            (has_activations, f"activation inputs matching {self.regex!r}"),
            (has_gradients, "gradients"),
            (has_losses, "losses"),
        ):
            if not present:
                self.notes.append(f"check skipped: no {what} saved")

    def _variance_ratio(self, step: int) -> str:
        variances = {}
        for name in matching_tensors(self.base_trial, self.regex, step):
            variances[name] = float(np.var(self.base_trial.tensor(name).value(step)))
        if len(variances) < 2:
            return ""
        self.checks += 1
        low, high = min(variances, key=variances.get), max(variances, key=variances.get)
        ratio = float("inf") if variances[low] == 0 else variances[high] / variances[low]
        self.largest_ratio = ratio if self.largest_ratio is None else max(ratio, self.largest_ratio)
        if ratio > self.threshold:
            return (
                f"activation-input variance ratio {ratio:.3g} > {self.threshold:g} at step {step} "
                f"({high}: {variances[high]:.3g}, {low}: {variances[low]:.3g})"
            )
        return ""

    def _gradient_range(self, step: int) -> str:
        ranges = {}
        for name in collection_tensors(self.base_trial, "gradients", step):
            values = np.asarray(self.base_trial.tensor(name).value(step), dtype=np.float64).ravel()
            if values.size > 1:
                low, high = np.percentile(values, [5, 95])
                ranges[name] = float(high - low)
        if not ranges:
            return ""
        self.checks += 1
        name = min(ranges, key=ranges.get)
        self.smallest_range = ranges[name] if self.smallest_range is None else min(ranges[name], self.smallest_range)
        if ranges[name] < self.distribution_range:
            return f"{name} 5th-95th percentile range {ranges[name]:.3g} < {self.distribution_range:g} at step {step}"
        return ""

    def _loss_progress(self, step: int) -> str:
        loss = mean_loss(self.base_trial, step)
        if loss is None:
            return ""
        self.checks += 1
        if loss < self.best_loss:
            self.best_loss, self.stale = loss, 0
            return ""
        self.stale += 1
        if self.stale >= self.patience:
            return (
                f"loss has not decreased for {self.stale} of the first {self.analysed} training steps "
                f"(best {self.best_loss:.4f}, now {loss:.4f} at step {step})"
            )
        return ""

    def invoke_at_step(self, step: int) -> bool:
        if self.analysed >= self.steps or self.base_trial.mode(step) != ModeKeys.TRAIN:
            return False
        self.analysed += 1
        for check in (self._variance_ratio, self._gradient_range, self._loss_progress):
            evidence = check(step)
            if evidence:
                self.evidence = evidence
                return True
        return False

    def summary(self) -> str:
        parts = [f"{self.analysed} of the first {self.steps} training steps analysed"]
        if self.patience >= self.steps:  # the first step sets the lowest loss: at most steps - 1 without a new one
            parts.append(f"loss check off (patience {self.patience} >= steps {self.steps})")
        if self.largest_ratio is not None:
            parts.append(f"largest activation variance ratio {self.largest_ratio:.3g} (threshold {self.threshold:g})")
        if self.smallest_range is not None:
            parts.append(
                f"smallest gradient p5-p95 range {self.smallest_range:.3g} (threshold {self.distribution_range:g})"
            )
        return "; ".join(parts + self.notes)


RULES: dict[str, type[BuiltInRule]] = {
    "VanishingGradient": VanishingGradient,
    "Overfit": Overfit,
    "Overtraining": Overtraining,
    "PoorWeightInitialization": PoorWeightInitialization,
}


def rule_defaults(rule: type[BuiltInRule]) -> dict[str, Any]:
    """The rule's parameters and defaults, from its signature (the one place they are written)."""
    parameters = list(inspect.signature(rule.__init__).parameters.values())[2:]  # self, base_trial
    return {p.name: p.default for p in parameters}


def _convert(rule: str, name: str, default: Any, text: Any) -> Any:
    try:
        if isinstance(default, bool):
            return str(text).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(float(text)) if float(text).is_integer() else int(text)
        if isinstance(default, float):
            return float(text)
    except (TypeError, ValueError) as exc:
        raise RuleConfigError(f"{rule}: parameter {name}={text!r} is not a valid {type(default).__name__}") from exc
    return None if text is None else str(text)


def resolve_rule(rule_configuration: dict[str, Any]) -> tuple[str, type[BuiltInRule], dict[str, Any]]:
    """(rule name, class, effective parameters) from a DebugRuleConfigurations entry as the SDK writes it:
    {"RuleConfigurationName", "RuleEvaluatorImage",
     "RuleParameters": {"rule_to_invoke": ..., name: "value"}}."""
    parameters = dict(rule_configuration.get("RuleParameters") or {})
    name = parameters.pop("rule_to_invoke", None) or rule_configuration.get("RuleConfigurationName")
    if name not in RULES:
        raise RuleConfigError(f"unknown debugger rule {name!r}: this engine runs {', '.join(RULES)}")
    rule = RULES[name]
    defaults = rule_defaults(rule)
    unknown = sorted(set(parameters) - set(defaults))
    if unknown:
        raise RuleConfigError(f"{name} has no parameter(s) {', '.join(unknown)}; it takes {', '.join(defaults)}")
    effective = dict(defaults)
    effective.update({k: _convert(name, k, defaults[k], v) for k, v in parameters.items()})
    return name, rule, effective
