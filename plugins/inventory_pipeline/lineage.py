"""What a model was made from, and whether this week's run would make the same one.

A run's lineage is its dataset version (a content hash of the selection and split), the hash of the packaged
training code and a hash of the Params that change training. When all three equal the champion's, training
again would spend money to reproduce the champion: the run skips the job (`skipped_unchanged`) unless
`force_retrain` is set.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from inventory_pipeline.settings import Settings

# Params that change what training produces (the data's Params are inside the dataset version already).
TRAINING_PARAMS = ("model", "epochs", "batch_size", "lr", "instance_type", "instance_count", "framework_version")


def training_params(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in TRAINING_PARAMS}


def params_sha256(settings: Settings) -> str:
    return hashlib.sha256(json.dumps(training_params(settings), sort_keys=True).encode()).hexdigest()


def run_lineage(settings: Settings, dataset_version: str, code_sha256: str) -> dict[str, str]:
    return {"dataset_version": dataset_version, "code_sha256": code_sha256, "params_sha256": params_sha256(settings)}


def unchanged_reason(lineage: dict[str, str], champion_tags: dict[str, str] | None) -> str | None:
    """Why this run would reproduce the champion (every lineage field equal), or None."""
    if not champion_tags:
        return None
    if any(champion_tags.get(key) != value for key, value in lineage.items()):
        return None
    return (f"dataset {lineage['dataset_version']}, code {lineage['code_sha256'][:12]} and training Params "
            f"{lineage['params_sha256'][:12]} equal the champion's (job {champion_tags.get('job')}): "
            "not training again (set force_retrain to train anyway)")  # fmt: skip
