"""Progress reporting: rich progress bars on a terminal, plain timestamped log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

#: Seconds between plain log lines when not on a terminal.
PLAIN_INTERVAL = 10.0


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second)."""

    def render(self, task) -> Text:
        speed = task.speed
        if not speed:
            return Text("-/s")
        return Text(f"{speed:.1f}/s" if speed >= 1 else f"{1 / speed:.1f}s/it")


class Reporter:
    """Messages and progress for one command; ``quiet`` keeps only warnings and errors."""

    def __init__(self, quiet: bool = False, verbose: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.verbose = verbose
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = self.console.is_terminal and not quiet

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def debug(self, message: str) -> None:
        if self.verbose:
            self.console.print(message, markup=False, style="dim")

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        self.console.print(f"error: {message}", markup=False, style="bold red")

    @contextmanager
    def task(self, description: str, total: int, completed: int = 0) -> Iterator[Callable[[int, str], None]]:
        """Yield ``advance(n, status)`` that moves a bar (terminal) or prints a line every few seconds."""
        if self.interactive:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                       TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            with Progress(*columns, console=self.console, transient=False) as progress:
                task = progress.add_task(description, total=total, completed=completed, status="")
                yield lambda n, status="": progress.update(task, advance=n, status=status)
            return
        state = {"done": completed, "last": 0.0, "start": time.time(), "base": completed}

        def advance(n: int, status: str = "") -> None:
            state["done"] += n
            now = time.time()
            if self.quiet or (now - state["last"] < PLAIN_INTERVAL and state["done"] < total):
                return
            state["last"] = now
            rate = (state["done"] - state["base"]) / max(now - state["start"], 1e-6)
            eta = (total - state["done"]) / rate if rate > 0 else float("inf")
            eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
            print(f"[{time.strftime('%H:%M:%S')}] {description}: {state['done']}/{total} {status} "
                  f"({rate:.2f}/s, ETA {eta_text})", file=sys.stderr, flush=True)

        yield advance
