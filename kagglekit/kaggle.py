"""The machine the kit runs on: device and precision choice, offline environment, versions, GPU, git commit."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

# --- the platform: where inputs, outputs and scratch space are, and how long a session may run --------

INPUT_ROOT_ENV = "KAGGLEKIT_INPUT_ROOT"  # tests and other platforms point the input root elsewhere
SCRATCH_ENV = "KAGGLEKIT_SCRATCH"  # a scratch folder elsewhere; set to "" for none
KAGGLE_INPUT, KAGGLE_WORKING, KAGGLE_TEMP = "/kaggle/input", "/kaggle/working", "/kaggle/temp"
WORKING_QUOTA_BYTES = 20 * 10**9  # what /kaggle/working may hold (Kaggle: "20 GB")
SESSION_LIMIT_S = 12 * 3600  # an interactive or batch session
RERUN_LIMIT_S = 9 * 3600  # a code competition's rerun on the hidden test set


def input_root() -> Path:
    """Where attached inputs are mounted: ``$KAGGLEKIT_INPUT_ROOT`` when set, else ``/kaggle/input``."""
    return Path(os.environ.get(INPUT_ROOT_ENV) or KAGGLE_INPUT)


def scratch_dir() -> Path | None:
    """Scratch space outside the saved output (``/kaggle/temp`` on Kaggle), or None where there is none.

    ``$KAGGLEKIT_SCRATCH`` overrides it: a folder (created), or an empty value for none.
    """
    if SCRATCH_ENV in os.environ:
        value = os.environ[SCRATCH_ENV].strip()
        if not value:
            return None
        Path(value).mkdir(parents=True, exist_ok=True)
        return Path(value)
    temp = Path(KAGGLE_TEMP)
    return temp if temp.is_dir() and os.access(temp, os.W_OK) else None


def is_competition_rerun() -> bool:
    """True while Kaggle reruns a code competition's notebook on the hidden test set."""
    return os.environ.get("KAGGLE_IS_COMPETITION_RERUN", "").strip().lower() not in ("", "0", "false", "no")


def session_limit() -> int:
    """Seconds the platform gives this session: 9 h in a competition rerun, else 12 h."""
    return RERUN_LIMIT_S if is_competition_rerun() else SESSION_LIMIT_S



def set_offline_env() -> None:
    """Tell huggingface libraries not to try the hub (otherwise a file path costs ~20 s of retries).

    Called by the command line and the notebooks, never at import.
    """
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def resolve_device(name: str = "auto"):
    """``auto`` → the first CUDA device when there is one, else CPU. Returns a torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is visible: set device=auto or cpu, or turn the notebook's GPU on.")
    return torch.device(name)


def visible_gpus() -> list[int]:
    """Indices of the CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applies); [] without CUDA."""
    import torch

    return list(range(torch.cuda.device_count()))


def native_bf16() -> bool:
    """bf16 in hardware (A100, H100), not the emulation that torch >= 2.4 counts by default: asked
    plainly, a T4 answers True, and auto precision would pick a slow emulated bf16 there."""
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4: no such argument, and no emulation counted
        return torch.cuda.is_bf16_supported()


def cpu_bf16() -> bool:
    """bf16 dot products in the CPU's hardware (AVX512-BF16: AMD Zen 4 and later, Intel Cooper Lake; AMX: Intel
    Sapphire Rapids and later), where bf16 autocast makes a training step about 1.3x faster than fp32
    (`benchmarks/cpu_speed.py`). Elsewhere torch emulates it, slower than fp32."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_precision(name: str, device) -> str:
    """Pick fp32, fp16 or bf16 for `device`.

    ``auto`` gives fp16 (with GradScaler) on CUDA devices without bf16 (T4, P100), bf16 on those
    with it (A100, H100), and fp32 on CPU, where results are then exact and repeatable. ``bf16`` on a
    CPU is autocast on one with bf16 in hardware (`cpu_bf16`), refused on another; fp16 needs CUDA.
    """
    if name == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if native_bf16() else "fp16"
    if name == "bf16" and device.type == "cpu":
        if not cpu_bf16():
            raise ValueError("precision='bf16' on this CPU: it has no bf16 in hardware (AVX512-BF16 or AMX), so torch would "
                             "emulate it, slower than fp32: use precision=auto or fp32.")
        return name
    if name in ("fp16", "bf16") and device.type != "cuda":
        raise ValueError(f"precision={name!r} needs a CUDA device, but the device is {device}: use precision=auto or fp32.")
    if name == "bf16" and not native_bf16():
        raise ValueError("precision='bf16' is not supported on this GPU (T4 and P100 have no bf16): use precision=fp16 or auto.")
    return name


def amp_dtype(precision: str):
    """The autocast dtype for a resolved precision; None for fp32 (autocast off)."""
    import torch

    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return f"cuda:{index} {torch.cuda.get_device_name(index)} (sm_{major}{minor})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, for the run card."""
    import importlib.metadata as md

    import kagglekit

    out = {"python": sys.version.split()[0], "kagglekit": kagglekit.__version__}
    for name in ("torch", "transformers", "tokenizers", "sentencepiece", "safetensors", "numpy", "pandas", "scikit-learn"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | os.PathLike = ".") -> str | None:
    """The HEAD commit of the git work tree holding `path`, for the run card.

    A ``-dirty`` suffix says tracked files differ from that commit (untracked files do not count), so
    the commit alone would not reproduce the code.

    Args:
        path: any file or folder inside the work tree (default: the working directory).

    Returns:
        The full commit hash, e.g. ``"3f2c...e1"`` or ``"3f2c...e1-dirty"``; None outside a git work
        tree, for a path the repository ignores, in a repository with no commit yet, or where the
        ``git`` binary is missing or fails.
    """
    import shutil
    import subprocess

    git = shutil.which("git")
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        folder = os.path.dirname(folder) or "."
    if git is None or not os.path.isdir(folder):
        return None

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run([git, "-C", folder, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "--verify", "--quiet", "HEAD")
    # an ignored path (a package installed into a .venv inside some repository) is not that repository's code
    if not commit or run("check-ignore", "-q", os.path.abspath(path)) is not None:
        return None
    changes = run("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if changes else commit


def gpu_info(device) -> dict | None:
    """The CUDA GPU a run uses, for the run card: None for any other device.

    Args:
        device: a ``torch.device`` (as `resolve_device` returns).

    Returns:
        ``{"name", "memory_gib", "capability", "count", "cuda"}``: the device's name, its total memory
        in GiB (two decimals), its compute capability (``"sm_75"`` for a T4), how many CUDA devices are
        visible (folds may run one per GPU) and the CUDA version torch was built with.
    """
    import torch

    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 2),
        "capability": f"sm_{props.major}{props.minor}",
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
    }
