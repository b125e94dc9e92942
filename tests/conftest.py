"""Shared fixtures: paths, the local AWS stack, and S3 clients pointed at it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
# The local runner's stop window (SIGTERM to SIGKILL): SageMaker's 120 s would make every stop test wait 2 minutes.
os.environ.setdefault("INVENTORY_LOCAL_STOP_WINDOW_S", "5")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_ROOT.parent / "shared"
ABID_SAMPLE = SHARED_DIR / "data" / "abid-sample"
BUILD_DIR = PROJECT_ROOT / "build"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def abid_sample() -> Path:
    if not (ABID_SAMPLE / "file_list.json").exists():
        pytest.fail(f"the real ABID sample is missing at {ABID_SAMPLE} (CI always has ../shared)")
    return ABID_SAMPLE


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One local stack (moto S3 + Logs, and the local SageMaker server when present) per test session."""
    from inventory_pipeline.local_aws.stack import LocalStack

    with LocalStack(tmp_path_factory.mktemp("local-stack")) as stack:
        yield stack


@pytest.fixture()
def s3(local_stack):
    from inventory_pipeline.aws.clients import make_client

    return make_client(
        "s3",
        endpoint_url=local_stack.endpoints["s3"],
        region_name=local_stack.region,
        aws_access_key_id="local-access-key",
        aws_secret_access_key="local-secret-key",
    )


@pytest.fixture()
def bucket_name() -> str:
    """A fresh bucket name per test, so tests sharing the stack never see each other's objects."""
    return f"test-{uuid.uuid4().hex[:16]}"


# Under `make test` (pytest-xdist) a module's tests run on one worker, so its module fixtures run once; modules
# sharing one session fixture go together (else each worker would run it again); the fault scenarios are
# independent and spread over the workers. (xdist's own `loadgroup` marks are ignored under pytest 9.)
SHARED_GROUPS = {"test_iam_policy.py": "recorded-dag-run", "test_no_secrets.py": "recorded-dag-run"}
SPREAD = {"test_faults.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            name = path.rsplit("/", 1)[-1]
            return nodeid if name in SPREAD else SHARED_GROUPS.get(name, path)

    return ByModule(config, log)
