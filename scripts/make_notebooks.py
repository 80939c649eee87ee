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


ENVIRONMENT = """\
import time

SESSION_START = time.time()  # the time budget counts the session from here (the cells above take seconds)

from kagglekit.kaggle import set_offline_env
from kagglekit.tools.doctor import run_doctor

set_offline_env()  # HF_HUB_OFFLINE=1 etc.: models load from local folders, no hub retries
# Python and library versions, the GPU against this torch build (a P100 on a torch without sm_60 fails here),
# fp16/bf16, free GPU memory
if run_doctor() != 0:
    raise RuntimeError("kagglekit doctor: a check failed; the 'fail' lines above say what to do.")"""

# ---------------------------------------------------------------------------------------------
# train.ipynb

DATA_TABLE = """\
| `CONFIG` | attach | files found by name |
|---|---|---|
| `uspppm` | the competition **us-patent-phrase-to-phrase-matching**, and the **CPC titles** dataset (`CPCTitleList202202`) | `train.csv`, `test.csv`, `sample_submission.csv`, `CPCTitleList202202/` |
| `stsb` | a dataset with the STS Benchmark files | `sts-train.csv`, `sts-test.csv` |
| `afqmc` | a dataset with CLUE AFQMC | `train.csv`, `test.csv` |
| `gaiic` | a dataset with the GAIIC 2021 track 3 files, and a NeZha pretrained on them (`kagglekit pretrain`) | `gaiic_track3_round1_train_20210228.tsv`, `gaiic_track3_round1_testB_20210317.tsv` |"""

ATTACH = """\
**Attach** (Add Input; each is found wherever Kaggle mounts it: `competitions/`, `datasets/`, `models/`,
`notebooks/` or the old `/kaggle/input/<slug>/`):
- the **kagglekit** dataset (the wheel written by `build_wheel.sh`);
- a **pretrained model**: a Kaggle Model or dataset folder with `config.json`, the tokenizer and the weights
  (e.g. `deberta-v3-large`); with several attached, set `BACKBONE` to a path or a name fragment;
- the data, by `CONFIG`:

""" + DATA_TABLE + """

`CONFIG` may also be the path of your own YAML config (`help(kagglekit.config.Config)` lists the keys); a
`pairs` or `ids` competition needs no code edits. A file name that two inputs share is an error that lists
both: set that parameter to one of them."""

TRAIN_INTRO = """\
# kagglekit: train

Fine-tunes a pretrained model on the folds of a competition's training file and writes a **run folder** to
`OUTPUT_DIR`: `config.yaml`, `folds.csv`, `fold{K}/` (self-contained model folders), `oof.csv`, `run.json`,
plus `dataset-metadata.json` for turning it into a model dataset.

""" + ATTACH + """

**Settings**: Internet **off**, Accelerator **GPU T4 x2**: two folds train at once, one per GPU.

**Change** only the parameters cell. `FOLDS` is a fold number, a list or `"all"`; several sessions may each
train some folds (`kagglekit merge` makes them one run with one CV). The run stops cleanly before the session
limit (`TIME_BUDGET`); to continue it, attach this version's output and set `RESUME_FROM` to it."""

TRAIN_PARAMETERS = """\
CONFIG = "uspppm"  # a built-in config (uspppm, stsb, afqmc, gaiic) or the path of a YAML config
WHEEL_DIR = "auto"  # the kagglekit dataset's folder; "auto": the one kagglekit-*.whl under /kaggle/input
TRAIN_CSV = "auto"  # "auto": the config's file name, found under /kaggle/input; or a path
BACKBONE = "auto"  # "auto": the one model folder attached; a name fragment ("deberta-v3-large"); or a path
FOLDS = "all"  # a fold (0), a list ([0, 1]) or "all"; add "full" to fit all rows after CV ([0, 1, 2, 3, 4, "full"])
OUTPUT_DIR = "/kaggle/working/run"
RESUME_FROM = ""  # a previous version's output to continue (its run folder, or a name fragment of the input)
TIME_BUDGET = "auto"  # "auto": the session limit (12 h; 9 h in a rerun) less 30 min; or "5h", 3600, 0 (none)
MODEL_DATASET_ID = "YOUR_KAGGLE_USERNAME/kagglekit-run"
OVERRIDES = {"epochs": 4, "batch_size": 16, "max_len": 128, "lr": 2e-5}  # any config key, e.g. "save_dtype": "fp16\""""

