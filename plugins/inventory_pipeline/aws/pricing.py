"""Right-sizing and cost advice from the utilisation the profiler measured, priced with a shipped table.

The table (instance_prices.json) is dated and names its source: prices change, so the report says which
prices it used. The advice targets 70% p95 CPU utilisation: an instance whose CPUs sat mostly idle (the
study saw a 20% peak on ml.c5.xlarge) is too large for the job.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

PRICES_FILE = Path(__file__).with_name("instance_prices.json")
TARGET_CPU_P95 = 70.0


@cache  # read once per process: the settings' guardrails consult it on every validation; callers only read it
def price_table() -> dict[str, Any]:
    return json.loads(PRICES_FILE.read_text())


def advice(
    instance_type: str,
    instance_count: int,
    billable_s: float,
    cpu_p95: float | None,
    memory_p95: float | None,
    table: dict[str, Any] | None = None,
) -> dict[str, Any]:
    table = table or price_table()
    instances = table["instances"]
    current = instances.get(instance_type)
    result: dict[str, Any] = {
        "instance_type": instance_type,
        "instance_count": instance_count,
        "prices_recorded": table["recorded"],
        "prices_source": table["source"],
    }
    if current is None:
        result["summary"] = f"{instance_type} is not in the shipped price table ({table['recorded']})"
        return result
    hours = billable_s * instance_count / 3600.0  # BillableTimeInSeconds is per instance, as AWS reports it
    result["run_cost"] = round(current["price"] * hours, 4)
    if cpu_p95 is None:
        result["summary"] = "no CPU utilisation was measured: no right-sizing advice"
        return result
    needed_vcpus = max(1, math.ceil(current["vcpus"] * cpu_p95 / TARGET_CPU_P95))
    needed_memory = current["memory_gib"] * (memory_p95 or 0) / 100 * 1.3
    candidates = sorted(
        (spec["price"], name)
        for name, spec in instances.items()
        if spec["gpus"] == current["gpus"] and spec["vcpus"] >= needed_vcpus and spec["memory_gib"] >= needed_memory
    )
    best = candidates[0][1] if candidates else instance_type
    result.update(
        {
            "cpu_p95": round(cpu_p95, 1),
            "memory_p95": None if memory_p95 is None else round(memory_p95, 1),
            "needed_vcpus": needed_vcpus,
            "recommended": best,
            "recommended_run_cost": round(instances[best]["price"] * hours, 4),
        }
    )
    if best == instance_type:
        result["summary"] = f"{instance_type} fits: CPU p95 {cpu_p95:.0f}% is close to the {TARGET_CPU_P95:.0f}% target"
    else:
        change = instances[best]["price"] / current["price"] - 1
        direction = "is too small" if instances[best]["vcpus"] > current["vcpus"] else "is larger than needed"
        result["summary"] = (
            f"CPU p95 was {cpu_p95:.0f}% on {instance_type} ({current['vcpus']} vCPUs), which {direction}: "
            f"{best} ({instances[best]['vcpus']} vCPUs) fits the {TARGET_CPU_P95:.0f}% target at "
            f"{abs(change):.0%} {'more' if change > 0 else 'less'} per hour"
        )
    return result
