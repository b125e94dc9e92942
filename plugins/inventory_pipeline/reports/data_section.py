"""The report's "What the data changed" section and the ClassMixShift finding, from a dataset manifest.

The manifest's `changes` (dataset.changes, computed when the version was published) say how many images were
added and removed per class against the previous version. How far each split's class mix moved is computed per
run against the dataset the champion was trained on (the model this run is compared with): a move beyond
`class_mix_threshold` is the `ClassMixShift` finding, a warning, or blocking when the policy lists it in
fail_on_rules. With no champion, or a champion's dataset that can no longer be read, the mix could not be checked
(NotEvaluated, saying why: never passed by absence, and blocking when listed).
"""

from __future__ import annotations

import logging
from typing import Any

from inventory_pipeline.dataset.changes import class_mix, mix_shift
from inventory_pipeline.reports.findings import ISSUES, NO_ISSUES, NOT_EVALUATED, Finding

log = logging.getLogger(__name__)
RULE = "ClassMixShift"
CLASSES = ("1", "2", "3", "4", "5")
SPLITS = ("train", "valid", "test")


def champion_dataset(s3: Any, bucket: str, root: str, champion: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ClassMixShift compares with: the champion's dataset version and its split counts (read from that
    version's published manifest; `counts` None when it can no longer be read). None: there is no champion."""
    from inventory_pipeline.dataset.split import dataset_prefix, published_summary

    if not champion:
        return None
    version = champion.get("dataset_version")
    found = {"version": version, "job": champion.get("job"), "model_version": champion.get("version"), "counts": None}
    if version:
        try:
            summary = published_summary(s3, bucket, f"{dataset_prefix(root, version)}manifest.json")
        except Exception as exc:  # a report is still written; the finding says the mix was not checked
            log.warning("could not read the champion's dataset %s: %s", version, exc)
            summary = None
        found["counts"] = (summary or {}).get("counts")
    return found


def mix_against_champion(
    manifest: dict[str, Any] | None, champion: dict[str, Any] | None, threshold: float
) -> dict[str, Any] | None:
    """Each split's largest class-share move from the champion's dataset to this run's, or None when it cannot
    be computed (no manifest, no champion, the champion's counts unreadable)."""
    if not manifest or not manifest.get("counts") or not champion or not champion.get("counts"):
        return None
    shift = mix_shift(manifest["counts"], champion["counts"])
    largest = max(shift.values())
    return {
        "champion_version": champion["version"],
        "champion_job": champion.get("job"),
        "mix_shift": shift,
        "max_shift": largest,
        "threshold": threshold,
        "flagged": largest > threshold,
    }


def data_finding(manifest: dict[str, Any] | None, champion: dict[str, Any] | None, threshold: float) -> Finding:
    """ClassMixShift: this run's class mix against the champion's dataset, computed for this run (a reused
    dataset version is compared with whoever is champion now, not with what it was compared with once)."""
    parameters = {"threshold": threshold}
    if not manifest or not manifest.get("counts"):
        why = "no dataset manifest" if not manifest else "the manifest records no counts"
        return Finding(
            rule=RULE,
            kind="data",
            status=NOT_EVALUATED,
            parameters=parameters,
            evidence=f"{why}: the class mix was not checked",
        )
    if champion is None:
        return Finding(
            rule=RULE,
            kind="data",
            status=NOT_EVALUATED,
            parameters=parameters,
            evidence="there is no champion yet: no class mix to compare this dataset's with",
        )
    moved = mix_against_champion(manifest, champion, threshold)
    if moved is None:
        return Finding(
            rule=RULE,
            kind="data",
            status=NOT_EVALUATED,
            parameters=parameters,
            evidence=f"the champion's dataset version {champion.get('version')} could not be read: the "
            "class mix was not checked",
        )
    shift = moved["mix_shift"]
    points = ", ".join(f"{s} {100 * shift.get(s, 0):.1f}" for s in SPLITS)
    evidence = (
        f"largest move of a class's share against the champion's dataset {moved['champion_version']} "
        f"(v{champion.get('model_version')}): {points} points (threshold {100 * threshold:.1f})"
    )
    flagged = moved["flagged"]
    return Finding(
        rule=RULE,
        kind="data",
        status=ISSUES if flagged else NO_ISSUES,
        triggered=int(flagged),
        datapoints=len(SPLITS),
        parameters=parameters,
        evidence=evidence,
        recommendation="The class balance moved against the champion's data: check the selection (per-class limit, "
        "source) before trusting the comparison; the champion's test set had another mix."
        if flagged
        else "",
    )


def data_summary(
    manifest: dict[str, Any] | None, champion: dict[str, Any] | None, threshold: float
) -> dict[str, Any] | None:
    """What the run summary shows: version, previous, added/removed per class against the previous version, each
    split's mix, and its move against the champion's dataset (with the flag)."""
    if not manifest:
        return None
    changes = manifest.get("changes") or {}
    moved = mix_against_champion(manifest, champion, threshold)
    return {
        "version": manifest.get("version"),
        "previous_version": changes.get("previous_version"),
        "added": changes.get("added"),
        "removed": changes.get("removed"),
        "class_mix": class_mix(manifest.get("counts", {})),
        "champion_version": (moved or {}).get("champion_version"),
        "mix_shift": (moved or {}).get("mix_shift"),
        "flagged": (moved or {}).get("flagged"),
        "threshold": threshold,
    }


TEMPLATE = """<h2>What the data changed</h2>
{% if not data %}<p>No dataset manifest available.</p>{% else %}
<p>Dataset <b>{{ data.version }}</b>{% if data.previous_version %}: images added and removed against the previous
version <b>{{ data.previous_version }}</b>{% else %} (no previous version to compare with){% endif %};
{% if data.champion_version %}class mix against the champion's dataset <b>{{ data.champion_version }}</b>{% else
%}no champion's dataset to compare the class mix with{% endif %}.
{% if data.flagged %}<span class="decision-fail">The class mix moved by more than
{{ '%.1f' % (100 * data.threshold) }} points ({{ finding.status }}).</span>{% endif %}</p>
{% if data.added %}<table><tr><th></th>{% for c in classes %}<th>count {{ c }}</th>{% endfor %}</tr>
<tr><td>images added</td>{% for c in classes %}<td>{{ data.added[c] }}</td>{% endfor %}</tr>
<tr><td>images removed</td>{% for c in classes %}<td>{{ data.removed[c] }}</td>{% endfor %}</tr></table>{% endif %}
<table><tr><th>class mix</th>{% for c in classes %}<th>count {{ c }}</th>{% endfor %}
<th>largest move against the champion's</th></tr>
{% for split in splits %}<tr class="{{ 'IssuesFound' if data.mix_shift and data.mix_shift[split] > data.threshold
else '' }}"><td>{{ split }}</td>{% for c in classes %}<td>{{ '%.1f%%' % (100 * data.class_mix[split][c]) }}</td>
{% endfor %}<td>{{ '%.1f points' % (100 * data.mix_shift[split]) if data.mix_shift else '-' }}</td></tr>
{% endfor %}</table>{% endif %}
"""


def render(manifest: dict[str, Any] | None, champion: dict[str, Any] | None, threshold: float) -> str:
    """The section's HTML (escaped), for reports.build's template."""
    from jinja2 import Environment

    return (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            data=data_summary(manifest, champion, threshold),
            finding=data_finding(manifest, champion, threshold),
            classes=CLASSES,
            splits=SPLITS,
        )
    )