TRAIN_INPUTS = """\
from pathlib import Path

from kagglekit.config import load_config
from kagglekit.discover import describe, find_run_to_continue, resolve_paths
from kagglekit.kaggle import session_limit

given = {key: value for key, value in {"train_csv": TRAIN_CSV, "backbone": BACKBONE}.items() if value != "auto"}
values = load_config(CONFIG, {**OVERRIDES, **given, "output_dir": OUTPUT_DIR}).to_dict()
values.update(resolve_paths(values))  # "auto" and bare file names: found under the input root
if TIME_BUDGET == "auto":  # what is left of the session, less 30 minutes for the cells after training
    values["time_budget"] = max(60.0, session_limit() - (time.time() - SESSION_START) - 1800)
else:
    values["time_budget"] = TIME_BUDGET
cfg = load_config(None, values)
resume_from = None
if RESUME_FROM:
    resume_from = find_run_to_continue(RESUME_FROM)  # a folder, or a name fragment of the attached output
print(describe({key: Path(getattr(cfg, key)) for key in ("train_csv", "test_csv", "cpc_dir", "backbone") if getattr(cfg, key)}))
for key, value in cfg.to_dict().items():
    print(f"{key:>22}: {value}")"""

TRAIN_SIZE = """\
# the output of the planned folds (weights, resume state) against /kaggle/working's 20 GB and the free disk
if run_doctor(config=cfg, folds=FOLDS) != 0:
    raise RuntimeError("kagglekit doctor: the run does not fit; the 'fail' line above says what to change.")"""

TRAIN_RUN = """\
import pandas as pd
from kagglekit.train import continue_run, train_folds

if resume_from is not None:  # the previous session's run folder, copied into place (inputs are read-only)
    continue_run(resume_from, OUTPUT_DIR)
card = train_folds(cfg, folds=FOLDS, resume=True)  # resume: complete folds are skipped, a stopped one continues
rows = [{"fold": fold, card["metric"]: result["score"], "best_epoch": result["best_epoch"], "seconds": result["seconds"]}
        for fold, result in sorted(card["folds"].items(), key=lambda item: int(item[0]))]
if "cv" in card:
    print(f"CV ({card['metric']}, folds {card['cv_folds']}): {card['cv']:.4f} on {card['device']} ({card['precision']})")
if card.get("stopped"):  # the time budget ran out: the version still succeeds, and its output can be continued
    print(f"stopped before the session limit; to continue, attach this version's output and set RESUME_FROM to it "
          f"(or run: {card['stopped']['how']})")
pd.DataFrame(rows, columns=["fold", card["metric"], "best_epoch", "seconds"]).set_index("fold")"""

TRAIN_DATASET = """\
import json, os

metadata = {"title": MODEL_DATASET_ID.split("/")[-1], "id": MODEL_DATASET_ID, "licenses": [{"name": "CC0-1.0"}]}
path = Path(OUTPUT_DIR) / "dataset-metadata.json"
tmp = path.with_name(path.name + ".tmp")
tmp.write_text(json.dumps(metadata, indent=2) + "\\n")
os.replace(tmp, path)  # atomic: never a half-written file

for file in sorted(p for p in Path(OUTPUT_DIR).rglob("*") if p.is_file()):
    print(f"{file.stat().st_size:>15,d} B  {file.relative_to(OUTPUT_DIR)}")"""

TRAIN_NEXT = """\
## Next steps

1. **More folds in other sessions**: save this version, then run the notebook again with other `FOLDS`.
2. **One CV over sessions**: attach the versions' outputs (Add Input → Your Work → Notebooks) and merge them,
   here or anywhere: `kagglekit merge /kaggle/input/notebooks/<you>/<notebook>/run ... --out merged` checks
   that their settings and folds agree and writes one run folder with every fold, `oof.csv` and the CV.
3. **Continue a stopped run**: when the run stopped at `TIME_BUDGET`, attach this version's output and set
   `RESUME_FROM` to it: complete folds are kept, the stopped fold continues from its saved state.
4. **Inference**: attach the run (or the merged run) to `inference.ipynb`; it finds it by itself.

`run.json` holds every fold's score, epoch history, device and library versions; `oof.csv` the out-of-fold
predictions. A notebook's output attached as an input appears under `/kaggle/input/notebooks/<owner>/<slug>/`."""

TRAIN_REPORT_INTRO = """\
## Report

The leaderboard of the run (each fold's score, the CV) and its plots: the learning curve of each fold, the
out-of-fold predictions against the labels, the score per fold. They are written to `report/` beside the run
folder, not into it. Keep public LB scores in a file of your own (`kagglekit report RUNS --lb RUN=SCORE
--lb-file lb.json`): attached run folders are read-only."""

TRAIN_REPORT = """\
from IPython.display import Image, Markdown, display
from kagglekit.tools.report import write_report

report = None
if card["folds"]:
    report = write_report(OUTPUT_DIR, Path(OUTPUT_DIR).parent / "report")
    for message in report.skipped:
        print(message)
    display(Markdown(report.markdown.read_text()))
else:
    print("no fold is complete yet, so there is nothing to report: continue the run first (RESUME_FROM)")"""

TRAIN_PLOTS = """\
for plot in report.plots if report else []:
    print(plot.relative_to(report.markdown.parent))
    display(Image(filename=str(plot)))"""

# ---------------------------------------------------------------------------------------------
# inference.ipynb

