"""EnableNetworkIsolation on this machine: the job's processes run in a network namespace of their own with
only a loopback interface, shared by the job's hosts (distributed training still reaches its peers, as between
SageMaker's instances of one job) and without any route out. The runner itself stays outside: it stages the
channels and uploads the outputs, as SageMaker does for an isolated container.

Creating a namespace needs root (CAP_SYS_ADMIN) and util-linux's `unshare`/`nsenter`. Where that fails, the
job fails with the reason: an isolated job never runs with network.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


class IsolationUnavailable(RuntimeError):
    """This machine cannot give the job a network namespace."""


class IsolatedNetwork:
    """A network namespace held open by a sleeping process; `wrap(cmd)` runs a command inside it."""

    def __init__(self) -> None:
        self.holder: subprocess.Popen | None = None

    def __enter__(self) -> IsolatedNetwork:
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if not unshare or not nsenter:
            raise IsolationUnavailable("EnableNetworkIsolation needs util-linux's unshare and nsenter on this machine")
        self.holder = subprocess.Popen([unshare, "--net", "--", "sleep", "infinity"], stderr=subprocess.PIPE)
        namespace = Path(f"/proc/{self.holder.pid}/ns/net")
        deadline = time.monotonic() + 5
        while True:  # the holder is in its namespace once `sleep` runs: its net link differs from ours
            if self.holder.poll() is not None:
                error = (self.holder.stderr.read() if self.holder.stderr else b"").decode(errors="replace").strip()
                error = error or "unshare failed"
                raise IsolationUnavailable(f"cannot create a network namespace (needs root): {error}")
            try:
                if namespace.readlink() != Path("/proc/self/ns/net").readlink():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise IsolationUnavailable("the network namespace did not come up within 5 s")
            time.sleep(0.02)
        # Loopback up: the job's hosts talk to each other (torch.distributed) and to nothing else.
        up = subprocess.run(self.wrap(["ip", "link", "set", "lo", "up"]), capture_output=True, text=True)
        if up.returncode != 0:
            self.__exit__()
            raise IsolationUnavailable(f"cannot bring up loopback in the job's namespace: {up.stderr.strip()}")
        return self

    def wrap(self, command: list[str]) -> list[str]:
        assert self.holder is not None, "use IsolatedNetwork as a context manager"
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *command]

    def __exit__(self, *_: object) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()
