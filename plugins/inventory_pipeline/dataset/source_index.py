"""The source index: size and ETag of each selected image and metadata file, from listings (no HEAD per key).

Selecting pins these versions: the copy stage then validates and copies exactly them (If-Match), and a source
that changes later makes a new selection, hence a new dataset version, never a silent mix. Keys the file list
names that do not exist become counted rejects ("missing in source").

The source bucket can be large (the public one holds 500k+ images per folder), so both folders are listed
by id prefix (abid.id_shards), all at once in one bounded pool: only the prefixes the selection uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from inventory_pipeline.dataset import s3io
from inventory_pipeline.dataset.abid import Pair, id_shards, image_key, metadata_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pinned:
    """A selected pair and the exact source objects (size, ETag) it stands for."""

    pair: Pair
    image: s3io.ObjectInfo
    metadata: s3io.ObjectInfo

    def to_row(self) -> list[Any]:
        p, i, m = self.pair, self.image, self.metadata
        return [p.image_id, p.label, i.etag, i.size, m.etag, m.size]

    @classmethod
    def from_row(cls, row: list[Any]) -> Pinned:
        image_id, label, image_etag, image_size, metadata_etag, metadata_size = row
        return cls(
            Pair(image_id, int(label)),
            s3io.ObjectInfo(int(image_size), image_etag),
            s3io.ObjectInfo(int(metadata_size), metadata_etag),
        )


def pin_sources(
    s3: Any,
    bucket: str,
    prefix: str,
    pairs: list[Pair],
    workers: int = 32,
    metadata_listing: dict[str, s3io.ObjectInfo] | None = None,
) -> tuple[list[Pinned], list[dict[str, str]]]:
    """The pairs whose image and metadata both exist, pinned; a reject for each missing key.

    `metadata_listing`: the `<prefix>metadata/` listing when the caller holds it (selection by listing).
    """
    ids = [p.image_id for p in pairs]
    folders = [f"{prefix}bin-images/"]
    if metadata_listing is None:
        folders.append(f"{prefix}metadata/")
    with s3io.explained(bucket, "listing the source"):
        prefixes = [folder + shard for folder in folders for shard in id_shards(ids)]
        index = {**(metadata_listing or {}), **s3io.list_prefixes(s3, bucket, prefixes, workers)}
    pinned, rejects = [], []
    for pair in pairs:
        image, metadata = image_key(prefix, pair.image_id), metadata_key(prefix, pair.image_id)
        if image in index and metadata in index:
            pinned.append(Pinned(pair, index[image], index[metadata]))
        elif image in index or metadata in index:  # one reject per pair: the threshold counts images
            rejects.append({"key": metadata if image in index else image, "reason": "missing in source"})
        else:
            rejects.append({"key": image, "reason": "missing in source (and its metadata)"})
    log.info("source index: %d pairs found, %d missing in s3://%s/%s", len(pinned), len(rejects), bucket, prefix)
    return pinned, rejects
