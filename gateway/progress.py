"""Progress bars of the long commands (``import``, ``reclassify``, ``sync --once``).

A bar is drawn on stderr only when stderr is a terminal: under cron, in a pipe, or with
stderr closed (``2>&-``, where ``sys.stderr`` is None) there is none, and the commands print
exactly what they print without it. Only those commands import this module, from inside the
command (tqdm reads files as it loads: never on the event loop), so the server never loads
tqdm.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def on_a_terminal() -> bool:
    """Whether stderr is a terminal, where the bars go."""
    return sys.stderr is not None and sys.stderr.isatty()


def progress_bar(total: int | None, desc: str, unit: str, **options: Any) -> tqdm[Any] | None:
    """A bar over ``total`` units on stderr (tqdm ``options`` beside), or None off a terminal.
    Without a total (a stream's size is not known): the units so far and the rate, no ETA."""
    if not on_a_terminal():
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, **options)
