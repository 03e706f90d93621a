"""Progress bars only on a terminal; in a log one line per 10% of a long loop."""

from __future__ import annotations

import io

from glacierfacies.progress import LogProgress, tqdm, use_bars


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("GLACIERFACIES_PROGRESS", raising=False)
    assert use_bars(_Tty()) and not use_bars(io.StringIO())
    monkeypatch.setenv("GLACIERFACIES_PROGRESS", "log")
    assert not use_bars(_Tty())
    assert isinstance(tqdm(range(3)), LogProgress)


def test_a_line_per_ten_percent(monkeypatch):
    monkeypatch.delenv("GLACIERFACIES_PROGRESS", raising=False)
    out = io.StringIO()
    bar = LogProgress(total=544, desc="round 1 fold 0", unit="batch", file=out)
    for i in range(544):
        bar.update(1)
        if i == 300:
            bar.set_postfix(loss="1.0420")
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 90%, and the end
    assert lines[0].startswith("round 1 fold 0: 10% (55/544 batch")
    assert lines[-1].startswith("round 1 fold 0: 100% (544/544 batch") and "loss=1.0420" in lines[-1]
    out = io.StringIO()
    assert list(LogProgress(range(25), desc="x", file=out)) == list(range(25))
    assert len(out.getvalue().splitlines()) == 10
    out = io.StringIO()  # short loops say nothing: the stage's line is enough
    list(LogProgress(range(6), desc="scenes", file=out))
    assert out.getvalue() == ""
