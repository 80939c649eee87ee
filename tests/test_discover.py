"""Input discovery under a fake /kaggle/input (every mount layout Kaggle uses, symlinks, an extra unpack
level, depth), and the built-in configs shipped in the wheel: they load, agree with the repository's
configs/ on every setting that is not a path, and resolve against a tree holding their files."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, shared_data
from kagglekit import discover
from kagglekit.config import Config, load_config
from kagglekit.configs import builtin_configs
from kagglekit.discover import describe, find_backbone, find_file, find_runs, find_wheel, resolve_paths

SLUG = "us-patent-phrase-to-phrase-matching"
WHEEL = "kagglekit-0.5.0-py3-none-any.whl"


# ---------------------------------------------------------------------------------------------- fake inputs


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def backbone(folder: Path, weights: str = "model.safetensors") -> Path:
    """A pretrained model folder as discovery sees it: config.json beside (empty) weights."""
    touch(folder / "config.json", "{}")
    touch(folder / weights)
    return folder


def fold(folder: Path) -> Path:
    """A fold folder kagglekit train writes: a backbone-like model folder marked by kagglekit.json."""
    backbone(folder)
    touch(folder / "kagglekit.json", json.dumps({"task": "uspppm", "max_len": 8, "activation": "sigmoid", "model": {}}))
    return folder


def run(folder: Path, folds=(0,)) -> Path:
    """A run folder: run.json, fold{K}/ and the run's copy of its embedding model."""
    touch(folder / "run.json", "{}")
    touch(folder / "oof.csv", "id,fold,label,pred\n")
    for k in folds:
        fold(folder / f"fold{k}")
    backbone(folder / "embedding_model")
    return folder


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty input root, also set as $KAGGLEKIT_INPUT_ROOT (so root=None finds it)."""
    path = tmp_path / "input"
    path.mkdir()
    monkeypatch.setenv("KAGGLEKIT_INPUT_ROOT", str(path))
    return path


@pytest.fixture
def kaggle(root) -> dict:
    """A training and inference session's inputs, each in another of Kaggle's layouts."""
    comp = root / "competitions" / SLUG
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        touch(comp / name, "id\n")
    kit = root / "datasets" / "me" / "kagglekit"
    touch(kit / WHEEL)
    touch(kit / "wheels" / "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.whl")
    touch(kit / "wheels" / "kagglekit_standin-1.0-py3-none-any.whl")
    cpc = root / "datasets" / "someone" / "cpc-data" / "CPCTitleList202202" / "CPCTitleList202202"  # unpacked one level deep
    touch(cpc / "cpc-section-A_20220201.txt", "A\t0\tHUMAN NECESSITIES\n")
    model = backbone(root / "models" / "microsoft" / "deberta-v3" / "transformers" / "large" / "1")
    run0 = run(root / "notebooks" / "me" / "uspppm-train-f0" / "run")  # a notebook's output: the run at run/
    touch(run0 / "fold0" / "train.csv", "id\n")  # a data-like file inside a fold folder: never a candidate
    run1 = run(root / "datasets" / "me" / "uspppm-f1", folds=(1, 2))  # a dataset made from the output: the run at its root
    return {"train": comp / "train.csv", "test": comp / "test.csv", "wheel": kit / WHEEL, "cpc": cpc, "backbone": model,
            "runs": sorted([run0, run1])}


# ---------------------------------------------------------------------------------------------- find_wheel


def test_find_wheel_ignores_bundled_dependency_wheels(kaggle, root):
    assert find_wheel(root) == kaggle["wheel"]
    assert find_wheel() == kaggle["wheel"]  # root from $KAGGLEKIT_INPUT_ROOT


@pytest.mark.parametrize("layout", ["kagglekit", "datasets/me/kagglekit", "datasets/me/kagglekit/kagglekit",
                                    "notebooks/me/build-kit"])
def test_find_wheel_in_any_layout(root, layout):
    wheel = touch(root / layout / WHEEL)
    assert find_wheel(root=root) == wheel


def test_two_wheels_are_an_error_naming_wheel_dir(root):
    first = touch(root / "datasets" / "me" / "kagglekit" / WHEEL)
    second = touch(root / "datasets" / "me" / "kagglekit-copy" / WHEEL)
    with pytest.raises(ValueError) as err:
        find_wheel(root)
    message = str(err.value)
    assert f"\n  {first}\n  {second}\n" in message and "Set WHEEL_DIR to one of them" in message


def test_no_wheel_says_to_attach_the_kagglekit_dataset(root):
    touch(root / "datasets" / "me" / "other" / "wheels" / "numpy-2.0.0-py3-none-any.whl")
    with pytest.raises(FileNotFoundError, match=f"no kagglekit wheels .* under {root}: attach the kagglekit dataset "
                                                r"\(the folder build_wheel.sh writes"):
        find_wheel(root)


def test_a_mount_reached_by_two_links_is_one_candidate(root):
    """The old /kaggle/input/<slug> beside competitions/<slug>, as a link: one folder, walked once."""
    wheel = touch(root / "datasets" / "me" / "kagglekit" / WHEEL)
    (root / "kagglekit").symlink_to(root / "datasets" / "me" / "kagglekit")
    found = find_wheel(root)
    assert found.resolve() == wheel.resolve()


# ---------------------------------------------------------------------------------------------- find_file


@pytest.mark.parametrize("layout", [f"competitions/{SLUG}", f"datasets/owner/{SLUG}", f"notebooks/owner/{SLUG}", SLUG,
                                    f"datasets/owner/{SLUG}/{SLUG}"])
def test_find_file_in_every_layout(root, layout):
    train = touch(root / layout / "train.csv")
    touch(root / "datasets" / "owner" / "other" / "test.csv")
    assert find_file("train.csv", param="TRAIN_CSV", root=root) == train
    assert find_file("train.csv", param="TRAIN_CSV") == train


def test_find_file_skips_fold_folders_and_model_folders(kaggle, root):
    touch(kaggle["backbone"] / "test.csv")  # inside a model weight folder
    assert find_file("train.csv", param="TRAIN_CSV", root=root) == kaggle["train"]
    assert find_file("test.csv", param="TEST_CSV", root=root) == kaggle["test"]
    with pytest.raises(ValueError, match="2 files or folders named 'oof.csv'"):
        find_file("oof.csv", param="OOF", root=root)  # the run folders themselves are searched: one each


def test_find_file_ambiguous_lists_every_candidate_and_names_the_parameter(kaggle, root):
    other = touch(root / "datasets" / "me" / "pseudo-labels" / "train.csv")
    with pytest.raises(ValueError) as err:
        find_file("train.csv", param="TRAIN_CSV", root=root)
    message = str(err.value)
    assert message.startswith(f"TRAIN_CSV: 2 files or folders named 'train.csv' under {root}:")
    assert f"\n  {kaggle['train']}\n  {other}\n" in message and message.endswith("Set TRAIN_CSV to one of them.")


@pytest.mark.parametrize("within", [SLUG, SLUG.upper(), "us-patent", f"competitions/{SLUG}"])
def test_within_narrows_the_search(kaggle, root, within):
    touch(root / "datasets" / "me" / "pseudo-labels" / "train.csv")
    assert find_file("train.csv", param="TRAIN_CSV", root=root, within=within) == kaggle["train"]


def test_within_that_matches_nothing_lists_what_there_is(kaggle, root):
    with pytest.raises(FileNotFoundError, match=rf"no 'train.csv' under .* whose path contains 'stsb'; there are:\n"
                                                rf"  {kaggle['train']}\nSet TRAIN_CSV to one of them, or attach"):
        find_file("train.csv", param="TRAIN_CSV", root=root, within="stsb")


def test_find_file_none_says_what_to_attach(kaggle, root):
    with pytest.raises(FileNotFoundError, match=r"^TEST_CSV: no files or folders named 'sts-test.csv' under .*: attach the "
                                                r"competition or dataset that holds it \(Add Input → Competitions or "
                                                r"Datasets\), or set TEST_CSV to its path\.$"):
        find_file("sts-test.csv", param="TEST_CSV", root=root)


def test_a_folder_unpacked_one_level_too_deep_is_its_inner_folder(kaggle, root):
    assert find_file("CPCTitleList202202", param="CPC_DIR", root=root) == kaggle["cpc"]
    inner = touch(root / "datasets" / "me" / "zipped" / "sts-train.csv" / "sts-train.csv")  # sts-train.csv.zip unpacked
    assert find_file("sts-train.csv", param="TRAIN_CSV", root=root) == inner


def test_find_file_takes_a_name_not_a_path(root):
    with pytest.raises(ValueError, match=r"TRAIN_CSV: find_file takes a file or folder name, got 'a/train.csv'"):
        find_file("a/train.csv", param="TRAIN_CSV", root=root)


def test_hidden_folders_are_not_searched(root):
    touch(root / "notebooks" / "me" / "nb" / ".ipynb_checkpoints" / "train.csv")
    with pytest.raises(FileNotFoundError):
        find_file("train.csv", param="TRAIN_CSV", root=root)


def test_symlink_loops_end_and_links_out_of_the_root_are_not_followed(tmp_path, root):
    train = touch(root / "datasets" / "me" / "data" / "train.csv")
    (root / "datasets" / "me" / "data" / "loop").symlink_to(root / "datasets")  # a loop back up
    touch(tmp_path / "outside" / "test.csv")
    (root / "datasets" / "me" / "out").symlink_to(tmp_path / "outside")
    assert find_file("train.csv", param="TRAIN_CSV", root=root) == train
    with pytest.raises(FileNotFoundError, match="no files or folders named 'test.csv'"):
        find_file("test.csv", param="TEST_CSV", root=root)


def test_the_walk_visits_each_real_folder_once(root):
    """Links back up (a loop) and a second link to a mount cost no second walk of the same folder."""
    data = root / "datasets" / "me" / "data"
    touch(data / "sub" / "train.csv")
    (data / "sub" / "loop").symlink_to(root)
    (root / "data").symlink_to(data)
    visited = []
    discover._walk(root, lambda folder, entries: visited.append(os.path.realpath(folder)) or True)
    real = sorted(str(p.resolve()) for p in [root, *root.rglob("*")] if p.is_dir() and not p.is_symlink())
    assert sorted(visited) == real


def test_the_walk_stops_at_max_depth(root):
    deepest = root.joinpath(*[f"d{i}" for i in range(1, discover.MAX_DEPTH + 1)])  # MAX_DEPTH levels below the root
    touch(deepest / "train.csv")
    touch(deepest / "d9" / "test.csv")
    assert find_file("train.csv", param="TRAIN_CSV", root=root) == deepest / "train.csv"
    with pytest.raises(FileNotFoundError):
        find_file("test.csv", param="TEST_CSV", root=root)


def test_a_missing_input_root_names_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the input root .*nowhere is no folder: .* set KAGGLEKIT_INPUT_ROOT"):
        find_file("train.csv", param="TRAIN_CSV", root=tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- find_backbone


def test_find_backbone_in_a_kaggle_model_not_fold_or_embedding_copies(kaggle, root):
    fold(root / "datasets" / "me" / "lone-fold")  # a lone fold folder: config.json + weights, but the kit's own
    assert find_backbone(root=root) == kaggle["backbone"]
    assert find_backbone() == kaggle["backbone"]


@pytest.mark.parametrize("weights", [*discover.BACKBONE_WEIGHTS, "model-q4_k_m.gguf"])
def test_every_kind_of_weights_makes_a_backbone(root, weights):
    model = backbone(root / "datasets" / "me" / "deberta-v3-large" / "deberta-v3-large", weights)
    assert find_backbone(root=root) == model


def test_config_without_weights_is_no_backbone(root):
    touch(root / "datasets" / "me" / "tokenizer-only" / "config.json", "{}")
    touch(root / "datasets" / "me" / "tokenizer-only" / "spm.model")
    with pytest.raises(FileNotFoundError, match=r"BACKBONE: no pretrained model folders .* attach the backbone \(Add Input "
                                                r"→ Models, or a dataset holding the model folder\), or set BACKBONE"):
        find_backbone(root=root)


def test_two_versions_of_a_kaggle_model_are_two_candidates(root):
    variation = root / "models" / "microsoft" / "deberta-v3" / "transformers" / "large"
    one, two = backbone(variation / "1"), backbone(variation / "2")
    with pytest.raises(ValueError) as err:
        find_backbone(root=root)
    assert f"\n  {one}\n  {two}\nSet BACKBONE to one of them." in str(err.value)
    with pytest.raises(ValueError, match="2 pretrained model folders .* matching 'deberta-v3'"):
        find_backbone("deberta-v3", root=root)
    assert find_backbone("large/2", root=root) == two  # a slash: whole folder names in a row


def test_a_hint_filters_on_path_parts(root):
    deberta = backbone(root / "datasets" / "me" / "deberta-v3-large")
    squad = backbone(root / "datasets" / "me" / "deberta-v3-large-squad")
    minilm = backbone(root / "models" / "sentence-transformers" / "all-MiniLM-L6-v2" / "transformers" / "default" / "1")
    assert find_backbone("minilm", root=root) == minilm  # case-insensitive, part of a folder name
    assert find_backbone("DeBERTa-v3-large", root=root) == deberta  # a whole folder name wins over one containing it
    assert find_backbone("squad", root=root) == squad
    with pytest.raises(ValueError, match="BACKBONE: 3 pretrained model folders"):
        find_backbone(root=root)
    with pytest.raises(FileNotFoundError, match=r"BACKBONE='electra': none of the pretrained model folders .* matches; "
                                                r"there are:\n  .*deberta-v3-large\n"):
        find_backbone("electra", root=root)


def test_an_existing_folder_is_taken_as_it_is(tmp_path, root):
    model = backbone(tmp_path / "elsewhere" / "model")
    assert find_backbone(str(model), root=root) == model
    with pytest.raises(ValueError, match="holds no config.json: point BACKBONE at the model folder itself"):
        find_backbone(str(tmp_path / "elsewhere"), root=root)
    with pytest.raises(FileNotFoundError, match=r"BACKBONE='/no/such/model': no such folder"):
        find_backbone("/no/such/model", root=root)
    with pytest.raises(ValueError, match="BACKBONE is empty"):
        find_backbone("", root=root)


# ---------------------------------------------------------------------------------------------- find_runs


def test_find_runs_finds_every_run_and_lone_fold(kaggle, root):
    lone = fold(root / "datasets" / "me" / "uspppm-fold3-only")
    touch(root / "datasets" / "me" / "half" / "fold0" / "config.json")  # a fold{K} folder without kagglekit.json: no run
    assert find_runs(root=root) == sorted(kaggle["runs"] + [lone])
    assert find_runs() == sorted(kaggle["runs"] + [lone])


def test_a_notebook_output_run_at_its_root_or_in_run(root):
    at_root = run(root / "notebooks" / "me" / "train-a", folds=(0, 1))
    in_run = run(root / "notebooks" / "me" / "train-b" / "run")
    assert find_runs(root=root) == [at_root, in_run]


def test_find_runs_hint(kaggle, root):
    assert find_runs("uspppm-f1", root=root) == [root / "datasets" / "me" / "uspppm-f1"]
    assert find_runs("notebooks", root=root) == [kaggle["runs"][1]]
    assert find_runs(str(kaggle["runs"][0])) == [kaggle["runs"][0]]
    with pytest.raises(FileNotFoundError, match=r"MODEL_DIRS='stsb': none of the run folders .* matches; there are:"):
        find_runs("stsb", root=root)
    with pytest.raises(ValueError, match=r"is no kagglekit run folder \(no fold\*/kagglekit.json\) nor a model folder"):
        find_runs(str(root / "competitions"))


def test_no_run_says_to_attach_the_training_notebooks_output(root):
    touch(root / "competitions" / SLUG / "test.csv")
    with pytest.raises(FileNotFoundError, match=r"^MODEL_DIRS: no kagglekit run folder .* attach the model datasets made "
                                                r"from train.ipynb's output \(Add Input → Your Work → Notebooks"):
        find_runs(root=root)


# ---------------------------------------------------------------------------------------------- resolve_paths


def test_resolve_paths_finds_auto_and_bare_names(kaggle, root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "local.csv")  # a bare name that exists here is a file of the working directory
    values = {"task": "uspppm", "train_csv": "auto", "test_csv": "test.csv", "cpc_dir": "CPCTitleList202202",
              "backbone": "deberta", "output_dir": "run", "resume_dir": "auto", "extra_train_csv": "local.csv",
              "embedding_model": "", "epochs": 1}
    before = dict(values)
    out = resolve_paths(values, root=root)
    assert values == before  # not mutated
    assert out == {**values, "train_csv": str(kaggle["train"]), "test_csv": str(kaggle["test"]), "cpc_dir": str(kaggle["cpc"]),
                   "backbone": str(kaggle["backbone"])}
    assert resolve_paths({"train_csv": "data/train.csv"}) == {"train_csv": "data/train.csv"}  # a path: kept


def test_resolve_paths_within_narrows_the_data_keys_only(kaggle, root):
    touch(root / "datasets" / "me" / "pseudo-labels" / "train.csv")
    values = {"train_csv": "auto", "backbone": "auto"}
    with pytest.raises(ValueError, match="train_csv: 2 files or folders named 'train.csv'"):
        resolve_paths(values, root=root)
    assert resolve_paths(values, root=root, within=SLUG) == {"train_csv": str(kaggle["train"]),
                                                              "backbone": str(kaggle["backbone"])}


def test_resolve_paths_reports_every_failing_key(kaggle, root):
    with pytest.raises(FileNotFoundError) as err:
        resolve_paths({"train_csv": "sts-train.csv", "test_csv": "sts-test.csv"}, root=root)
    message = str(err.value)  # one line, each key's problem in turn
    assert "\n" not in message and message.startswith("test_csv: ") and " train_csv: " in message
    with pytest.raises(ValueError, match=r"extra_train_csv='auto': the kit knows no file name for extra_train_csv"):
        resolve_paths({"extra_train_csv": "auto"}, root=root)
    backbone(root / "datasets" / "me" / "all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match=r"^embedding_model: 2 pretrained model folders"):
        resolve_paths({"embedding_model": "auto"}, root=root)
    assert resolve_paths({"embedding_model": "minilm"}, root=root) == {"embedding_model": str(root / "datasets" / "me" /
                                                                                            "all-MiniLM-L6-v2")}


def test_describe():
    found = {"train_csv": Path("/in/train.csv"), "MODEL_DIRS": [Path("/in/a/run"), Path("/in/b/run")], "none": []}
    assert describe(found) == ("train_csv:  /in/train.csv\nMODEL_DIRS: /in/a/run\n            /in/b/run\nnone:       (none)")


# ---------------------------------------------------------------------------------------------- built-in configs

# Where each built-in config's data files are in ../shared/data (the real files, so the names are real).
SHARED = {"uspppm": ("uspppm", ["train_csv", "test_csv"]), "stsb": ("stsb", ["train_csv", "test_csv"]),
          "afqmc": ("afqmc", ["train_csv", "test_csv"]), "gaiic": ("gaiic2021_track3", ["test_csv"])}
DATA_KEYS = sorted(Config.PATH_KEYS - set(discover.MODEL_KEYS) - set(discover.WRITTEN_KEYS))


def test_the_built_in_configs():
    assert builtin_configs() == ["afqmc", "gaiic", "stsb", "uspppm"]
    assert set(builtin_configs()) <= {p.stem for p in (ROOT / "configs").glob("*.yaml")}


@pytest.mark.parametrize("name", builtin_configs())
def test_built_in_config_loads_and_agrees_with_the_repository(name):
    cfg = load_config(name)
    assert (cfg.backbone, cfg.output_dir) == ("auto", "run")
    for key in DATA_KEYS:
        value = getattr(cfg, key)
        assert all(os.path.basename(v) == v for v in (value if isinstance(value, list) else [value])), \
            f"{name}: {key}={value!r} is no bare file name"
    repo = load_config(ROOT / "configs" / f"{name}.yaml").to_dict()
    mine = cfg.to_dict()
    differ = {k: (mine[k], repo[k]) for k in mine if k not in Config.PATH_KEYS and mine[k] != repo[k]}
    assert differ == {}
    assert load_config(name, ["epochs=1"]).epochs == 1


@pytest.mark.parametrize("name", builtin_configs())
def test_built_in_config_resolves_against_a_tree_holding_its_files(name, root):
    cfg = load_config(name)
    expected = {}
    for i, key in enumerate(DATA_KEYS):
        value = getattr(cfg, key)
        if value:  # each file in another dataset
            expected[key] = str(touch(root / "datasets" / "owner" / f"data{i}" / value))
    expected["backbone"] = str(backbone(root / "datasets" / "owner" / "model"))
    resolved = resolve_paths(cfg.to_dict(), root=root)
    assert {k: resolved[k] for k in expected} == expected
    assert load_config(None, resolved).train_csv == expected["train_csv"]


def test_a_list_key_resolves_item_by_item(root):
    """teacher_oof holds several files: each bare name is found, a path is kept, a missing one is named."""
    one = touch(root / "datasets" / "owner" / "teacher-a" / "teacher_a.csv")
    two = touch(root / "datasets" / "owner" / "teacher-b" / "teacher_b.csv")
    resolved = resolve_paths({"teacher_oof": ["teacher_a.csv", str(two)]}, root=root)
    assert resolved["teacher_oof"] == [str(one), str(two)]
    with pytest.raises(FileNotFoundError, match="teacher_oof"):
        resolve_paths({"teacher_oof": ["teacher_a.csv", "nowhere.csv"]}, root=root)


@pytest.mark.parametrize("name", builtin_configs())
def test_built_in_file_names_are_the_real_ones(name):
    folder, keys = SHARED[name]
    cfg = load_config(name)
    for key in keys:
        assert shared_data(folder, getattr(cfg, key)).is_file()


def test_a_built_in_name_yields_to_a_file_and_unknown_names_list_the_built_ins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stsb").write_text(yaml.safe_dump({"epochs": 7}))
    assert load_config("stsb").epochs == 7 and load_config("stsb").task == "uspppm"  # the file, not the built-in
    with pytest.raises(ValueError, match=r"no built-in config 'stbs' \(nor a file of that name\): the built-in configs are "
                                         r"\['afqmc', 'gaiic', 'stsb', 'uspppm'\]; or pass the path of a YAML file"):
        load_config("stbs")
    with pytest.raises(FileNotFoundError, match="config file not found: stsb.yaml"):
        load_config("stsb.yaml")  # a .yaml name is a file, never a built-in


def test_backbone_weights_match_the_loader():
    from kagglekit.models.pair_model import BACKBONE_WEIGHTS

    assert discover.BACKBONE_WEIGHTS == BACKBONE_WEIGHTS


@pytest.mark.slow
def test_the_wheel_ships_the_built_in_configs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    shutil.copytree(ROOT / "kagglekit", src / "kagglekit", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "out"), str(src)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "out").glob("kagglekit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"kagglekit/configs/{n}.yaml" for n in builtin_configs()} <= names


# ---------------------------------------------------------------------------------------------- find_run_to_continue


def stopped_run(folder: Path) -> Path:
    """A run stopped by its time budget before any fold completed: run.json, config.yaml and a resume state only."""
    touch(folder / "run.json", '{"folds": {}}')
    touch(folder / "config.yaml", "task: uspppm\n")
    touch(folder / "resume" / "fold1.pt")
    return folder


def test_a_run_with_no_complete_fold_is_found_to_continue(kaggle, root):
    stopped = stopped_run(root / "notebooks" / "me" / "uspppm-train-s2" / "run")
    assert discover.find_run_to_continue("uspppm-train-s2") == stopped
    assert discover.find_run_to_continue(str(stopped)) == stopped
    with pytest.raises(FileNotFoundError, match="MODEL_DIRS='uspppm-train-s2': none of the run folders"):  # nothing to predict with
        find_runs("uspppm-train-s2")


def test_run_to_continue_ambiguous_none_and_not_a_run(root):
    first = stopped_run(root / "notebooks" / "me" / "train-a" / "run")
    second = stopped_run(root / "notebooks" / "me" / "train-b" / "run")
    with pytest.raises(ValueError) as err:
        discover.find_run_to_continue("auto")
    assert f"RESUME_FROM='auto': 2 run folders match:\n  {first}\n  {second}\nSet RESUME_FROM to one of them." == str(err.value)
    with pytest.raises(FileNotFoundError, match="RESUME_FROM='train-c': none of the run folders"):
        discover.find_run_to_continue("train-c")
    touch(root / "plain" / "x.csv")
    with pytest.raises(ValueError, match="is no kagglekit run folder"):
        discover.find_run_to_continue(str(root / "plain"))


def test_the_command_line_finds_a_built_in_configs_files_under_the_input_root(root, tiny_bert, tmp_path, capsys):
    """`kagglekit train --config stsb` on Kaggle: the bare file names are found wherever the dataset is mounted."""
    from kagglekit.cli import main

    stsb = root / "datasets" / "someone" / "stsbenchmark"
    rows = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6}.000\tA man plays flute {i}.\tA man plays a flute {i % 7}." for i in range(60)]
    touch(stsb / "sts-train.csv", "\n".join(rows) + "\n")
    touch(stsb / "sts-test.csv", "\n".join(rows[:10]) + "\n")
    shutil.copytree(tiny_bert, root / "models" / "me" / "tiny" / "transformers" / "default" / "1")
    out = tmp_path / "run"
    argv = ["train", "--config", "stsb", "--fold", "0", *[a for s in (f"output_dir={out}", "n_folds=2", "epochs=1", "max_len=32",
                                                                      "batch_size=16") for a in ("--set", s)]]
    assert main(argv) == 0
    capsys.readouterr()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train_csv"] == str(stsb / "sts-train.csv") and config["test_csv"] == str(stsb / "sts-test.csv")
    assert config["backbone"] == str(root / "models" / "me" / "tiny" / "transformers" / "default" / "1")
    (stsb / "sts-test.csv").unlink()
    assert main(["train", "--config", "stsb", "--set", f"output_dir={tmp_path / 'other'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kagglekit train: error: test_csv") and "sts-test.csv" in err[-1] and "set test_csv to its path" in err[-1]
    assert not (tmp_path / "other").exists()


def test_without_an_input_root_a_bare_name_stays_a_path_and_auto_fails(tmp_path):
    missing = tmp_path / "no-input-root"
    assert resolve_paths({"train_csv": "nosuch.csv", "teacher_oof": ["t.csv"]}, root=missing) == \
        {"train_csv": "nosuch.csv", "teacher_oof": ["t.csv"]}
    with pytest.raises(FileNotFoundError, match="no folder"):
        resolve_paths({"train_csv": "auto"}, root=missing)
