"""The shared missing-column check: every missing column named, the frame's columns listed, the fix said."""

import re

import pandas as pd
import pytest

from kagglekit._frames import check_columns

FRAME = pd.DataFrame({"id": ["1"], "text_a": ["x"], "label": [0.5]})


def test_present_columns_pass_and_none_is_skipped():
    assert check_columns(FRAME, ("id", "text_a")) is None
    assert check_columns(FRAME, {"label_col": "label", "group_col": None}, "df") is None
    assert check_columns(FRAME, ()) is None


def test_every_missing_column_named_with_the_frame_columns_and_the_fix():
    msg = "extra_df has no column 'text_b', 'weight'; its columns are ['id', 'text_a', 'label']: pass a normalized frame."
    with pytest.raises(ValueError, match=re.escape(msg) + "$"):
        check_columns(FRAME, ("id", "text_b", "label", "weight"), "extra_df")


def test_a_mapping_names_the_parameter_and_its_value():
    msg = "df has no column group_col='anchor'; its columns are ['id', 'text_a', 'label']: name another."
    with pytest.raises(ValueError, match=re.escape(msg) + "$"):
        check_columns(FRAME, {"label_col": "label", "group_col": "anchor", "fold_col": None}, "df", fix="name another.")
