"""``kagglekit doctor``: check the machine, a run's output size, the model folders and the inference time before spending GPU hours.

Each check prints one line, ``ok|warn|fail  <check>: <detail>``, and a warn or fail line says the fix.
The exit status is 1 when any check fails (warn does not fail). torch and transformers are imported
only when the checks run, so registering the command keeps ``kagglekit --help`` instant.

About 720 lines, over the usual 350: the checks (versions, GPU, offline settings, a training config's
output size, model folders, inference time) are short and independent, and reading them in one file is
reading the command's output top to bottom; each is a function returning `Check` lines. The output-size
estimate (~210 lines) is the part that could move to a module of its own.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from kagglekit.run import META_FILE, fold_dirs, full_dirs, is_model_dir
from kagglekit.tools.report import duration

if TYPE_CHECKING:
    from kagglekit.run import FoldMeta

REQUIRED = ("torch", "transformers", "tokenizers", "sentencepiece", "protobuf")
KAGGLE_LIMIT_S = 9 * 3600  # a Kaggle notebook session (and a code-competition rerun) stops after 9 hours
WARN_SHARE = 0.5  # warn when the estimate uses more than this share of the limit
SAMPLE_ROWS = 256  # rows timed per model folder
FREE_MEMORY_SHARE = 0.5  # warn when less than this share of a GPU's memory is free
GIB = 1024**3


@dataclass(frozen=True)
class Check:
    """One check's result: ``status`` is ok, warn or fail; ``detail`` says what was found and, unless ok, the fix."""

    status: str
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


# ---------------------------------------------------------------------------------------------- versions


LEVELS = {"ok": "ok", "missing": "fail", "outside": "warn", "unknown": "warn"}  # a requirement's state -> the line's status


def check_versions(extras: Sequence[str] = ()) -> list[Check]:
    """Python and the required libraries against the ranges in kagglekit's own package metadata.

    One line each for Python and `REQUIRED` and the requirements of `extras` (``("llm",)``: peft, for LoRA runs and
    folders), and one for any other requirement that is missing or out of range (`kagglekit.requirements`, which the
    notebooks' install cell runs too). Missing fails; out of range warns, since a newer library often still works.
    """
    from kagglekit.requirements import installed_version, requirement_statuses, status

    try:
        statuses = requirement_statuses(extras)
        plain = {s.name.lower() for s in requirement_statuses()}
    except md.PackageNotFoundError:
        return [Check("warn", "kagglekit", "imported from a source folder, not installed, so its supported version "
                                           "ranges are unknown: pip install the kagglekit wheel (or pip install -e .).")]
    by_name = {s.name.lower(): s for s in statuses}
    shown = [statuses[0]] + [by_name.get(name) or status(name, installed_version(name), "") for name in REQUIRED]
    shown += [s for s in statuses[1:] if s.name.lower() not in REQUIRED and (s.state != "ok" or s.name.lower() not in plain)]
    return [Check(LEVELS[s.state], s.name, s.detail()) for s in shown]


# ---------------------------------------------------------------------------------------------- GPU


def arch_supported(capability: tuple[int, int], arch_list: Sequence[str]) -> bool:
    """Whether a torch build with `arch_list` (``torch.cuda.get_arch_list()``) runs on a GPU of `capability`.

    A GPU runs kernels built for its own major version and an equal or lower minor (``sm_80`` code runs on
    sm_86), and PTX (``compute_XY``) of an equal or lower capability, compiled when first used.
    """
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([a-z]?)", arch)
        if not match:
            continue
        kind, major, minor, suffix = match[1], int(match[2]), int(match[3]), match[4]
        if suffix:  # sm_90a: architecture-specific features, that exact GPU only
            if (major, minor) == tuple(capability):
                return True
        elif kind == "sm" and major == capability[0] and minor <= capability[1]:
            return True
        elif kind == "compute" and (major, minor) <= tuple(capability):
            return True
    return False


def _device_check(index: int) -> Check:
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    name, arch = torch.cuda.get_device_name(index), f"sm_{major}{minor}"
    archs = torch.cuda.get_arch_list()
    if arch_supported((major, minor), archs):
        return Check("ok", f"gpu {index}", f"{name} ({arch}); torch {torch.__version__} has kernels for it")
    advice = ("Switch the notebook's accelerator to GPU T4 x2 (Settings > Accelerator)" if (major, minor) < (7, 5)
              else "Use another GPU")
    return Check("fail", f"gpu {index}", (
        f"{name} is {arch}, but this torch build ({torch.__version__}) ships kernels only for {', '.join(archs) or 'no GPU'}: "
        f"every CUDA operation will fail with 'no kernel image is available'. {advice}, or install a torch build that "
        f"still ships {arch} (for Pascal/P100 a CUDA 12.6 build, torch ...+cu126, from an attached wheel dataset)."
    ))


