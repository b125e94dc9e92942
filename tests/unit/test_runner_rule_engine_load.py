"""The local runner loads the rule engine without torch: smdebug imports `torch.distributed` only to learn
whether it runs in a distributed training process, and that import was two thirds of the load (CPU taken from
the job the runner watches). Torch must be importable again afterwards, and a process that already has torch
keeps it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
sys.path.insert(0, {plugins!r})
if {torch_first}:
    import torch
from inventory_pipeline.local_aws.runner.main import _load_rule_engine
before = "torch" in sys.modules
_load_rule_engine()
import smdebug.core.utils as smdebug_utils
loaded = {{
    "torch_loaded_by_rule_engine": "torch" in sys.modules and not before,
    "smdebug_trials": "smdebug.trials" in sys.modules,
    "rules": "inventory_pipeline.rules.debugger" in sys.modules and "inventory_pipeline.rules.profiler" in sys.modules,
    "smdebug_sees_torch_distributed": smdebug_utils._torch_dist_imported is not None,
}}
import torch  # the guard is lifted: torch imports as usual
loaded["torch_after"] = torch.tensor([1.0, 2.0]).sum().item()
print(json.dumps(loaded))
"""


def probe(torch_first: bool) -> dict:
    code = PROBE.format(plugins=str(ROOT / "plugins"), torch_first=torch_first)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rule_engine_loads_without_importing_torch_and_torch_still_imports_after():
    loaded = probe(torch_first=False)
    assert loaded == {
        "torch_loaded_by_rule_engine": False,
        "smdebug_trials": True,
        "rules": True,
        "smdebug_sees_torch_distributed": False,
        "torch_after": 3.0,
    }


def test_a_process_that_already_has_torch_keeps_it_for_smdebug():
    loaded = probe(torch_first=True)
    assert loaded["smdebug_sees_torch_distributed"] is True
    assert loaded["rules"] and loaded["smdebug_trials"] and loaded["torch_after"] == 3.0
