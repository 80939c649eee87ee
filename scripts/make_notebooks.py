"""Write notebooks/train.ipynb and notebooks/inference.ipynb from the cell sources below.

The notebooks are generated so they stay small, output-free and reviewable as Python source:
edit this file, run `python scripts/make_notebooks.py`, commit both. `--check` exits 1 when the
committed notebooks differ from what this file would write (tests/test_notebooks.py checks it too).

Conventions the tests rely on: one code cell tagged `parameters` (papermill's convention: plain
assignments, overridable by a cell injected after it), then the install cell, which needs WHEEL_DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# ---------------------------------------------------------------------------------------------
# Shared cells

INSTALL = (Path(__file__).with_name("install_cell.py")).read_text(encoding="utf-8").rstrip("\n")  # its own file: tests run it as a script


TRAIN_ENVIRONMENT = '''\
from kagglekit.tools.doctor import run_doctor
from kagglekit.kaggle import set_offline_env

set_offline_env()  # HF_HUB_OFFLINE=1 etc.: models load from local folders, no hub retries
# Python and library versions, the GPU against this torch build (a P100 on a torch without sm_60 fails here),
# fp16/bf16, free GPU memory
if run_doctor() != 0:
    raise RuntimeError("kagglekit doctor: a check failed; the 'fail' lines above say what to do.")'''

INFERENCE_ENVIRONMENT = '''\
from kagglekit.tools.doctor import run_doctor
from kagglekit.kaggle import set_offline_env

set_offline_env()  # HF_HUB_OFFLINE=1 etc.: models load from local folders, no hub retries
# versions, GPU, every model folder complete and loading offline, and the time to predict TEST_ROWS rows with all
# folds (timed on test.csv's rows) against Kaggle's 9-hour limit
if run_doctor(MODEL_DIRS, TEST_CSV, rows=TEST_ROWS or None, batch_size=BATCH_SIZE) != 0:
    raise RuntimeError("kagglekit doctor: a check failed; the 'fail' lines above say what to do.")'''

# ---------------------------------------------------------------------------------------------
# train.ipynb

TRAIN_INTRO = """\
# kagglekit: train one fold (US Patent Phrase to Phrase Matching)

Fine-tunes a pretrained encoder on one fold of the competition's `train.csv` and writes a **run
folder** to `OUTPUT_DIR`: `config.yaml`, `folds.csv`, `fold{FOLD}/` (a self-contained model folder),
`oof.csv`, `run.json`, plus `dataset-metadata.json` for turning it into a model dataset.

**Attach** (Add Input):
- the **kagglekit** dataset (the wheel written by `build_wheel.sh`);
- a **pretrained model** dataset: a folder with `config.json`, the tokenizer and the weights, e.g. `deberta-v3-large`;
- the competition data, **us-patent-phrase-to-phrase-matching**;
- optionally the **CPC titles** dataset (`CPCTitleList202202`); without it the context code itself is the text.

**Settings**: Internet **off**, Accelerator **GPU T4** (one GPU is used).

**Change** only the parameters cell below: the paths if your datasets are named differently, `FOLD`,
and `OVERRIDES` (any config key: `help(kagglekit.config.Config)` lists them with their defaults).

**Run once per fold**: `FOLD = 0`, Save Version (Save & Run All), make the version's output a
dataset; then `FOLD = 1`, and so on. Folds depend only on `fold_seed` and the data, so folds trained
in separate versions agree."""

TRAIN_PARAMETERS = '''\
WHEEL_DIR = "/kaggle/input/kagglekit"  # the kagglekit dataset: kagglekit-*.whl
TRAIN_CSV = "/kaggle/input/us-patent-phrase-to-phrase-matching/train.csv"
CPC_DIR = "/kaggle/input/cpc-codes/CPCTitleList202202"  # set to "" to use the context codes as text
BACKBONE = "/kaggle/input/deberta-v3-large"  # local model folder: config, tokenizer, weights
FOLD = 0  # the fold this version trains: 0 .. N_FOLDS - 1
N_FOLDS = 5
OUTPUT_DIR = "/kaggle/working/run"
MODEL_DATASET_ID = "YOUR_KAGGLE_USERNAME/uspppm-deberta-fold{FOLD}"  # {FOLD} is filled in
OVERRIDES = {"epochs": 4, "batch_size": 16, "max_len": 128, "lr": 2e-5}  # any config key'''

TRAIN_CONFIG = '''\
from kagglekit.config import load_config

cfg = load_config(None, {"task": "uspppm", "train_csv": TRAIN_CSV, "cpc_dir": CPC_DIR, "backbone": BACKBONE,
                         "output_dir": OUTPUT_DIR, "n_folds": N_FOLDS, **OVERRIDES})
for key, value in cfg.to_dict().items():
    print(f"{key:>16}: {value}")'''

TRAIN_RUN = '''\
import pandas as pd
from kagglekit.train import train_folds

card = train_folds(cfg, folds=FOLD)
result = card["folds"][str(FOLD)]
print(f"fold {FOLD}: {card['metric']} {result['score']:.4f} at epoch {result['best_epoch']}, "
      f"{result['seconds']:.0f} s on {card['device']} ({card['precision']})")
pd.DataFrame(result["history"]).set_index("epoch")'''

TRAIN_DATASET = '''\
import json, os
from pathlib import Path

dataset_id = MODEL_DATASET_ID.format(FOLD=FOLD)
metadata = {"title": dataset_id.split("/")[-1], "id": dataset_id, "licenses": [{"name": "CC0-1.0"}]}
path = Path(OUTPUT_DIR) / "dataset-metadata.json"
tmp = path.with_name(path.name + ".tmp")
tmp.write_text(json.dumps(metadata, indent=2) + "\\n")
os.replace(tmp, path)  # atomic: never a half-written file

for file in sorted(p for p in Path(OUTPUT_DIR).rglob("*") if p.is_file()):
    print(f"{file.stat().st_size:>15,d} B  {file.relative_to(OUTPUT_DIR)}")'''

TRAIN_NEXT = """\
## Next steps

