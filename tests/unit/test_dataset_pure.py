"""Pure parts of the data plane: file lists, metadata checks, split stability, versioning, limits."""

import json
from collections import Counter

import pytest

from inventory_pipeline.dataset.abid import (
    Pair,
    check_image_head,
    check_image_tail,
    check_quantity,
    image_id_from_metadata_path,
)
from inventory_pipeline.dataset.errors import InvalidFileList
from inventory_pipeline.dataset.select import limit_per_class, parse_file_list, select_source
from inventory_pipeline.dataset.split import assign_split, counts_by_split, dataset_version


def test_file_list_accepts_both_the_bucket_and_the_study_forms(abid_sample):
    sample = parse_file_list(json.loads((abid_sample / "file_list.json").read_text()))
    assert len(sample) == 100 and Counter(p.label for p in sample) == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    study = parse_file_list(json.loads((abid_sample.parent / "file_list.json").read_text()))
    assert Counter(p.label for p in study) == {1: 1228, 2: 2299, 3: 2666, 4: 2373, 5: 1875}
    assert Pair("100313", 1) in study  # "data/metadata/100313.json" -> the bucket key's id


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"6": ["metadata/1.json"]}, "only '1'..'5'"),
        ({"1": "metadata/1.json"}, "must hold a list"),
        ({"1": ["bin-images/1.jpg"]}, "expected 'metadata/<id>.json'"),
        ({"1": ["metadata/1.json"], "2": ["metadata/1.json"]}, "both class 1 and class 2"),
    ],
)
def test_malformed_file_lists_are_clear_errors(document, message):
    with pytest.raises(InvalidFileList, match=message):
        parse_file_list(document)


def test_metadata_paths():
    assert image_id_from_metadata_path("metadata/00004.json") == "00004"
    assert image_id_from_metadata_path("data/metadata/100313.json") == "100313"
    assert image_id_from_metadata_path("metadata/../x.json") is None


@pytest.mark.parametrize(
    ("raw", "label", "problem"),
    [
        (b'{"EXPECTED_QUANTITY": 3}', 3, None),
        (b"not json", 3, "not JSON"),
        (b'{"BIN_FCSKU_DATA": {}}', 3, "no EXPECTED_QUANTITY"),
        (b'{"EXPECTED_QUANTITY": 0}', 3, "outside 1-5"),
        (b'{"EXPECTED_QUANTITY": 7}', 3, "outside 1-5"),
        (b'{"EXPECTED_QUANTITY": "3"}', 3, "not an integer"),
        (b'{"EXPECTED_QUANTITY": true}', 1, "not an integer"),
        (b'{"EXPECTED_QUANTITY": 2.0}', 2, "not an integer"),
        (b'{"EXPECTED_QUANTITY": 2}', 3, "does not match"),
    ],
)
def test_metadata_validation(raw, label, problem):
    result = check_quantity(raw, label)
    assert result is None if problem is None else problem in result


def test_real_metadata_validates(abid_sample):
    for path in sorted((abid_sample / "metadata").glob("*.json"))[:20]:
        quantity = json.loads(path.read_text())["EXPECTED_QUANTITY"]
        assert check_quantity(path.read_bytes(), quantity) is None


@pytest.mark.parametrize(
    ("head", "size", "problem"),
    [
        (b"\xff\xd8\xff\xe0" + b"\0" * 12, 30_000, None),
        (b"", 0, "empty"),
        (b"\x89PNG\r\n\x1a\n", 30_000, "not a JPEG"),
        (b"\xff\xd8\xff\xe0", 100, "implausibly small"),
    ],
)
def test_image_head_checks(head, size, problem):
    result = check_image_head(head, size)
    assert result is None if problem is None else problem in result


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        (b"\x00" * 30 + b"\xff\xd9", None),
        (b"\x00" * 20 + b"\xff\xd9" + b"\x00" * 10, None),  # a few bytes of padding after the end marker
        (b"\x12\x34" * 16, "truncated"),  # an upload cut short in the compressed data
    ],
)
def test_image_tail_checks(tail, problem):
    result = check_image_tail(tail)
    assert result is None if problem is None else problem in result