INFERENCE_INTRO = """\
# kagglekit: inference

Predicts the test file with every fold of the attached runs, blends the runs and writes
`/kaggle/working/submission.csv` in the sample submission's id order, checked for missing ids and NaN before
it is written.

**Attach** (Add Input):
- the **kagglekit** dataset (the wheel);
- the **runs** made with `train.ipynb`: a notebook's output (Add Input → Your Work → Notebooks), a model dataset
  made from it, or a run merged with `kagglekit merge`; all runs found are used unless `MODEL_DIRS` lists some;
- the test data, by `CONFIG`:

""" + DATA_TABLE + """

Tokenizers, CPC titles and every setting travel inside the model folders: nothing else is needed.

**Settings**: Internet **off** (required to submit), Accelerator **GPU T4 x2**: the model folders are spread over
both GPUs. During the competition's rerun on the hidden test set (`KAGGLE_IS_COMPETITION_RERUN`) the timing
check is skipped and only what would make predict fail stops the notebook."""

INFERENCE_PARAMETERS = """\
CONFIG = "uspppm"  # names the test file: a built-in config (uspppm, stsb, afqmc, gaiic) or a YAML path
WHEEL_DIR = "auto"  # the kagglekit dataset's folder; "auto": the one kagglekit-*.whl under /kaggle/input
MODEL_DIRS = "auto"  # "auto": every run under /kaggle/input; or a list of run folders / fold folders
TEST_CSV = "auto"  # "auto": the config's test file, found under /kaggle/input; or a path
SAMPLE_SUBMISSION = "auto"  # "auto": sample_submission.csv beside the test file, when there is one; "" to skip
WEIGHTS = ""  # weights.json from kagglekit ensemble (blend weights per run); "": the runs' equal average
AVERAGE = "prob"  # how a run's folds are averaged: "prob" or "logit"
TTA = "none"  # "swap": also predict each pair with its texts exchanged (runs trained with swap=true)
FULL_WEIGHT = None  # a run's full-data fit: None counts it as one more fold; 0.3 gives it 30% of the run
BASE_MODEL = None  # LoRA runs hold adapters only: their base model's folder (or a list); None: the folder training recorded
PRECISION = "auto"  # "auto": fp16 on a T4 (fp32 on a CPU); "8bit" or "4bit": weights in 8/4 bits (bitsandbytes), e.g. a 7-9B decoder per T4
BATCH_SIZE = 128
TEST_ROWS = 12_000  # rows of the hidden test set the rerun predicts (USPPPM: about 12,000); 0: the test file's own
TIME_LIMIT = "auto"  # the inference time allowed: "auto" is Kaggle's 9 h; or "4h", seconds
OUT = "/kaggle/working/submission.csv\""""

INFERENCE_INPUTS = """\
from pathlib import Path

from kagglekit.config import load_config
from kagglekit.discover import describe, find_runs, resolve_paths
from kagglekit.kaggle import is_competition_rerun

given = [MODEL_DIRS] if isinstance(MODEL_DIRS, str) and MODEL_DIRS != "auto" else MODEL_DIRS  # one folder, or a list
models = find_runs() if given == "auto" else [Path(path) for path in given]
test_csv = TEST_CSV
if TEST_CSV == "auto":
    test_csv = resolve_paths({"test_csv": load_config(CONFIG).test_csv})["test_csv"]
sample = SAMPLE_SUBMISSION
if SAMPLE_SUBMISSION == "auto":
    beside = Path(test_csv).with_name("sample_submission.csv")
    sample = str(beside) if beside.is_file() else ""
print(describe({"MODEL_DIRS": models, "TEST_CSV": Path(test_csv), **({"SAMPLE_SUBMISSION": Path(sample)} if sample else {})}))
if not sample:
    print("no sample submission: the submission keeps the test file's id order")"""

INFERENCE_DOCTOR = """\
# Every model folder complete and loading offline; outside a rerun also the time to predict TEST_ROWS rows with all
# folds (timed on the test file's rows) against TIME_LIMIT. In a rerun the hidden test set is there: no timing.
rerun = is_competition_rerun()
status = run_doctor(models, test_csv, rows=TEST_ROWS or None, batch_size=BATCH_SIZE, timing=not rerun,
                    time_limit=None if TIME_LIMIT == "auto" else TIME_LIMIT, base_model=BASE_MODEL)
if status != 0:
    raise RuntimeError("kagglekit doctor: a check failed; the 'fail' lines above say what to do.")"""

INFERENCE_PREDICT = """\
from kagglekit.infer.predict import predict

sub = predict(models, test_csv, OUT, sample_submission=sample or None, weights=WEIGHTS or None, average=AVERAGE,
              tta=TTA, full_weight=FULL_WEIGHT, batch_size=BATCH_SIZE, base_model=BASE_MODEL, precision=PRECISION)
print(f"wrote {OUT}: {len(sub)} rows")
print(sub.describe())
sub.head()"""


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
        _code("environment", ENVIRONMENT),
        _code("inputs", TRAIN_INPUTS),
        _code("size", TRAIN_SIZE),
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
        _code("environment", ENVIRONMENT),
        _code("inputs", INFERENCE_INPUTS),
        _code("doctor", INFERENCE_DOCTOR),
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
