"""The gate's decision as a pure function of what the run left behind (issue 13, points 2-4)."""

import pytest

from inventory_pipeline.decisions import RunFacts, compare, decide

DONE = dict.fromkeys(["select_source", "copy_images", "split_dataset", "package_code", "check_lineage", "train",
                      "wait_for_training", "wait_for_rules", "parse_rule_reports"], "success")  # fmt: skip
PASSED = {"decision": {"failed": False, "message": "no blocking rule fired"}, "rules": []}
CHAMPION = {"version": "3", "job": "job-old", "source": "s3://b/old/model.tar.gz"}
LINEAGE = {"skip": False, "lineage": {"dataset_version": "ds-2"}, "champion": CHAMPION}


def facts(**changes) -> RunFacts:
    metrics = {"accuracy": 0.8, "rmse": 0.5, "test_images": 40, "test_images_digest": "d",
               "champion": {"accuracy": 0.7, "rmse": 0.6, "test_images": 40, "images_digest": "d"}}  # fmt: skip
    base = {"job": "job-new", "task_states": dict(DONE), "lineage": LINEAGE, "report": PASSED, "metrics": metrics,
            "champion_now": CHAMPION}  # fmt: skip
    return RunFacts(**{**base, **changes})


def test_better_on_the_same_images_promotes_with_both_numbers_and_the_dataset_version():
    decision = decide(facts(), 0.0)
    assert decision["status"] == "promoted" and "same 40 test images" in decision["reason"]
    assert decision["candidate"]["accuracy"] == 0.8 and decision["champion"]["accuracy"] == 0.7
    assert decision["candidate"]["dataset_version"] == decision["champion"]["dataset_version"] == "ds-2"


def test_worse_or_not_enough_better_is_not_better():
    worse = facts(metrics={**facts().metrics, "accuracy": 0.6})
    assert decide(worse, 0.0)["status"] == "not_better"
    assert decide(facts(), 0.2)["status"] == "not_better"  # +0.1 is not more than the +0.2 asked for


def test_a_champion_measured_on_other_images_is_never_compared():
    # the old gate compared with a number recorded on an earlier test split; now: scored here, or no promotion
    unscored = facts(metrics={k: v for k, v in facts().metrics.items() if k != "champion"})
    assert decide(unscored, 0.0)["status"] == "not_better"
    failed_scoring = facts(metrics={**facts().metrics, "champion": {"error": "RuntimeError: bad archive"}})
    decision = decide(failed_scoring, 0.0)
    assert decision["status"] == "not_better" and "bad archive" in decision["reason"]
    other_images = facts(metrics={**facts().metrics, "champion": {**facts().metrics["champion"], "images_digest": "x"}})
    assert decide(other_images, 0.0)["status"] == "not_better"


def test_a_champion_that_changed_while_the_run_trained_is_not_compared():
    decision = decide(facts(champion_now={**CHAMPION, "version": "4"}), 0.0)
    assert decision["status"] == "not_better" and "v3 then, v4 now" in decision["reason"]


def test_first_model_promotes():
    first = facts(lineage={**LINEAGE, "champion": None}, champion_now=None,
                  metrics={"accuracy": 0.3, "rmse": 1.0, "test_images": 40})  # fmt: skip
    assert decide(first, 0.0)["status"] == "promoted"


def test_blocked_and_failed_runs_get_their_decision():
    blocked = facts(report={"decision": {"failed": True, "message": "blocked: Overfit"}},
                    task_states={**DONE, "parse_rule_reports": "failed"})  # fmt: skip
    decision = decide(blocked, 0.0)
    assert decision["status"] == "blocked" and "Overfit" in decision["reason"]
    failed = facts(report=None, metrics=None, failures={"train": "ClientError: ResourceLimitExceeded"},
                   task_states={**DONE, "train": "failed", "wait_for_training": "upstream_failed",
                                "wait_for_rules": "upstream_failed", "parse_rule_reports": "upstream_failed"})
    decision = decide(failed, 0.0)
    assert decision["status"] == "failed" and decision["reason"] == "train failed: ClientError: ResourceLimitExceeded"


def test_an_unchanged_run_is_skipped_only_when_training_was_skipped():
    skipped = facts(lineage={**LINEAGE, "skip": True, "reason": "unchanged"},
                    task_states={**DONE, **dict.fromkeys(["train", "wait_for_training", "wait_for_rules",
                                                          "parse_rule_reports"], "skipped")}, report=None)
    assert decide(skipped, 0.0)["status"] == "skipped_unchanged"


@pytest.mark.parametrize(("candidate", "champion", "better"), [
    ({"accuracy": 0.6, "rmse": 0.8}, {"accuracy": 0.6, "rmse": 0.9}, True),  # tie on accuracy, lower RMSE
    ({"accuracy": 0.6, "rmse": 0.9}, {"accuracy": 0.6, "rmse": 0.9}, False),
])  # fmt: skip
def test_ties_break_on_rmse(candidate, champion, better):
    assert compare(candidate, champion, 0.0)[0] is better
