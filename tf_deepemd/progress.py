"""Progress of a long evaluation loop on the console: count, rate and time left.

On a terminal, `Progress` is a Keras progress bar (`keras.utils.Progbar`:
count, bar, time left, time per unit, running values) redrawn at every
update. Elsewhere (a log file, CI) it writes log lines: one when at least
`MIN_LINE_SECONDS` passed since the previous line and the loop has moved on
by a tenth of its total or for `MAX_SILENT_SECONDS`, so loops of a few
seconds print nothing and long ones a line every tenth.

Callers update it once per compiled call with the exact number of units
done: a call that scores several episodes at once moves it by all of them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

import keras

log = logging.getLogger(__name__)

MIN_LINE_SECONDS = 5.0
MAX_SILENT_SECONDS = 60.0


def format_seconds(seconds):
    """``'42 s'``, ``'3:05'`` (min:s) or ``'1:02:03'`` (h:min:s)."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class Progress:
    """Count, rate and time left of a loop of ``total`` units.

    Args:
      total: units the loop will do (from where it starts counting).
      description: what the loop is, first on each log line (e.g. ``'test'``).
      unit, units: the unit's name, singular and plural (default ``unit``
        + ``'s'``), e.g. ``'query'``, ``'queries'``.
      interactive: a progress bar (True) or log lines (False); None: a bar
        when standard output is a terminal.
      start: units already done before this run (a resumed loop); the rate
        counts only the units done here.
    """

    def __init__(self, total: int, description: str, unit: str = "episode", units: Optional[str] = None,
                 interactive: Optional[bool] = None, start: int = 0):
        self.total = int(total)
        self.description = description
        self.units = units or unit + "s"
        self.interactive = sys.stdout.isatty() if interactive is None else bool(interactive)
        self._start_count = int(start)
        self._start_time = self._last_line_time = time.perf_counter()
        self._last_line_count = int(start)
        self._bar = None
        if self.interactive:
            self._bar = keras.utils.Progbar(self.total, unit_name=unit, interval=0.0, stateless_metrics=())
            self._bar.update(self._start_count)

    def rate(self, done):
        """Units per second since this run started."""
        return (done - self._start_count) / max(time.perf_counter() - self._start_time, 1e-9)

    def update(self, done: int, **values: float):
        """``done`` units of ``total`` are finished; ``values`` (e.g. a running accuracy) are shown.

        Pass names with their unit, e.g. ``**{"accuracy (%)": 78.4}``.
        """
        if self._bar is not None:
            self._bar.update(done, values=list(values.items()), finalize=done >= self.total)
            return
        now = time.perf_counter()
        since_line = now - self._last_line_time
        moved_on = done - self._last_line_count >= max(1, self.total // 10) or since_line >= MAX_SILENT_SECONDS
        if done >= self.total or since_line < MIN_LINE_SECONDS or not moved_on:
            return
        rate = self.rate(done)
        left = (self.total - done) / rate if rate > 0 else float("inf")
        shown = "".join(f", {name} {value:.2f}" for name, value in values.items())
        log.info("%s: %d/%d %s, %.2f %s/s, %s left%s", self.description, done, self.total, self.units,
                 rate, self.units, format_seconds(left) if left != float("inf") else "?", shown)
        self._last_line_time, self._last_line_count = now, done
