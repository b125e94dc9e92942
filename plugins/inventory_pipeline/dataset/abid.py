"""The Amazon Bin Image Dataset's layout and metadata format, in one place.

Bucket layout: `<prefix>bin-images/<id>.jpg` + `<prefix>metadata/<id>.json`, where the metadata's
`EXPECTED_QUANTITY` is the number of items in the bin (the label).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

CLASSES = (1, 2, 3, 4, 5)
JPEG_SIGNATURE = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"  # EOI: the last marker of a complete JPEG (some writers pad a few bytes after it)
# Real ABID photos are tens of kB; anything below this cannot be a bin photo.
MIN_IMAGE_BYTES = 512
MAX_IMAGE_BYTES = 20 * 1024 * 1024
_ID = r"[0-9A-Za-z_\-]+"
_METADATA_VALUE = re.compile(rf"^(?:data/)?metadata/({_ID})\.json$")


@dataclass(frozen=True, order=True)
class Pair:
    """One selected image: its id and label (1-5)."""

    image_id: str
    label: int


def image_key(prefix: str, image_id: str) -> str:
    return f"{prefix}bin-images/{image_id}.jpg"


def metadata_key(prefix: str, image_id: str) -> str:
    return f"{prefix}metadata/{image_id}.json"


def image_id_from_metadata_path(value: str) -> str | None:
    """`metadata/00004.json` or the study's `data/metadata/00004.json` -> `00004` (None if neither)."""
    match = _METADATA_VALUE.match(value.strip())
    return match.group(1) if match else None


def id_shards(image_ids: Iterable[str], chars: int = 2) -> list[str]:
    """The id prefixes a set of ids uses: listing `<folder><shard>` for each, concurrently, reads only the
    part of a large bucket (the public one has 500k+ keys per folder) that a selection needs."""
    return sorted({image_id[:chars] for image_id in image_ids})


def image_id_from_key(key: str) -> str:
    return key.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def parse_quantity(raw: bytes) -> tuple[int | None, str | None]:
    """EXPECTED_QUANTITY from metadata bytes, or (None, reason) when the metadata cannot give a label."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"metadata is not JSON ({exc.__class__.__name__})"
    if not isinstance(document, dict) or "EXPECTED_QUANTITY" not in document:
        return None, "metadata has no EXPECTED_QUANTITY"
    quantity = document["EXPECTED_QUANTITY"]
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return None, f"EXPECTED_QUANTITY is not an integer: {quantity!r}"
    return quantity, None


def check_quantity(raw: bytes, expected_label: int) -> str | None:
    """None when the metadata is valid for this label, else the reject reason."""
    quantity, problem = parse_quantity(raw)
    if problem:
        return problem
    if quantity not in CLASSES:
        return f"EXPECTED_QUANTITY {quantity} is outside 1-5"
    if quantity != expected_label:
        return f"EXPECTED_QUANTITY {quantity} does not match the selected label {expected_label}"
    return None


def check_image_head(head: bytes, size: int) -> str | None:
    """None when the first bytes and the size look like a JPEG bin photo, else the reject reason."""
    if size == 0:
        return "image is empty (0 bytes)"
    if not head.startswith(JPEG_SIGNATURE):
        return "image is not a JPEG (no FF D8 FF signature)"
    if size < MIN_IMAGE_BYTES:
        return f"image is implausibly small ({size} bytes)"
    if size > MAX_IMAGE_BYTES:
        return f"image is implausibly large ({size} bytes)"
    return None


def check_image_tail(tail: bytes) -> str | None:
    """None when the last bytes hold JPEG's end marker, else the reject reason.

    An upload cut short keeps a valid header, so the head check passes it; without its end marker the
    decoder fails on it in every training epoch. Inside the compressed data an FF byte is always followed by
    00 or a restart marker, so FF D9 near the end means the file is complete.
    """
    if JPEG_END not in tail:
        return "image is truncated (no JPEG end marker FF D9 in its last bytes)"
    return None
