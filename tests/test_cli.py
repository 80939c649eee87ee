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
    for command in ("tiny-model", "train", "predict"):
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
