"""The four debugger rules and the ProfilerReport as the sagemaker SDK's Rule / ProfilerRule objects: what a
managed request sends, and what our engine rebuilds from a self-hosted job's recorded schedule."""

from __future__ import annotations

import functools
from typing import Any

from inventory_pipeline.rules.applicability import DEBUGGER_RULES
from inventory_pipeline.rules.calibration import Schedule, debugger_rule_parameters

# sagemaker.core.debugger.rule_configs factory for each rule we run.
_RULE_FACTORIES = {
    "VanishingGradient": "vanishing_gradient",
    "Overfit": "overfit",
    "Overtraining": "overtraining",
    "PoorWeightInitialization": "poor_weight_initialization",
}
_DEFAULT_IMAGE = "DEFAULT_RULE_EVALUATOR_IMAGE"


def rule_objects(region: str, schedule: Schedule | None = None) -> tuple[list[Any], list[Any]]:
    """The SDK's Rule / ProfilerRule objects for the four debugger rules, with the parameters calibrated for
    `schedule` (rules/calibration.py), and the ProfilerReport, their images those of `region`."""
    from sagemaker.core.debugger import ProfilerRule, Rule, rule_configs

    parameters = debugger_rule_parameters(schedule)
    rules = [
        Rule.sagemaker(getattr(rule_configs, _RULE_FACTORIES[name])(), rule_parameters=parameters.get(name))
        for name in DEBUGGER_RULES
    ]
    profiler_rules = [ProfilerRule.sagemaker(rule_configs.ProfilerReport())]
    for rule in [*rules, *profiler_rules]:
        # What the SDK's estimator does before sending: the placeholder becomes the region's evaluator image.
        if rule.image_uri == _DEFAULT_IMAGE:
            rule.image_uri = _evaluator_image(region, rule.name.startswith(_DETAILED_PROFILING))
    return rules, profiler_rules


_DETAILED_PROFILING = "DetailedProfilerProcessingJobConfig"  # the one rule name with an image of its own


@functools.cache  # the SDK re-reads botocore's endpoints file for each image it looks up: 0.05-0.15 s each
def _evaluator_image(region: str, detailed_profiling: bool) -> str:
    """The region's rule evaluator image (the SDK's get_rule_container_image_uri), looked up once per process."""
    from sagemaker.core.debugger import get_rule_container_image_uri

    return get_rule_container_image_uri(_DETAILED_PROFILING if detailed_profiling else "", region)
