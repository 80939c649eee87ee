"""The command line and the package surface: help, version, tiny-model, import without side effects."""

import os
import subprocess
import sys

from transformers import AutoModel, AutoTokenizer

import kagglekit
from kagglekit.cli import main


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kagglekit", *args], capture_output=True, text=True, timeout=300, env=env)


def test_help_and_version():
    result = run("--help")
    assert result.returncode == 0
    for command in ("tiny-model", "id-vocab", "train", "pretrain", "predict", "ensemble", "export", "report", "doctor"):
        assert command in result.stdout
    assert run("--version").stdout.strip() == f"kagglekit {kagglekit.__version__}"


def test_import_has_no_side_effects():
    code = (
        "import os, sys, warnings; env = dict(os.environ); filters = list(warnings.filters); import kagglekit; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'; "
        "assert dict(os.environ) == env, 'environment changed'; assert warnings.filters == filters, 'filters changed'; "
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_building_the_parser_loads_no_heavy_library():
    """`kagglekit --help` and argument errors answer at once: the subcommands load their libraries when they run."""
    code = (
        "import sys; from kagglekit.cli import build_parser; build_parser(); "
        "heavy = sorted(m for m in ('torch', 'transformers', 'pandas', 'scipy', 'matplotlib') if m in sys.modules); "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr or result.stdout


def test_tiny_model_command_writes_an_offline_loadable_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    result = run("tiny-model", "--arch", "electra", "--out", str(tmp_path / "m"), env=env)
    assert result.returncode == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "m"), local_files_only=True)
    model = AutoModel.from_pretrained(str(tmp_path / "m"), local_files_only=True)
    assert model.config.vocab_size == len(tokenizer) and model.config.num_hidden_layers == 2


def test_unknown_arch_is_refused(capsys):
    try:
        main(["tiny-model", "--arch", "gpt9", "--out", "x"])
    except SystemExit as exit:
        assert exit.code == 2
    assert "invalid choice: 'gpt9'" in capsys.readouterr().err


def test_predict_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    code = main(["predict", "--models", str(tmp_path), "--data", "x.csv", "--out", str(tmp_path / "s.csv")])
    assert code == 2
    assert "holds no trained fold" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_id_vocab_then_pretrain_from_scratch_then_train(tmp_path, capsys):
    """The GAIIC chain through the command line: an id vocabulary, MLM from scratch, a fine-tune on the checkpoint."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    lines = [(" ".join(map(str, rng.integers(1, 60, 6))), " ".join(map(str, rng.integers(1, 60, 5))), int(rng.integers(0, 2))) for _ in range(80)]
    data = tmp_path / "train.tsv"
    data.write_text("".join(f"{a}\t{b}\t{y}\n" for a, b, y in lines), encoding="utf-8")
    assert main(["id-vocab", str(data), "--out", str(tmp_path / "vocab")]) == 0
    scratch = json.dumps({"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                          "intermediate_size": 64, "max_position_embeddings": 64})
    pretrain = ["pretrain", "--set", f"files={data}", "--set", "columns=0,1", "--set", "header=false",
                "--set", f"tokenizer_dir={tmp_path / 'vocab'}", "--set", f"from_scratch_config={scratch}", "--set", "steps=4",
                "--set", "save_every=2", "--set", "batch_size=8", "--set", f"output_dir={tmp_path / 'mlm'}"]
    assert main(pretrain + ["--set", "max_len=65"]) == 2  # one more than its 64 positions
    assert "'max_len': 65 is more tokens than the model of from_scratch_config has positions for (64" in capsys.readouterr().err
    assert not (tmp_path / "mlm").exists()
    assert main(pretrain) == 0  # max_len 0, the default: 128 capped at the 64 positions
    assert "pretrained 4 steps" in capsys.readouterr().out
    assert main(["train", "--set", "task=ids", "--set", f"train_csv={data}", "--set", f"backbone={tmp_path / 'mlm' / 'last'}",
                 "--set", f"output_dir={tmp_path / 'run'}", "--set", "n_folds=2", "--set", "epochs=1", "--set", "max_len=32",
                 "--fold", "0"]) == 0
    card = json.loads((tmp_path / "run" / "run.json").read_text())
    assert card["metric"] == "roc_auc" and "0" in card["folds"]
