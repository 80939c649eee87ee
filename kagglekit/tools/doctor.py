"""``kagglekit doctor``: check the machine, the model folders and the inference time before spending GPU hours.

Each check prints one line, ``ok|warn|fail  <check>: <detail>``, and a warn or fail line says the fix.
The exit status is 1 when any check fails (warn does not fail). torch and transformers are imported
only when the checks run, so registering the command keeps ``kagglekit --help`` instant.

About 440 lines, over the usual 350: the checks (versions, GPU, offline settings, model folders,
inference time) are short and independent, and reading them in one file is reading the command's
output top to bottom; each is a function returning `Check` lines.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from kagglekit.run import META_FILE, fold_dirs, is_model_dir
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


def _installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _kit_requirements() -> tuple[str, dict[str, str]]:
    """kagglekit's Requires-Python and its unconditional requirements {name: specifier}, from its installed metadata."""
    from packaging.requirements import Requirement

    specs = {}
    for text in md.requires("kagglekit") or ():
        req = Requirement(text)
        if req.marker is None:  # extras (dev, demo) carry a marker
            specs[req.name.lower()] = _spec_text(req.specifier)
    return md.metadata("kagglekit")["Requires-Python"] or "", specs


def _spec_text(specifier) -> str:
    """A specifier set as people write it, lower bound first: ``>=4.44,<6``."""
    return ",".join(sorted((str(s) for s in specifier), key=lambda s: (not s.startswith(">"), s)))


def _version_check(name: str, version: str | None, spec: str) -> Check:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if version is None:
        return Check("fail", name, f"not installed; kagglekit needs {name}{spec}. Install it (offline on Kaggle: "
                                   f"pip install --no-index --find-links <attached wheel dataset> '{name}{spec}').")
    if not spec:
        return Check("ok", name, version)
    try:
        inside = SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return Check("warn", name, f"{version} is not a version number the range {spec} can be checked against.")
    if inside:
        return Check("ok", name, f"{version} (kagglekit supports {spec})")
    return Check("warn", name, f"{version} is outside the range kagglekit supports ({spec}): install a version in it, "
                               f"e.g. pip install '{name}{spec}' (from an attached wheel dataset when offline).")