def test_real_photos_end_with_the_jpeg_end_marker(abid_sample):
    for path in sorted((abid_sample / "bin-images").glob("*.jpg")):
        assert check_image_tail(path.read_bytes()[-32:]) is None, path.name


def test_split_is_stable_and_close_to_80_10_10():
    ids = [f"{i:05d}" for i in range(10_000)]
    first = {i: assign_split(i) for i in ids}
    assert first == {i: assign_split(i) for i in reversed(ids)}  # order-independent
    share = Counter(first.values())
    assert abs(share["train"] / 10_000 - 0.8) < 0.02
    assert abs(share["valid"] / 10_000 - 0.1) < 0.01
    assert abs(share["test"] / 10_000 - 0.1) < 0.01
    # Growing the dataset never moves an existing image.
    grown = {f"{i:05d}": assign_split(f"{i:05d}") for i in range(12_000)}
    assert all(grown[i] == first[i] for i in ids)


def test_version_is_a_content_hash():
    a = [{"image_id": "1", "label": 2, "image_etag": "e1"}, {"image_id": "2", "label": 3, "image_etag": "e2"}]
    assert dataset_version(a) == dataset_version(list(reversed(a)))
    assert dataset_version(a) != dataset_version([{**a[0], "image_etag": "changed"}, a[1]])
    assert dataset_version(a) != dataset_version([{**a[0], "label": 4}, a[1]])
    assert len(dataset_version(a)) == 16


def test_counts_by_split_lists_every_class():
    counts = counts_by_split([{"split": "train", "label": 2}, {"split": "test", "label": 5}])
    assert counts["train"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 0}
    assert counts["valid"] == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}


def test_per_class_limit_keeps_the_lowest_ids():
    pairs = [Pair(f"{i:03d}", 1 + i % 2) for i in range(10)]
    limited = limit_per_class(pairs, 2)
    assert limited == [Pair("000", 1), Pair("001", 2), Pair("002", 1), Pair("003", 2)]
    assert limit_per_class(pairs, 0) == sorted(pairs)


def test_the_selection_keeps_the_sources_class_counts_from_before_the_per_class_limit(tmp_path):
    file_list = tmp_path / "file_list.json"
    sizes = {1: 3, 2: 5, 3: 8, 4: 6, 5: 4}
    file_list.write_text(
        json.dumps({str(c): [f"metadata/{c}{i:03d}.json" for i in range(n)] for c, n in sizes.items()})
    )
    selection = select_source(None, "source", file_list=str(file_list), per_class_limit=2)
    assert selection.counts == dict.fromkeys(sizes, 2)
    assert selection.source_counts == sizes  # the population the job corrects its answers to


def test_check_splits_refuses_a_training_split_without_every_count():
    from inventory_pipeline.dataset.errors import EmptySplit
    from inventory_pipeline.dataset.split import check_splits

    def entries(ids_per_class: int) -> list[dict]:
        return [
            {"image_id": f"{label}-{i}", "label": label, "split": assign_split(f"{label}-{i}")}
            for label in range(1, 6)
            for i in range(ids_per_class)
        ]

    with pytest.raises(EmptySplit, match="5 images are too few: the training split needs every count"):
        check_splits(counts_by_split(entries(1)), 5)
    assert check_splits(counts_by_split(entries(200)), 1000) == []  # big enough: nothing missing
    counts = counts_by_split(entries(12))
    assert counts["valid"]["5"] == 0 and counts["test"]["3"] == 0  # these ids happen to hash that way
    assert check_splits(counts, 60) == ["valid/5", "test/3"]  # allowed: they only measure; but named


def test_copy_plan_reads_only_what_was_not_validated_and_stored_with_the_pinned_etags():
    from inventory_pipeline.dataset.copy import plan_copies
    from inventory_pipeline.dataset.packs import RawIndex
    from inventory_pipeline.dataset.s3io import ObjectInfo
    from inventory_pipeline.dataset.source_index import Pinned

    image, meta = ObjectInfo(30_000, "img"), ObjectInfo(900, "meta")
    selected = [Pinned(Pair(i, 1), image, meta) for i in ("a", "b", "c", "d")]
    assert Pinned.from_row(selected[0].to_row()) == selected[0]
    raw = RawIndex()
    stored = {"pack": "raw/packs/train/p.tar", "offset": 512, "size": 30_000}
    raw.add(
        {
            "a": {"image_etag": "img", "metadata_etag": "meta", "label": 1, **stored},  # validated and stored
            "b": {"image_etag": "older", "metadata_etag": "meta", "label": 1, **stored},  # the photo changed since
            "c": {"image_etag": "img", "metadata_etag": "old-meta", "label": 1, **stored},  # label corrected since
        }
    )
    plan = {p.pair.image_id: (p.stored is not None, p.validated) for p in plan_copies(selected, raw)}
    assert plan == {"a": (True, True), "b": (False, False), "c": (True, False), "d": (False, False)}


