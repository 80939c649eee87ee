"""Training refuses what it cannot train right: broken or mismatched backbones, degenerate labels, and a
run folder that another process is training (other settings, or the same fold).

The bad-input cases go through `check_case` (tests/test_bad_inputs.py): exit status 2, one error line
with the place, the value and the fix, nothing written. The races start real processes together.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kagglekit.cli import main
from kagglekit.models.pair_model import check_backbone
from kagglekit.run import RunFolder
from kagglekit.testing import TINY_ARCHS, build_tiny_model
from kagglekit.train.session import FoldClaims
from test_bad_inputs import (  # noqa: F401  (env is a module fixture: importing it makes pytest use it here)
    Case, _backbone_without, _copy_run, _csv, _drop_tokenizer, _train_args, _train_file, check_case, env,
)

TRAIN_FILE = r"train_csv: {path}"
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# backbone folders broken in one way each
# ------------------------------------------------------------------------------------------------

def _truncate(backbone: Path) -> None:
    weights = backbone / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)


def _html_page(backbone: Path) -> None:
    (backbone / "model.safetensors").write_bytes(b"<!DOCTYPE html><html><body>Access denied</body></html>\n")


def _edit_config(**changes):
    def edit(backbone: Path) -> None:
        config = json.loads((backbone / "config.json").read_text())
        (backbone / "config.json").write_text(json.dumps({**config, **changes}))
    return edit


def _shards_one_missing(backbone: Path) -> None:
    """An index over two shards, the second never copied."""
    (backbone / "model.safetensors").rename(backbone / "model-00001-of-00002.safetensors")
    from safetensors import safe_open

    with safe_open(str(backbone / "model-00001-of-00002.safetensors"), "pt") as handle:
        names = list(handle.keys())
    weight_map = {name: "model-00001-of-00002.safetensors" for name in names}
    weight_map["pooler.dense.weight"] = "model-00002-of-00002.safetensors"
    (backbone / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _truncated_bin(backbone: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(backbone / "model.safetensors"), backbone / "pytorch_model.bin")
    (backbone / "model.safetensors").unlink()
    os.truncate(backbone / "pytorch_model.bin", (backbone / "pytorch_model.bin").stat().st_size - 200)


def _roberta_with_bert_tokenizer(env, tmp):
    """A roberta model (pad id 1) given the tiny bert's tokenizer files (pad id 0, same size)."""
    backbone = Path(shutil.copytree(env.roberta, tmp / "backbone"))
    _drop_tokenizer(backbone)
    (backbone / "merges.txt").unlink()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copyfile(env.bert / name, backbone / name)
    out = tmp / "run"
    return Case(_train_args(env, out, f"backbone={backbone}"), rf"backbone {re.escape(str(backbone))}",
                r"config\.json pad_token_id=1 but the tokenizer pads with id 0", r"Use the tokenizer files saved with these weights",
                absent=[out])


def _resized(source: Path, dest: Path, rows: int, added: int = 0) -> Path:
    """`source` saved into `dest` with its embedding resized to `rows` rows, its tokenizer with `added` new tokens."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(source), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    tokenizer.add_tokens([f"zzqnewtoken{i}" for i in range(added)])
    model.resize_token_embeddings(rows)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


def _embedding_far_bigger(env, tmp):
    backbone = _resized(env.bert, tmp / "backbone", 1500)
    out = tmp / "run"
    return Case(_train_args(env, out, f"backbone={backbone}"), rf"backbone {re.escape(str(backbone))}",
                r"the tokenizer has 1000 ids but the embedding has 1500 rows: 500 rows have no token",
                r"Use the tokenizer files saved with these weights", absent=[out])


def _one_fold_constant(frame):
    """Every score 0.5 but the first anchor's: the fold without that anchor has a single label."""
    return frame.assign(score=[0.75 if a == frame["anchor"][0] else 0.5 for a in frame["anchor"]])


def _max_len_past_positions(arch: str, limit: int):
    """max_len above the backbone's position table (roberta: its rows less the pad id's offset): a row that long would crash."""
    def make(env, tmp):
        out = tmp / "run"
        backbone = env.roberta if arch == "roberta" else env.bert
        return Case(_train_args(env, out, f"backbone={backbone}", f"max_len={limit + 1}"), r"config key 'max_len'",
                    rf"{limit + 1} is more tokens than backbone {re.escape(str(backbone))} has positions for \({limit}",
                    rf"set max_len={limit} or less", absent=[out])
    return make


def _fold_held_by_another_process(env, tmp):
    run = _copy_run(env, tmp, "run")
    claims = FoldClaims(run, ["fold0"])  # this process is "the other one": the command opens the marker anew
    with RunFolder(run).lock():
        claims.acquire()
    case = Case([*_train_args(env, run), "--fold", "0"], rf"fold0/ of run {re.escape(str(run))} is being trained by another process",
                rf"pid {os.getpid()} on host \S+ since", r"Wait for it to end, or train another fold", unchanged=[run])
    case.claims = claims
    return case


