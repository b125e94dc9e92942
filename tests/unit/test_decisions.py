"""The gate's decision as a pure function of what the run left behind (issue 13, points 2-4; issue 22)."""

from support import DONE, PASSED, balanced_truths, scored_metrics

from inventory_pipeline.decision.comparison import mcnemar_p
from inventory_pipeline.decision.decide import GatePolicy, RunFacts, decide

CHAMPION = {"version": "3", "job": "job-old", "source": "s3://b/old/model.tar.gz"}
LINEAGE = {"skip": False, "lineage": {"dataset_version": "ds-2"}, "champion": CHAMPION}
TRUTHS = balanced_truths(40)  # 200 test images, 40 of each count


def metrics_for(candidate_right, champion_right) -> dict:
    champion = scored_metrics(TRUTHS, champion_right)
    scored = {k: champion[k] for k in ("accuracy", "rmse", "test_images", "answers")}
    return scored_metrics(TRUTHS, candidate_right, champion={**scored, "images_digest": "d"})


# the candidate answers images 0-159 right (0.80); the champion 0-129 and 160-169 (0.70): 30 images only the
# candidate got right, 10 only the champion
CANDIDATE_RIGHT = [i < 160 for i in range(200)]
CHAMPION_RIGHT = [i < 130 or 160 <= i < 170 for i in range(200)]


def facts(**changes) -> RunFacts:
    base = {
        "job": "job-new",
        "task_states": dict(DONE),
        "lineage": LINEAGE,
        "report": PASSED,
        "metrics": metrics_for(CANDIDATE_RIGHT, CHAMPION_RIGHT),
        "champion_now": CHAMPION,
    }
    return RunFacts(**{**base, **changes})


def test_better_on_the_same_images_promotes_with_both_numbers_the_baseline_and_the_paired_test():
    decision = decide(facts())
    assert decision["status"] == "promoted" and "same 200 test images" in decision["reason"], decision["reason"]
    assert decision["candidate"]["accuracy"] == 0.8 and decision["champion"]["accuracy"] == 0.7
    assert decision["candidate"]["dataset_version"] == decision["champion"]["dataset_version"] == "ds-2"
    comparison = decision["comparison"]
    assert (comparison["only_first"], comparison["only_second"], comparison["gain"]) == (30, 10, 20)
    assert comparison["p_value"] == mcnemar_p(30, 10) < 0.01 and "McNemar" in decision["reason"]
    baseline = decision["baseline"]
    assert baseline["passed"] and baseline["majority"] == {"answer": 3, "correct": 40, "accuracy": 0.2, "rmse": 2**0.5}


def test_worse_or_not_enough_better_is_not_better():
    worse = facts(metrics=metrics_for(CHAMPION_RIGHT, CANDIDATE_RIGHT))
    assert decide(worse)["status"] == "not_better"
    assert decide(facts(), GatePolicy(min_improvement=0.2))["status"] == "not_better"  # +20 of 200 is not > 40
    relative = decide(facts(), GatePolicy(min_relative_improvement=0.15))  # +20 is not more than 15 % of 140
    assert relative["status"] == "not_better" and "min_relative_improvement" in relative["reason"]


def test_exactly_the_minimum_improvement_does_not_promote():
    """Issue 22 (2): 0.93 - 0.92 > 0.01 in floats; in images, 186 vs 184 of 200 is +2, not more than 2."""
    candidate = [i < 186 for i in range(200)]
    champion = [i < 184 for i in range(200)]
    decision = decide(
        facts(metrics=metrics_for(candidate, champion)), GatePolicy(min_improvement=0.01, significance=0.5)
    )
    assert decision["status"] == "not_better" and "not more than min_improvement" in decision["reason"]


def test_a_gain_chance_explains_is_not_promoted():
    """Issue 22 (2): one image more right out of 200 (and 4 vs 3 disagreements) is noise, not a better model: not
    promoted without a person (with the default policy, a person is asked: see the approval tests)."""
    candidate = [i < 150 or i == 199 for i in range(200)]
    champion = [i < 147 or 150 <= i < 153 for i in range(200)]
    decision = decide(facts(metrics=metrics_for(candidate, champion)), GatePolicy(approval_when=()))
    assert decision["status"] == "not_better", decision["reason"]
    assert decision["comparison"]["gain"] == 1 and decision["comparison"]["p_value"] > 0.05
    assert "chance explains" in decision["reason"]


