"""select_source: which (image id, label) pairs make up the 5-class dataset.

From a `file_list.json` ({"1": ["metadata/<id>.json", ...], ...}, with or without the study's `data/` prefix)
or, without one, by listing `metadata/` and reading each file's EXPECTED_QUANTITY in parallel. A valid count
outside 1-5 (empty bins, crowded ones) is excluded and counted: it is data, just not ours. Metadata that
cannot give a count (not JSON, no EXPECTED_QUANTITY, not an int) is bad input: a reject, counted against the
copy stage's threshold. An optional per-class limit keeps the lowest ids of each class so the same limit
always selects the same images; the source's own class counts, before that limit, are kept (`source_counts`): the
population mix the training job corrects its answers to.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import (
    CLASSES,
    Pair,
    image_id_from_key,
    image_id_from_metadata_path,
    parse_quantity,
)
from inventory_pipeline.dataset.errors import EmptySelection, InvalidFileList, SourceNotFound

log = logging.getLogger(__name__)


@dataclass
class Selection:
    pairs: list[Pair]
    excluded: list[dict[str, str]] = field(default_factory=list)  # counted, not errors (e.g. count 0 or 12)
    rejects: list[dict[str, str]] = field(default_factory=list)  # unreadable metadata found while listing
    metadata_listing: dict[str, s3io.ObjectInfo] | None = None  # selection by listing: `metadata/` as listed
    source_counts: dict[int, int] = field(default_factory=dict)  # per class in the source, before the limit

    @property
    def counts(self) -> dict[int, int]:
        counts = Counter(p.label for p in self.pairs)
        return {label: counts.get(label, 0) for label in CLASSES}


def _shape(value: Any) -> str:
    """What a value is, never what it says: errors about a file list reach logs, decisions, MLflow and SNS, and a
    wrong Param could point at any JSON file the worker can read."""
    kind = type(value).__name__
    return f"a {kind} of {len(value)} characters" if isinstance(value, str) else f"a {kind}"


def parse_file_list(document: Any) -> list[Pair]:
    """The pairs a file list names; a malformed list is an error naming where it is wrong (never its content)."""
    if not isinstance(document, dict):
        raise InvalidFileList("file list must be a JSON object mapping '1'..'5' to lists of metadata paths")
    pairs: dict[str, Pair] = {}
    repeated = 0
    classes = {str(c) for c in CLASSES}
    for position, (raw_label, values) in enumerate(document.items(), start=1):
        if str(raw_label) not in classes:
            raise InvalidFileList(
                f"file list key #{position} ({_shape(raw_label)}) is not a class: only '1'..'5' are allowed"
            )
        if not isinstance(values, list):
            raise InvalidFileList(f"file list class {raw_label!r} must hold a list of metadata paths")
        for index, value in enumerate(values, start=1):
            image_id = image_id_from_metadata_path(value) if isinstance(value, str) else None
            if image_id is None:
                raise InvalidFileList(
                    f"file list class {raw_label!r}, entry #{index} ({_shape(value)}) is not a metadata path; "
                    "expected 'metadata/<id>.json' (or 'data/metadata/<id>.json')"
                )
            previous = pairs.get(image_id)
            if previous and previous.label != int(raw_label):
                raise InvalidFileList(
                    f"image {image_id} is listed under both class {previous.label} and class {raw_label}"
                )
            repeated += previous is not None
            pairs[image_id] = Pair(image_id, int(raw_label))
    if repeated:
        log.warning("file list names %d images more than once (same class); each is selected once", repeated)
    return sorted(pairs.values())


def load_file_list(s3: Any, location: str) -> Any:
    """A file list from a local path or an s3:// URI."""
    if location.startswith("s3://"):
        try:
            bucket, key = s3io.split_s3_uri(location)
        except ValueError as exc:
            raise InvalidFileList(f"file list location {location!r} is not s3://bucket/key") from exc
        with s3io.explained(bucket, f"reading the file list {location}"):
            from botocore.exceptions import ClientError

            try:
                raw = s3io.get_bytes(s3, bucket, key)
            except ClientError as exc:
                if s3io.is_missing(exc):
                    raise SourceNotFound(f"file list {location} does not exist") from exc
                raise
    else:
        path = Path(location)
        if not path.is_file():
            raise SourceNotFound(f"file list {location} does not exist")
        raw = path.read_bytes()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:  # its position only: json's message can quote the content
        raise InvalidFileList(f"file list {location} is not JSON (line {exc.lineno}, column {exc.colno})") from exc


