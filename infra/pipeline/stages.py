"""Resumable stages: each finished stage leaves a JSON record; a re-run skips recorded stages."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

StageFn = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """A named step of a pipeline; `run` returns the outputs to record (paths, numbers)."""

    name: str
    description: str
    run: StageFn


class StageRunner:
    """Runs stages in order, recording each under `root/stages/<name>.json` when it succeeds."""

    def __init__(self, root: Path):
        self.root = root
        self.records_dir = root / "stages"
        self.records_dir.mkdir(parents=True, exist_ok=True)

    def record_path(self, name: str) -> Path:
        """Where the record of stage `name` lives."""
        return self.records_dir / f"{name}.json"

    def record(self, name: str) -> dict[str, Any] | None:
        """The outputs recorded for `name`, or None when it has not finished."""
        path = self.record_path(name)
        if not path.is_file():
            return None
        return json.loads(path.read_text())["outputs"]

    def run_all(self, stages: list[Stage]) -> dict[str, dict[str, Any]]:
        """Run every unfinished stage in order; return all stages' outputs."""
        outputs: dict[str, dict[str, Any]] = {}
        for index, stage in enumerate(stages, start=1):
            done = self.record(stage.name)
            if done is not None:
                logger.info("[%d/%d] %s: already done (%s), skipping",
                            index, len(stages), stage.name, self.record_path(stage.name))
                outputs[stage.name] = done
                continue
            logger.info("[%d/%d] %s: %s", index, len(stages), stage.name, stage.description)
            started = time.monotonic()
            result = stage.run()
            elapsed = time.monotonic() - started
            record = {"stage": stage.name, "seconds": round(elapsed, 1),
                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "outputs": result}
            tmp = self.record_path(stage.name).with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=2))
            tmp.replace(self.record_path(stage.name))  # atomic: a stage is done or it is not
            logger.info("[%d/%d] %s: done in %.0f s", index, len(stages), stage.name, elapsed)
            outputs[stage.name] = result
        return outputs

    def seconds(self, name: str) -> float | None:
        """Wall time a finished stage took."""
        path = self.record_path(name)
        return json.loads(path.read_text())["seconds"] if path.is_file() else None