def check_versions() -> list[Check]:
    """Python and the required libraries against the ranges in kagglekit's own package metadata."""
    try:
        python_spec, specs = _kit_requirements()
    except md.PackageNotFoundError:
        return [Check("warn", "kagglekit", "imported from a source folder, not installed, so its supported version "
                                           "ranges are unknown: pip install the kagglekit wheel (or pip install -e .).")]
    python = sys.version.split()[0]
    return [_version_check("python", python, python_spec)] + [
        _version_check(name, _installed_version(name), specs.get(name, "")) for name in REQUIRED
    ]


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

    from kagglekit.kaggle import native_bf16, resolve_precision

    if not torch.cuda.is_available():
        return Check("ok", "precision", "no GPU: fp32 (fp16 and bf16 need a CUDA device)")
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
    return [path] if is_model_dir(path) else fold_dirs(path, complete=False)


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks: weights, kagglekit.json, config.json, tokenizer files."""
    from kagglekit.models.pair_model import VOCAB_FILES, WEIGHTS_FILE

    missing = [name for name in (WEIGHTS_FILE, META_FILE, "config.json", "tokenizer_config.json")
               if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("tokenizer.json", *VOCAB_FILES)):
        missing.append(f"the tokenizer's vocabulary (tokenizer.json or one of {', '.join(VOCAB_FILES)})")
    return missing


def time_inference(model, encodings, *, batch_size: int, device, amp_dtype, activation: str, values) -> float:
    """Seconds to predict every row of `encodings` with `model`, as `kagglekit.infer.predict` does."""
    from kagglekit.models.forward import run_inference

    start = time.perf_counter()
    run_inference(model, encodings, batch_size=batch_size, device=device, amp_dtype=amp_dtype, activation=activation, values=values)
    return time.perf_counter() - start


def _test_sample(model, meta: FoldMeta, data: Path, size: int):
    """`size` rows from the start of the test file as the model sees them (texts and features), and the file's row count.

    Reads and featurises the test file as `kagglekit.infer.predict` does (`InputCache`).
    """
    import numpy as np

    from kagglekit.infer.inputs import InputCache

    frame = InputCache(data, device=next(model.parameters()).device).frame(meta, getattr(model, "source_dir", None))[1]
    # a test file shorter than the sample is cycled, so the timed batches are as full as the real run's
    head, names = frame.iloc[np.arange(size) % len(frame)], model.feature_names
    features = head[names].to_numpy() if names else None
    return (head["text_a"].tolist(), head["text_b"].tolist(), features), len(frame)


def _synthetic_sample(model, meta: FoldMeta, size: int):
    """`size` pairs (texts and features) that fill max_len: an upper bound on the cost of real pairs."""
    import numpy as np

    text = " ".join(["text"] * meta.max_len)  # truncated to exactly max_len tokens
    names = model.feature_names
    features = np.zeros((size, len(names))) if names else None
    return [text] * size, [text] * size, features


def _time_folder(model, tokenizer, meta: FoldMeta, *, data: Path | None, rows: int | None, load_s: float,
                 batch_size: int, device) -> Timing:
    from kagglekit.data.batching import PairEncodings
    from kagglekit.kaggle import amp_dtype, resolve_precision

    if data is not None:
        (text_a, text_b, features), test_rows = _test_sample(model, meta, data, SAMPLE_ROWS)
        rows = rows or test_rows
    else:
        text_a, text_b, features = _synthetic_sample(model, meta, min(SAMPLE_ROWS, rows))
    options = dict(batch_size=batch_size, device=device, amp_dtype=amp_dtype(resolve_precision("auto", device)),
                   activation=meta.activation, values=meta.output.values)
    warm = 2  # a first pass of two rows sets up kernels, the allocator and caches outside the timing
    time_inference(model, PairEncodings(tokenizer, text_a[:warm], text_b[:warm], meta.max_len,
                                        features=None if features is None else features[:warm]), **options)
    encodings = PairEncodings(tokenizer, text_a, text_b, meta.max_len, features=features)
    seconds = time_inference(model, encodings, **options)
    return Timing(load_s=load_s, sample_s=seconds, sample_rows=len(encodings), rows=rows)


def check_folder(folder: Path, *, device, data: Path | None = None, rows: int | None = None,
                 batch_size: int = 64) -> tuple[Check, Timing | None]:
    """A model folder is complete and loads offline; with `data` or `rows`, also time a sample of predictions."""
    import torch

    from kagglekit.models.pair_model import load_model_folder

    name = f"model {folder}"
    missing = missing_files(folder)
    if missing:
        return Check("fail", name, f"incomplete: missing {'; '.join(missing)}. Re-download or re-attach the model "
                                   "dataset (uploads need --dir-mode zip to keep the fold*/ folders)."), None
    start = time.perf_counter()
    try:
        model, tokenizer, meta = load_model_folder(folder, device=device)
    except Exception as err:  # a diagnostic reports every failure as a line instead of stopping at the first
        return Check("fail", name, f"does not load offline: {type(err).__name__}: {err}"), None
    load_s = time.perf_counter() - start
    found = f"complete, loads offline in {load_s:.1f} s (task {meta.task}, max_len {meta.max_len})"
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


def inference_time_check(timings: Sequence[Timing], *, synthetic: bool) -> Check:
    """The summed estimate of every timed folder against Kaggle's 9-hour limit."""
    total = sum(t.estimate_s() for t in timings)
    rows = timings[0].rows
    per_row_ms = 1000 * sum(t.sample_s / t.sample_rows for t in timings) / len(timings)
    share = total / KAGGLE_LIMIT_S
    sample = "synthetic pairs of max_len tokens, an upper bound" if synthetic else f"timed on {timings[0].sample_rows} rows from the test file"
    found = (f"~{duration(total)} for {rows} rows with {len(timings)} model folder(s) ({per_row_ms:.2f} ms per row per "
             f"folder, {sample}): {share:.0%} of Kaggle's 9 h limit")
    fix = "use fewer folds or models, a smaller max_len, a larger batch size, or a faster GPU"
    if share > 1:
        return Check("fail", "inference time", f"{found}; the run would be stopped before it finishes: {fix}.")
    if share > WARN_SHARE:
        return Check("warn", "inference time", f"{found}; little margin for a slower machine: {fix}.")
    return Check("ok", "inference time", found)


