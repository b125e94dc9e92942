"""What a model was made from, and whether this week's run would make the same one.

A run's lineage is its dataset version (a content hash of the selection and split), the hash of the packaged
training code and a hash of everything else that changes the model or how it is judged: the training Params, the
pretrained weights (their URI and S3 ETag) and where they come from (network isolation switches the source), the
rules mode and blocking rules, Spot and the time limits. When all three equal the champion's, training again would
spend money to reproduce the champion; when they equal those of a model already judged `not_better`,
`below_baseline` or `blocked`, it would spend money to be judged the same way again. Either way the run skips the
job (`skipped_unchanged`, the reason naming that model and its decision) unless `force_retrain` is set.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from inventory_pipeline.settings import Settings

# Settings that change what training produces or how it is judged (the data's Params are inside the dataset
# version already).
TRAINING_PARAMS = (
    "model",
    "epochs",
    "batch_size",
    "lr",
    "instance_type",
    "instance_count",
    "framework_version",
    "pretrained_s3_uri",
    "enable_network_isolation",
    "rules_mode",
    "fail_on_rules",
    "use_spot",
    "max_runtime_s",
    "max_wait_s",
)
# Decisions that judged a model: the same inputs would be judged the same way (a promoted one is the champion's).
JUDGED = ("not_better", "below_baseline", "blocked")


def training_params(settings: Settings, weights_etag: str = "") -> dict[str, Any]:
    params = {name: getattr(settings, name) for name in TRAINING_PARAMS}
    params["fail_on_rules"] = sorted(settings.fail_on_rules)
    return {**params, "pretrained_etag": weights_etag}


def params_sha256(settings: Settings, weights_etag: str = "") -> str:
    return hashlib.sha256(json.dumps(training_params(settings, weights_etag), sort_keys=True).encode()).hexdigest()


def run_lineage(settings: Settings, dataset_version: str, code_sha256: str, weights_etag: str = "") -> dict[str, str]:
    return {
        "dataset_version": dataset_version,
        "code_sha256": code_sha256,
        "params_sha256": params_sha256(settings, weights_etag),
    }


def _same(lineage: dict[str, str], tags: dict[str, str]) -> bool:
    return all(tags.get(key) == value for key, value in lineage.items())


def unchanged_reason(
    lineage: dict[str, str], champion_tags: dict[str, str] | None, judged: list[Any] | None = None
) -> str | None:
    """Why this run would reproduce the champion or a model already judged (every lineage field equal), or None.
    `judged`: registry versions (decision.registry.ModelVersionInfo) whose `decision` tag is one of JUDGED."""
    inputs = (
        f"dataset {lineage['dataset_version']}, code {lineage['code_sha256'][:12]} and training Params "
        f"{lineage['params_sha256'][:12]}"
    )
    if champion_tags and _same(lineage, champion_tags):
        return (
            f"{inputs} equal the champion's (job {champion_tags.get('job')}): not training again (set "
            "force_retrain to train anyway)"
        )
    for version in sorted(judged or [], key=lambda v: -int(v.version)):
        if version.tags.get("decision") in JUDGED and _same(lineage, version.tags):
            return (
                f"{inputs} equal those of v{version.version} (job {version.tags.get('job')}), already judged "
                f"{version.tags['decision']}: training again would be judged on the same inputs (set "
                "force_retrain to train anyway)"
            )
    return None


def pretrained_etag(s3: Any, uri: str) -> str:
    """The S3 ETag of the pretrained checkpoint (new weights under the same URI are new inputs); '' when there is
    none, 'missing' when the URI names nothing (the train task then fails on it, saying so)."""
    from inventory_pipeline.aws.s3_paths import split_s3_uri
    from inventory_pipeline.dataset.s3io import etag

    if not uri:
        return ""
    return etag(s3, *split_s3_uri(uri)) or "missing"
