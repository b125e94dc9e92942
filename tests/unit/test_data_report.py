"""The data report: images added/removed per class, each split's class mix, and ClassMixShift under the policy."""

from __future__ import annotations

from inventory_pipeline.dataset.changes import compare_versions
from inventory_pipeline.dataset.split import counts_by_split
from inventory_pipeline.reports.data_section import data_finding, data_summary, render
from inventory_pipeline.reports.findings import apply_policy
from inventory_pipeline.settings import Settings


def manifest(version: str, entries: list[dict], previous: dict | None, threshold: float = 0.1) -> dict:
    counts = counts_by_split(entries)
    return {"version": version, "counts": counts, "entries": entries,
            "changes": compare_versions(entries, counts, previous, threshold)}  # fmt: skip


def entries(labels: dict[str, int], split: str = "train") -> list[dict]:
    return [{"image_id": i, "label": label, "split": split} for i, label in labels.items()]


FIRST = manifest("v1", entries({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}), None)


def test_first_version_has_nothing_to_compare_and_never_blocks():
    finding = data_finding(FIRST)
    assert finding.status == "NoIssuesFound" and "first dataset version" in finding.evidence
    assert not apply_policy([finding], ["ClassMixShift"]).failed


def test_a_moved_class_mix_is_flagged_and_blocks_only_when_the_policy_lists_it():
    grown = manifest("v2", entries({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 5, "g": 5, "h": 5}), FIRST)
    finding = data_finding(grown)
    assert finding.status == "IssuesFound" and "v1" in finding.evidence
    assert apply_policy([finding], []).warnings == ["ClassMixShift"]
    decision = apply_policy([finding], list(Settings(fail_on_rules=("ClassMixShift",)).fail_on_rules))
    assert decision.failed and decision.blocking == ["ClassMixShift"]
    steady = manifest("v3", entries({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 1}), FIRST, threshold=0.5)
    assert data_finding(steady).status == "NoIssuesFound"


def test_unknown_changes_are_not_evaluated_never_a_pass():
    assert data_finding(None).status == "NotEvaluated"
    assert data_finding({"version": "old", "counts": {}}).status == "NotEvaluated"
    assert apply_policy([data_finding(None)], ["ClassMixShift"]).failed


def test_summary_and_html_show_added_removed_and_mix():
    grown = manifest("v2", entries({"a": 1, "b": 2, "c": 3, "d": 4, "f": 5, "g": 5}), FIRST)
    summary = data_summary(grown)
    assert summary["added"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 2}
    assert summary["removed"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 1}
    assert summary["class_mix"]["train"]["5"] == round(2 / 6, 4) and summary["previous_version"] == "v1"
    html = render(grown)
    assert "What the data changed" in html and "images added" in html and "33.3%" in html
    assert "<b>v1</b>" in html and "decision-fail" in html  # the flag, above the 10-point threshold
