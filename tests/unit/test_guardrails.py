"""Limits the deployment sets (environment or Variables) and no run can cross, refused before any paid work."""

from __future__ import annotations

import pytest

from inventory_pipeline.aws.pricing import price_table
from inventory_pipeline.settings import Settings, SettingsError

# the DAG's Params that bear on the limits: a run conf can set these, never the limits themselves
DECLARED = frozenset({"instance_type", "instance_count", "max_runtime_s", "use_spot", "max_wait_s", "fail_on_rules"})


def refused(params: dict, env: dict) -> SettingsError:
    with pytest.raises(SettingsError) as raised:
        Settings.from_sources(params, env, declared=DECLARED)
    return raised.value


def test_an_instance_count_above_the_deployments_limit_is_refused_naming_it():
    error = refused({"instance_count": 8}, {"INVENTORY_MAX_INSTANCE_COUNT": "4"})
    assert error.field_name == "instance_count" and "limit of 4 (INVENTORY_MAX_INSTANCE_COUNT)" in str(error)
    # the default limit (4) lets the DAG's default (2) through, and a run cannot raise the limit itself
    assert Settings.from_sources({"instance_count": 2}, {}, declared=DECLARED).instance_count == 2
    error = refused({"instance_count": 5, "max_instance_count": 50}, {})
    assert "INVENTORY_MAX_INSTANCE_COUNT" in str(error)


def test_only_the_allowed_instance_types_run():
    env = {"INVENTORY_ALLOWED_INSTANCE_TYPES": "ml.c5.xlarge,ml.c5.2xlarge"}
    error = refused({"instance_type": "ml.g5.xlarge"}, env)
    assert (
        error.field_name == "instance_type"
        and "ml.c5.xlarge, ml.c5.2xlarge: INVENTORY_ALLOWED_INSTANCE_TYPES" in str(error)
    )
    assert Settings.from_sources({"instance_type": "ml.c5.2xlarge"}, env, declared=DECLARED)
    # unset: the types whose price is known, so every run's cost can be bounded
    error = refused({"instance_type": "ml.c5.large"}, {})
    assert "the types the shipped price table knows" in str(error)
    assert set(Settings().guardrails.allowed_types()) == set(price_table()["instances"])


def test_runtime_wait_and_estimated_cost_are_bounded():
    error = refused({"max_runtime_s": 7200}, {"INVENTORY_RUNTIME_LIMIT_S": "3600"})
    assert error.field_name == "max_runtime_s" and "INVENTORY_RUNTIME_LIMIT_S" in str(error)
    error = refused({"use_spot": True, "max_wait_s": 90000}, {"INVENTORY_WAIT_LIMIT_S": "86400"})
    assert error.field_name == "max_wait_s" and "INVENTORY_WAIT_LIMIT_S" in str(error)
    # 4 x ml.p3.2xlarge for a day at the table's price: above the default $100 per run
    p3 = price_table()["instances"]["ml.p3.2xlarge"]["price"]
    error = refused({"instance_type": "ml.p3.2xlarge", "instance_count": 4, "max_runtime_s": 86400}, {})
    assert f"${p3 * 4 * 24:,.2f}" in str(error) and "INVENTORY_MAX_RUN_COST_USD" in str(error)
    assert price_table()["source"] in str(error)  # the prices' source is named
    assert Settings.from_sources(
        {"instance_type": "ml.p3.2xlarge", "instance_count": 4, "max_runtime_s": 86400},
        {"INVENTORY_MAX_RUN_COST_USD": "0"},
        declared=DECLARED,
    )


def test_required_blocking_rules_are_added_to_a_run_and_never_removed():
    env = {"INVENTORY_REQUIRED_BLOCKING_RULES": "VanishingGradient"}
    # a run that names no rule gets the deployment's; one that names some must keep them
    assert Settings.from_sources({"fail_on_rules": None}, env, declared=DECLARED).fail_on_rules == (
        "VanishingGradient",
    )
    assert Settings.from_sources({"fail_on_rules": []}, env, declared=DECLARED).fail_on_rules == ("VanishingGradient",)
    both = Settings.from_sources({"fail_on_rules": ["Overfit", "VanishingGradient"]}, env, declared=DECLARED)
    assert both.fail_on_rules == ("Overfit", "VanishingGradient")
    error = refused({"fail_on_rules": ["Overfit"]}, env)
    assert error.field_name == "fail_on_rules" and "leaves out VanishingGradient" in str(error)
    with pytest.raises(SettingsError, match="unknown rule.*NoSuchRule"):
        Settings.from_sources({}, {"INVENTORY_REQUIRED_BLOCKING_RULES": "NoSuchRule"})


def test_the_first_task_refuses_a_run_beyond_a_limit_before_any_work(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from inventory_pipeline.airflow.tasks import check_run_conf

    monkeypatch.setenv("INVENTORY_MAX_INSTANCE_COUNT", "4")
    with pytest.raises(AirflowFailException, match="INVENTORY_MAX_INSTANCE_COUNT"):
        check_run_conf({"instance_count": 8}, DECLARED, {"instance_count": 8})


def test_a_refused_runs_decision_can_still_be_recorded_under_limits_below_the_defaults():
    # a deployment allowing 1 instance refuses every run asking for the default 2, and the gate then records the
    # refused run's decision with the deployment's own settings: those must not be refused in turn
    env = {"INVENTORY_MAX_INSTANCE_COUNT": "1"}
    with pytest.raises(SettingsError, match="INVENTORY_MAX_INSTANCE_COUNT"):
        Settings.from_sources({}, env)
    recorded = Settings.from_sources({}, env, enforce_guardrails=False)
    assert recorded.max_instance_count == 1 and recorded.instance_count == 2
    with pytest.raises(SettingsError):  # dataclasses.replace (the train task's) checks them again
        import dataclasses

        dataclasses.replace(recorded, rules_mode="self_hosted")
