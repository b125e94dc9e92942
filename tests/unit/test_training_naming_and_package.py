import io
import tarfile

import pytest

from inventory_pipeline.training.naming import job_name_for_run, validate_job_name
from inventory_pipeline.training.package import build_sourcedir


def test_job_name_is_stable_per_run_unique_across_runs_and_valid():
    run = "scheduled__2026-11-23T03:00:00+00:00"
    first = job_name_for_run("inventory_retraining", run)
    assert first == job_name_for_run("inventory_retraining", run)  # a retry gets the same name
    assert first != job_name_for_run("inventory_retraining", run.replace("23", "30"))
    assert first != job_name_for_run("other_dag", run)
    assert len(first) <= 63 and validate_job_name(first) == first


def test_job_name_from_a_very_long_run_id_is_cut_to_63():
    name = job_name_for_run("d", "manual__" + "x" * 300)
    assert len(name) <= 63 and validate_job_name(name)


@pytest.mark.parametrize("bad", ["", "-lead", "trail-", "has_underscore", "a" * 64])
def test_invalid_job_names_are_rejected(bad):
    with pytest.raises(ValueError, match="invalid training job name"):
        validate_job_name(bad)


def _code_dir(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("X = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    return tmp_path


def test_sourcedir_is_reproducible_and_excludes_caches(tmp_path):
    code = _code_dir(tmp_path)
    first = build_sourcedir(code)
    (code / "train.py").touch()  # a new mtime must not change the archive
    assert build_sourcedir(code) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert tar.getnames() == ["pkg/m.py", "train.py"]
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_sourcedir_changes_with_the_code(tmp_path):
    code = _code_dir(tmp_path)
    first = build_sourcedir(code)
    (code / "train.py").write_text("print('changed')\n")
    assert build_sourcedir(code) != first


def test_sourcedir_requires_an_entry_point(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train.py"):
        build_sourcedir(tmp_path)
