"""Rich progress bars for every long step (training, calibration, timing), one style for all stages."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Bar:
    def __init__(self, progress: Progress, task):
        self._p, self._t = progress, task

    def update(self, completed: int, info: str = "") -> None:
        self._p.update(self._t, completed=completed, info=info)

    def advance(self, n: int = 1, info: str | None = None) -> None:
        kw = {} if info is None else {"info": info}
        self._p.update(self._t, advance=n, **kw)


@contextlib.contextmanager
def progress_bar(desc: str, total: int, completed: int = 0) -> Iterator[_Bar]:
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"), console=console)
    with progress:
        task = progress.add_task(desc, total=total, completed=completed, info="")
        yield _Bar(progress, task)