def test_packs_are_deterministic_tars_with_the_offsets_any_reader_sees(abid_sample):
    import io
    import tarfile

    from inventory_pipeline.dataset.packs import build_pack

    photos = sorted((abid_sample / "bin-images").glob("*.jpg"))[:3]
    images = [(p.stem, p.read_bytes()) for p in photos]
    body, members = build_pack(list(reversed(images)))
    assert build_pack(images)[0] == body  # same images, same bytes: a retried write is the same object
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert [m.name for m in tar.getmembers()] == sorted(f"{i}.jpg" for i, _ in images)
    for image_id, data in images:
        offset, size = members[image_id]
        assert body[offset : offset + size] == data


def test_a_version_is_labels_and_manifest_files_naming_packs_never_copies():
    from inventory_pipeline.dataset.split import channel_files, channels

    entries = [
        {"image_id": "a", "label": 2, "split": "train", "pack": "raw/packs/train/p1.tar", "offset": 512, "size": 9},
        {"image_id": "b", "label": 5, "split": "train", "pack": "raw/packs/train/p2.tar", "offset": 512, "size": 7},
        {"image_id": "c", "label": 1, "split": "test", "pack": "raw/packs/test/p3.tar", "offset": 1536, "size": 3},
    ]
    files = channel_files("bkt", "proj/", "v1", entries)
    assert files["proj/datasets/v1/train.manifest"] == [
        {"prefix": "s3://bkt/proj/"},
        "datasets/v1/train/labels.json",
        "raw/packs/train/p1.tar",
        "raw/packs/train/p2.tar",
    ]
    labels = files["proj/datasets/v1/train/labels.json"]
    assert labels["samples"] == [["raw/packs/train/p1.tar", 512, 9, 2, "a"], ["raw/packs/train/p2.tar", 512, 7, 5, "b"]]
    assert files["proj/datasets/v1/valid.manifest"] == [{"prefix": "s3://bkt/proj/"}, "datasets/v1/valid/labels.json"]
    assert channels("bkt", "proj/", "v1")["test"] == "s3://bkt/proj/datasets/v1/test.manifest"


def test_changes_count_added_removed_and_relabelled_images_per_class_and_flag_a_mix_shift():
    from inventory_pipeline.dataset.changes import class_mix, compare_versions

    def entry(image_id, label, split="train"):
        return {"image_id": image_id, "label": label, "split": split}

    before = [entry("a", 1), entry("b", 2), entry("c", 3), entry("d", 3)]
    after = [entry("a", 1), entry("b", 4), entry("c", 3), entry("e", 5), entry("f", 5)]
    previous = {"version": "v1", "entries": before, "counts": counts_by_split(before)}
    first = compare_versions(before, counts_by_split(before), None, 0.1)
    assert first["added"] == {"1": 1, "2": 1, "3": 2, "4": 0, "5": 0} and not first["flagged"]
    changes = compare_versions(after, counts_by_split(after), previous, 0.1)
    assert changes["previous_version"] == "v1"
    assert changes["added"] == {"1": 0, "2": 0, "3": 0, "4": 1, "5": 2}  # b relabelled 2 -> 4, e and f new
    assert changes["removed"] == {"1": 0, "2": 1, "3": 1, "4": 0, "5": 0}  # b's old label, d gone
    assert changes["mix_shift"]["train"] == 0.4 and changes["flagged"]  # class 5: 0 -> 2/5 of train
    assert not compare_versions(after, counts_by_split(after), previous, 0.5)["flagged"]
    assert class_mix(counts_by_split(after))["train"]["5"] == 0.4
