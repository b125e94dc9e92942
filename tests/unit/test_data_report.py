"""The data report: images added/removed per class, each split's class mix, and ClassMixShift under the policy."""

from __future__ import annotations

from inventory_pipeline.dataset.changes import compare_versions
from inventory_pipeline.dataset.split import counts_by_split
from inventory_pipeline.reports.data_section import data_finding, data_summary, render
from inventory_pipeline.reports.findings import apply_policy
from inventory_pipeline.settings import Settings


def manifest(version: str, entries: list[dict], previous: dict | None, threshold: float = 0.1) -> dict:
    counts = counts_by_split(entries)
    return {
        "version": version,
        "counts": counts,
        "entries": entries,
        "changes": compare_versions(entries, counts, previous, threshold),
    }


def entries(labels: dict[str, int], split: str = "train") -> list[dict]:
    return [{"image_id": i, "label": label, "split": split} for i, label in labels.items()]


FIRST = manifest("v1", entries({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}), None)


def champion_of(m: dict) -> dict:
    """What data_section.champion_dataset reads for a champion trained on manifest `m`."""
    return {"version": m["version"], "job": f"job-{m['version']}", "model_version": "1", "counts": m["counts"]}


GROWN = manifest("v2", entries({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 5, "g": 5, "h": 5}), FIRST)


def test_with_no_champion_the_mix_is_not_evaluated_and_blocks_only_when_listed():
    finding = data_finding(FIRST, None, 0.1)
    assert finding.status == "NotEvaluated" and "no champion" in finding.evidence
    assert apply_policy([finding], ["ClassMixShift"]).failed and not apply_policy([finding], []).failed


def test_a_mix_moved_against_the_champions_data_is_flagged_and_blocks_only_when_the_policy_lists_it():
    finding = data_finding(GROWN, champion_of(FIRST), 0.1)
    assert finding.status == "IssuesFound" and "champion's dataset v1" in finding.evidence
    assert apply_policy([finding], []).warnings == ["ClassMixShift"]
    decision = apply_policy([finding], list(Settings(fail_on_rules=("ClassMixShift",)).fail_on_rules))
    assert decision.failed and decision.blocking == ["ClassMixShift"]
    steady = manifest("v3", entries({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 1}), FIRST)
    assert data_finding(steady, champion_of(FIRST), 0.5).status == "NoIssuesFound"


def test_the_mix_is_compared_with_the_current_champions_data_not_frozen_into_a_reused_version():
    """Issue 22 (4): GROWN was published against FIRST (its manifest says flagged), then a quick run with other
    Params built `latest`; now the champion was trained on GROWN itself: nothing moved for this run."""
    assert GROWN["changes"]["flagged"]
    finding = data_finding(GROWN, champion_of(GROWN), 0.1)
    assert finding.status == "NoIssuesFound" and "champion's dataset v2" in finding.evidence
    assert data_summary(GROWN, champion_of(GROWN), 0.1)["flagged"] is False


def test_unknown_data_is_not_evaluated_never_a_pass():
    assert data_finding(None, champion_of(FIRST), 0.1).status == "NotEvaluated"
    assert data_finding({"version": "old", "counts": {}}, champion_of(FIRST), 0.1).status == "NotEvaluated"
    gone = {**champion_of(FIRST), "counts": None}  # the champion's dataset version was deleted
    finding = data_finding(GROWN, gone, 0.1)
    assert finding.status == "NotEvaluated" and "could not be read" in finding.evidence
    assert apply_policy([data_finding(None, None, 0.1)], ["ClassMixShift"]).failed


def test_summary_and_html_show_added_removed_and_mix():
    grown = manifest("v2", entries({"a": 1, "b": 2, "c": 3, "d": 4, "f": 5, "g": 5}), FIRST)
    summary = data_summary(grown, champion_of(FIRST), 0.1)
    assert summary["added"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 2}
    assert summary["removed"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1}
    assert summary["class_mix"]["train"]["5"] == round(2 / 6, 4) and summary["previous_version"] == "v1"
    assert summary["champion_version"] == "v1" and summary["flagged"]
    html = render(grown, champion_of(FIRST), 0.1)
    assert "What the data changed" in html and "images added" in html and "33.3%" in html
    assert "<b>v1</b>" in html and "decision-fail" in html  # the flag, above the 10-point threshold
