"""Progress bars for long loops: tqdm's, a widget in Jupyter and text in a terminal.

``bar`` leaves nothing behind when the loop ends (``leave=False``), and shows nothing where the
environment sets ``TQDM_DISABLE`` (to anything but ``0`` or ``false``), as the test suite and the
commands that store executed notebooks do. tqdm reads that variable for its text bar, but its
notebook bar ignores it, and a notebook executed with one stores a widget whose text fallback,
all that a static page shows, reads "0%".
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm.auto import tqdm

__all__ = ["bar", "disabled"]


def disabled() -> bool:
    """Whether ``TQDM_DISABLE`` switches the bars off."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def bar(iterable: Iterable, desc: str, *, disable: bool = False) -> tqdm:
    """``iterable`` with a progress bar labelled ``desc`` (none with ``disable`` or under
    ``TQDM_DISABLE``): a ``tqdm``, to loop over (and to give a postfix, say)."""
    return tqdm(iterable, desc=desc, leave=False, disable=disable or disabled())