# ---------------------------------------------------------------------------------------------- entry points


def diagnose(models: Sequence[str | os.PathLike] = (), data: str | os.PathLike | None = None, rows: int | None = None,
             *, batch_size: int = 64) -> Iterator[Check]:
    """Run every check, yielding each result as soon as it is known.

    Args:
        models: run folders (their ``fold*/``) or model folders to check and time.
        data: a test CSV: its first rows are timed, and its row count is the test size unless `rows` is given.
        rows: the test size to extrapolate to (e.g. the hidden test set's); without `data`, synthetic pairs are timed.
        batch_size: rows per forward pass, as given to predict.

    Raises:
        ValueError, FileNotFoundError: `rows` or `batch_size` is not positive, `data` is not a file, or a models path
            is not a folder.
    """
    from kagglekit._io import check_file

    if rows is not None and rows < 1:
        raise ValueError(f"--rows must be a positive number of test rows, got {rows}: pass the test set's size, e.g. --rows 12000.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be 1 or more, got {batch_size}.")
    if (data is not None or rows is not None) and not models:
        raise ValueError("--data/--rows estimate the inference time of models: pass --models RUN_DIR too.")
    data = None if data is None else check_file(data, "--data")
    folders = {path: model_folders(path) for path in models}  # a path that is no folder stops here, before the checks

    yield from check_versions()
    yield from check_gpu()
    yield check_offline_env()
    yield from _model_checks(folders, data=data, rows=rows, batch_size=batch_size)


def _model_checks(folders: dict, *, data: Path | None, rows: int | None, batch_size: int) -> Iterator[Check]:
    from kagglekit.kaggle import resolve_device

    device = resolve_device("auto")
    timings = []
    for path, found in folders.items():
        if not found:
            yield Check("fail", f"model {path}", "neither a model folder (no kagglekit.json) nor a run folder (no fold*/ "
                                                 "inside): pass the folder of the attached model dataset that holds fold*/.")
        for folder in found:
            check, timing = check_folder(folder, device=device, data=data, rows=rows, batch_size=batch_size)
            yield check
            if timing is not None:
                timings.append(timing)
    if timings:
        yield inference_time_check(timings, synthetic=data is None)


def run_doctor(models: Sequence[str | os.PathLike] = (), data: str | os.PathLike | None = None, rows: int | None = None,
               *, batch_size: int = 64, out: Callable[[str], None] = print) -> int:
    """Print one line per check and return the exit status: 1 when any check failed, else 0.

    Arguments as for `diagnose`.

    Example:
        >>> if run_doctor(["runs/uspppm"], "data/test.csv") != 0:
        ...     raise RuntimeError("kagglekit doctor: a check failed")
    """
    failed = False
    for check in diagnose(models, data, rows, batch_size=batch_size):
        out(check.line())
        failed |= check.status == "fail"
    return int(failed)


def _cmd_doctor(args: argparse.Namespace) -> int:
    return run_doctor(args.models, args.data, args.rows, batch_size=args.batch_size)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``kagglekit doctor`` on the command line's subparsers."""
    p = subparsers.add_parser("doctor", help="check versions, GPU, model folders and the inference time against Kaggle's 9 h limit")
    p.add_argument("--models", nargs="+", default=[], metavar="RUN_DIR", help="run folders (or model folders) to check and time")
    p.add_argument("--data", help="test CSV: its first rows are timed and its size extrapolated to")
    p.add_argument("--rows", type=int, help="test size to extrapolate to (e.g. the hidden test set's); alone: synthetic pairs are timed")
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass, as for predict")
    p.set_defaults(func=_cmd_doctor)
    return p