def test_a_candidate_that_drops_a_count_is_not_better_even_when_overall_accuracy_rises():
    """Issue 22: better overall, but count 5's recall falls from 40/40 to 20/40: not promoted, the count named."""
    champion = [TRUTHS[i] != 1 for i in range(200)]  # answers every count but 1 right: 160/200
    candidate = [TRUTHS[i] != 5 or i < 100 for i in range(200)]  # every 1 right, half the 5s: 180/200
    decision = decide(facts(metrics=metrics_for(candidate, champion)))
    assert decision["comparison"]["gain"] == 20 and decision["comparison"]["p_value"] < 0.01
    assert decision["status"] == "not_better" and "count 5: 40/40 -> 20/40" in decision["reason"]
    assert decide(facts(metrics=metrics_for(candidate, champion)), GatePolicy(max_class_drop=0.6))["status"] == (
        "promoted"
    )  # a deployment that tolerates the drop


def test_a_first_model_that_does_not_beat_the_trivial_answer_is_below_baseline():
    """Issue 22 (1): the browser test's first model answered "5" for every photo and was promoted."""
    truths = [1, 2, 3, 3, 4, 5, 2, 3, 4, 1, 3, 4, 5, 2, 3]  # 15 test images, 5 of them 3s
    always_five = scored_metrics(truths, [t == 5 for t in truths], wrong_answer=lambda t: 5)
    first = facts(lineage={**LINEAGE, "champion": None}, champion_now=None, metrics=always_five)
    decision = decide(first)
    assert decision["status"] == "below_baseline", decision["reason"]
    assert decision["baseline"]["majority"]["answer"] == 3 and decision["baseline"]["majority"]["correct"] == 5
    assert "always 3" in decision["reason"] and "RMSE" in decision["reason"]


def test_a_first_model_better_than_the_trivial_answer_only_by_chance_is_below_baseline():
    """No real signal: right on 9 of 40 where always-3 is right on 8 (and 4 vs 3 images only one got right)."""
    truths = balanced_truths(8)  # 40 images, 8 of them 3s: always-3 gets those 8 right
    threes = [i for i, t in enumerate(truths) if t == 3]
    others = [i for i, t in enumerate(truths) if t != 3]
    right = set(threes[:5]) | set(others[:5])  # 10 right: 5 only it, 3 only always-3: p = 0.36
    noisy = scored_metrics(truths, [i in right for i in range(40)], wrong_answer=lambda t: 4 if t == 3 else 3)
    decision = decide(facts(lineage={**LINEAGE, "champion": None}, champion_now=None, metrics=noisy))
    assert decision["status"] == "below_baseline" and "chance" in decision["reason"], decision["reason"]


def test_first_model_with_real_signal_promotes():
    first = facts(
        lineage={**LINEAGE, "champion": None}, champion_now=None, metrics=scored_metrics(TRUTHS, CANDIDATE_RIGHT)
    )
    decision = decide(first)
    assert decision["status"] == "promoted" and decision["reason"].startswith("first model")
    assert decision["baseline"]["paired"]["p_value"] < 1e-6


def test_a_champion_measured_on_other_images_is_never_compared():
    # the old gate compared with a number recorded on an earlier test split; now: scored here, or no promotion
    unscored = facts(metrics={k: v for k, v in facts().metrics.items() if k != "champion"})
    assert decide(unscored)["status"] == "not_better"
    failed_scoring = facts(metrics={**facts().metrics, "champion": {"error": "RuntimeError: bad archive"}})
    decision = decide(failed_scoring)
    assert decision["status"] == "not_better" and "bad archive" in decision["reason"]
    champion = facts().metrics["champion"]
    other_images = {**champion, "answers": [[f"other-{n}", t, p] for n, t, p in champion["answers"]]}
    decision = decide(facts(metrics={**facts().metrics, "champion": other_images}))
    assert decision["status"] == "not_better" and "different images" in decision["reason"]
    unrecorded = facts(metrics={k: v for k, v in facts().metrics.items() if k != "answers"})
    assert decide(unrecorded)["status"] == "not_better"


def test_a_champion_that_changed_while_the_run_trained_is_not_compared():
    decision = decide(facts(champion_now={**CHAMPION, "version": "4"}))
    assert decision["status"] == "not_better" and "v3 then, v4 now" in decision["reason"]


