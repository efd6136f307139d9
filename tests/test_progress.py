"""lstmkit.progress.bar: off under TQDM_DISABLE, also as tqdm's notebook widget, which ignores it."""

from __future__ import annotations

import pytest
from tqdm.notebook import tqdm as notebook_tqdm

from lstmkit import progress


@pytest.mark.parametrize("value,off", [("1", True), ("True", True), ("0", False), ("false", False),
                                       ("", False), (None, False)])
def test_tqdm_disable_switches_the_notebook_bar_off(monkeypatch, capsys, value, off):
    monkeypatch.setattr(progress, "tqdm", notebook_tqdm)  # what tqdm.auto picks in a kernel
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    bar = progress.bar(range(3), "training")
    assert bar.disable is off and list(bar) == [0, 1, 2]
    assert progress.bar(range(3), "training", disable=True).disable

