"""What a dataset version changed against the previous one: images added/removed per class, each split's class
mix, and whether the mix moved beyond a threshold (Settings.class_mix_threshold; `ClassMixShift` in
fail_on_rules makes it blocking). Pure functions over manifest entries and counts.
"""

from __future__ import annotations

from typing import Any

CLASS_NAMES = ("1", "2", "3", "4", "5")
SPLIT_NAMES = ("train", "valid", "test")


def class_mix(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Each split's share of each class (0 for an empty split)."""
    mix = {}
    for split in SPLIT_NAMES:
        row = counts.get(split, {})
        total = sum(row.get(c, 0) for c in CLASS_NAMES)
        mix[split] = {c: round(row.get(c, 0) / total, 4) if total else 0.0 for c in CLASS_NAMES}
    return mix


def mix_shift(now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, float]:
    """Per split, the largest change of a class's share (0.12 = 12 percentage points)."""
    a, b = class_mix(now), class_mix(before)
    return {s: round(max(abs(a[s][c] - b[s][c]) for c in CLASS_NAMES), 4) for s in SPLIT_NAMES}


def compare_versions(
    entries: list[dict[str, Any]],
    counts: dict[str, dict[str, int]],
    previous: dict[str, Any] | None,
    threshold: float,
) -> dict[str, Any]:
    """The changes of a version against `previous` (its manifest, or None for the first version).

    An image counts as added/removed under its label in the version that has it; an image whose label changed
    counts as removed from the old class and added to the new one.
    """
    zero = {c: 0 for c in CLASS_NAMES}
    if previous is None:
        added = dict(zero)
        for e in entries:
            added[str(e["label"])] += 1
        return {
            "previous_version": None,
            "added": added,
            "removed": dict(zero),
            "mix_shift": {s: 0.0 for s in SPLIT_NAMES},
            "max_shift": 0.0,
            "threshold": threshold,
            "flagged": False,
        }
    before = {e["image_id"]: str(e["label"]) for e in previous.get("entries", [])}
    after = {e["image_id"]: str(e["label"]) for e in entries}
    added, removed = dict(zero), dict(zero)
    for image_id, label in after.items():
        if before.get(image_id) != label:
            added[label] += 1
    for image_id, label in before.items():
        if after.get(image_id) != label:
            removed[label] += 1
    shift = mix_shift(counts, previous.get("counts", {}))
    largest = max(shift.values())
    return {
        "previous_version": previous.get("version"),
        "added": added,
        "removed": removed,
        "mix_shift": shift,
        "max_shift": largest,
        "threshold": threshold,
        "flagged": largest > threshold,
    }
