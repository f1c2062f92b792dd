"""TQDM_DISABLE switches every bar off, even those a caller asks for (tools/run_notebook.sh sets it)."""

from avlib.progress import progress_bar


def test_a_bar_shows_only_when_asked_and_not_switched_off(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress_bar(range(3), show=True).disable
    assert progress_bar(range(3), show=False).disable
    for value, off in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert progress_bar(range(3), show=True).disable is off, value
    monkeypatch.setenv("TQDM_DISABLE", "1")
    list(progress_bar(range(50), show=True, desc="quiet"))
    assert "quiet" not in capsys.readouterr().err
