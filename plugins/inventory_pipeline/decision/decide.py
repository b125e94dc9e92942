"""One decision per run: what the gate concluded, why, and on which numbers; written once, before it is applied.

`decide()` is a pure function of what the run left behind (task states, the rule report, the job's metrics,
the lineage check, the registry's champion, the review's answer). A candidate is promoted only when it beats the
trivial answer on its own test images, beats the champion on the same images by the margins and significantly
(an exact McNemar test on the images only one of them got right), drops no count's recall, and, where the policy
asks, a person approved it (docs/rules-and-policy.md). `new_record` is the record `decision.store` writes once:
the decision and what it rests on (`GateInputs`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from inventory_pipeline.decision import comparison as cmp
from inventory_pipeline.settings import GatePolicy  # the policy is a deployment setting

PROMOTED, NOT_BETTER, BLOCKED, FAILED = "promoted", "not_better", "blocked", "failed"
BELOW_BASELINE = "below_baseline"  # no better than always answering the same count: never promoted
# Not a decision: what the review task sees when a promotion waits for a person (never recorded as final).
NEEDS_APPROVAL = "needs_approval"
PROMOTE_ANSWER, KEEP_ANSWER = "Promote", "Do not promote"  # the review's options; no answer in time is KEEP
SKIPPED_UNCHANGED, ROLLED_BACK = "skipped_unchanged", "rolled_back"
# A would-be promotion while a version is held as champion (`inventory-pipeline model rollback`): recorded, kept
# in the registry, never promoted. RELEASED: the hold ended (`model release`).
HELD, RELEASED = "held", "released"
# What applying a promotion found: the champion had moved (a rollback, another run) or a hold began since the
# decision, so the alias was left alone (the decision stays recorded; `superseded` records what was found).
SUPERSEDED = "superseded"
STATUSES = (
    PROMOTED,
    NOT_BETTER,
    BELOW_BASELINE,
    BLOCKED,
    FAILED,
    SKIPPED_UNCHANGED,
    ROLLED_BACK,
    HELD,
    RELEASED,
    SUPERSEDED,
)
ENDS_RUN_FAILED = (BLOCKED, FAILED)  # the run ends failed after the decision is recorded
BAD_STATES = ("failed", "upstream_failed")


@dataclass
class RunFacts:
    """What the gate sees of one run."""

    job: str
    task_states: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # task id -> its error, where it recorded one
    lineage: dict[str, Any] | None = None  # the check_lineage result
    report: dict[str, Any] | None = None  # parse_rule_reports' summary
    metrics: dict[str, Any] | None = None  # the job's metrics.json (with `champion` when it scored one)
    champion_now: dict[str, Any] | None = None  # the registry's champion as the gate decides
    hold: dict[str, Any] | None = None  # the hold in force as the gate decides (decision.lease.read_hold)
    # the review task's outcome: {"state": its task state, "answer", "by", "at", "timed_out"}; None: no review ran
    review: dict[str, Any] | None = None


@dataclass
class GateInputs:
    """Everything the gate records beside the decision itself."""

    dag_id: str
    run_id: str
    model_uri: str | None = None  # the job's model.tar.gz
    params: dict[str, Any] | None = None  # the run's Params, as tracked
    image_uri: str | None = None
    report_html: bytes | None = None
    report_uri: str | None = None
    report_link: str | None = None
    guardrails: dict[str, Any] | None = None  # the deployment's limits the run was checked against


def _candidate(facts: RunFacts, dataset_version: str | None) -> dict[str, Any] | None:
    metrics = facts.metrics or {}
    if metrics.get("accuracy") is None:
        return None
    return {
        "job": facts.job,
        "accuracy": metrics["accuracy"],
        "rmse": metrics.get("rmse"),
        "test_images": metrics.get("test_images"),
        "dataset_version": dataset_version,
    }


def _first_failure(facts: RunFacts) -> str:
    order = list(facts.task_states)
    bad = [t for t in order if facts.task_states[t] == "failed"] or [
        t for t in order if facts.task_states[t] in BAD_STATES
    ]
    if not bad:
        return "the run produced no rule report"
    task = bad[0]
    return f"{task} failed: {facts.failures[task]}" if task in facts.failures else f"{task} {facts.task_states[task]}"


def _of(correct: int, images: int) -> str:
    return f"{correct}/{images} ({correct / images:.3f})" if images else f"{correct}/0"


def check_baseline(
    answers: cmp.Answers, train_counts: dict[str, int] | None, policy: GatePolicy, prior: cmp.Prior | None = None
) -> dict[str, Any]:
    """Does the candidate beat the trivial answers on its own test images? The most common count (accuracy: more
    right by the margin, and significantly, by the paired test on the same images; RMSE: lower) and always the
    middle count (RMSE: lower). With the class `prior` the job corrected its answers to, the most common count is
    the prior's, and accuracy (by the margin) and RMSE are also compared at the prior's mix (cmp.at_prior): the
    mix the model will meet. Without one, the train split's. Returns the numbers and `passed`, with `why`."""
    images = len(answers)
    majority = cmp.most_common(prior) if prior else cmp.majority_count(train_counts)
    if majority is None:
        return {"passed": False, "why": "the job recorded no train-split class counts: the trivial answer is unknown"}
    always_majority, always_middle = cmp.constant(answers, majority), cmp.constant(answers, cmp.MIDDLE_COUNT)
    pair = cmp.paired(answers, always_majority)
    errors = {
        "candidate": cmp.squared_error(answers),
        "majority": cmp.squared_error(always_majority),
        "middle": cmp.squared_error(always_middle),
    }
    result = {
        "majority": {
            "answer": majority,
            "correct": pair.second_correct,
            "accuracy": pair.second_correct / images,
            "rmse": cmp.rmse(always_majority),
        },
        "middle": {"answer": cmp.MIDDLE_COUNT, "rmse": cmp.rmse(always_middle)},
        "paired": pair.as_dict(),
        "margin": policy.baseline_margin,
        "significance": policy.significance,
    }
    why = []
    if not cmp.more_than(pair.gain, policy.baseline_margin, images):
        whose = "class prior" if prior else "train split"
        why.append(
            f"answers {_of(pair.first_correct, images)} right, always {majority} (the {whose}'s most "
            f"common count) {_of(pair.second_correct, images)}"
            + (f", needs more than {policy.baseline_margin:g} of the images above it" if policy.baseline_margin else "")
        )
    elif pair.p_value >= policy.significance:
        why.append(
            f"answers {pair.gain} more image(s) right than always {majority}, which chance explains "
            f"(exact McNemar p {cmp.p_text(pair.p_value)} on {pair.only_first} vs {pair.only_second} images "
            f"only one of them got right; needs p < {policy.significance:g})"
        )
    scale, scope = images, ""
    if prior:  # at the mix the model will meet: scored as the job's answers were corrected
        at = {
            name: cmp.at_prior(a, prior)
            for name, a in (("candidate", answers), ("majority", always_majority), ("middle", always_middle))
        }
        result["at_prior"] = {name: {"accuracy": float(acc), "rmse": math.sqrt(mse)} for name, (acc, mse) in at.items()}
        errors, scale, scope = {name: mse for name, (_, mse) in at.items()}, 1, " at the job's class prior"
        if at["candidate"][0] - at["majority"][0] <= Fraction(str(policy.baseline_margin)):
            why.append(
                f"at the job's class prior it answers {float(at['candidate'][0]):.3f} right, always "
                f"{majority} {float(at['majority'][0]):.3f}"
            )
    for name in ("majority", "middle"):
        if errors["candidate"] >= errors[name]:
            answer = majority if name == "majority" else cmp.MIDDLE_COUNT
            shown = {who: math.sqrt(errors[who] / scale) for who in ("candidate", name)}
            why.append(
                f"RMSE{scope} {shown['candidate']:.3f} is no lower than always answering {answer} ({shown[name]:.3f})"
            )
    return {**result, "passed": not why, **({"why": "; ".join(dict.fromkeys(why))} if why else {})}


