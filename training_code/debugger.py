"""The smdebug hook, created the way SageMaker configures it, or not at all.

Managed rules (and the local runner): SageMaker writes the hook configuration to
/opt/ml/input/config/debughookconfig.json (the runner points SMDEBUG_CONFIG_FILE_PATH at its copy).
Self-hosted rules (accounts without Debugger): the request carries INVENTORY_DEBUG_* variables instead and
this module writes the equivalent configuration, with the tensors going straight to S3.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("train.debugger")
DEFAULT_CONFIG = "/opt/ml/input/config/debughookconfig.json"


def _self_hosted_config() -> Path | None:
    output = os.environ.get("INVENTORY_DEBUG_S3_OUTPUT")
    if not output:
        return None
    interval = os.environ.get("INVENTORY_DEBUG_SAVE_INTERVAL", "1")
    # {collection: parameters}, as the request builder writes them (the rules' save_interval included)
    collections = json.loads(os.environ.get("INVENTORY_DEBUG_COLLECTIONS") or "{}")
    config = {
        "LocalPath": output,
        "HookParameters": {"train.save_interval": interval, "eval.save_interval": interval},
        "CollectionConfigurations": [
            {"CollectionName": name, "CollectionParameters": params} for name, params in collections.items()
        ],
    }
    path = Path(tempfile.mkdtemp()) / "debughookconfig.json"
    path.write_text(json.dumps(config))
    return path


def create_hook() -> Any | None:
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    try:
        import smdebug.pytorch as smd
    except ImportError:
        log.info("smdebug is not installed: training without the debugger hook")
        return None
    path = Path(os.environ.get("SMDEBUG_CONFIG_FILE_PATH", DEFAULT_CONFIG))
    if not path.is_file():
        path = _self_hosted_config() or path
    if not path.is_file():
        log.info("no debugger hook configuration (%s): training without the debugger hook", path)
        return None
    hook = smd.Hook.create_from_json_file(str(path))
    log.info("debugger hook writing to %s (config %s)", hook.out_dir, path)
    return hook


def set_mode(hook: Any | None, train: bool) -> None:
    if hook is None:
        return
    import smdebug.pytorch as smd

    hook.set_mode(smd.modes.TRAIN if train else smd.modes.EVAL)
