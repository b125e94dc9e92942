"""Limits a deployment sets and no run can cross: instance types and count, runtime and wait, estimated cost,
and the rules that always block. Checked with the settings, so `check_run_conf` refuses a run that crosses one
before any paid work, naming the limit; on AWS the documented policy enforces the types and the runtime a
second time with SageMaker's condition keys (docs/airflow-policy.json).

The deployment sets them as environment variables or Airflow Variables (INVENTORY_ALLOWED_INSTANCE_TYPES, ...);
they are not Params, so a run's conf cannot name them. Kept free of heavy imports: settings use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inventory_pipeline.aws.pricing import price_table  # the shipped, dated table the report prices with


@dataclass(frozen=True)
class Guardrails:
    # () = the types whose price the shipped table knows (so every run's cost can be estimated)
    allowed_instance_types: tuple[str, ...] = ()
    max_instance_count: int = 4
    runtime_limit_s: int = 86400  # a day
    wait_limit_s: int = 2 * 86400
    max_run_cost_usd: float = 100.0  # 0 = no cost limit
    required_blocking_rules: tuple[str, ...] = ()

    def allowed_types(self) -> tuple[str, ...]:
        return self.allowed_instance_types or tuple(sorted(price_table()["instances"]))

    def estimated_cost_usd(self, instance_type: str, instance_count: int, max_runtime_s: int) -> float | None:
        """The most a job can be billed: every instance for the whole runtime at the on-demand list price
        (Spot bills at most that too). None when the shipped table has no price for the type."""
        spec = price_table()["instances"].get(instance_type)
        return None if spec is None else spec["price"] * instance_count * max_runtime_s / 3600

    def problems(self, run: RunShape) -> list[tuple[str, str]]:
        """(setting, why) for each limit the run crosses; empty when it stays within all of them."""
        found = []
        if run.instance_count > self.max_instance_count:
            limit = f"{self.max_instance_count} (INVENTORY_MAX_INSTANCE_COUNT)"
            found.append(("instance_count", f"{run.instance_count} is above this deployment's limit of {limit}"))
        allowed = self.allowed_types()
        if run.instance_type not in allowed:
            source = "INVENTORY_ALLOWED_INSTANCE_TYPES"
            if not self.allowed_instance_types:
                source = f"the types the shipped price table knows; {source} allows others"
            allowed_text = f"{', '.join(allowed)}: {source}"
            found.append(("instance_type", f"{run.instance_type} is not allowed in this deployment ({allowed_text})"))
        if run.max_runtime_s > self.runtime_limit_s:
            limit = f"{self.runtime_limit_s} s (INVENTORY_RUNTIME_LIMIT_S)"
            found.append(("max_runtime_s", f"{run.max_runtime_s} s is above this deployment's limit of {limit}"))
        if run.use_spot and run.max_wait_s > self.wait_limit_s:
            limit = f"{self.wait_limit_s} s (INVENTORY_WAIT_LIMIT_S)"
            found.append(("max_wait_s", f"{run.max_wait_s} s is above this deployment's limit of {limit}"))
        cost = self.estimated_cost_usd(run.instance_type, run.instance_count, run.max_runtime_s)
        if self.max_run_cost_usd and cost is not None and cost > self.max_run_cost_usd:
            table = price_table()
            price = table["instances"][run.instance_type]["price"]
            basis = (
                f"{run.instance_count} x {run.instance_type} for {run.max_runtime_s} s at ${price}/h, "
                f"{table['source']}, {table['recorded']}"
            )
            limit = f"${self.max_run_cost_usd:,.2f} per run (INVENTORY_MAX_RUN_COST_USD)"
            found.append(
                ("max_runtime_s", f"the job may cost up to ${cost:,.2f} ({basis}), above the limit of {limit}")
            )
        missing = [rule for rule in self.required_blocking_rules if rule not in run.fail_on_rules]
        if missing:
            required = ", ".join(self.required_blocking_rules)
            found.append(
                (
                    "fail_on_rules",
                    f"leaves out {', '.join(missing)}, which this deployment always blocks on "
                    f"(INVENTORY_REQUIRED_BLOCKING_RULES: {required}); a run may add rules, never remove these",
                )
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed_instance_types": list(self.allowed_types()),
            "max_instance_count": self.max_instance_count,
            "runtime_limit_s": self.runtime_limit_s,
            "wait_limit_s": self.wait_limit_s,
            "max_run_cost_usd": self.max_run_cost_usd,
            "required_blocking_rules": list(self.required_blocking_rules),
        }


@dataclass(frozen=True)
class RunShape:
    """What a run asks for that the guardrails bound."""

    instance_type: str
    instance_count: int
    max_runtime_s: int
    use_spot: bool
    max_wait_s: int
    fail_on_rules: tuple[str, ...]