def _precision_check() -> Check:
    import torch

    from kagglekit.kaggle import cpu_bf16, native_bf16, resolve_precision

    if not torch.cuda.is_available():
        cpu = ("this CPU has bf16 in hardware: precision=bf16 trains about 1.3x faster, not bit-exact" if cpu_bf16()
               else "bf16 needs a CUDA device or a CPU with AVX512-BF16/AMX")
        return Check("ok", "precision", f"no GPU: auto is fp32; fp16 needs a CUDA device; {cpu}")
    fp16 = torch.cuda.get_device_capability() >= (5, 3)
    auto = resolve_precision("auto", torch.device("cuda"))  # bf16 only where the hardware has it, not emulated
    return Check("ok", "precision", f"fp16 {'yes' if fp16 else 'no'}, bf16 {'yes' if native_bf16() else 'no'}; precision=auto picks {auto}")


def _memory_check(index: int) -> Check:
    import torch

    free, total = torch.cuda.mem_get_info(index)
    found = f"{free / GIB:.1f} GiB free of {total / GIB:.1f} GiB"
    if free < FREE_MEMORY_SHARE * total:
        return Check("warn", f"gpu {index} memory", f"{found}: another process or an earlier cell holds the rest; "
                                                    "restart the kernel (or free those models) before training.")
    return Check("ok", f"gpu {index} memory", found)


def check_bf16(cfg) -> list[Check]:
    """A config that asks for ``precision=bf16`` against each CUDA device: one without bf16 in hardware (compute
    capability below 8.0: T4 sm_75, P100) only emulates it, several times slower, and training refuses it there.
    Nothing to say without such a config or such a device."""
    import torch

    if cfg is None or cfg.precision != "bf16" or not torch.cuda.is_available():
        return []
    checks = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        if (major, minor) < (8, 0):
            checks.append(Check("warn", f"gpu {index} bf16", (
                f"precision=bf16, but {torch.cuda.get_device_name(index)} (sm_{major}{minor}) has no bf16 in hardware: torch "
                "would emulate it, about 6x slower, and kagglekit train refuses it. Use precision=fp16 or auto (fp16 with a "
                "GradScaler on this GPU; QLoRA's quantised layers then compute in fp16 too).")))
    return checks


def check_gpu() -> list[Check]:
    """Each CUDA device against the torch build's kernels, its free memory, and the precisions on offer."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return [Check("warn", "gpu", f"no CUDA device visible (torch {torch.__version__} is {build}): this is a CPU run, "
                                     "fine for a dry run; for real training turn the notebook's accelerator on (GPU T4 x2)."),
                _precision_check()]
    checks = []
    for index in range(torch.cuda.device_count()):
        checks += [_device_check(index), _memory_check(index)]
    return checks + [_precision_check()]


# ---------------------------------------------------------------------------------------------- environment


def _in_notebook() -> bool:
    """A Kaggle session (Kaggle sets KAGGLE_KERNEL_RUN_TYPE) or any Jupyter kernel."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "ipykernel" in sys.modules


def check_offline_env() -> Check:
    """HF_HUB_OFFLINE: without it every model path costs hub retries on an offline Kaggle machine."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None and value.strip().upper() in ("1", "ON", "YES", "TRUE"):
        return Check("ok", "HF_HUB_OFFLINE", f"{value} (no hub lookups)")
    found = "unset" if value is None else f"{value!r} (hub lookups on)"
    if _in_notebook():
        return Check("warn", "HF_HUB_OFFLINE", f"{found}: on an offline Kaggle machine every model load retries the hub "
                                               "first; call kagglekit.kaggle.set_offline_env() before loading models.")
    return Check("ok", "HF_HUB_OFFLINE", f"{found}; kagglekit's commands set it themselves")


# ---------------------------------------------------------------------------------------------- model folders


@dataclass(frozen=True)
class Timing:
    """One model folder's inference cost: a fixed part (loading) and a per-row part, in seconds."""

    load_s: float
    sample_s: float
    sample_rows: int
    rows: int  # the test size the estimate is for

    def estimate_s(self) -> float:
        return self.load_s + self.sample_s / self.sample_rows * self.rows


