"""Run a job's `ContainerEntrypoint` + `ContainerArguments` the way its container would: with the host's job
directory at `/opt/ml`.

Such a job (the sagemaker SDK v3's `ModelTrainer`, a bring-your-own container) names absolute `/opt/ml/...`
paths in its commands and scripts. Each host's process gets its own mount namespace (`unshare`, private
propagation: nothing leaks to this machine) in which `/opt/ml` is that host's directory; the rest of the file
system is this machine's. Where `/opt/ml` does not exist, a tmpfs over `/opt` holds it, with `/opt`'s own
entries bound back. Not root: a user namespace maps this user to root inside, as rootless containers do.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CONTAINER_ROOT = "/opt/ml"

# $1: the host's job dir, $2: an empty dir for the real /opt; then the command.
_MOUNT_OPT_ML = r"""
set -e
job_root="$1"; real_opt="$2"; shift 2
if [ ! -d /opt/ml ]; then
    mount --bind /opt "$real_opt"
    mount -t tmpfs -o mode=755 tmpfs /opt
    for entry in "$real_opt"/* "$real_opt"/.[!.]*; do
        [ -e "$entry" ] || [ -L "$entry" ] || continue
        name=$(basename "$entry")
        if [ -L "$entry" ]; then ln -s "$(readlink "$entry")" "/opt/$name"; continue; fi
        if [ -d "$entry" ]; then mkdir "/opt/$name"; else touch "/opt/$name"; fi
        mount --rbind "$entry" "/opt/$name"
    done
    mkdir /opt/ml
fi
mount --bind "$job_root" /opt/ml
cd /opt/ml
exec "$@"
"""


class ContainerUnavailable(Exception):
    """This machine cannot give the job its /opt/ml (no `unshare`, or namespaces not permitted)."""


def uses_container_entrypoint(job: dict) -> bool:
    return bool(job.get("AlgorithmSpecification", {}).get("ContainerEntrypoint"))


def command(job: dict, host_root: Path) -> list[str]:
    """The host's command: the entry point inside a mount namespace that shows `host_root` at /opt/ml."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ContainerUnavailable("a job with a ContainerEntrypoint needs `unshare` (util-linux) to see /opt/ml")
    spec = job["AlgorithmSpecification"]
    real_opt = host_root.parent / f".{host_root.name}-real-opt"
    real_opt.mkdir(exist_ok=True)
    user_namespace = [] if os.geteuid() == 0 else ["--map-root-user"]
    entry = [*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", [])]
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        *user_namespace,
        "sh",
        "-c",
        _MOUNT_OPT_ML,
        "mount-opt-ml",
        str(host_root),
        str(real_opt),
        *entry,
    ]


def link_channels(host_input_data: Path, channels: dict[str, Path]) -> None:
    """/opt/ml/input/data/<channel> for each channel (downloaded once, shared by the hosts): real directories
    of hard links (no copy of the data; a symlink would show its target's path to `cd` and `getcwd`)."""
    host_input_data.mkdir(parents=True, exist_ok=True)
    for name, path in channels.items():
        if not (host_input_data / name).exists():
            shutil.copytree(path, host_input_data / name, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def container_paths(env: dict[str, str], host_root: Path) -> dict[str, str]:
    """The environment with the host dir's paths as the container sees them (under /opt/ml), and the Python
    that runs this stack first on PATH (the container's `python3`)."""
    root = str(host_root)
    seen = {k: v.replace(root, CONTAINER_ROOT) if root in v else v for k, v in env.items()}
    seen["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return seen