1. Run the other folds: `FOLD = 1, 2, ...`, one saved version each.
2. Make each version's output a dataset: from the notebook's Output tab, or download `run/` and
   `kaggle datasets create -p run --dir-mode zip` (it reads the `dataset-metadata.json` written above;
   `--dir-mode zip` uploads the `fold*/` folders too).
3. Attach those datasets to `inference.ipynb` and list their run folders in its `MODEL_DIRS`.

`run.json` holds this fold's score, epoch history, device and library versions; `oof.csv` its
out-of-fold predictions."""

TRAIN_REPORT_INTRO = """\
## Report

The leaderboard of the runs under `OUTPUT_DIR` (each fold's score, the CV, and the public LB once you
store it with `kagglekit report RUNS_DIR --lb RUN=SCORE`) and their plots: the learning curve of each
fold, the out-of-fold predictions against the labels, the score per fold. They are written to
`report/` beside the run folder, not into it: `kaggle datasets create -p run` leaves them out."""

TRAIN_REPORT = '''\
from pathlib import Path
from IPython.display import Image, Markdown, display
from kagglekit.tools.report import write_report

report = write_report(OUTPUT_DIR, Path(OUTPUT_DIR).parent / "report")
for message in report.skipped:
    print(message)
display(Markdown(report.markdown.read_text()))'''

TRAIN_PLOTS = '''\
for plot in report.plots:
    print(plot.relative_to(report.markdown.parent))
    display(Image(filename=str(plot)))'''

# ---------------------------------------------------------------------------------------------
# inference.ipynb

INFERENCE_INTRO = """\
# kagglekit: inference (US Patent Phrase to Phrase Matching)

Averages the folds of the models trained with `train.ipynb` and writes `/kaggle/working/submission.csv`,
in the sample submission's id order, checked for missing ids and NaN before it is written.

**Attach** (Add Input):
- the **kagglekit** dataset (the wheel);
- the **model datasets** made from `train.ipynb`'s output (one per fold, or one run with several folds);
- the competition data, **us-patent-phrase-to-phrase-matching**.

The CPC titles and tokenizer are stored inside each model folder: nothing else is needed.

**Settings**: Internet **off** (required to submit), Accelerator **GPU T4** (CPU works, slowly).
Change only the parameters cell below."""

INFERENCE_PARAMETERS = '''\
WHEEL_DIR = "/kaggle/input/kagglekit"  # the kagglekit dataset: kagglekit-*.whl
# Each entry is a run folder (its fold*/ are used) or a single fold folder; all folds found are averaged.
# From a notebook's output the run folder is <dataset>/run; uploaded with `kaggle datasets create -p run`, the dataset root.
MODEL_DIRS = [
    "/kaggle/input/uspppm-deberta-fold0/run",
    "/kaggle/input/uspppm-deberta-fold1/run",
    "/kaggle/input/uspppm-deberta-fold2/run",
    "/kaggle/input/uspppm-deberta-fold3/run",
    "/kaggle/input/uspppm-deberta-fold4/run",
]
TEST_CSV = "/kaggle/input/us-patent-phrase-to-phrase-matching/test.csv"
SAMPLE_SUBMISSION = "/kaggle/input/us-patent-phrase-to-phrase-matching/sample_submission.csv"  # "" to skip
OUT = "/kaggle/working/submission.csv"
BATCH_SIZE = 128
TEST_ROWS = 12_000  # rows of the hidden test set the submission rerun predicts (USPPPM: about 12,000); 0: test.csv's own count'''

INFERENCE_PREDICT = '''\
from kagglekit.infer.predict import predict

sub = predict(MODEL_DIRS, TEST_CSV, OUT, sample_submission=SAMPLE_SUBMISSION or None, batch_size=BATCH_SIZE)
print(f"wrote {OUT}: {len(sub)} rows")
print(sub.describe())
sub.head()'''


# ---------------------------------------------------------------------------------------------


def _notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return nb


def _md(cell_id: str, source: str):
    return new_markdown_cell(source, id=cell_id)


def _code(cell_id: str, source: str, *tags: str):
    cell = new_code_cell(source, id=cell_id)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def build() -> dict[str, nbformat.NotebookNode]:
    """The notebooks by file name, without outputs."""
    train = _notebook([
        _md("intro", TRAIN_INTRO),
        _code("parameters", TRAIN_PARAMETERS, "parameters"),
        _code("install", INSTALL),
        _code("environment", TRAIN_ENVIRONMENT),
        _code("config", TRAIN_CONFIG),
        _code("train", TRAIN_RUN),
        _code("dataset", TRAIN_DATASET),
        _md("next", TRAIN_NEXT),
        _md("report-intro", TRAIN_REPORT_INTRO),
        _code("report", TRAIN_REPORT),
        _code("plots", TRAIN_PLOTS),
    ])
    inference = _notebook([
        _md("intro", INFERENCE_INTRO),
        _code("parameters", INFERENCE_PARAMETERS, "parameters"),
        _code("install", INSTALL),
        _code("environment", INFERENCE_ENVIRONMENT),
        _code("predict", INFERENCE_PREDICT),
    ])
    return {"train.ipynb": train, "inference.ipynb": inference}


def render(nb: nbformat.NotebookNode) -> str:
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed notebooks are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, nb in build().items():
        path = NOTEBOOKS / name
        text = render(nb)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