def model_folders(path: str | os.PathLike) -> list[Path]:
    """The folders to check under `path`: the folder itself when it is a model folder, else its ``fold{K}/``.

    Unlike prediction, a fold folder missing its ``kagglekit.json`` is kept, so the check can name it.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--models: folder not found: {path}. Pass a run folder written by kagglekit train "
                                "or a model folder (a fold folder).")
    return [path] if is_model_dir(path) else fold_dirs(path, complete=False) + full_dirs(path, complete=False)


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks: weights, kagglekit.json, config.json, tokenizer files."""
    from kagglekit.models.pair_model import VOCAB_FILES, WEIGHTS_FILE

    missing = [name for name in (WEIGHTS_FILE, META_FILE, "config.json", "tokenizer_config.json")
               if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("tokenizer.json", *VOCAB_FILES)):
        missing.append(f"the tokenizer's vocabulary (tokenizer.json or one of {', '.join(VOCAB_FILES)})")
    return missing


def _folder_parameters(folder: Path) -> int:
    """The number of values in a model folder's weights file (its header only is read)."""
    import math

    from safetensors import safe_open

    from kagglekit.models.pair_model import WEIGHTS_FILE

    with safe_open(str(folder / WEIGHTS_FILE), "pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def time_inference(model, encodings, *, batch_size: int, device, amp_dtype, activation: str, values) -> float:
    """Seconds to predict every row of `encodings` with `model`, as `kagglekit.infer.predict` does."""
    from kagglekit.models.forward import run_inference

    start = time.perf_counter()
    run_inference(model, encodings, batch_size=batch_size, device=device, amp_dtype=amp_dtype, activation=activation, values=values)
    return time.perf_counter() - start


def _test_sample(model, meta: FoldMeta, data: Path, size: int):
    """`size` rows from the start of the test file as the model sees them (texts, a decoder's prompt fields, features),
    and the file's row count.

    Reads and featurises the test file as `kagglekit.infer.predict` does (`InputCache`).
    """
    import numpy as np

    from kagglekit.infer.inputs import InputCache

    frame = InputCache(data, device=next(model.parameters()).device).frame(meta, getattr(model, "source_dir", None))[1]
    # a test file shorter than the sample is cycled, so the timed batches are as full as the real run's
    return frame.iloc[np.arange(size) % len(frame)].reset_index(drop=True), len(frame)


def _synthetic_sample(model, meta: FoldMeta, size: int):
    """`size` rows whose every text (and every field of a decoder's prompt) fills max_len: an upper bound on the cost
    of real pairs."""
    import pandas as pd

    from kagglekit.data.prompts import template_fields

    template = meta.recipe_state.get("template") or ""
    fields = template_fields(template) if template else ["text_a", "text_b"]
    words = meta.max_len if not template else -(-meta.max_len // len(fields))  # a prompt's fields fill max_len together
    text = " ".join(["text"] * words)  # truncated to exactly max_len tokens
    frame = pd.DataFrame({name: [text] * size for name in dict.fromkeys(["text_a", "text_b", *fields])})
    for name in model.feature_names:
        frame[name] = 0.0
    return frame


def _time_folder(model, tokenizer, meta: FoldMeta, *, data: Path | None, rows: int | None, load_s: float,
                 batch_size: int, device) -> Timing:
    """Time the folder's predictions on a sample: pairs for an encoder, prompts of the fold's template for a decoder
    (`kagglekit.data.prompts.encode_rows`, as predict encodes them)."""
    from kagglekit.data.prompts import encode_rows
    from kagglekit.kaggle import amp_dtype, resolve_precision

    if data is not None:
        sample, test_rows = _test_sample(model, meta, data, SAMPLE_ROWS)
        rows = rows or test_rows
    else:
        sample = _synthetic_sample(model, meta, min(SAMPLE_ROWS, rows))
    template, names = meta.recipe_state.get("template") or "", model.feature_names

    def encode(frame):
        return encode_rows(tokenizer, frame, meta.max_len, template=template, features=frame[names].to_numpy() if names else None)

    options = dict(batch_size=batch_size, device=device, amp_dtype=amp_dtype(resolve_precision("auto", device)),
                   activation=meta.activation, values=meta.output.values)
    warm = 2  # a first pass of two rows sets up kernels, the allocator and caches outside the timing
    time_inference(model, encode(sample.iloc[:warm]), **options)
    encodings = encode(sample)
    seconds = time_inference(model, encodings, **options)
    return Timing(load_s=load_s, sample_s=seconds, sample_rows=len(encodings), rows=rows)


def check_folder(folder: Path, *, device, data: Path | None = None, rows: int | None = None,
                 batch_size: int = 64, base_model=None) -> tuple[Check, Timing | None]:
    """A model folder is complete and loads offline (a LoRA folder onto its base: `base_model` as in
    `kagglekit.infer.predict.predict`); with `data` or `rows`, also time a sample of predictions."""
    import torch

    from kagglekit.models.pair_model import load_model_folder

    name = f"model {folder}"
    missing = missing_files(folder)
    if missing:
        return Check("fail", name, f"incomplete: missing {'; '.join(missing)}. Re-download or re-attach the model "
                                   "dataset (uploads need --dir-mode zip to keep the fold*/ folders)."), None
    start = time.perf_counter()
    try:
        model, tokenizer, meta = load_model_folder(folder, device=device, base_model=base_model)
    except Exception as err:  # a diagnostic reports every failure as a line instead of stopping at the first
        return Check("fail", name, f"does not load offline: {type(err).__name__}: {err}"), None
    load_s = time.perf_counter() - start
    found = f"complete, loads offline in {load_s:.1f} s (task {meta.task}, max_len {meta.max_len})"
    if model.lora is not None:
        found += (f", LoRA r={model.lora['r']}: {_folder_parameters(folder):,} parameters in the folder (adapters, head), on the "
                  f"base {meta.extra['base_model'].get('name', '?')} ({sum(p.numel() for p in model.parameters()):,} loaded)")
    embedding = meta.recipe_state.get("embedding_model")
    if embedding:  # the run's copy of its embedding model, beside the fold folders
        from kagglekit.models.embeddings import find_embedder

        try:
            find_embedder(folder, embedding)
        except Exception as err:
            return Check("fail", name, f"loads, but its embedding model does not: {type(err).__name__}: {err}"), None
        found += f", with its embedding model ({embedding['dir']}/)"
    timing = None
    if data is not None or rows:
        try:
            timing = _time_folder(model, tokenizer, meta, data=data, rows=rows, load_s=load_s, batch_size=batch_size, device=device)
        except Exception as err:  # e.g. 'no kernel image' on an unsupported GPU, or a test file of another task
            return Check("fail", name, f"loads, but predicting the sample fails: {type(err).__name__}: {err}"), None
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Check("ok", name, found), timing


def inference_time_check(timings: Sequence[Timing], *, synthetic: bool, limit_s: float = KAGGLE_LIMIT_S, workers: int = 1) -> Check:
    """The estimate of every timed folder against the time limit (Kaggle's 9 hours by default).

    With `workers` devices (predict spreads the model folders over the visible GPUs), the folders are
    dealt round-robin as predict plans them, and the busiest device's sum is the estimate. With more
    devices than folders, each device loads a copy of a folder and predicts its share of the rows
    (`kagglekit.infer.shards.plan_parts`).
    """
    from kagglekit.infer.predict import assign_devices
    from kagglekit.infer.shards import plan_parts

    parts = plan_parts(len(timings), max(1, workers))
    estimates = [timings[p.folder].load_s + (timings[p.folder].estimate_s() - timings[p.folder].load_s) / p.shards for p in parts]
    total = max(sum(estimates[i] for i in share) for share in assign_devices(len(estimates), range(max(1, workers))))
    rows = timings[0].rows
    per_row_ms = 1000 * sum(t.sample_s / t.sample_rows for t in timings) / len(timings)
    share = total / limit_s
    sample = "synthetic pairs of max_len tokens, an upper bound" if synthetic else f"timed on {timings[0].sample_rows} rows from the test file"
    spread = f" spread over {workers} GPUs" if workers > 1 else ""
    found = (f"~{duration(total)} for {rows} rows with {len(timings)} model folder(s){spread} ({per_row_ms:.2f} ms per row per "
             f"folder, {sample}): {share:.0%} of the {duration(limit_s)} limit")
    fix = "use fewer folds or models, a smaller max_len, a larger batch size, or a faster GPU"
    if share > 1:
        return Check("fail", "inference time", f"{found}; the run would be stopped before it finishes: {fix}.")
    if share > WARN_SHARE:
        return Check("warn", "inference time", f"{found}; little margin for a slower machine: {fix}.")
    return Check("ok", "inference time", found)


# ---------------------------------------------------------------------------------------------- output size


BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2}  # the config key save_dtype
# a resume state per parameter: the fp32 weights and AdamW's two fp32 moments; an EMA adds its fp32 copy
RESUME_BYTES, EMA_BYTES = 4 + 8, 4


@dataclass(frozen=True)
class OutputEstimate:
    """What a training session writes: each fold's weights (per seed) and the embedding model's copy into the
    output folder, and the resume state of the fold in progress into `resume_dir`."""

    params: int  # of the model one fold trains: backbone, head, output layer
    folds: int
    seeds: int
    save_dtype: str
    weights_bytes: int  # one model's weights file
    embedding_bytes: int  # the run's copy of the embedding model (0: none)
    resume_bytes: int
    resume_dir: Path
    resume_in_output: bool
    trainable: int | None = None  # LoRA: what trains and what a fold folder holds (adapters, head, output layer); None: all

    def output_bytes(self) -> int:
        """What the output folder holds at the end (with the resume state while a fold trains, when it is there)."""
        resume = self.resume_bytes if self.resume_in_output else 0
        return self.folds * self.seeds * self.weights_bytes + self.embedding_bytes + resume

    def peak_bytes(self) -> tuple[int, int]:
        """(output folder, resume_dir elsewhere) at their fullest: a fold folder and a resume state are each written
        beside their previous copy before it is replaced (atomic writes), so one more of each is on disk then."""
        if self.resume_in_output:
            return self.output_bytes() + self.weights_bytes + self.resume_bytes, 0
        return self.output_bytes() + self.weights_bytes, 2 * self.resume_bytes


def _meta_model(cfg):
    """The model `cfg` trains, built on the meta device: nothing is allocated and no weights are read (with LoRA,
    its adapters in; peft is needed then)."""
    import torch

    from kagglekit.models.pair_model import PairModel, backbone_from_config
    from kagglekit.train.components import model_options

    num_outputs = cfg.num_bins if cfg.output == "bins" else 1
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a head's layers clamped to the backbone's depth: training says so
        return PairModel(backbone_from_config(cfg.backbone), **model_options(cfg, num_outputs))


def count_parameters(cfg) -> int:
    """Parameters of the model `cfg` trains (backbone, head, output layer; with LoRA the adapters too), built on the
    meta device. output=classes is counted with one output; each further class adds hidden_size + 1 parameters, a
    rounding error here."""
    return sum(p.numel() for p in _meta_model(cfg).parameters())


def count_trainable(cfg) -> int:
    """Parameters the run trains: with LoRA (``lora_r`` > 0) the adapters, the head and the output layer, which are
    also all a fold folder holds; without, every parameter (as `count_parameters`)."""
    from kagglekit.models.lora import trainable_counts

    return trainable_counts(_meta_model(cfg))[0] if cfg.lora_r > 0 else count_parameters(cfg)


def _resume_dir(cfg) -> Path:
    """Where a fold's resume state goes: resume_dir, or with auto the platform's scratch space, else the output."""
    from kagglekit.kaggle import scratch_dir

    if cfg.resume_dir != "auto":
        return Path(cfg.resume_dir)
    scratch = scratch_dir()
    return scratch if scratch is not None else Path(cfg.output_dir) / "resume"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def estimate_output(cfg, folds: Sequence) -> OutputEstimate:
    """The sizes `check_output_size` compares, for training `folds` of `cfg` in one session (a ``"full"`` among them
    is the full-data fit: one more model folder per seed)."""
    params = count_parameters(cfg)
    saved = count_trainable(cfg) if cfg.lora_r > 0 else params  # LoRA: adapter-only folders and resume states
    embedding = 0
    if cfg.embedding_model:
        embedding = sum(f.stat().st_size for f in Path(cfg.embedding_model).iterdir() if f.is_file())
    resume_dir = _resume_dir(cfg)
    return OutputEstimate(
        params=params, folds=len(folds), seeds=cfg.seeds, save_dtype=cfg.save_dtype,
        weights_bytes=saved * BYTES_PER_WEIGHT[cfg.save_dtype], embedding_bytes=embedding,
        resume_bytes=saved * (RESUME_BYTES + (EMA_BYTES if cfg.ema > 0 else 0)),
        resume_dir=resume_dir, resume_in_output=_inside(resume_dir, Path(cfg.output_dir)),
        trainable=saved if cfg.lora_r > 0 else None,
    )


def size_text(n: float) -> str:
    """Bytes as people read disk sizes (decimal, as Kaggle's 20 GB): ``4.4 GB``, ``0.87 GB``, ``673.6 kB``."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _disk(path: Path) -> tuple[int, int]:
    """(device id, free bytes) of the file system that holds `path`, or would once it is created."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return os.stat(path).st_dev, shutil.disk_usage(path).free


def _size_fixes(estimate: OutputEstimate) -> list[str]:
    """The settings that would shrink this estimate."""
    fixes = []
    if estimate.save_dtype == "fp32":
        fixes.append("save_dtype=fp16 (halves the weights)")
    if estimate.folds > 1:
        fixes.append("fewer folds per session (kagglekit train --fold K, the train notebook's FOLDS)")
    if estimate.seeds > 1:
        fixes.append("seeds=1")
    if estimate.resume_in_output:
        fixes.append("resume_dir on scratch space outside the output (/kaggle/temp on Kaggle)")
    return fixes


def check_output_size(cfg, folds="all") -> list[Check]:
    """The output of training `folds` of `cfg` in one session against /kaggle/working's quota and the free disk.

    Fold weights: parameters x bytes per `save_dtype`, per fold and seed (with LoRA the trained ones only: adapters,
    head and output layer; the base is never copied); the resume state of the fold in
    progress: those parameters x (4 weights + 8 AdamW moments + 4 with an EMA), in scratch space when `resume_dir`
    is auto and the platform has some, else in the output; the run's copy of `embedding_model`. The output's
    total is held against Kaggle's 20 GB quota of /kaggle/working (a failure when the output is there, a
    warning elsewhere), and each disk's free space against what it must hold at its peak.

    Args:
        cfg: the run's `Config`.
        folds: the folds this session trains: "all", a fold number, a list, or numbers separated by commas ("0,1").

    Raises:
        ValueError: `folds` names no fold of the config.

    Example:
        >>> for check in check_output_size(load_config("configs/uspppm.yaml"), "0,1"):
        ...     print(check.line())
    """
    from kagglekit import kaggle

    folds = _fold_list(folds, cfg.n_folds)
    try:
        estimate = estimate_output(cfg, folds)
    except (OSError, ValueError) as err:
        return [Check("fail", "output size", f"cannot count the parameters of backbone {cfg.backbone!r}: "
                                             f"{type(err).__name__}: {err}")]
    output = Path(cfg.output_dir)
    cv = estimate.folds - (1 if "full" in folds else 0)
    count = f"{cv} fold{'s' if cv != 1 else ''}" + (" + the full fit" if "full" in folds else "")
    count += f" x {estimate.seeds} seeds" if estimate.seeds > 1 else ""
    parts = [f"{estimate.save_dtype} weights {size_text(estimate.weights_bytes)} each"]
    if estimate.trainable is not None:
        parts[0] = (f"LoRA adapters and head: {estimate.trainable:,} of {estimate.params:,} parameters train "
                    f"({estimate.trainable / estimate.params:.2%}), {parts[0]}, the base not copied")
    if estimate.embedding_bytes:
        parts.append(f"embedding model {size_text(estimate.embedding_bytes)}")
    resume = f"resume state {size_text(estimate.resume_bytes)} in {estimate.resume_dir}"
    if estimate.resume_in_output:
        parts.append(resume)
    found = f"~{size_text(estimate.output_bytes())} for {count} ({', '.join(parts)})"
    if not estimate.resume_in_output:
        found += f" + {resume}"
    quota, working = kaggle.WORKING_QUOTA_BYTES, Path(kaggle.KAGGLE_WORKING)
    output_peak, resume_peak = estimate.peak_bytes()
    found += f"; {output_peak / quota:.0%} of {working}'s {quota / 1e9:g} GB quota at its peak"
    fixes = _size_fixes(estimate)
    use = ", ".join(fixes) or "a smaller backbone"
    checks = []
    if output_peak <= quota:
        checks.append(Check("ok", "output size", found))
    elif _inside(output, working):
        checks.append(Check("fail", "output size", f"{found}: the session would stop when the quota is reached. Use {use}."))
    else:
        checks.append(Check("warn", "output size", f"{found}: fine for {output}, but on Kaggle the output would not fit. "
                                                    f"There use {use}."))
    return checks + [_disk_check(output, output_peak, estimate.resume_dir, resume_peak, fixes)]


def _disk_check(output: Path, output_peak: int, resume_dir: Path, resume_peak: int, fixes: list[str]) -> Check:
    """Each file system's free space against what the output and the resume state put on it at their peak."""
    needs: dict[int, list] = {}  # device -> [free, bytes needed, folders]
    for folder, peak in ((output, output_peak), (resume_dir, resume_peak)):
        if peak:
            device, free = _disk(folder)
            entry = needs.setdefault(device, [free, 0, []])
            entry[1] += peak
            entry[2].append(str(folder))
    found = "; ".join(f"{size_text(need)} of {size_text(free)} free for {' and '.join(folders)}" for free, need, folders in needs.values())
    short = [" and ".join(folders) for free, need, folders in needs.values() if need > free]
    if not short:
        return Check("ok", "disk space", f"{found} (needed at the peak)")
    fix = f"Free some space, or use {', '.join(fixes)}." if fixes else "Free some space."
    return Check("fail", "disk space", f"{found} (at the peak, when a fold folder or resume state is rewritten): not enough "
                                       f"free space for {'; '.join(short)}. {fix}")


def _fold_list(folds, n_folds: int) -> list:
    """--folds as the models one session writes: the CV fold numbers, then ``"full"`` when the spec asks for the
    full-data fit: "all", "3", 3, [0, 1], "0,1", "all,full" or [0, "full"] (`kagglekit.train.runner.parse_fold_spec`)."""
    from kagglekit.train.runner import FULL, parse_fold_spec

    cv, full = parse_fold_spec(folds, n_folds)
    return [*cv, FULL] if full else cv


# ---------------------------------------------------------------------------------------------- entry points


def diagnose(models: Sequence[str | os.PathLike] = (), data: str | os.PathLike | None = None, rows: int | None = None,
             *, batch_size: int = 64, config=None, folds=None, timing: bool = True,
             time_limit: float | str | None = None, base_model=None) -> Iterator[Check]:
    """Run every check, yielding each result as soon as it is known.

    Args:
        models: run folders (their ``fold*/``) or model folders to check and time.
        data: a test CSV: its first rows are timed, and its row count is the test size unless `rows` is given.
        rows: the test size to extrapolate to (e.g. the hidden test set's); without `data`, synthetic pairs are timed.
        batch_size: rows per forward pass, as given to predict.
        config: a training run's `Config`: the size of its output is checked against the quota and the free disk.
        folds: the folds this session trains ("all" when None; a number, a list, or "0,1"); needs `config`.
        timing: time the model folders' predictions (False: only check that each is complete and loads, as in a
            competition rerun, where only what would make predict fail may stop the notebook).
        time_limit: the inference time allowed: seconds or a duration ("4h"); None: Kaggle's 9 hours.
        base_model: LoRA runs: their base model's folder (or folders), as predict's ``--base-model``; None: the folder
            recorded at training.

    Raises:
        ValueError, FileNotFoundError: `rows` or `batch_size` is not positive, `data` is not a file, a models path
            is not a folder, or `folds` is no fold of `config`.
    """
    from kagglekit._io import check_file

    if rows is not None and rows < 1:
        raise ValueError(f"--rows must be a positive number of test rows, got {rows}: pass the test set's size, e.g. --rows 12000.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be 1 or more, got {batch_size}.")
    if (data is not None or rows is not None) and not models:
        raise ValueError("--data/--rows estimate the inference time of models: pass --models RUN_DIR too.")
    from kagglekit._keys import parse_duration

    limit_s = KAGGLE_LIMIT_S if time_limit is None else parse_duration(time_limit, name="--time-limit")
    if limit_s <= 0:
        raise ValueError(f"--time-limit {time_limit!r}: give the time inference may take, e.g. --time-limit 9h.")
    data = None if data is None else check_file(data, "--data")
    folders = {path: model_folders(path) for path in models}  # a path that is no folder stops here, before the checks
    if config is None and folds is not None:
        raise ValueError("--folds says which folds a training session writes: pass --config CFG (or --set) too.")
    folds = None if config is None else _fold_list("all" if folds is None else folds, config.n_folds)

    yield from check_versions(("llm",) if _uses_lora(config, folders) else ())
    yield from check_gpu()
    yield from check_bf16(config)
    yield check_offline_env()
    if config is not None:
        yield from check_output_size(config, folds)
    yield from _model_checks(folders, data=data if timing else None, rows=rows if timing else None, batch_size=batch_size,
                             limit_s=limit_s, base_model=base_model)


def _uses_lora(config, folders: dict) -> bool:
    """Whether the config trains LoRA adapters or a model folder holds some: then peft (the ``llm`` extra) is required."""
    from kagglekit.run import FoldMeta

    if config is not None and config.lora_r > 0:
        return True
    for folder in (f for found in folders.values() for f in found):
        try:
            if FoldMeta.read(folder).model.get("lora"):
                return True
        except (OSError, ValueError):  # a broken folder: its own check names what is wrong
            continue
    return False


def _model_checks(folders: dict, *, data: Path | None, rows: int | None, batch_size: int, limit_s: float,
                  base_model=None) -> Iterator[Check]:
    from kagglekit.infer.predict import inference_devices
    from kagglekit.kaggle import resolve_device

    device = resolve_device("auto")
    timings = []
    for path, found in folders.items():
        if not found:
            yield Check("fail", f"model {path}", "neither a model folder (no kagglekit.json) nor a run folder (no fold*/ "
                                                 "inside): pass the folder of the attached model dataset that holds fold*/.")
        for folder in found:
            check, timing = check_folder(folder, device=device, data=data, rows=rows, batch_size=batch_size, base_model=base_model)
            yield check
            if timing is not None:
                timings.append(timing)
    if timings:
        yield inference_time_check(timings, synthetic=data is None, limit_s=limit_s, workers=len(inference_devices("auto")))


def run_doctor(models: Sequence[str | os.PathLike] = (), data: str | os.PathLike | None = None, rows: int | None = None,
               *, batch_size: int = 64, config=None, folds=None, timing: bool = True, time_limit: float | str | None = None,
               base_model=None, out: Callable[[str], None] = print) -> int:
    """Print one line per check and return the exit status: 1 when any check failed, else 0.

    Arguments as for `diagnose`.

    Example:
        >>> if run_doctor(["runs/uspppm"], "data/test.csv") != 0:
        ...     raise RuntimeError("kagglekit doctor: a check failed")
        >>> run_doctor(config=cfg, folds=FOLD)  # train.ipynb: will this session's output fit?
    """
    failed = False
    for check in diagnose(models, data, rows, batch_size=batch_size, config=config, folds=folds, timing=timing, time_limit=time_limit,
                          base_model=base_model):
        out(check.line())
        failed |= check.status == "fail"
    return int(failed)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from kagglekit.config import load_config

    config = load_config(args.config, args.set) if args.config or args.set else None
    return run_doctor(args.models, args.data, args.rows, batch_size=args.batch_size, config=config, folds=args.folds,
                      timing=not args.no_timing, time_limit=args.time_limit, base_model=args.base_model or None)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``kagglekit doctor`` on the command line's subparsers."""
    p = subparsers.add_parser("doctor", help="check versions, GPU, a training config's output size, model folders and the inference "
                                             "time against Kaggle's limits")
    p.add_argument("--models", nargs="+", default=[], metavar="RUN_DIR", help="run folders (or model folders) to check and time")
    p.add_argument("--data", help="test CSV: its first rows are timed and its size extrapolated to")
    p.add_argument("--rows", type=int, help="test size to extrapolate to (e.g. the hidden test set's); alone: synthetic pairs are timed")
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass, as for predict")
    p.add_argument("--time-limit", help="the time inference may take: seconds or e.g. 4h (default: Kaggle's 9 h)")
    p.add_argument("--no-timing", action="store_true", help="only check that each model folder is complete and loads "
                                                            "(a competition rerun: nothing but predict failing matters)")
    p.add_argument("--config", help="a training config (YAML): check that its output fits /kaggle/working's quota and the disk")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--folds", help="the folds one session trains: all (default with --config), 3, or 0,1")
    p.add_argument("--base-model", nargs="+", metavar="DIR", help="LoRA runs: their base model's folder, as for predict "
                                                                  "(default: the folder recorded at training)")
    p.set_defaults(func=_cmd_doctor)
    return p