def _class_drops(pair_answers: tuple[cmp.Answers, cmp.Answers], policy: GatePolicy) -> list[str]:
    """Counts whose recall fell by more than max_class_drop against the champion (on enough images)."""
    candidate, champion = (cmp.class_recall(a) for a in pair_answers)
    drops = []
    for count in cmp.COUNTS:
        (new, images), (old, _) = candidate[count], champion[count]
        if images >= policy.min_class_images and cmp.more_than(old - new, policy.max_class_drop, images):
            drops.append(f"count {count}: {old}/{images} -> {new}/{images} right")
    return drops


def compare_with_champion(
    answers: cmp.Answers, champion_answers: cmp.Answers, policy: GatePolicy
) -> tuple[bool, str, dict[str, Any]]:
    """(promote?, why, the paired comparison's numbers). Better = more images right by both margins, no count's
    recall falling by more than max_class_drop, and a gain the paired test says chance does not explain. A
    gain that passes everything but the test is `numbers["borderline"]`: where a person may decide."""
    pair = cmp.paired(answers, champion_answers)
    numbers = {
        **pair.as_dict(),
        "significance": policy.significance,
        "min_improvement": policy.min_improvement,
        "min_relative_improvement": policy.min_relative_improvement,
    }
    scores = (
        f"{_of(pair.first_correct, pair.images)} right vs the champion's "
        f"{_of(pair.second_correct, pair.images)} on the same {pair.images} test images"
    )
    test = (
        f"exact McNemar p {cmp.p_text(pair.p_value)}: {pair.only_first} image(s) only the candidate got right, "
        f"{pair.only_second} only the champion"
    )
    if pair.gain <= 0:
        return False, f"{scores}: not better ({test})", numbers
    if not cmp.more_than(pair.gain, policy.min_improvement, pair.images):
        return (
            False,
            f"{scores}: +{pair.gain} image(s) is not more than min_improvement "
            f"{policy.min_improvement:g} of the images",
            numbers,
        )
    if not cmp.more_than(pair.gain, policy.min_relative_improvement, pair.second_correct):
        return (
            False,
            f"{scores}: +{pair.gain} image(s) is not more than min_relative_improvement "
            f"{policy.min_relative_improvement:g} of the champion's right answers",
            numbers,
        )
    drops = _class_drops((answers, champion_answers), policy)
    numbers["class_drops"] = drops
    if drops:
        return (
            False,
            f"{scores}, but it answers a count worse by more than {policy.max_class_drop:g}: {'; '.join(drops)}",
            numbers,
        )
    if pair.p_value >= policy.significance:
        numbers["borderline"] = True
        return (
            False,
            f"{scores}: +{pair.gain} image(s), which chance explains ({test}; needs p < {policy.significance:g})",
            numbers,
        )
    return True, f"{scores}: +{pair.gain} image(s), {test}", numbers


