"""Rich progress bars for every long step (training, calibration, timing), one style for all stages."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)
"""Messages and progress on stderr; ``soft_wrap``: a line is never broken at the console width (logs redirected to
a file or CI used to wrap mid-sentence at 80 columns)."""


LONG_RUN_PROBE_S = 30.0
"""After this long the rate is measured once, and a run that will take :data:`LONG_RUN_WARN_S` or more is named."""
LONG_RUN_WARN_S = 6 * 3600.0


class _Bar:
    def __init__(self, progress: Progress, task, desc: str, total: int, enabled: bool = True):
        self._p, self._t, self._enabled = progress, task, enabled
        self._desc, self._total = desc, max(total, 1)
        self._next_log = 0.1
        self._t0 = self._last_line = time.perf_counter()
        self._start = None  # the first count seen (a resumed run starts past 0): the ETA's rate is from there
        self._warned = False

    def update(self, completed: int, info: str = "") -> None:
        if not self._enabled:
            return
        self._p.update(self._t, completed=completed, info=info)
        if self._start is None:
            self._start = completed
            self._t0 = time.perf_counter()
        now = time.perf_counter()
        if not self._warned and now - self._t0 >= LONG_RUN_PROBE_S and completed > self._start:
            self._warned = True
            left = (now - self._t0) / (completed - self._start) * (self._total - completed)
            if left >= LONG_RUN_WARN_S:
                console.print(f"[yellow]{self._desc}: at this rate the remaining {self._total - completed:,} take about "
                              f"{left / 3600:.1f} h. If that is not what you meant, stop it (Ctrl-C: a re-run resumes "
                              "from the last checkpoint) and lower steps, or set max_minutes.[/]")
        if not console.is_terminal:  # logs (CI, redirected output): a plain line every 10 % or every minute
            frac = completed / self._total
            if frac >= self._next_log - 1e-9 or now - self._last_line >= 60:
                eta = eta_text(now - self._t0, completed - self._start, self._total - completed)
                console.print(f"{self._desc}: {completed}/{self._total} ({now - self._t0:.0f} s{eta}) {info}",
                              highlight=False)
                self._next_log = (int(frac * 10 + 1e-9) + 1) / 10
                self._last_line = now


def eta_text(elapsed: float, done: int, left: int) -> str:
    """``", eta 12 min"`` from the rate so far (empty before the first step or when nothing is left)."""
    if done <= 0 or left <= 0:
        return ""
    sec = elapsed / done * left
    if sec < 90:
        return f", eta {sec:.0f} s"
    if sec < 5400:
        return f", eta {sec / 60:.0f} min"
    return f", eta {sec / 3600:.1f} h"


@contextlib.contextmanager
def progress_bar(desc: str, total: int, completed: int = 0, enabled: bool = True) -> Iterator[_Bar]:
    """A bar with elapsed time, ETA and an info field; ``enabled=False`` (non-zero ranks) shows nothing."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    progress = Progress(*columns, console=console, disable=not (console.is_terminal and enabled))
    with progress:
        task = progress.add_task(desc, total=total, completed=completed, info="")
        yield _Bar(progress, task, desc, total, enabled)