def test_blocked_and_failed_runs_get_their_decision():
    blocked = facts(
        report={"decision": {"failed": True, "message": "blocked: Overfit"}},
        task_states={**DONE, "parse_rule_reports": "failed"},
    )
    decision = decide(blocked)
    assert decision["status"] == "blocked" and "Overfit" in decision["reason"]
    failed = facts(
        report=None,
        metrics=None,
        failures={"train": "ClientError: ResourceLimitExceeded"},
        task_states={
            **DONE,
            "train": "failed",
            "wait_for_training": "upstream_failed",
            "wait_for_rules": "upstream_failed",
            "parse_rule_reports": "upstream_failed",
        },
    )
    decision = decide(failed)
    assert decision["status"] == "failed" and decision["reason"] == "train failed: ClientError: ResourceLimitExceeded"


def test_an_unchanged_run_is_skipped_only_when_training_was_skipped():
    skipped = facts(
        lineage={**LINEAGE, "skip": True, "reason": "unchanged"},
        task_states={
            **DONE,
            **dict.fromkeys(["train", "wait_for_training", "wait_for_rules", "parse_rule_reports"], "skipped"),
        },
        report=None,
    )
    assert decide(skipped)["status"] == "skipped_unchanged"


# a gain of 3 images with no image only the champion got right: p = 1/8, not significant
BORDERLINE_RIGHT = [i < 133 or 160 <= i < 170 for i in range(200)]


def test_a_borderline_gain_waits_for_a_person_and_is_promoted_only_on_their_approval():
    """Issue 22: better than the margins but not significant: the review task asks; the gate records the answer."""
    borderline = metrics_for(BORDERLINE_RIGHT, CHAMPION_RIGHT)
    asked = decide(facts(metrics=borderline))
    assert asked["status"] == "needs_approval" and asked["comparison"]["p_value"] == 0.125
    assert asked["approval"]["required"] == ["the gain is not significant: the numbers cannot decide"]
    approved = decide(
        facts(
            metrics=borderline,
            review={
                "state": "success",
                "answer": "Promote",
                "by": "ana",
                "at": "2026-12-07T01:00:00+00:00",
                "timed_out": False,
            },
        )
    )
    assert approved["status"] == "promoted" and "Approved by ana" in approved["reason"]
    assert approved["approval"]["by"] == "ana"
    timed_out = decide(
        facts(
            metrics=borderline, review={"state": "success", "answer": "Do not promote", "by": None, "timed_out": True}
        )
    )
    assert timed_out["status"] == "not_better" and "nobody answered" in timed_out["reason"]
    assert timed_out["approval"]["timed_out"] is True
    rejected = decide(facts(metrics=borderline, review={"state": "success", "answer": "Do not promote", "by": "bo"}))
    assert rejected["status"] == "not_better" and "bo answered 'Do not promote'" in rejected["reason"]
    unanswered = decide(facts(metrics=borderline, review={"state": "skipped"}))
    assert unanswered["status"] == "not_better" and "none was recorded" in unanswered["reason"]
    never = decide(facts(metrics=borderline), GatePolicy(approval_when=()))
    assert never["status"] == "not_better" and "chance explains" in never["reason"]


def test_approval_conditions_always_and_rule_warned():
    warned = {**PASSED, "decision": {"failed": False, "message": "warnings: Overfit", "warnings": ["Overfit"]}}
    assert decide(facts(report=warned))["status"] == "promoted"  # the default asks only on a non-significant gain
    asked = decide(facts(report=warned), GatePolicy(approval_when=("rule_warned",)))
    assert asked["status"] == "needs_approval" and "Overfit" in asked["reason"]
    first = facts(
        lineage={**LINEAGE, "champion": None}, champion_now=None, metrics=scored_metrics(TRUTHS, CANDIDATE_RIGHT)
    )
    assert decide(first, GatePolicy(approval_when=("always",)))["status"] == "needs_approval"
    # a candidate below the trivial answer or worse than the champion is never put to a person
    assert (
        decide(facts(metrics=metrics_for(CHAMPION_RIGHT, CANDIDATE_RIGHT)), GatePolicy(approval_when=("always",)))[
            "status"
        ]
        == "not_better"
    )
