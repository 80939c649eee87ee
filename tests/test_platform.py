"""kagglekit.kaggle's view of the platform: the input root, scratch space, the rerun flag and the session limit."""

from pathlib import Path

import pytest

from kagglekit import kaggle


def test_input_root_is_kaggles_unless_the_environment_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLEKIT_INPUT_ROOT", raising=False)
    assert kaggle.input_root() == Path("/kaggle/input")
    monkeypatch.setenv("KAGGLEKIT_INPUT_ROOT", str(tmp_path))
    assert kaggle.input_root() == tmp_path
    monkeypatch.setenv("KAGGLEKIT_INPUT_ROOT", "")  # empty: unset
    assert kaggle.input_root() == Path("/kaggle/input")


def test_scratch_space_from_the_environment_or_kaggle_temp(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEKIT_SCRATCH", str(tmp_path / "scratch" / "deeper"))
    assert kaggle.scratch_dir() == tmp_path / "scratch" / "deeper" and (tmp_path / "scratch" / "deeper").is_dir()
    monkeypatch.setenv("KAGGLEKIT_SCRATCH", " ")
    assert kaggle.scratch_dir() is None  # set but empty: none, even on Kaggle
    monkeypatch.delenv("KAGGLEKIT_SCRATCH")
    temp = tmp_path / "kaggle-temp"
    monkeypatch.setattr(kaggle, "KAGGLE_TEMP", str(temp))
    assert kaggle.scratch_dir() is None  # no /kaggle/temp: not on Kaggle
    temp.mkdir()
    assert kaggle.scratch_dir() == temp


@pytest.mark.parametrize("value, rerun", [(None, False), ("", False), ("0", False), ("False", False), ("no", False),
                                          ("True", True), ("1", True), ("true", True)])
def test_a_competition_rerun_shortens_the_session(monkeypatch, value, rerun):
    if value is None:
        monkeypatch.delenv("KAGGLE_IS_COMPETITION_RERUN", raising=False)
    else:
        monkeypatch.setenv("KAGGLE_IS_COMPETITION_RERUN", value)
    assert kaggle.is_competition_rerun() is rerun
    assert kaggle.session_limit() == (9 * 3600 if rerun else 12 * 3600)
