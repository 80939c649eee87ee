"""Bad input files and config values, through the command line; and the inputs that are legitimate.

Refused with one line (file or key, value, fix) before anything is written: a column named twice, a
file split on the wrong separator, a needed column without a name, rows wider than the header; a YAML
key given twice, YAML that is not valid or not a mapping, non-finite numbers, negative seeds, an
output_dir that is the working directory. Read correctly: a UTF-8 byte-order mark on any CSV/TSV,
Latin-1 / Windows-1252 CPC titles (with a warning), spaces around a header name.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import re
from pathlib import Path
from typing import Callable, ClassVar

import pandas as pd
import pytest
from test_bad_inputs import env  # noqa: F401  (the module fixture: the sample data, a tiny bert and a trained run)
from test_bad_inputs import SMALL, TEST_FILE, TRAIN_FILE, Case, _csv, _predict_case, _set, _train_args, _train_quiet, check_case

from kagglekit._io import read_csv, read_yaml
from kagglekit._keys import check_keys, key, load_keys
from kagglekit.cli import main
from kagglekit.config import Config, load_config
from kagglekit.config_pretrain import PretrainConfig, load_pretrain_config
from kagglekit.data.cpc import read_cpc_titles
from kagglekit.data.recipes import IdsRecipe, PairsRecipe, UspppmRecipe

BOM = codecs.BOM_UTF8


# ------------------------------------------------------------------------------------------------
# helpers that write one bad input each
# ------------------------------------------------------------------------------------------------

def _text_file(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text, encoding="utf-8")
    return tmp / name


def _train_text(name: str, text_fn: Callable, where: str, value: str, fix: str) -> Callable:
    """A training case whose train_csv (named `name`) holds `text_fn(env.train)`; `where` may name it as {path}."""
    def make(env, tmp):
        path = _text_file(tmp, name, text_fn(env.train))
        out = tmp / "run"
        return Case(_train_args(env, out, f"train_csv={path}"), where.format(path=re.escape(str(path))), value, fix, absent=[out])
    return make


def _predict_text(name: str, text_fn: Callable, where: str, value: str, fix: str) -> Callable:
    """A predict case whose --data file holds `text_fn(env.test)`."""
    def make(env, tmp):
        path = _text_file(tmp, name, text_fn(env.test))
        return _set(_predict_case(env, tmp, [env.run], path), where.format(path=re.escape(str(path))), value, fix)
    return make


def _twice(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """`frame` with a second column named `column` at the end (pandas writes both names to the CSV)."""
    return pd.concat([frame, frame[[column]]], axis=1)


def _pairs_frame(env) -> pd.DataFrame:
    return pd.DataFrame({"id": env.train["id"], "sentence1": env.train["anchor"], "sentence2": env.train["target"],
                         "label": env.train["score"]})


def _pairs_args(env, train: Path, out: Path, *settings: str) -> list[str]:
    argv = ["train", "--set", "task=pairs", "--set", f"train_csv={train}", "--set", "id_col=id", "--set", f"backbone={env.bert}",
            "--set", f"output_dir={out}"]
    for item in (*SMALL, *settings):
        argv += ["--set", item]
    return argv


def _pairs_file(name: str, write: Callable[[pd.DataFrame, Path], None], where: str, value: str, fix: str, *settings: str) -> Callable:
    """A pairs training case whose train_csv `name` is written by `write(frame, path)`, with `settings` (key=value)."""
    def make(env, tmp):
        path = tmp / name
        write(_pairs_frame(env), path)
        out = tmp / "run"
        return Case(_pairs_args(env, path, out, *settings), where.format(path=re.escape(str(path))), value, fix, absent=[out])
    return make


def _extra_twice(env, tmp):
    extra = _twice(env.train.assign(id="extra-" + env.train["id"]).head(20), "score")
    path = _csv(tmp, "extra.csv", extra)
    out = tmp / "run"
    # "train_csv: extra.csv" today; "extra_train_csv: extra.csv" once runner.read_extra passes what="extra_train_csv"
    return Case(_train_args(env, out, f"extra_train_csv={path}"), rf"train_csv: {re.escape(str(path))} names column 'score' twice",
                r"columns 5 and 6", r"Rename or delete one of them", absent=[out])


def _sample_twice(env, tmp):
    sample = _csv(tmp, "sample.csv", _twice(pd.DataFrame({"id": env.test["id"], "score": 0}), "score"))
    case = _predict_case(env, tmp, [env.run], env.data / "test.csv", "--sample-submission", str(sample))
    return _set(case, rf"sample_submission: {re.escape(str(sample))} names column 'score' twice", r"columns 2 and 3",
                r"Rename or delete one of them")


def _yaml_case(text_fn: Callable, where: str, value: str, fix: str, *settings: str) -> Callable:
    """``kagglekit train --config config.yaml`` where config.yaml holds `text_fn(env)`; `where` may name it as {path}."""
    def make(env, tmp):
        config = _text_file(tmp, "config.yaml", text_fn(env))
        out = tmp / "run"
        argv = ["train", "--config", str(config), "--set", f"output_dir={out}"]
        for item in settings:
            argv += ["--set", item]
        return Case(argv, where.format(path=re.escape(str(config))), value, fix, absent=[out])
    return make


def _yaml_good(env) -> str:
    """The body of a good config file for the sample (every key that a run needs)."""
    return (f"train_csv: {env.data / 'train.csv'}\ncpc_dir: {env.data / 'cpc_titles'}\nbackbone: {env.bert}\n"
            + "".join(f"{item.replace('=', ': ', 1)}\n" for item in SMALL))


def _yaml_not_utf8(env, tmp):
    config = tmp / "config.yaml"
    config.write_bytes(_yaml_good(env).encode() + "template_a: '{anchor} \u2013 café'\n".encode("latin-1", errors="replace"))
    out = tmp / "run"
    return Case(["train", "--config", str(config), "--set", f"output_dir={out}"], rf"config file: {re.escape(str(config))}",
                r"is not UTF-8 text \(invalid continuation byte at byte \d+\)", r"re-save it as UTF-8", absent=[out])


def _output_dir_here(value: str) -> Callable:
    """output_dir=`value` with the working directory (tmp) holding the user's config.yaml, given as --config."""
    def make(env, tmp):
        config = _text_file(tmp, "config.yaml", _yaml_good(env))
        argv = ["train", "--config", str(config), "--set", f"output_dir={value}"]
        return Case(argv, r"config key 'output_dir'", rf"is {re.escape(repr(value))} \((empty: )?the working directory\)",
                    r"Give the run a folder of its own, e.g\. output_dir=runs/run", unchanged=[config])
    return make


