"""When each training/validation step ran, read from the job's smdebug trial.

SageMaker's step-based profiler rules (StepOutlier, MaxInitializationTime) read "Step:ModeKeys.*" events
from its framework profiler, which this pipeline does not run (framework profiling is deprecated in recent
SageMaker containers). The smdebug trial carries the same clock: every saved tensor is an event record with
its wall time, and each step's event file starts with the first tensor saved in that step (the first forward
hook, right after the batch arrived). A step's start is that first wall time; its duration is the time to the
next step's start, so it includes loading the next batch as a framework step timer would. Only the first
record of each event file is read (a ranged read on S3), never the tensors.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections import defaultdict
from dataclasses import dataclass, field

from inventory_pipeline.rules.storage import END_OF_JOB, Storage

log = logging.getLogger(__name__)
INDEX_FILE = re.compile(r"^index/\d+/(\d{12})_(.+)\.json$")
RECORD_HEAD = 8 + 4 + 1 + 8  # TFRecord length + crc, then the Event's first field: wall_time (tag 0x09, double)
WALL_TIME_TAG = 0x09


@dataclass(frozen=True, slots=True)
class StepTiming:
    node: str  # the smdebug worker that saved the step
    mode: str  # TRAIN, EVAL, ...
    step: int  # global step
    mode_step: int
    start: float  # epoch seconds


@dataclass
class StepTimeline:
    steps: list[StepTiming] = field(default_factory=list)  # sorted by start
    trial_found: bool = False  # a trial exists (it may have no step yet)
    ended: bool = False
    source: str = ""
    problems: list[str] = field(default_factory=list)

    def durations(self, mode: str | None = None) -> dict[tuple[str, str], list[tuple[int, float, float]]]:
        """(node, mode) -> [(global step, start, seconds to the next step)] for consecutive global steps of
        one mode on one node; the last step of each run of a mode has no measured duration."""
        by_node: dict[str, list[StepTiming]] = defaultdict(list)
        for timing in sorted(self.steps, key=lambda t: (t.node, t.step)):
            by_node[timing.node].append(timing)
        result: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
        for node, timings in by_node.items():
            for current, following in zip(timings, timings[1:], strict=False):
                if following.step == current.step + 1 and following.mode == current.mode:
                    if mode is None or mode_matches(mode, current.mode):
                        result[(node, current.mode)].append(
                            (current.step, current.start, following.start - current.start)
                        )
        return dict(result)


def mode_matches(wanted: str, mode: str) -> bool:
    """StepOutlier's `mode` may be written "TRAIN", "ModeKeys.TRAIN" or "Step:ModeKeys.TRAIN"."""
    return wanted.rsplit(".", 1)[-1].upper() == mode.upper()


def first_wall_time(head: bytes) -> float | None:
    if len(head) < RECORD_HEAD or head[12] != WALL_TIME_TAG:
        return None
    return struct.unpack("<d", head[13:21])[0]


def read_step_timeline(storage: Storage | None) -> StepTimeline:
    timeline = StepTimeline()
    if storage is None:
        return timeline
    timeline.source = storage.uri
    objects = storage.list()
    keys = {o.key for o in objects}
    timeline.trial_found = any(k.startswith(("collections/", "index/")) for k in keys)
    timeline.ended = END_OF_JOB in keys
    for obj in objects:
        match = INDEX_FILE.match(obj.key)
        if not match:
            continue
        try:
            meta = json.loads(storage.read(obj.key))["meta"]
            start = first_wall_time(storage.read_head(meta["event_file_name"], RECORD_HEAD))
            if start is None:
                raise ValueError("event file does not start with a timed record")
            timeline.steps.append(
                StepTiming(match.group(2), str(meta["mode"]), int(match.group(1)), int(meta["mode_step"]), start)
            )
        except Exception as exc:  # a half-written step is reported, not fatal
            timeline.problems.append(f"{obj.key}: {type(exc).__name__}: {exc}")
    timeline.steps.sort(key=lambda t: t.start)
    if timeline.problems:
        log.warning(
            "step timeline of %s: %d unreadable step(s), e.g. %s",
            storage.uri,
            len(timeline.problems),
            timeline.problems[0],
        )
    return timeline
