"""Which rules can be evaluated on which instance: known before any paid work, so a blocking rule that cannot
run is refused at trigger time instead of silently never firing.

Kept free of heavy imports: `Settings` validation uses it when the first task starts.
"""

from __future__ import annotations

import re

# ProfilerReport sub-rules that ask whether a GPU is starved or misused: nothing to measure without one.
GPU_RULES = ("LowGPUUtilization", "GPUMemoryIncrease", "BatchSize", "LoadBalancing", "CPUBottleneck", "IOBottleneck")
MULTI_GPU_RULES = ("LoadBalancing",)  # compares GPUs of one node with each other
# Needs the dataloader timeline of SageMaker's framework profiler (deprecated); no mode of this pipeline has it.
NEVER_EVALUATED = {
    "Dataloader": "it needs the dataloader timeline of SageMaker's framework profiler (deprecated), which this "
    "pipeline does not collect",
}
# Step-timing rules: SageMaker's ProfilerReport reads them from its framework profiler's step events, which this
# pipeline does not collect (framework profiling is deprecated); our engine reads the same clock from the smdebug
# trial (rules/step_timeline.py). So only self_hosted rules evaluate them: managed ones (and auto, which starts
# managed) would leave them NotEvaluated on every run.
DEBUGGER_RULES = ("VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization")
# The ProfilerReport's rules, by their SageMaker names.
PROFILER_RULES = (
    "CPUBottleneck",
    "IOBottleneck",
    "LowGPUUtilization",
    "GPUMemoryIncrease",
    "BatchSize",
    "Dataloader",
    "LoadBalancing",
    "MaxInitializationTime",
    "StepOutlier",
    "OverallSystemUsage",
)
FRAMEWORK_PROFILER_RULES = ("StepOutlier", "MaxInitializationTime")
# GPUs per instance for the SageMaker training types people pick most; other sizes of a GPU family are
# assumed to have at least one GPU (their count is then unknown, and only checked when the job has run).
GPUS_PER_INSTANCE = {
    "ml.g4dn.xlarge": 1,
    "ml.g4dn.2xlarge": 1,
    "ml.g4dn.4xlarge": 1,
    "ml.g4dn.8xlarge": 1,
    "ml.g4dn.12xlarge": 4,
    "ml.g4dn.16xlarge": 1,
    "ml.g5.xlarge": 1,
    "ml.g5.2xlarge": 1,
    "ml.g5.4xlarge": 1,
    "ml.g5.8xlarge": 1,
    "ml.g5.12xlarge": 4,
    "ml.g5.16xlarge": 1,
    "ml.g5.24xlarge": 4,
    "ml.g5.48xlarge": 8,
    "ml.p3.2xlarge": 1,
    "ml.p3.8xlarge": 4,
    "ml.p3.16xlarge": 8,
    "ml.p4d.24xlarge": 8,
    "ml.p5.48xlarge": 8,
}
_GPU_FAMILY = re.compile(r"^ml\.(g\d|p\d)")


def gpus_per_instance(instance_type: str) -> int | None:
    """0 for CPU instances, the count where known, None for a GPU family size not in the table."""
    if instance_type in GPUS_PER_INSTANCE:
        return GPUS_PER_INSTANCE[instance_type]
    return None if _GPU_FAMILY.match(instance_type) else 0


def why_not_evaluable(rule: str, instance_type: str, rules_mode: str = "self_hosted") -> str | None:
    """The reason `rule` cannot be evaluated on `instance_type` under `rules_mode`, or None when it can (as far as
    is known before the job runs: a rule can still end NotEvaluated for lack of data, and then blocks)."""
    if rule in NEVER_EVALUATED:
        return f"{rule} is never evaluated: {NEVER_EVALUATED[rule]}"
    if rule in FRAMEWORK_PROFILER_RULES and rules_mode != "self_hosted":
        return (
            f"{rule} needs step events from SageMaker's framework profiler, which this pipeline does not "
            f"collect, so SageMaker's managed rules (rules_mode {rules_mode}) cannot evaluate it; our engine "
            "does (rules_mode self_hosted)"
        )
    gpus = gpus_per_instance(instance_type)
    if rule in GPU_RULES and gpus == 0:
        return f"{rule} measures GPU use and {instance_type} has no GPU"
    if rule in MULTI_GPU_RULES and gpus is not None and gpus < 2:
        return f"{rule} compares the GPUs of one node and {instance_type} has {gpus}"
    return None