def _pretrain(*settings: str, where: str, value: str, fix: str, yaml_text: str = "") -> Callable:
    """``kagglekit pretrain`` on the sample's texts with `settings`, or with a config file holding `yaml_text`."""
    def make(env, tmp):
        out = tmp / "pretrain"
        argv = ["pretrain", "--set", f"files={env.data / 'train.csv'}", "--set", "columns=anchor,target", "--set", f"backbone={env.bert}",
                "--set", f"output_dir={out}", "--set", "steps=1"]
        path = ""
        if yaml_text:
            path = _text_file(tmp, "pretrain.yaml", yaml_text)
            argv += ["--config", str(path)]
        for item in settings:
            argv += ["--set", item]
        return Case(argv, where.format(path=re.escape(str(path))), value, fix, absent=[out])
    return make


SEP_FIX = r"re-save it with commas between the fields"
TRAIN_HEADER = "id,anchor,target,context,score\n"

CASES: dict[str, Callable] = {
    # --- columns of a CSV: named twice, nameless where needed, split on the wrong separator, shapes ---
    "train_column_twice": _train_text("train.csv", lambda df: _twice(df, "anchor").to_csv(index=False),
                                      TRAIN_FILE + r" names column 'anchor' twice", r"columns 2 and 6",
                                      r"rename the other to 'anchor\.1'\. Rename or delete one of them"),
    "train_column_twice_after_spaces": _train_text("train.csv", lambda df: df.to_csv(index=False).replace(",score", ", target ", 1),
                                                   TRAIN_FILE + r" names column 'target' twice", r"columns 3 and 5",
                                                   r"Rename or delete one of them"),
    "train_nameless_needed_column": _train_text("train.csv", lambda df: df.rename(columns={"score": ""}).to_csv(index=False),
                                                TRAIN_FILE + r" has no column 'score'", r"header column 5 has no name",
                                                r"Rename the column\(s\) in the file"),
    "train_whitespace_column_name": _train_text("train.csv", lambda df: df.rename(columns={"score": "   "}).to_csv(index=False),
                                                TRAIN_FILE + r" has no column 'score'", r"header column 5 has no name",
                                                r"Rename the column\(s\) in the file"),
    "train_tsv_given_as_csv": _train_text("train.csv", lambda df: df.to_csv(index=False, sep="\t"), TRAIN_FILE + r" has one column",
                                          r"its first line holds 4 tabs: the file looks tab-separated where commas are expected", SEP_FIX),
    "train_semicolons": _train_text("train.csv", lambda df: df.to_csv(index=False, sep=";"), TRAIN_FILE + r" has one column",
                                    r"holds 4 semicolons", SEP_FIX),
    "train_rows_wider_than_header": _train_text("train.csv", lambda df: df.to_csv(index=False).replace("\n", ",\n").replace(",\n", "\n", 1),
                                                TRAIN_FILE + r" has rows with 6 fields under a header of 5 names",
                                                r"every column would shift by one", r"Name the missing column in the header"),
    "train_one_row_too_wide": _train_text("train.csv", lambda df: df.to_csv(index=False).replace("\n", ",extra\n", 3).replace(",extra\n", "\n", 2),
                                          TRAIN_FILE + r" is not a well-formed CSV", r"Expected 5 fields in line 3, saw 6",
                                          r"fix that line; quote a field that holds a comma"),
    "extra_train_column_twice": _extra_twice,
    "predict_test_column_twice": _predict_text("test.csv", lambda df: _twice(df, "target").to_csv(index=False),
                                               TEST_FILE + r" names column 'target' twice", r"columns 3 and 5", r"Rename or delete one of them"),
    "predict_test_tsv_given_as_csv": _predict_text("test.csv", lambda df: df.to_csv(index=False, sep="\t"), TEST_FILE + r" has one column",
                                                   r"holds 3 tabs", SEP_FIX),
    "predict_sample_submission_column_twice": _sample_twice,
    "pairs_tsv_named_csv": _pairs_file("pairs.csv", lambda df, path: df.to_csv(path, index=False, sep="\t"),
                                       r"train_csv: {path} has one column", r"holds 3 tabs: the file looks tab-separated where commas",
                                       r"set sep=tab\."),
    "pairs_csv_named_tsv": _pairs_file("pairs.tsv", lambda df, path: df.to_csv(path, index=False),
                                       r"train_csv: {path} has one column", r"holds 3 commas: the file looks comma-separated where tabs",
                                       r"set sep=,\."),
    "pairs_column_twice": _pairs_file("pairs.csv", lambda df, path: _twice(df, "sentence1").to_csv(path, index=False),
                                      r"train_csv: {path} names column 'sentence1' twice", r"columns 2 and 5", r"Rename or delete one of them"),
    "pairs_nameless_needed_column": _pairs_file("pairs.csv", lambda df, path: df.rename(columns={"sentence2": " "}).to_csv(path, index=False),
                                                r"train_csv: {path} has no column 'sentence2' \(config key 'text_cols'\)",
                                                r"header column 3 has no name", r"Set text_cols to one of them"),
    # --- config files ---
    "yaml_key_twice": _yaml_case(lambda env: _yaml_good(env) + "lr: 3e-5\nhead: cls\nlr: 1e-5\n", r"config file {path}: key 'lr'",
                                 r"is given twice, on line \d+ and line \d+", r"Delete one of them"),
    "yaml_not_valid": _yaml_case(lambda env: _yaml_good(env) + "lr: 3e-5\n  head: cls\n", r"config file {path} line \d+, column 7",
                                 r"is not valid YAML: mapping values are not allowed here", r"Fix that line: one 'key: value' per line"),
    "yaml_not_a_mapping": _yaml_case(lambda env: "# my settings\n- lr: 3e-5\n- epochs: 2\n", r"config file {path} line 2",
                                     r"must hold a mapping of key: value, got a list", r"write one 'key: value' per line"),
    "yaml_not_utf8": _yaml_not_utf8,
    "yaml_lr_nan": _yaml_case(lambda env: _yaml_good(env) + "lr: .nan\n", r"config key 'lr'", r"got nan", r"must be > 0"),
    "yaml_lr_1e999": _yaml_case(lambda env: _yaml_good(env) + "lr: 1e999\n", r"config key 'lr'", r"got inf", r"must be > 0"),
    # --- config values ---
    "set_lr_inf": _yaml_case(_yaml_good, r"config key 'lr'", r"got inf", r"must be > 0", "lr=inf"),
    "set_float_key_without_range_inf": _pairs_file("pairs.csv", lambda df, path: df.to_csv(path, index=False),
                                                   r"config key 'label_scale'", r"got inf", r"must be a finite number",
                                                   "label_scale=inf"),
    "seed_negative": _yaml_case(_yaml_good, r"config key 'seed'", r"got -1", r"must be in \[0, 4294967295\].*a seed is a whole number",
                                "seed=-1"),
    "fold_seed_negative": _yaml_case(_yaml_good, r"config key 'fold_seed'", r"got -3", r"must be in \[0, 4294967295\]", "fold_seed=-3"),
    "output_dir_empty": _output_dir_here(""),
    "output_dir_dot": _output_dir_here("."),
    "output_dir_dot_slash": _output_dir_here("./"),
    # --- pretraining: the same loader and checks ---
    "pretrain_seed_negative": _pretrain("seed=-1", where=r"pretrain config key 'seed'", value=r"got -1", fix=r"must be in \[0, "),
    "pretrain_mask_rate_nan": _pretrain("mask_rate=nan", where=r"pretrain config key 'mask_rate'", value=r"got nan",
                                        fix=r"must be a finite number"),
    "pretrain_yaml_key_twice": _pretrain(where=r"pretrain config file {path}: key 'steps'", value=r"given twice, on line 1 and line 3",
                                         fix=r"Delete one of them", yaml_text="steps: 10\nlr: 1e-4\nsteps: 20\n"),
    "pretrain_output_dir_dot": _pretrain("output_dir=.", where=r"pretrain config key 'output_dir'", value=r"is '\.'",
                                         fix=r"e\.g\. output_dir=runs/pretrain"),
}