CASES = {
    "backbone_truncated_safetensors": _backbone_without(_truncate, r"backbone {path}: model\.safetensors \(\d+ bytes\)",
                                                        r"is not a complete safetensors file", r"re-download the model dataset"),
    "backbone_weights_are_a_web_page": _backbone_without(_html_page, r"backbone {path}: model\.safetensors \(55 bytes\)",
                                                         r"is not a complete safetensors file", r"re-download the model dataset"),
    "backbone_truncated_bin": _backbone_without(_truncated_bin, r"backbone {path}: pytorch_model\.bin",
                                                r"is not a readable PyTorch checkpoint", r"re-download the model dataset"),
    "backbone_missing_shard": _backbone_without(_shards_one_missing, r"backbone {path}: model\.safetensors\.index\.json",
                                                r"names 2 shard\(s\) but \['model-00002-of-00002\.safetensors'\] is missing",
                                                r"copy every shard of the checkpoint"),
    "backbone_config_hidden_size": _backbone_without(_edit_config(hidden_size=128), r"backbone {path}: config\.json hidden_size=128",
                                                     r"model\.safetensors has embeddings 64 wide \(embeddings\.word_embeddings\.weight: 1000 x 64\)",
                                                     r"use the config\.json saved with these weights"),
    "backbone_config_vocab_size": _backbone_without(_edit_config(vocab_size=1200), r"backbone {path}: config\.json vocab_size=1200",
                                                    r"model\.safetensors has 1000 embedding rows", r"use the config\.json saved with these weights"),
    "backbone_config_more_layers": _backbone_without(_edit_config(num_hidden_layers=4), r"backbone {path}: config\.json num_hidden_layers=4",
                                                     r"holds 2 layers: layers 2\.\.3 would start from random weights",
                                                     r"use the config\.json saved with these weights"),
    "backbone_tokenizer_of_another_model": _roberta_with_bert_tokenizer,
    "backbone_embedding_far_bigger_than_tokenizer": _embedding_far_bigger,
    "labels_all_equal": _train_file(lambda df: df.assign(score=0.5), TRAIN_FILE + r" column 'score'",
                                    r"every label is 0\.5 \(120 rows \(max_rows=120\)\)", r"Use the file with the real labels"),
    "labels_one_fold_constant": _train_file(_one_fold_constant, r"n_folds=2, fold_seed=42: validation fold [01]",
                                            r"holds only the label 0\.5 \(\d+ rows, e\.g\. id '\w+'\).*\(pearson\)",
                                            r"Use fewer folds \(n_folds\), stratify more finely \(fold_bins\), try another fold_seed, "
                                            r"or score with another metric \(metric=rmse\)"),
    "fold_held_by_another_process": _fold_held_by_another_process,
    "max_len_past_bert_positions": _max_len_past_positions("bert", 512),
    "max_len_past_roberta_positions": _max_len_past_positions("roberta", 512),
}


@pytest.fixture(scope="module")
def benv(env, tiny_models):
    env.roberta = tiny_models("roberta")
    return env


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(name, benv, tmp_path, capsys):
    case = CASES[name](benv, tmp_path)
    try:
        check_case(name, case, tmp_path, capsys)
    finally:
        if hasattr(case, "claims"):
            with RunFolder(tmp_path / "run").lock():
                case.claims.release()


# ------------------------------------------------------------------------------------------------
# what the backbone check must let through
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_every_tiny_arch_passes_the_backbone_check(arch, tiny_models):
    check_backbone(tiny_models(arch))


def test_added_tokens_with_their_embedding_rows_pass_and_without_them_fail(tiny_models, tmp_path):
    bert = tiny_models("bert")
    check_backbone(_resized(bert, tmp_path / "resized", 1010, added=10))  # 10 new tokens, 10 new rows
    check_backbone(_resized(bert, tmp_path / "padded", 1064))  # rows padded to a multiple of 8/64: a few spare rows
    with pytest.raises(ValueError, match=r"the tokenizer has 1010 ids but the embedding has 1000 rows"):
        check_backbone(_resized(bert, tmp_path / "not_resized", 1000, added=10))


def test_a_trimmed_config_warns_and_a_sharded_checkpoint_passes(tiny_models, tmp_path):
    backbone = Path(shutil.copytree(tiny_models("bert"), tmp_path / "trimmed"))
    _edit_config(num_hidden_layers=1)(backbone)
    with pytest.warns(UserWarning, match=r"num_hidden_layers=1 but model\.safetensors holds 2 layers: the last 1 are left out"):
        check_backbone(backbone)
    sharded = Path(shutil.copytree(tiny_models("bert"), tmp_path / "sharded"))
    _shards_one_missing(sharded)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    del index["weight_map"]["pooler.dense.weight"]  # now every shard it names is there
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    check_backbone(sharded)


# ------------------------------------------------------------------------------------------------
# one run folder, several processes
# ------------------------------------------------------------------------------------------------

def _claim_in_child(run_dir, barrier, results, hold):
    claims = FoldClaims(run_dir, ["fold0"])
    barrier.wait()
    try:
        with RunFolder(run_dir).lock():
            claims.acquire()
        results.put(("ok", os.getpid()))
        hold.wait(20)  # keep the claim until every process has tried
        with RunFolder(run_dir).lock():
            claims.release()
    except ValueError as err:
        results.put(("refused", str(err)))


