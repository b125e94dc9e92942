"""training_code/data.py: JPEGs decoded at the resolution the transforms need, decoded once per process, and
a corrupt photo still skipped and reported."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "training_code"))

from data import CountingImageFolder, train_decode_side  # noqa: E402


@pytest.fixture()
def channel(abid_sample, tmp_path) -> Path:
    """Two real ABID photos per count, plus a corrupt one under count 3."""
    photos = sorted((abid_sample / "bin-images").glob("*.jpg"))
    for label in "12345":
        (tmp_path / label).mkdir()
    for i, photo in enumerate(photos[:10]):
        shutil.copy(photo, tmp_path / "12345"[i % 5] / photo.name)
    (tmp_path / "3" / "broken.jpg").write_bytes(photos[0].read_bytes()[:400])
    return tmp_path


def test_photos_are_decoded_no_smaller_than_needed_and_once(channel):
    side = train_decode_side(96)
    scaled = CountingImageFolder("train", channel, decode_side=side)
    full = CountingImageFolder("train", channel, cache_mb=0)
    for index in range(len(scaled)):
        if "broken" in str(scaled.samples[index][0]):
            continue
        small, _ = scaled[index]
        original, _ = full[index]
        assert min(small.size) >= side  # the transforms get what they need
        assert small.size[0] < original.size[0]  # and no more: ABID's ~500 px photos decode at 1/2 or less
    assert scaled.cache_info()["images"] == len(scaled) - 1 and full.cache_info()["images"] == 0
    first = scaled[0][0].tobytes()
    assert scaled[0][0].tobytes() == first  # served from the cache, same pixels


def test_a_corrupt_photo_is_skipped_every_time_not_cached(channel):
    dataset = CountingImageFolder("train", channel, decode_side=120)
    broken = next(i for i, (path, _) in enumerate(dataset.samples) if path.name == "broken.jpg")
    for _ in range(2):
        item = dataset[broken]
        assert isinstance(item, dict) and item["skipped"].endswith("broken.jpg") and "error" in item
    assert broken not in dataset._cache


def test_a_dataset_version_channel_reads_photos_from_packs_by_its_labels_file(tmp_path, abid_sample):
    """A ManifestFile channel's layout: <channel>/raw/packs/<split>/<p>.tar + datasets/<v>/<split>/labels.json."""
    import json

    from data import ChannelError, CountingImageFolder

    from inventory_pipeline.dataset.packs import build_pack

    photos = sorted((abid_sample / "bin-images").glob("*.jpg"))[:5]
    body, members = build_pack([(p.stem, p.read_bytes()) for p in photos])
    channel = tmp_path / "train"
    (channel / "raw/packs/train").mkdir(parents=True)
    (channel / "raw/packs/train/p.tar").write_bytes(body)
    labels = channel / "datasets/v1/train/labels.json"
    labels.parent.mkdir(parents=True)
    samples = [["raw/packs/train/p.tar", *members[p.stem], count, p.stem] for count, p in enumerate(photos, 1)]
    labels.write_text(json.dumps({"samples": samples}))
    dataset = CountingImageFolder("train", channel)
    assert len(dataset) == 5 and dataset.class_counts() == {str(c): 1 for c in range(1, 6)}
    image, index = dataset[2]
    assert index == 2 and image.size[0] > 100  # the third photo, decoded from inside the pack, labelled 3
    labels.write_text(json.dumps({"samples": samples[:4]}))
    with pytest.raises(ChannelError, match=r"no image of count\(s\) \['5'\]"):
        CountingImageFolder("train", channel)
    assert CountingImageFolder("test", channel, require_all_classes=False).missing == ["5"]
    labels.write_text(json.dumps({"samples": [["../../etc/passwd", 0, 10, 1, "x"]]}))
    with pytest.raises(ChannelError, match="outside the channel"):
        CountingImageFolder("test", channel, require_all_classes=False)