def test_the_table_covers_the_issue():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(name, env, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output_dir "." is this test's folder, not the checkout
    check_case(name, CASES[name](env, tmp_path), tmp_path, capsys)


# ------------------------------------------------------------------------------------------------
# legitimate inputs: read exactly as their plain twins
# ------------------------------------------------------------------------------------------------

def _with_bom(source: Path, dest: Path) -> Path:
    dest.write_bytes(BOM + source.read_bytes())
    return dest


def test_a_bom_csv_reads_exactly_like_the_file_without_it(env, tmp_path):
    recipe = UspppmRecipe()
    cfg = load_config(None, [f"cpc_dir={env.data / 'cpc_titles'}"])
    state = recipe.state(cfg)
    for name, read in (("train.csv", recipe.read_train), ("test.csv", recipe.read_test)):
        plain = env.data / name
        bom = _with_bom(plain, tmp_path / name)
        assert bom.read_bytes()[:3] == BOM
        with_bom, without = read(bom, state), read(plain, state)
        assert list(with_bom.columns) == list(without.columns)
        pd.testing.assert_frame_equal(with_bom, without)
    sample = _with_bom(env.data / "sample_submission.csv", tmp_path / "sample.csv")
    pd.testing.assert_frame_equal(read_csv(sample, what="sample_submission", dtype={"id": str}),
                                  pd.read_csv(env.data / "sample_submission.csv", dtype={"id": str}))


def test_a_bom_tsv_reads_exactly_like_the_file_without_it(env, tmp_path):
    """The pairs recipe's own reader (csv.reader) drops the BOM too: the first column keeps its name, and a
    header-less GAIIC file's first text does not start with an invisible character."""
    plain = tmp_path / "pairs.tsv"
    _pairs_frame(env).to_csv(plain, index=False, sep="\t")
    bom = _with_bom(plain, tmp_path / "pairs_bom.tsv")
    recipe = PairsRecipe()
    state = recipe.state(load_config(None, ["task=pairs", "id_col=id"]))
    pd.testing.assert_frame_equal(recipe.read_train(bom, state), recipe.read_train(plain, state))
    assert recipe.read_train(bom, state)["id"].iloc[0] == env.train["id"].iloc[0]

    gaiic = tmp_path / "gaiic.tsv"
    gaiic.write_text("12 7 3\t5 12\t1\n4 4\t9\t0\n", encoding="utf-8")
    gaiic_bom = _with_bom(gaiic, tmp_path / "gaiic_bom.tsv")
    ids = IdsRecipe()
    state = ids.state(load_config(None, ["task=ids"]))
    frame = ids.read_train(gaiic_bom, state)
    pd.testing.assert_frame_equal(frame, ids.read_train(gaiic, state))
    assert frame["text_a"].tolist() == ["12 7 3", "4 4"]


def test_a_bom_file_trains_and_predicts_exactly_like_the_file_without_it(env, tmp_path):
    train = _with_bom(env.data / "train.csv", tmp_path / "train.csv")
    test = _with_bom(env.data / "test.csv", tmp_path / "test.csv")
    run = tmp_path / "run"
    _train_quiet([*_train_args(env, run, f"train_csv={train}", f"test_csv={test}")])
    for name in ("folds.csv", "oof.csv"):  # the same folds and the same out-of-fold predictions, to the byte
        assert (run / name).read_bytes() == (env.run / name).read_bytes(), name
    subs = {}
    for label, data in (("bom", test), ("plain", env.data / "test.csv")):
        out = tmp_path / f"sub_{label}.csv"
        assert main(["predict", "--models", str(env.run), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 0
        subs[label] = out.read_bytes()
    assert subs["bom"] == subs["plain"]


@pytest.mark.parametrize("recipe, frame", [
    (UspppmRecipe(), lambda env: env.train),
    (PairsRecipe(), _pairs_frame),
])
def test_read_train_names_the_file_by_the_key_it_came_from(env, tmp_path, recipe, frame):
    """Extra rows are read by the training reader: their errors name ``extra_train_csv``, not ``train_csv``."""
    path = _csv(tmp_path, "extra.csv", _twice(frame(env), "id"))
    state = recipe.state(load_config(None, ["task=pairs", "id_col=id"] if isinstance(recipe, PairsRecipe) else []))
    with pytest.raises(ValueError, match=rf"^extra_train_csv: {re.escape(str(path))} names column 'id' twice"):
        recipe.read_train(path, state, what="extra_train_csv")


def test_spaces_around_a_header_name_are_dropped_and_dtypes_still_apply(tmp_path):
    path = _text_file(tmp_path, "t.csv", " id , anchor,target\n007,a,b\n010,c,d\n")
    frame = read_csv(path, what="test data", required=("id", "anchor", "target"), dtype={"id": str})
    assert list(frame.columns) == ["id", "anchor", "target"]
    assert frame["id"].tolist() == ["007", "010"]  # the dtype of 'id' applied to the column written ' id '


def test_a_nameless_column_nobody_needs_is_read(tmp_path):
    """A saved row index (pandas' to_csv without index=False) has an empty header name: it is read, not refused."""
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": ["a", "b"], "score": [0.5, 1.0]}).to_csv(path)
    frame = read_csv(path, what="sample_submission", required=("id", "score"))
    assert list(frame.columns) == ["Unnamed: 0", "id", "score"] and frame["score"].tolist() == [0.5, 1.0]


TITLES = {"A": "HUMAN NECESSITIES", "A47": "FURNITURE; CAFÉ ÉQUIPEMENT; DOMESTIC ARTICLES", "B": "OPÉRATIONS; TRANSPORTING"}


def _write_titles(folder: Path, titles: dict, encoding: str) -> Path:
    folder.mkdir()
    for section in sorted({code[0] for code in titles}):
        lines = [f"{code}\t{len(code)}\t{title}\n" for code, title in titles.items() if code[0] == section]
        (folder / f"cpc-section-{section}_20220201.txt").write_bytes("".join(lines).encode(encoding))
    return folder


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_latin1_cpc_titles_are_read_right_with_a_warning_naming_the_file(tmp_path, encoding):
    titles = {**TITLES, "B60": "VEHICLES — « GÉNÉRAL »"} if encoding == "cp1252" else TITLES  # an em dash: cp1252 only
    folder = _write_titles(tmp_path / "cpc", titles, encoding)
    with pytest.warns(UserWarning, match="is not UTF-8 text") as caught:
        read = read_cpc_titles(folder)
    assert read == titles
    assert [str(w.message).split(" is not")[0] for w in caught] == [f"cpc_dir: {folder / f'cpc-section-{s}_20220201.txt'}" for s in "AB"]
    assert all("read it as Windows-1252" in str(w.message) for w in caught)

    csv_path = tmp_path / "titles.csv"
    csv_path.write_bytes(("code,title\n" + "".join(f'{c},"{t}"\n' for c, t in titles.items())).encode(encoding))
    with pytest.warns(UserWarning, match=re.escape(f"cpc_dir: {csv_path} is not UTF-8 text")):
        assert read_cpc_titles(csv_path) == titles


def test_a_byte_windows_1252_lacks_is_read_as_latin1(tmp_path):
    folder = tmp_path / "cpc"
    folder.mkdir()
    (folder / "cpc-section-A_20220201.txt").write_bytes(b"A\t1\tCAF\xc9 \x81 NECESSITIES\n")  # 0x81: no cp1252 character
    with pytest.warns(UserWarning, match="read it as Latin-1"):
        assert read_cpc_titles(folder) == {"A": "CAF\u00c9 \u0081 NECESSITIES"}


def test_utf8_cpc_titles_with_a_bom_read_without_a_warning(tmp_path, recwarn):
    folder = _write_titles(tmp_path / "cpc", TITLES, "utf-8-sig")
    assert (folder / "cpc-section-A_20220201.txt").read_bytes()[:3] == BOM
    assert read_cpc_titles(folder) == TITLES
    assert not [w for w in recwarn if "UTF-8" in str(w.message)]


def test_latin1_titles_reach_the_context_text(env, tmp_path):
    folder = _write_titles(tmp_path / "cpc", TITLES, "latin-1")
    with pytest.warns(UserWarning, match="is not UTF-8 text"):
        state = UspppmRecipe().state(load_config(None, [f"cpc_dir={folder}"]))
    frame = pd.DataFrame({"id": ["1"], "anchor": ["table"], "target": ["chair"], "context": ["A47"]})
    path = _csv(tmp_path, "test.csv", frame)
    assert UspppmRecipe().read_test(path, state)["text_b"].iloc[0] == "chair; human necessities; furniture; café équipement; domestic articles"


# ------------------------------------------------------------------------------------------------
# config values: the class of checks, and the deliberate choices
# ------------------------------------------------------------------------------------------------

def _float_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if isinstance(f.default, float)]


@pytest.mark.parametrize("cls, load, base", [
    (Config, load_config, []),
    (PretrainConfig, load_pretrain_config, ["files=a.csv", "columns=a", "backbone=m"]),
])
def test_every_float_key_refuses_inf_and_nan(cls, load, base):
    names = _float_keys(cls)
    assert len(names) >= (20 if cls is Config else 7)  # the class is checked, not a few keys
    for name in names:
        for bad in (math.inf, -math.inf, math.nan):
            with pytest.raises(ValueError) as err:
                load(None, {**dict(item.split("=") for item in base), name: bad})
            message = str(err.value)
            assert (f"key {name!r} must be" in message and f"got {bad}" in message
                    or message.startswith(f"{name} in --set: {bad} is not a duration")), message


def test_a_float_key_may_allow_inf_by_declaring_it():
    @dataclasses.dataclass
    class Settings:
        WHAT: ClassVar[str] = "settings"
        patience: float = key(10.0, "seconds to wait; inf: forever", ge=0, also=(math.inf,))
        scale: float = key(1.0, "any finite scale")

    assert check_keys(Settings(patience=math.inf)) is None
    with pytest.raises(ValueError, match=r"settings key 'patience' must be >= 0, or inf, got nan\."):
        check_keys(Settings(patience=math.nan))
    with pytest.raises(ValueError, match=r"settings key 'scale' must be a finite number, got -inf\."):
        check_keys(Settings(scale=-math.inf))
    assert load_keys(Settings, None, ["patience=inf"]).patience == math.inf


def test_seeds_take_exactly_numpys_range():
    import numpy as np

    cfg = load_config(None, ["seed=0", f"fold_seed={2**32 - 1}"])
    np.random.RandomState(cfg.seed), np.random.RandomState(cfg.fold_seed)  # both edges are seeds numpy takes
    for item in ("seed=-1", f"seed={2**32}", "fold_seed=-1", f"fold_seed={2**32}"):
        with pytest.raises(ValueError, match=r"must be in \[0, 4294967295\]"):
            load_config(None, [item])
        with pytest.raises(ValueError):
            np.random.RandomState(int(item.split("=")[1]))  # and numpy refuses the values refused


def test_a_key_set_twice_takes_the_last_value(tmp_path):
    """Deliberate, as in most command lines: ``--set lr=1 --set lr=2`` sets 2; and --set overrides the file."""
    assert load_config(None, ["lr=1", "lr=2"]).lr == 2.0
    config = _text_file(tmp_path, "c.yaml", "lr: 3e-5\nepochs: 4\n")
    cfg = load_config(config, ["epochs=2", "epochs=1"])
    assert (cfg.lr, cfg.epochs) == (3e-5, 1)


def test_output_dir_is_refused_only_at_or_above_the_working_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for value in ("", " ", ".", "./", str(work), "..", str(tmp_path), "/", "sub/.."):
        with pytest.raises(ValueError, match=r"config key 'output_dir' is .*a folder of its own"):
            load_config(None, [f"output_dir={value}"])
    for value in ("run", "./runs/a", str(tmp_path / "other"), "../sibling"):
        assert load_config(None, [f"output_dir={value}"]).output_dir == value


def test_read_yaml_refuses_a_key_twice_at_any_depth_but_takes_merges(tmp_path):
    nested = _text_file(tmp_path, "n.yaml", "from_scratch_config:\n  model_type: bert\n  hidden_size: 8\n  hidden_size: 16\n")
    with pytest.raises(ValueError, match=r"key 'hidden_size' is given twice, on line 3 and line 4"):
        read_yaml(nested, what="pretrain config file")
    flow = _text_file(tmp_path, "f.yaml", "a: {x: 1, x: 2}\n")
    with pytest.raises(ValueError, match=r"key 'x' is given twice, on line 1;"):
        read_yaml(flow, what="config file")
    merged = _text_file(tmp_path, "m.yaml", "base: &b {x: 1, y: 2}\nrun:\n  <<: *b\n  x: 3\n")
    assert read_yaml(merged, what="config file") == {"base": {"x": 1, "y": 2}, "run": {"x": 3, "y": 2}}
    assert read_yaml(_text_file(tmp_path, "e.yaml", "# nothing yet\n"), what="config file") == {}
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(BOM + b"lr: 0.001\n")
    assert load_config(bom).lr == 0.001


def test_pandas_reads_csv_files_in_one_place_only():
    """Every CSV the kit reads goes through `kagglekit._io.read_csv` (BOM, names given twice, separator): a
    direct ``pd.read_csv`` elsewhere would skip those checks. train/pretrain.py (the pretraining corpus) and
    run.py (folds.csv, which the kit writes itself) still call pandas directly: not this change's files."""
    import ast

    root = Path(__file__).resolve().parents[1] / "kagglekit"
    direct = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = getattr(node, "func", None)
            if isinstance(node, ast.Call) and getattr(func, "attr", "") == "read_csv" and getattr(func.value, "id", "") == "pd":
                direct.add(path.relative_to(root).as_posix())
    assert "_io.py" in direct and direct <= {"_io.py", "train/pretrain.py", "run.py"}, direct
