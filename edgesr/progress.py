"""Rich progress bars for every long step (training, calibration, timing), one style for all stages."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress, task, desc: str, total: int, enabled: bool = True):
        self._p, self._t, self._enabled = progress, task, enabled
        self._desc, self._total = desc, max(total, 1)
        self._next_log = 0.1
        self._t0 = self._last_line = time.perf_counter()

    def update(self, completed: int, info: str = "") -> None:
        if not self._enabled:
            return
        self._p.update(self._t, completed=completed, info=info)
        if not console.is_terminal:  # logs (CI, redirected output): a plain line every 10 % or every minute
            frac = completed / self._total
            now = time.perf_counter()
            if frac >= self._next_log - 1e-9 or now - self._last_line >= 60:
                console.print(f"{self._desc}: {completed}/{self._total} ({now - self._t0:.0f} s) {info}",
                              highlight=False)
                self._next_log = (int(frac * 10 + 1e-9) + 1) / 10
                self._last_line = now


@contextlib.contextmanager
def progress_bar(desc: str, total: int, completed: int = 0, enabled: bool = True) -> Iterator[_Bar]:
    """A bar with elapsed time, ETA and an info field; ``enabled=False`` (non-zero ranks) shows nothing."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    progress = Progress(*columns, console=console, disable=not (console.is_terminal and enabled))
    with progress:
        task = progress.add_task(desc, total=total, completed=completed, info="")
        yield _Bar(progress, task, desc, total, enabled)
