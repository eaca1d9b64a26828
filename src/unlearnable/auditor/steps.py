"""A resumable plan of named steps whose results accumulate in one JSON file.

Each step's result is written to `results.json` (atomically) as soon as it finishes, so a run
killed at any point restarts at the first unfinished step. A step whose settings changed since
it ran is run again (its settings are hashed into its record).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import UnlearnableError, now_iso, read_json, write_json


class StepSkipped(Exception):
    """Raised by a step that cannot run here (no base set, 1-channel data, ...): says why."""


@dataclass
class Step:
    name: str
    fn: Callable[[], dict[str, Any]]
    cost: float  # relative cost, for the time estimate (about: images x epochs / 1e4)
    settings: dict[str, Any]
    title: str = ""

    def key(self) -> str:
        blob = json.dumps(self.settings, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Plan:
    """Run steps in order; reuse finished ones recorded in `path` (a results.json)."""

    def __init__(self, path: Path, steps: list[Step], quiet: bool = False):
        self.path = Path(path)
        self.steps = steps
        self.quiet = quiet
        self.record: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.record = read_json(self.path)
            except UnlearnableError:
                self.record = {}  # unreadable: start over rather than trust it
        self.record.setdefault("steps", {})

    def _say(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def save(self) -> None:
        write_json(self.path, self.record)

    def run(self) -> dict[str, Any]:
        total_cost = sum(s.cost for s in self.steps) or 1.0
        done_cost, spent = 0.0, 0.0
        t_start = time.perf_counter()
        for i, step in enumerate(self.steps, 1):
            prev = self.record["steps"].get(step.name)
            header = f"[{i}/{len(self.steps)}] {step.title or step.name}"
            if prev and prev.get("key") == step.key() and prev.get("status") in ("done", "skipped"):
                self._say(f"{header}: {prev['status']} earlier, reused")
                done_cost += step.cost
                continue
            elapsed = time.perf_counter() - t_start
            rate = spent / done_cost if done_cost and spent else None
            eta = f", about {_fmt(rate * (total_cost - done_cost))} left" if rate else ""
            self._say(f"{header} (elapsed {_fmt(elapsed)}{eta})")
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"key": step.key(), "started": now_iso()}
            try:
                entry["result"] = step.fn()
                entry["status"] = "done"
            except StepSkipped as e:
                entry.update(status="skipped", reason=str(e))
                self._say(f"    skipped: {e}")
            except (UnlearnableError, ValueError, RuntimeError) as e:
                # One failing analysis must not lose the others: record it and go on.
                entry.update(status="failed", reason=f"{type(e).__name__}: {e}",
                             traceback=traceback.format_exc(limit=8))
                self._say(f"    failed: {type(e).__name__}: {e}")
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            self.record["steps"][step.name] = entry
            self.save()
            spent += entry["seconds"]
            done_cost += step.cost
        return self.record

    def result(self, name: str) -> dict[str, Any] | None:
        e = self.record["steps"].get(name)
        return e.get("result") if e and e.get("status") == "done" else None