def decide(facts: RunFacts, policy: GatePolicy | None = None) -> dict[str, Any]:
    """The decision's status, reason, and the numbers it rests on: the candidate's, the trivial answer's and the
    champion's, all measured on the same test images. While a version is held, what would be promoted (or asked
    about) is `held`."""
    decided = _decide(facts, policy or GatePolicy())
    hold = facts.hold
    if hold and decided["status"] in (PROMOTED, NEEDS_APPROVAL):
        decided = {
            **decided,
            "status": HELD,
            "hold": hold,
            "reason": f"{decided['reason']}. Held: v{hold['version']} is held as champion by {hold.get('by')} "
            f"since {hold.get('at')} (`inventory-pipeline model release` ends the hold)",
        }
        decided.pop("approval", None)
    return decided


def _decide(facts: RunFacts, policy: GatePolicy) -> dict[str, Any]:
    lineage = facts.lineage or {}
    dataset_version = (lineage.get("lineage") or {}).get("dataset_version")
    candidate = _candidate(facts, dataset_version)
    extra: dict[str, Any] = {}

    def outcome(status: str, reason: str, champion: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"status": status, "reason": reason, "candidate": candidate, "champion": champion, **extra}

    if lineage.get("skip") and facts.task_states.get("train") == "skipped":
        return outcome(SKIPPED_UNCHANGED, lineage.get("reason", "unchanged"))
    report = facts.report or {}
    if (report.get("decision") or {}).get("failed"):
        return outcome(BLOCKED, f"rule policy {report['decision']['message']}")
    if not report or any(state in BAD_STATES for state in facts.task_states.values()):
        return outcome(FAILED, _first_failure(facts))
    if candidate is None:
        return outcome(FAILED, "the training job reported no test accuracy")
    metrics = facts.metrics or {}
    try:
        answers = cmp.read_answers(metrics.get("answers"), "candidate")
    except cmp.AnswersError as exc:
        return outcome(
            NOT_BETTER,
            f"{exc}: the candidate cannot be checked against the trivial answer or the "
            "champion, and what cannot be checked is not promoted",
        )
    extra["baseline"] = check_baseline(
        answers, (metrics.get("class_counts") or {}).get("train"), policy, cmp.read_prior(metrics.get("class_prior"))
    )
    if not extra["baseline"]["passed"]:
        return outcome(BELOW_BASELINE, f"no better than the trivial answer: {extra['baseline']['why']}")
    scored_against = lineage.get("champion")
    now = facts.champion_now
    if scored_against is None and now is None:
        beats, images = extra["baseline"]["paired"], len(answers)
        return _with_approval(
            facts,
            policy,
            True,
            f"first model: there is no champion yet; it beats always "
            f"answering {extra['baseline']['majority']['answer']} "
            f"({_of(beats['first_correct'], images)} vs {_of(beats['second_correct'], images)} "
            f"right, exact McNemar p {cmp.p_text(beats['p_value'])})",
            outcome,
        )
    if scored_against is None or now is None or str(scored_against["version"]) != str(now["version"]):
        was = f"v{scored_against['version']}" if scored_against else "none"
        is_now = f"v{now['version']}" if now else "none"
        return outcome(
            NOT_BETTER,
            f"the champion changed while this run trained ({was} then, {is_now} now): "
            "the candidate was not compared with the current champion",
        )
    scored = metrics.get("champion") or {}
    champion = {
        "version": str(now["version"]),
        "job": now.get("job"),
        "accuracy": scored.get("accuracy"),
        "rmse": scored.get("rmse"),
        "test_images": scored.get("test_images"),
        "dataset_version": dataset_version,
        "scored_with": scored.get("scored_with"),
    }
    if scored.get("accuracy") is None:
        why = scored.get("error", "the job did not score it")
        return outcome(
            NOT_BETTER,
            f"the champion could not be scored on this run's test images ({why}): "
            "not promoting what cannot be compared",
            champion,
        )
    try:
        better, reason, extra["comparison"] = compare_with_champion(
            answers, cmp.read_answers(scored.get("answers"), "champion"), policy
        )
    except cmp.AnswersError as exc:
        return outcome(
            NOT_BETTER, f"the champion and the candidate cannot be compared image by image ({exc})", champion
        )
    if not (better or extra["comparison"].get("borderline")):
        return outcome(NOT_BETTER, reason, champion)
    return _with_approval(facts, policy, better, reason, outcome, champion)


