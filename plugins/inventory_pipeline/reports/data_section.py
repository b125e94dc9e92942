"""The report's "What the data changed" section and the ClassMixShift finding, from a dataset manifest.

The manifest's `changes` (dataset.changes, computed when the version was published) say how many images were
added and removed per class against the previous version and how far each split's class mix moved. A move
beyond `class_mix_threshold` is the `ClassMixShift` finding: a warning, or blocking when the policy lists it in
fail_on_rules. A first version has no previous mix to move from (NoIssuesFound, saying so); a manifest without
changes (or none at all) could not be checked (NotEvaluated: never passed by absence, and blocking when listed).
"""

from __future__ import annotations

from typing import Any

from inventory_pipeline.dataset.changes import class_mix
from inventory_pipeline.reports.findings import ISSUES, NO_ISSUES, NOT_EVALUATED, Finding

RULE = "ClassMixShift"
CLASSES = ("1", "2", "3", "4", "5")
SPLITS = ("train", "valid", "test")


def data_finding(manifest: dict[str, Any] | None) -> Finding:
    changes = (manifest or {}).get("changes")
    if not isinstance(changes, dict):
        why = "no dataset manifest" if manifest is None else "the manifest records no changes (older layout)"
        return Finding(rule=RULE, kind="data", status=NOT_EVALUATED, evidence=f"{why}: the class mix was not checked")
    parameters = {"threshold": changes.get("threshold")}
    if changes.get("previous_version") is None:
        return Finding(rule=RULE, kind="data", status=NO_ISSUES, parameters=parameters,
                       evidence="first dataset version: there is no previous class mix to move from")  # fmt: skip
    shift = changes.get("mix_shift", {})
    moved = ", ".join(f"{s} {100 * shift.get(s, 0):.1f}" for s in SPLITS)
    evidence = (f"largest move of a class's share against {changes['previous_version']}: {moved} points "
                f"(threshold {100 * float(changes.get('threshold') or 0):.1f})")  # fmt: skip
    flagged = bool(changes.get("flagged"))
    return Finding(
        rule=RULE, kind="data", status=ISSUES if flagged else NO_ISSUES, triggered=int(flagged),
        datapoints=len(SPLITS), parameters=parameters, evidence=evidence,
        recommendation="The class balance moved: check the selection (per-class limit, source) before trusting a "
        "comparison with the champion, whose test set had another mix." if flagged else "",
    )  # fmt: skip


def data_summary(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the run summary shows: version, previous, added/removed per class, each split's mix, the flag."""
    if not manifest:
        return None
    changes = manifest.get("changes") or {}
    return {
        "version": manifest.get("version"),
        "previous_version": changes.get("previous_version"),
        "added": changes.get("added"),
        "removed": changes.get("removed"),
        "class_mix": class_mix(manifest.get("counts", {})),
        "mix_shift": changes.get("mix_shift"),
        "flagged": changes.get("flagged"),
        "threshold": changes.get("threshold"),
    }


TEMPLATE = """<h2>What the data changed</h2>
{% if not data %}<p>No dataset manifest available.</p>{% else %}
<p>Dataset <b>{{ data.version }}</b>{% if data.previous_version %} against the previous version
<b>{{ data.previous_version }}</b>{% else %} (no previous version to compare with){% endif %}.
{% if data.flagged %}<span class="decision-fail">The class mix moved by more than
{{ '%.1f' % (100 * data.threshold) }} points ({{ finding.status }}).</span>{% endif %}</p>
{% if data.added %}<table><tr><th></th>{% for c in classes %}<th>count {{ c }}</th>{% endfor %}</tr>
<tr><td>images added</td>{% for c in classes %}<td>{{ data.added[c] }}</td>{% endfor %}</tr>
<tr><td>images removed</td>{% for c in classes %}<td>{{ data.removed[c] }}</td>{% endfor %}</tr></table>{% endif %}
<table><tr><th>class mix</th>{% for c in classes %}<th>count {{ c }}</th>{% endfor %}<th>largest move</th></tr>
{% for split in splits %}<tr class="{{ 'IssuesFound' if data.mix_shift and data.mix_shift[split] > data.threshold
else '' }}"><td>{{ split }}</td>{% for c in classes %}<td>{{ '%.1f%%' % (100 * data.class_mix[split][c]) }}</td>
{% endfor %}<td>{{ '%.1f points' % (100 * data.mix_shift[split]) if data.mix_shift else '-' }}</td></tr>
{% endfor %}</table>{% endif %}
"""


def render(manifest: dict[str, Any] | None) -> str:
    """The section's HTML (escaped), for reports.build's template."""
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(TEMPLATE).render(
        data=data_summary(manifest), finding=data_finding(manifest), classes=CLASSES, splits=SPLITS
    )