def select_by_listing(s3: Any, bucket: str, prefix: str, workers: int = 32) -> Selection:
    """Read EXPECTED_QUANTITY of every metadata file under `<prefix>metadata/`, in parallel."""
    listing = s3io.list_objects(s3, bucket, f"{prefix}metadata/")
    keys = sorted(k for k in listing if k.endswith(".json"))
    log.info("reading %d metadata files from s3://%s/%smetadata/", len(keys), bucket, prefix)
    pairs, excluded, rejects = [], [], []

    def read(key: str) -> tuple[int | None, str | None]:
        try:
            raw = s3io.get_bytes(s3, bucket, key)
        except Exception as exc:  # deleted between the listing and the read: a reject, not a crash
            if s3io.is_missing(exc):
                return None, "missing in source"
            raise
        return parse_quantity(raw)

    with s3io.explained(bucket, "reading metadata"):
        quantities = s3io.parallel(read, keys, workers, "metadata read")
    for key, (quantity, problem) in quantities:
        if problem:
            rejects.append({"key": key, "reason": problem})
        elif quantity not in CLASSES:
            excluded.append({"key": key, "reason": f"EXPECTED_QUANTITY {quantity} is outside 1-5"})
        else:
            pairs.append(Pair(image_id_from_key(key), quantity))
    for reject in rejects:
        log.warning("rejected %s: %s", reject["key"], reject["reason"])
    by_key = lambda entry: entry["key"]  # noqa: E731
    return Selection(sorted(pairs), sorted(excluded, key=by_key), sorted(rejects, key=by_key), listing)


def limit_per_class(pairs: list[Pair], per_class_limit: int) -> list[Pair]:
    """Keep at most `per_class_limit` pairs per class (lowest ids first); 0 keeps all."""
    if per_class_limit <= 0:
        return sorted(pairs)
    kept: dict[int, list[Pair]] = {}
    for pair in sorted(pairs):
        bucket = kept.setdefault(pair.label, [])
        if len(bucket) < per_class_limit:
            bucket.append(pair)
    return sorted(p for group in kept.values() for p in group)


def select_source(
    s3: Any,
    source_bucket: str,
    source_prefix: str = "",
    file_list: str = "",
    per_class_limit: int = 0,
    workers: int = 32,
) -> Selection:
    if file_list:
        selection = Selection(parse_file_list(load_file_list(s3, file_list)))
    else:
        selection = select_by_listing(s3, source_bucket, source_prefix, workers)
    selection.source_counts = selection.counts
    selection.pairs = limit_per_class(selection.pairs, per_class_limit)
    if not selection.pairs:
        where = file_list or f"s3://{source_bucket}/{source_prefix}metadata/"
        bad = "; ".join(f"{r['key']}: {r['reason']}" for r in selection.rejects[:5])
        raise EmptySelection(
            f"no images with a count of 1-5 were found in {where} ({len(selection.excluded)} excluded as "
            f"outside 1-5, {len(selection.rejects)} rejected{': ' + bad if bad else ''})"
        )
    log.info(
        "selected %d images %s (%d excluded as outside 1-5, %d rejected)",
        len(selection.pairs),
        selection.counts,
        len(selection.excluded),
        len(selection.rejects),
    )
    return selection