def approval_reasons(facts: RunFacts, policy: GatePolicy, significant: bool) -> list[str]:
    """Why this would-be promotion waits for a person under the policy ([] = it does not)."""
    why = []
    if "always" in policy.approval_when:
        why.append("every promotion is approved by a person (approval_when always)")
    if not significant and "not_significant" in policy.approval_when:
        why.append("the gain is not significant: the numbers cannot decide")
    warned = ((facts.report or {}).get("decision") or {}).get("warnings") or []
    if warned and "rule_warned" in policy.approval_when:
        why.append(f"non-blocking rule(s) found issues: {', '.join(warned)}")
    return why


def _with_approval(
    facts: RunFacts, policy: GatePolicy, better: bool, reason: str, outcome: Any, champion: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A would-be promotion (`better`) or a borderline one, after the policy's approval step: promoted when no
    person is asked and it is better; else as the person answered; never promoted on a timeout or no answer."""
    why = approval_reasons(facts, policy, significant=better)
    if not why:
        return outcome(PROMOTED if better else NOT_BETTER, reason, champion)
    review = facts.review
    asked = "; ".join(why)
    if review is None:  # the review task asks (it decides before the gate, on the same facts)
        result = outcome(NEEDS_APPROVAL, f"{reason}. Waiting for a person: {asked}", champion)
        return {**result, "approval": {"required": why}}
    approval = {"required": why, **{k: review.get(k) for k in ("answer", "by", "at", "timed_out", "state")}}
    if review.get("answer") == PROMOTE_ANSWER and not review.get("timed_out"):
        by = review.get("by") or "a person"
        return {**outcome(PROMOTED, f"{reason}. Approved by {by} ({asked})", champion), "approval": approval}
    if review.get("timed_out"):
        answered = f"nobody answered the approval request in time (the default answer: do not promote; {asked})"
    elif review.get("answer"):
        answered = f"{review.get('by') or 'a person'} answered {review['answer']!r} ({asked})"
    else:
        answered = f"it needed a person's approval ({asked}) and none was recorded (review {review.get('state')})"
    return {**outcome(NOT_BETTER, f"{reason}. Not promoted: {answered}", champion), "approval": approval}


def new_record(facts: RunFacts, inputs: GateInputs, policy: GatePolicy) -> dict[str, Any]:
    """The decision record, as `decision.store` writes it once: the decision (`decide`) and what it rests on."""
    return {
        "job": facts.job,
        "dag_id": inputs.dag_id,
        "run_id": inputs.run_id,
        **decide(facts, policy),
        "lineage": (facts.lineage or {}).get("lineage"),
        "model": inputs.model_uri,
        "report": {
            "s3_uri": inputs.report_uri,
            "link": inputs.report_link,
            "policy": ((facts.report or {}).get("decision") or {}).get("message"),
        },
        "rules": (facts.report or {}).get("rules") or [],
        "guardrails": inputs.guardrails,
        "decided": now_iso(),
    }


def read_json(s3: Any, bucket: str, key: str) -> Any | None:
    """The JSON object at `key`, or None when there is none."""
    from botocore.exceptions import ClientError

    from inventory_pipeline.dataset.s3io import is_missing

    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
