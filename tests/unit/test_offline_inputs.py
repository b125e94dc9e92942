"""Shipping what a job needs ahead of time: wheels inside sourcedir.tar.gz, the pretrained checkpoint once."""

import io
import tarfile

import pytest

from inventory_pipeline.training.offline import OFFLINE_HEADER, OfflineError, requirement_names, vendored_files
from inventory_pipeline.training.package import build_sourcedir


def test_requirements_become_an_offline_install_of_the_shipped_wheels(tmp_path):
    code, wheels = tmp_path / "code", tmp_path / "wheels"
    code.mkdir(), wheels.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    (code / "requirements.txt").write_text("# extras\nSmDebug==1.0.34\n")
    with pytest.raises(OfflineError, match="no wheel for \\['smdebug'\\]"):
        build_sourcedir(code, wheels)
    (wheels / "smdebug-1.0.34-py2.py3-none-any.whl").write_bytes(b"wheel bytes")
    (wheels / "pyinstrument-3.4.2-cp310-cp310-manylinux1_x86_64.whl").write_bytes(b"dependency")
    with tarfile.open(fileobj=io.BytesIO(build_sourcedir(code, wheels))) as tar:
        names = sorted(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()
    assert names == [
        "requirements.txt",
        "train.py",
        "wheels/pyinstrument-3.4.2-cp310-cp310-manylinux1_x86_64.whl",
        "wheels/smdebug-1.0.34-py2.py3-none-any.whl",
    ]
    assert requirements.startswith(OFFLINE_HEADER) and "SmDebug==1.0.34" in requirements
    assert build_sourcedir(code, wheels) == build_sourcedir(code, wheels)  # still reproducible bytes
    assert requirement_names("-r other.txt\nfoo_bar>=1 ; python_version>'3'\n") == ["foo-bar"]
    assert set(vendored_files("", wheels)) == {"requirements.txt", *(f"wheels/{w.name}" for w in wheels.iterdir())}
