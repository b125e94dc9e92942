"""The raw area: ONE validated copy of each image, in packs, and the index of what was validated.

Layout under `<root>raw/`:
- `packs/<split>/<sha256[:16]>.tar`: a plain (uncompressed) tar of validated photos, members `<id>.jpg`, sorted by
  id; content-addressed, so a retried write of the same pack is the same object. An image's split is a hash of
  its id (split.assign_split), so a channel downloads its split's packs only.
- `index/<sha256[:16]>.json`: one document per copy run that validated anything: for each image id, the pack it
  lives in, the byte offset and size of its JPEG inside that pack, and the (image ETag, metadata ETag, label) it
  was validated as. A pack that no index names is a leftover of a refused or killed run (`storage gc` removes it).

Why packs: validating an image means reading all of it (signature and end marker; one GET), and copying it
server-side costs one more request per image; writing the bytes we already hold in packs of PACK_IMAGES costs
1/PACK_IMAGES of a request per image. On the local stack (moto's CPU) and on S3's per-request price alike, a first
run then costs ~2 requests per image (metadata + image GET) instead of 5. The training channel downloads a few
packs instead of thousands of objects. A label is never stored with the bytes: a corrected label is a new
metadata ETag, validated again (one GET), and the pack is reused as it is.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from dataclasses import dataclass, field
from typing import Any

from inventory_pipeline.dataset import s3io

log = logging.getLogger(__name__)
PACK_IMAGES = 256  # ~12 MB of ABID photos (median 47 KB): few requests, small enough to build in memory


def packs_prefix(root: str) -> str:
    return f"{root}raw/packs/"


def index_prefix(root: str) -> str:
    return f"{root}raw/index/"


@dataclass(frozen=True)
class Stored:
    """Where an image's validated bytes are: a pack (key relative to the project root), offset and size."""

    pack: str
    offset: int
    size: int


@dataclass
class RawIndex:
    """Every index document of the raw area, merged: what is stored where, and what was validated as what."""

    stored: dict[tuple[str, str], Stored] = field(default_factory=dict)  # (id, image ETag) -> location
    validated: set[tuple[str, str, str, int]] = field(default_factory=set)  # (id, image ETag, meta ETag, label)
    documents: list[str] = field(default_factory=list)

    def add(self, entries: dict[str, dict[str, Any]]) -> None:
        for image_id, e in entries.items():
            self.stored[(image_id, e["image_etag"])] = Stored(e["pack"], int(e["offset"]), int(e["size"]))
            self.validated.add((image_id, e["image_etag"], e["metadata_etag"], int(e["label"])))


def read_index(s3: Any, bucket: str, root: str, workers: int = 16) -> RawIndex:
    """One listing of `raw/index/` and a GET per document (one per past run that validated something)."""
    index = RawIndex()
    keys = sorted(k for k in s3io.list_objects(s3, bucket, index_prefix(root)) if k.endswith(".json"))
    with s3io.explained(bucket, "reading the raw index"):
        for key, document in s3io.parallel(lambda k: s3io.read_json(s3, bucket, k), keys, workers, "index read"):
            if isinstance(document, dict) and isinstance(document.get("entries"), dict):
                index.add(document["entries"])
                index.documents.append(key)
            else:
                log.warning("ignoring %s: not a raw index document", key)
    return index


def write_index(s3: Any, bucket: str, root: str, entries: dict[str, dict[str, Any]], created: str) -> str | None:
    """This run's validations, one content-addressed document (None when there was nothing new)."""
    if not entries:
        return None
    digest = hashlib.sha256(repr(sorted((k, sorted(v.items())) for k, v in entries.items())).encode()).hexdigest()
    key = f"{index_prefix(root)}{digest[:16]}.json"
    s3io.put_json(s3, bucket, key, {"created": created, "entries": entries})
    return key


def build_pack(images: list[tuple[str, bytes]]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """A deterministic tar of (id, JPEG bytes), and each id's (data offset, size) inside it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for image_id, data in sorted(images):
            info = tarfile.TarInfo(f"{image_id}.jpg")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:  # offsets as any tar reader sees them
        members = {m.name[: -len(".jpg")]: (m.offset_data, m.size) for m in tar.getmembers()}
    return body, members


class PackWriter:
    """Writes the validated images of planned groups as packs, each as soon as its group is complete.

    Groups are planned before anything is read: per split, the ids in order, PACK_IMAGES at a time. A pack's
    content therefore does not depend on the order in which reads complete, so a run killed halfway and
    retried writes the same packs under the same keys (no duplicates), and at most the groups in flight are
    held in memory when reads are submitted in group order.
    """

    def __init__(self, s3: Any, bucket: str, root: str, groups: list[tuple[str, list[str]]]):
        self.s3, self.bucket, self.root = s3, bucket, root
        self.group_of = {image_id: n for n, (_, ids) in enumerate(groups) for image_id in ids}
        self.splits = [split for split, _ in groups]
        self.waiting = [len(ids) for _, ids in groups]
        self.images: list[list[tuple[str, bytes]]] = [[] for _ in groups]
        self.locations: dict[str, Stored] = {}
        self.written: list[str] = []  # full keys, so a refused run can remove what it wrote

    @staticmethod
    def plan(ids_by_split: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
        groups = []
        for split in sorted(ids_by_split):
            ids = sorted(ids_by_split[split])
            groups += [(split, ids[i : i + PACK_IMAGES]) for i in range(0, len(ids), PACK_IMAGES)]
        return groups

    def done(self, image_id: str, data: bytes | None) -> None:
        """An image of a group was read: its bytes to store, or None (rejected)."""
        n = self.group_of[image_id]
        if data is not None:
            self.images[n].append((image_id, data))
        self.waiting[n] -= 1
        if self.waiting[n] == 0:
            self._flush(n)

    def discard(self) -> None:
        """Delete the packs this writer wrote (a refused run publishes nothing and leaves nothing behind)."""
        for start in range(0, len(self.written), 1000):
            batch = [{"Key": key} for key in self.written[start : start + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        self.written.clear()
        self.locations.clear()

    def _flush(self, n: int) -> None:
        images, self.images[n] = self.images[n], []
        if not images:
            return
        body, members = build_pack(images)
        relative = f"raw/packs/{self.splits[n]}/{hashlib.sha256(body).hexdigest()[:16]}.tar"
        key = f"{self.root}{relative}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-tar")
        self.written.append(key)
        for image_id, (offset, size) in members.items():
            self.locations[image_id] = Stored(relative, offset, size)
        log.info("wrote pack s3://%s/%s (%d images, %d bytes)", self.bucket, key, len(images), len(body))