def test_of_processes_claiming_one_fold_at_once_exactly_one_wins(tmp_path):
    context = multiprocessing.get_context("fork")
    count = 4
    barrier, results, hold = context.Barrier(count), context.Queue(), context.Event()
    children = [context.Process(target=_claim_in_child, args=(tmp_path, barrier, results, hold)) for _ in range(count)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in range(count)]
    hold.set()
    for child in children:
        child.join(60)
    winners = [value for kind, value in outcomes if kind == "ok"]
    refused = [value for kind, value in outcomes if kind == "refused"]
    assert len(winners) == 1 and len(refused) == count - 1, outcomes
    assert all(f"pid {winners[0]} on host" in message and "fold0/ of run" in message for message in refused)
    assert not (tmp_path / "fold0.owner").exists()  # released by the winner


def test_a_claim_left_by_a_dead_process_is_taken_over_with_a_warning(env, tmp_path):
    run = _copy_run(env, tmp_path, "run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    (run / "fold0.owner").write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "since": "2024-01-01 00:00:00"}))
    with pytest.warns(UserWarning, match=rf"fold0\.owner: taking over the claim of pid {int(dead.stdout)} on host h"):
        with redirect_stdout(io.StringIO()):
            assert main([*_train_args(env, run), "--fold", "0"]) == 0
    assert not (run / "fold0.owner").exists()
    assert sorted(RunFolder(run).read_card()["folds"]) == ["0", "1"]


def _start_train(env, out: Path, fold: int, *settings: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "kagglekit", *_train_args(env, out, *settings), "--fold", str(fold)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_processes_with_other_settings_on_one_folder_exactly_one_trains(env, tmp_path):
    out = tmp_path / "run"
    procs = {lr: _start_train(env, out, fold, f"lr={lr}") for lr, fold in (("2e-05", 0), ("0.0005", 1))}
    done = {lr: (p.wait(300), *p.communicate()) for lr, p in procs.items()}
    codes = sorted(code for code, _, _ in done.values())
    assert codes == [0, 2], {lr: (code, err[-1500:]) for lr, (code, _, err) in done.items()}
    (winner,) = [lr for lr, (code, _, _) in done.items() if code == 0]
    (loser,) = [lr for lr, (code, _, _) in done.items() if code == 2]
    err = done[loser][2]
    assert err.count("kagglekit train: error: ") == 1
    assert f"output_dir {out} already holds a run with other settings (lr: {float(winner)!r} → {float(loser)!r})" in err, err
    card = RunFolder(out).read_card()
    assert card["config"]["lr"] == float(winner) and RunFolder(out).read_config()["lr"] == float(winner)
    assert list(card["folds"]) == [str(dict((("2e-05", 0), ("0.0005", 1)))[winner])]  # only the winner's fold
    assert not list(out.glob("*.owner"))


def test_two_processes_with_the_same_settings_train_their_folds_into_one_run(env, tmp_path):
    out = tmp_path / "run"
    procs = [_start_train(env, out, fold) for fold in (0, 1)]
    done = [(p.wait(300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in done] == [0, 0], [err[-1500:] for _, _, err in done]
    card = RunFolder(out).read_card()
    assert sorted(card["folds"]) == ["0", "1"] and card["cv_folds"] == [0, 1]
    oof = RunFolder(out).read_oof()
    folds = RunFolder(out).read_folds()
    assert sorted(oof["id"]) == sorted(folds["id"]) and (oof.set_index("id")["fold"] == folds.set_index("id")["fold"]).all()
    assert not list(out.glob("*.owner"))


# ------------------------------------------------------------------------------------------------
# the position limit: the longest row each family can embed
# ------------------------------------------------------------------------------------------------

def test_the_position_limit_is_the_table_rows_less_roberta_offset_and_none_without_a_table(tiny_models):
    """Read from the weights: bert's 512 rows; roberta's 514 rows less pad id 1 and one more (ids start at pad + 1), the
    same 512 its own forward accepts and one more it refuses; relative and rotary positions (deberta-v3 style, NeZha,
    decoders) have no hard limit."""
    from kagglekit.models.backbone_check import position_limit, weight_shapes
    from transformers import AutoConfig, AutoModel

    limits = {}
    for arch in TINY_ARCHS:
        folder = tiny_models(arch)
        limits[arch] = check_backbone(folder)
        _, shapes = weight_shapes(folder)
        assert limits[arch] == position_limit(shapes, SimpleNamespace(**json.loads((folder / "config.json").read_text())))
    assert limits["bert"] == limits["roberta"] == limits["xlm-roberta"] == 512
    assert limits["llama"] is None and limits["nezha"] is None and limits["deberta-v2"] is None
    roberta = AutoModel.from_pretrained(str(tiny_models("roberta")), config=AutoConfig.from_pretrained(str(tiny_models("roberta")))).eval()
    with torch.no_grad():
        roberta(input_ids=torch.full((1, 512), 5))
        with pytest.raises((IndexError, RuntimeError)):
            roberta(input_ids=torch.full((1, 513), 5))
