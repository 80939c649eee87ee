"""kagglekit doctor: each failing condition faked, the exact line and exit status it gives; a good run passes."""

import argparse
import importlib.metadata as md
import os
import re
import shutil

import pytest
import torch

from conftest import ROOT
from kagglekit import kaggle
from kagglekit.tools import doctor
from kagglekit.config import load_config
from kagglekit.data.batching import PairEncodings
from kagglekit.data.recipes import get_recipe
from kagglekit.models.pair_model import load_model_folder
from kagglekit.testing import write_uspppm_sample
from kagglekit.train import train_folds

CU128_ARCHS = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]  # torch 2.8+ cu128
GIB = 1024**3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_uspppm_sample(tmp_path_factory.mktemp("data"), n_anchors=30, targets_per_anchor=4, n_test_anchors=5)


@pytest.fixture(scope="module")
def run(tiny_models, data, tmp_path_factory):
    """A 2-fold run of a tiny bert, 1 epoch, on 120 synthetic rows."""
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = load_config(None, {"task": "uspppm", "train_csv": str(data / "train.csv"), "backbone": str(tiny_models("bert")),
                             "output_dir": str(out), "n_folds": 2, "epochs": 1, "max_len": 32, "batch_size": 16})
    train_folds(cfg, folds="all")
    return out


def doctor_lines(*args, **kwargs) -> tuple[int, list[str]]:
    lines = []
    return doctor.run_doctor(*args, out=lines.append, **kwargs), lines


def line_of(lines: list[str], name: str) -> str:
    found = [line for line in lines if line[6:].startswith(f"{name}: ")]
    assert len(found) == 1, (name, lines)
    return found[0]


def fake_gpu(monkeypatch, name: str, capability: tuple[int, int], archs: list[str], *, free: float = 15 * GIB,
             total: float = 16 * GIB, bf16=lambda including_emulation=True: False) -> None:
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(cuda, "get_arch_list", lambda: archs)
    monkeypatch.setattr(cuda, "mem_get_info", lambda index=None: (free, total))
    monkeypatch.setattr(cuda, "is_bf16_supported", bf16)


# ---------------------------------------------------------------------------------------------- versions


def _kit_installed() -> bool:
    try:
        return md.requires("kagglekit") is not None
    except md.PackageNotFoundError:
        return False


# the supported ranges come from kagglekit's installed metadata (make test installs the kit in editable mode)
needs_metadata = pytest.mark.skipif(not _kit_installed(), reason="kagglekit is not installed: no package metadata")


@needs_metadata

def test_versions_are_checked_against_the_ranges_in_setup_py():
    setup = (ROOT / "setup.py").read_text()
    lines = [check.line() for check in doctor.check_versions()]
    assert len(lines) == 1 + len(doctor.REQUIRED)
    python_spec = re.search(r'python_requires="([^"]+)"', setup)[1]
    assert lines[0] == f"ok    python: {'.'.join(map(str, __import__('sys').version_info[:3]))} (kagglekit supports {python_spec})"
    for name, line in zip(doctor.REQUIRED, lines[1:]):
        spec = re.search(rf'"{name}([<>=][^"]*)"', setup)[1]  # e.g. ">=4.44,<6", written lower bound first
        assert line == f"ok    {name}: {md.version(name)} (kagglekit supports {spec})"


def fake_versions(monkeypatch, **versions):
    """Installed versions as kagglekit.requirements sees them: name=None is not installed, name="x.y" that version."""
    from kagglekit import requirements

    real = requirements.installed_version
    monkeypatch.setattr(requirements, "installed_version", lambda name: versions[name] if name in versions else real(name))


# the same checks the notebooks' install cell runs (kagglekit.requirements), as doctor lines: the fix says to install the
# missing wheel with --no-deps, so that pip changes nothing else of the image
@needs_metadata
def test_a_missing_required_library_fails(monkeypatch):
    fake_versions(monkeypatch, sentencepiece=None)
    status, lines = doctor_lines()
    assert status == 1
    assert line_of(lines, "sentencepiece") == (
        "fail  sentencepiece: not installed; kagglekit needs sentencepiece>=0.1.99: attach a dataset holding a sentencepiece "
        "wheel and pip install --no-index --no-deps <the wheel> (build_wheel.sh --with-deps 'sentencepiece>=0.1.99' bundles "
        "one in the kagglekit dataset)."
    )


@needs_metadata
def test_a_version_outside_the_supported_range_warns_but_passes(monkeypatch):
    fake_versions(monkeypatch, transformers="4.30.0")
    status, lines = doctor_lines()
    assert status == 0
    assert line_of(lines, "transformers") == (
        "warn  transformers: 4.30.0 is outside the range kagglekit supports (>=4.44,<6): attach a dataset holding a "
        "transformers wheel in that range and pip install --no-index --no-deps <the wheel>."
    )


@needs_metadata
def test_a_problem_with_a_requirement_not_listed_by_default_gets_a_line(monkeypatch):
    fake_versions(monkeypatch, pyyaml=None, tqdm="4.0")
    status, lines = doctor_lines()
    assert status == 1
    assert line_of(lines, "pyyaml").startswith("fail  pyyaml: not installed; kagglekit needs pyyaml>=6.0: ")
    assert line_of(lines, "tqdm").startswith("warn  tqdm: 4.0 is outside the range kagglekit supports (>=4.64): ")
    assert not [line for line in lines if line[6:].startswith(("numpy: ", "scipy: "))]  # the others: only when wrong


def test_a_kit_imported_from_a_source_folder_warns(monkeypatch):
    def not_installed(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "requires", not_installed)
    assert [check.line() for check in doctor.check_versions()] == [
        "warn  kagglekit: imported from a source folder, not installed, so its supported version ranges are unknown: "
        "pip install the kagglekit wheel (or pip install -e .)."
    ]


@pytest.mark.parametrize("version, state", [("4.44.0", "ok"), ("4.43.9", "outside"), ("5.0.0rc1", "ok"), ("5.99", "ok"),
                                            ("6.0.0", "outside"), ("6.0.0.dev0", "outside"), ("x.y", "unknown"), (None, "missing")])
def test_version_range_edges(version, state):
    from kagglekit.requirements import status

    assert status("transformers", version, ">=4.44,<6").state == state


# ---------------------------------------------------------------------------------------------- GPU


def test_no_gpu_is_a_warning_not_a_failure(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, lines = doctor_lines()
    assert status == 0
    assert line_of(lines, "gpu").startswith(f"warn  gpu: no CUDA device visible (torch {torch.__version__} is ")
    monkeypatch.setattr(kaggle, "cpu_bf16", lambda: False)
    assert doctor._precision_check().line() == ("ok    precision: no GPU: auto is fp32; fp16 needs a CUDA device; bf16 needs a "
                                                "CUDA device or a CPU with AVX512-BF16/AMX")
    monkeypatch.setattr(kaggle, "cpu_bf16", lambda: True)
    assert doctor._precision_check().line().endswith("; this CPU has bf16 in hardware: precision=bf16 trains about 1.3x faster, "
                                                     "not bit-exact")


def test_bf16_on_a_cpu_is_autocast_where_the_cpu_has_it_and_refused_elsewhere(monkeypatch):
    from kagglekit.kaggle import resolve_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(kaggle, "cpu_bf16", lambda: True)
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(kaggle, "cpu_bf16", lambda: False)
    with pytest.raises(ValueError, match="precision='bf16' on this CPU: it has no bf16 in hardware .* use precision=auto or fp32"):
        resolve_precision("bf16", cpu)
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_p100_with_a_torch_build_without_sm60_fails_and_says_what_to_do(monkeypatch):
    fake_gpu(monkeypatch, "Tesla P100-PCIE-16GB", (6, 0), CU128_ARCHS)
    status, lines = doctor_lines()
    assert status == 1
    assert line_of(lines, "gpu 0") == (
        f"fail  gpu 0: Tesla P100-PCIE-16GB is sm_60, but this torch build ({torch.__version__}) ships kernels only for "
        f"{', '.join(CU128_ARCHS)}: every CUDA operation will fail with 'no kernel image is available'. Switch the "
        "notebook's accelerator to GPU T4 x2 (Settings > Accelerator), or install a torch build that still ships sm_60 "
        "(for Pascal/P100 a CUDA 12.6 build, torch ...+cu126, from an attached wheel dataset)."
    )


def test_t4_on_the_same_build_passes(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4", (7, 5), CU128_ARCHS)
    status, lines = doctor_lines()
    assert status == 0
    assert line_of(lines, "gpu 0") == f"ok    gpu 0: Tesla T4 (sm_75); torch {torch.__version__} has kernels for it"
    assert line_of(lines, "gpu 0 memory") == "ok    gpu 0 memory: 15.0 GiB free of 16.0 GiB"
    assert line_of(lines, "precision") == "ok    precision: fp16 yes, bf16 no; precision=auto picks fp16"


@pytest.mark.parametrize("capability, archs, expected", [
    ((6, 0), ["sm_60", "sm_70"], True),
    ((6, 1), ["sm_60"], True),  # same major, lower minor: binary compatible
    ((8, 6), ["sm_80"], True),
    ((8, 0), ["sm_86"], False),  # a higher minor does not run on a lower one
    ((6, 0), CU128_ARCHS, False),
    ((9, 0), ["sm_80", "compute_80"], True),  # PTX compiles for newer GPUs
    ((7, 5), ["compute_80"], False),  # but not for older ones
    ((10, 0), ["sm_90a"], False),  # sm_90a runs on exactly sm_90
    ((9, 0), ["sm_90a"], True),
    ((12, 0), ["sm_100", "sm_120"], True),
    ((7, 5), [], False),
])
def test_arch_support_follows_cuda_compatibility_rules(capability, archs, expected):
    assert doctor.arch_supported(capability, archs) is expected


def test_bf16_is_reported_only_when_native(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0), CU128_ARCHS, bf16=lambda including_emulation=True: True)
    assert doctor._precision_check().line() == "ok    precision: fp16 yes, bf16 yes; precision=auto picks bf16"
    # newer torch counts emulated bf16 by default: asked plainly a T4 says yes, and auto must still pick fp16
    fake_gpu(monkeypatch, "Tesla T4", (7, 5), CU128_ARCHS, bf16=lambda including_emulation=True: including_emulation)
    assert doctor._precision_check().line() == "ok    precision: fp16 yes, bf16 no; precision=auto picks fp16"
    from kagglekit.kaggle import resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="precision='bf16' is not supported on this GPU"):
        resolve_precision("bf16", torch.device("cuda"))


def test_little_free_gpu_memory_warns(monkeypatch):
    fake_gpu(monkeypatch, "Tesla T4", (7, 5), CU128_ARCHS, free=3 * GIB, total=15 * GIB)
    status, lines = doctor_lines()
    assert status == 0
    assert line_of(lines, "gpu 0 memory") == (
        "warn  gpu 0 memory: 3.0 GiB free of 15.0 GiB: another process or an earlier cell holds the rest; "
        "restart the kernel (or free those models) before training."
    )


# ---------------------------------------------------------------------------------------------- environment


@pytest.mark.parametrize("value, expected", [
    (None, "warn  HF_HUB_OFFLINE: unset: on an offline Kaggle machine"),
    ("0", "warn  HF_HUB_OFFLINE: '0' (hub lookups on): on an offline Kaggle machine"),
    ("1", "ok    HF_HUB_OFFLINE: 1 (no hub lookups)"),
    ("true", "ok    HF_HUB_OFFLINE: true (no hub lookups)"),
])
def test_hf_hub_offline_on_kaggle(monkeypatch, value, expected):
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    if value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
    status, lines = doctor_lines()
    assert status == 0
    assert line_of(lines, "HF_HUB_OFFLINE").startswith(expected)


def test_hf_hub_offline_unset_outside_a_notebook_is_fine(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(doctor, "_in_notebook", lambda: False)
    assert doctor.check_offline_env().line() == "ok    HF_HUB_OFFLINE: unset; kagglekit's commands set it themselves"


# ---------------------------------------------------------------------------------------------- model folders


def test_a_good_run_passes(run, data):
    status, lines = doctor_lines([run], data / "test.csv")
    assert status == 0
    assert all(line[:4] in ("ok  ", "warn") for line in lines), lines
    for fold in ("fold0", "fold1"):
        assert re.fullmatch(rf"ok    model {run / fold}: complete, loads offline in \d+\.\d s \(task uspppm, max_len 32\)",
                            line_of(lines, f"model {run / fold}"))
    assert re.fullmatch(r"ok    inference time: ~\d+ s for 20 rows with 2 model folder\(s\) \(\d+\.\d\d ms per row per folder, "
                        rf"timed on {doctor.SAMPLE_ROWS} rows from the test file\): 0% of the 9.0 h limit", line_of(lines, "inference time"))


@pytest.mark.parametrize("remove, missing", [
    (["model.safetensors"], "model.safetensors"),
    (["kagglekit.json"], "kagglekit.json"),
    (["config.json"], "config.json"),
    (["tokenizer.json", "vocab.txt"], "the tokenizer's vocabulary (tokenizer.json or one of spm.model"),
])
def test_a_fold_with_a_missing_file_fails_and_names_it(run, tmp_path, remove, missing):
    copy = shutil.copytree(run, tmp_path / "run")
    for name in remove:
        (copy / "fold1" / name).unlink()
    status, lines = doctor_lines([copy])
    assert status == 1
    assert line_of(lines, f"model {copy / 'fold0'}").startswith("ok    ")
    assert line_of(lines, f"model {copy / 'fold1'}").startswith(f"fail  model {copy / 'fold1'}: incomplete: missing {missing}")


def test_a_fold_whose_weights_do_not_load_fails(run, tmp_path):
    copy = shutil.copytree(run / "fold0", tmp_path / "fold0")
    (copy / "model.safetensors").write_bytes(b"not safetensors")
    status, lines = doctor_lines([copy])
    assert status == 1
    assert line_of(lines, f"model {copy}").startswith(f"fail  model {copy}: does not load offline: ")


def test_a_folder_that_is_no_run_fails(data):
    status, lines = doctor_lines([data])
    assert status == 1
    assert line_of(lines, f"model {data}").startswith(f"fail  model {data}: neither a model folder")


# ---------------------------------------------------------------------------------------------- inference time


@pytest.fixture
def one_second_per_row(monkeypatch):
    """Every row takes 1 s to predict; records the sample each call received."""
    samples = []

    def fake(model, encodings, **options):
        samples.append(encodings)
        return float(len(encodings))

    monkeypatch.setattr(doctor, "time_inference", fake)
    return samples


@pytest.mark.parametrize("rows, status, expected", [
    (1000, 0, "ok    inference time: ~33 min for 1000 rows with 2 model folder(s) (1000.00 ms per row per folder, "
              "synthetic pairs of max_len tokens, an upper bound): 6% of the 9.0 h limit"),
    (9000, 0, "warn  inference time: ~5.0 h for 9000 rows with 2 model folder(s) (1000.00 ms per row per folder, "
              "synthetic pairs of max_len tokens, an upper bound): 56% of the 9.0 h limit; little margin for a slower "
              "machine: use fewer folds or models, a smaller max_len, a larger batch size, or a faster GPU."),
    (20000, 1, "fail  inference time: ~11.1 h for 20000 rows with 2 model folder(s) (1000.00 ms per row per folder, "
               "synthetic pairs of max_len tokens, an upper bound): 123% of the 9.0 h limit; the run would be stopped "
               "before it finishes: use fewer folds or models, a smaller max_len, a larger batch size, or a faster GPU."),
])
def test_inference_time_extrapolates_the_sample_and_sums_the_folds(run, one_second_per_row, rows, status, expected):
    # 2 folds x rows x 1 s (+ two real loads, well under the rounding): 2000 s, 18000 s (50% < 56%), 40000 s (> 32400 s)
    code, lines = doctor_lines([run], rows=rows)
    assert code == status
    assert line_of(lines, "inference time") == expected


def test_inference_time_takes_the_time_limit_and_the_gpus_predict_spreads_over(run, one_second_per_row, monkeypatch):
    """9000 rows x 2 folds x 1 s = 18000 s: against 4 h it fails; on two GPUs each takes one fold (9000 s)."""
    code, lines = doctor_lines([run], rows=9000, time_limit="4h")
    assert code == 1 and "(1000.00 ms per row per folder, synthetic pairs of max_len tokens, an upper bound): 125% of the 4.0 h limit" \
        in line_of(lines, "inference time")
    from kagglekit.infer import predict

    monkeypatch.setattr(predict, "inference_devices", lambda device="auto", devices=None: ["cuda:0", "cuda:1"])
    code, lines = doctor_lines([run], rows=9000, time_limit=4 * 3600)
    assert code == 0
    assert line_of(lines, "inference time").startswith("warn  inference time: ~2.5 h for 9000 rows with 2 model folder(s) spread over 2 GPUs")
    assert "63% of the 4.0 h limit" in line_of(lines, "inference time")


def test_one_folder_on_two_gpus_takes_half_the_rows_on_each(run, one_second_per_row, monkeypatch):
    """predict cuts a lone folder into a copy per GPU, each on half of the rows: 9000 rows x 1 s / 2 = 4500 s."""
    from kagglekit.infer import predict

    monkeypatch.setattr(predict, "inference_devices", lambda device="auto", devices=None: ["cuda:0", "cuda:1"])
    code, lines = doctor_lines([run / "fold0"], rows=9000, time_limit=4 * 3600)
    assert code == 0
    assert line_of(lines, "inference time").startswith("ok    inference time: ~75 min for 9000 rows with 1 model folder(s) spread over 2 GPUs")
    assert "31% of the 4.0 h limit" in line_of(lines, "inference time")


def test_no_timing_only_checks_that_the_folders_load(run, one_second_per_row):
    """A competition rerun: the folders are checked, nothing is timed, so no time can stop the notebook."""
    code, lines = doctor_lines([run], rows=10**6, timing=False)
    assert code == 0 and one_second_per_row == []
    assert not [line for line in lines if "inference time" in line]
    assert sum(line.startswith("ok    model ") for line in lines) == 2


@pytest.mark.parametrize("limit", ["soon", 0, -5])
def test_a_bad_time_limit_names_the_option(run, limit):
    with pytest.raises(ValueError, match="--time-limit"):
        doctor_lines([run], rows=10, time_limit=limit)


def test_synthetic_pairs_fill_max_len(run, one_second_per_row):
    doctor_lines([run], rows=100)
    warm, sample = one_second_per_row[:2]  # fold0: the warm-up pass, then the timed sample
    assert len(warm) == 2 and len(sample) == 100 and (sample.lengths == 32).all()


@pytest.mark.parametrize("sample_rows", [5, 50])
def test_the_sample_is_the_test_files_first_rows_cycled_when_it_is_shorter(run, data, one_second_per_row, monkeypatch, sample_rows):
    monkeypatch.setattr(doctor, "SAMPLE_ROWS", sample_rows)
    code, lines = doctor_lines([run / "fold0"], data / "test.csv")
    # extrapolated to the whole file: 20 rows x 1 s, whatever the sample's size
    assert code == 0 and f"~20 s for 20 rows with 1 model folder(s) (1000.00 ms per row per folder, timed on {sample_rows} rows" in line_of(lines, "inference time")
    model, tokenizer, meta = load_model_folder(run / "fold0")
    frame = get_recipe("uspppm").read_test(data / "test.csv", meta.recipe_state)
    rows = (list(range(20)) * 3)[:sample_rows]  # 50 rows of a 20-row file: it twice, then its first 10
    expected = PairEncodings(tokenizer, frame["text_a"].iloc[rows], frame["text_b"].iloc[rows], 32)
    assert one_second_per_row[1].input_ids == expected.input_ids


def test_the_estimate_is_measured_without_fakes(run, data, monkeypatch):
    # the same sample through kagglekit.infer.predict.run_inference, timed here: the doctor's figure is of that size
    calls = []
    real = doctor.time_inference

    def timed(model, encodings, **options):
        calls.append(real(model, encodings, **options) / len(encodings))
        return calls[-1] * len(encodings)

    monkeypatch.setattr(doctor, "time_inference", timed)
    _, lines = doctor_lines([run], data / "test.csv", rows=1_000_000)
    per_row_ms = float(re.search(r"\(([\d.]+) ms per row", line_of(lines, "inference time"))[1])
    assert per_row_ms == pytest.approx(1000 * (calls[1] + calls[3]) / 2, abs=0.006)  # calls 0, 2: warm-ups


# ---------------------------------------------------------------------------------------------- command line


def parse(*argv):
    parser = argparse.ArgumentParser(prog="kagglekit")
    doctor.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["doctor", *argv])


def test_command_line_exit_status(run, data, capsys):
    args = parse("--models", str(run), "--data", str(data / "test.csv"))
    assert args.func(args) == 0
    assert f"ok    model {run / 'fold1'}: complete" in capsys.readouterr().out
    broken = parse("--models", str(data))
    assert broken.func(broken) == 1


@pytest.mark.parametrize("argv, error, message", [
    (["--models", "RUN", "--rows", "0"], ValueError, "--rows must be a positive number of test rows, got 0"),
    (["--models", "RUN", "--batch-size", "0"], ValueError, "--batch-size must be 1 or more, got 0."),
    (["--rows", "100"], ValueError, "--data/--rows estimate the inference time of models: pass --models RUN_DIR too."),
    (["--models", "RUN", "--data", "missing.csv"], FileNotFoundError, "--data: file not found: missing.csv"),
    (["--models", "no/such/run"], FileNotFoundError, "--models: folder not found: no/such/run"),
])
def test_bad_arguments_raise_before_any_check(run, capsys, argv, error, message):
    args = parse(*[str(run) if a == "RUN" else a for a in argv])
    with pytest.raises(error, match=re.escape(message)):
        args.func(args)
    assert capsys.readouterr().out == ""  # the CLI turns these into exit status 2 and one line


# ---------------------------------------------------------------------------------------------- output size

LARGE = 435_000_000  # about deberta-v3-large's parameters: fp16 weights 0.87 GB, a resume state 5.2 GB (7.0 GB with EMA)


def size_config(tmp_path, tiny_models, **overrides):
    values = {"task": "uspppm", "backbone": str(tiny_models("bert")), "output_dir": str(tmp_path / "working" / "run"),
              "n_folds": 5, **overrides}
    return load_config(None, values)


@pytest.fixture
def kaggle_dirs(tmp_path, monkeypatch):
    """/kaggle/working and /kaggle/temp in tmp; the disks: {folder: (device, free bytes)} for the fake disk_usage."""
    from kagglekit import kaggle

    monkeypatch.setattr(kaggle, "KAGGLE_WORKING", str(tmp_path / "working"))
    monkeypatch.setenv("KAGGLEKIT_SCRATCH", str(tmp_path / "temp"))
    disks = {tmp_path / "working": (1, 50e9), tmp_path / "temp": (2, 30e9)}

    def disk(path):
        (found,) = [value for folder, value in disks.items() if folder == path or folder in path.parents]
        return found

    monkeypatch.setattr(doctor, "_disk", lambda path: disk(doctor.Path(os.path.abspath(path))))
    return disks


def lines_of(checks) -> list[str]:
    return [check.line() for check in checks]


@pytest.mark.parametrize("arch, overrides", [
    ("bert", {}),
    ("deberta-v2", {"head": "attention", "output": "bins", "num_bins": 7}),
    ("nezha", {"head": "weighted_layers", "feature_columns": "f1,f2"}),
])
def test_the_parameter_count_is_that_of_the_model_trained(tiny_models, tmp_path, arch, overrides):
    from kagglekit.models.pair_model import build_model, save_model_folder
    from kagglekit.run import FoldMeta
    from kagglekit.train.components import model_options

    cfg = load_config(None, {"backbone": str(tiny_models(arch)), "output_dir": str(tmp_path / "run"), **overrides})
    model, tokenizer = build_model(cfg.backbone, **model_options(cfg, cfg.num_bins if cfg.output == "bins" else 1))
    params = sum(p.numel() for p in model.parameters())
    assert doctor.count_parameters(cfg) == params
    # the weights file is the parameters at 4 bytes each, plus a header with the tensors' names
    folder = save_model_folder(model, tokenizer, tmp_path / "fold0", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    assert 0 < (folder / "model.safetensors").stat().st_size - 4 * params < 16_000


def test_the_estimate_adds_weights_per_fold_and_seed_the_resume_state_and_the_embedding_copy(tiny_models, tmp_path, kaggle_dirs):
    embedder = tiny_models("bert")
    cfg = size_config(tmp_path, tiny_models, seeds=3, save_dtype="fp16", ema=0.99, embedding_model=str(embedder))
    estimate = doctor.estimate_output(cfg, [0, 2])
    params = doctor.count_parameters(cfg)
    copy = sum(f.stat().st_size for f in embedder.iterdir() if f.is_file())
    assert estimate == doctor.OutputEstimate(params=params, folds=2, seeds=3, save_dtype="fp16", weights_bytes=2 * params,
                                             embedding_bytes=copy, resume_bytes=16 * params, resume_dir=tmp_path / "temp",
                                             resume_in_output=False)
    assert estimate.output_bytes() == 2 * 3 * 2 * params + copy
    assert estimate.peak_bytes() == (estimate.output_bytes() + 2 * params, 2 * 16 * params)  # a fold folder, a state rewritten


def test_output_that_fits_is_ok_and_says_the_sizes(tiny_models, tmp_path, kaggle_dirs, monkeypatch):
    monkeypatch.setattr(doctor, "count_parameters", lambda cfg: LARGE)
    cfg = size_config(tmp_path, tiny_models, save_dtype="fp16", ema=0.999)
    # 2 folds x 0.87 GB = 1.74 GB; at the peak + 0.87 GB = 2.61 GB, 13% of 20 GB; the resume state: 435e6 x 16 B = 6.96 GB
    assert lines_of(doctor.check_output_size(cfg, "0,1")) == [
        f"ok    output size: ~1.7 GB for 2 folds (fp16 weights 0.87 GB each) + resume state 7.0 GB in {tmp_path / 'temp'}; "
        f"13% of {tmp_path / 'working'}'s 20 GB quota at its peak",
        f"ok    disk space: 2.6 GB of 50.0 GB free for {tmp_path / 'working' / 'run'}; 13.9 GB of 30.0 GB free for "
        f"{tmp_path / 'temp'} (needed at the peak)",
    ]


def test_output_over_the_quota_fails_with_the_fixes(tiny_models, tmp_path, kaggle_dirs, monkeypatch):
    from kagglekit import kaggle

    monkeypatch.setattr(doctor, "count_parameters", lambda cfg: LARGE)
    monkeypatch.setattr(kaggle, "WORKING_QUOTA_BYTES", 10 * 10**9)
    monkeypatch.setenv("KAGGLEKIT_SCRATCH", "")  # no scratch space: resume_dir auto writes into the output
    cfg = size_config(tmp_path, tiny_models, seeds=2)
    run = tmp_path / "working" / "run"
    # 5 folds x 2 seeds x 1.74 GB + 5.22 GB of resume state = 22.6 GB; at the peak + 1.74 + 5.22 = 29.58 GB, 296% of 10 GB
    status, lines = doctor_lines(config=cfg)
    assert status == 1
    assert line_of(lines, "output size") == (
        f"fail  output size: ~22.6 GB for 5 folds x 2 seeds (fp32 weights 1.7 GB each, resume state 5.2 GB in {run / 'resume'}); "
        f"296% of {tmp_path / 'working'}'s 10 GB quota at its peak: the session would stop when the quota is reached. Use "
        "save_dtype=fp16 (halves the weights), fewer folds per session (kagglekit train --fold K, the train notebook's FOLDS), seeds=1, "
        "resume_dir on scratch space outside the output (/kaggle/temp on Kaggle)."
    )
    assert line_of(lines, "disk space") == f"ok    disk space: 29.6 GB of 50.0 GB free for {run} (needed at the peak)"


def test_output_elsewhere_over_the_quota_only_warns(tiny_models, tmp_path, kaggle_dirs, monkeypatch):
    monkeypatch.setattr(doctor, "count_parameters", lambda cfg: LARGE)
    kaggle_dirs[tmp_path / "elsewhere"] = (1, 100e9)
    cfg = size_config(tmp_path, tiny_models, output_dir=str(tmp_path / "elsewhere" / "run"), seeds=3)
    (size, disk) = lines_of(doctor.check_output_size(cfg, "all"))
    assert size.startswith("warn  output size: ~26.1 GB for 5 folds x 3 seeds (fp32 weights 1.7 GB each) + resume state 5.2 GB in ")
    assert size.endswith(f"139% of {tmp_path / 'working'}'s 20 GB quota at its peak: fine for {tmp_path / 'elsewhere' / 'run'}, "
                         "but on Kaggle the output would not fit. There use save_dtype=fp16 (halves the weights), fewer folds "
                         "per session (kagglekit train --fold K, the train notebook's FOLDS), seeds=1.")
    # the output and the scratch folder on one disk: their needs add up
    assert disk == (f"ok    disk space: 27.8 GB of 100.0 GB free for {tmp_path / 'elsewhere' / 'run'}; 10.4 GB of 30.0 GB free "
                    f"for {tmp_path / 'temp'} (needed at the peak)")
    kaggle_dirs[tmp_path / "temp"] = (1, 100e9)  # the same device as the output
    assert lines_of(doctor.check_output_size(cfg, "all"))[1] == (
        f"ok    disk space: 38.3 GB of 100.0 GB free for {tmp_path / 'elsewhere' / 'run'} and {tmp_path / 'temp'} (needed at the peak)")


def test_too_little_free_disk_fails(tiny_models, tmp_path, kaggle_dirs, monkeypatch):
    monkeypatch.setattr(doctor, "count_parameters", lambda cfg: LARGE)
    kaggle_dirs[tmp_path / "temp"] = (2, 8e9)  # a resume state of 5.2 GB needs 10.4 GB while it is rewritten
    cfg = size_config(tmp_path, tiny_models, save_dtype="fp16")
    assert lines_of(doctor.check_output_size(cfg, 3))[1] == (
        f"fail  disk space: 1.7 GB of 50.0 GB free for {tmp_path / 'working' / 'run'}; 10.4 GB of 8.0 GB free for "
        f"{tmp_path / 'temp'} (at the peak, when a fold folder or resume state is rewritten): not enough free space for "
        f"{tmp_path / 'temp'}. Free some space."
    )


def test_the_free_space_is_the_disks(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEKIT_SCRATCH", "")
    cfg = size_config(tmp_path, tiny_models)
    disk = lines_of(doctor.check_output_size(cfg, "0"))[1]
    free = shutil.disk_usage(tmp_path).free
    assert re.fullmatch(rf"ok    disk space: [\d.]+ MB of {re.escape(doctor.size_text(free))} free for {re.escape(str(tmp_path / 'working' / 'run'))} "
                        r"\(needed at the peak\)", disk), disk


def test_a_backbone_that_is_not_there_fails_the_size_check(tmp_path):
    cfg = load_config(None, {"backbone": str(tmp_path / "nope"), "output_dir": str(tmp_path / "run")})
    (line,) = lines_of(doctor.check_output_size(cfg))
    assert line.startswith(f"fail  output size: cannot count the parameters of backbone '{tmp_path / 'nope'}': ")


@pytest.mark.parametrize("n, text", [(4.35e9 + 1e6, "4.4 GB"), (0.87e9, "0.87 GB"), (20e9, "20.0 GB"), (673_600, "673.6 kB"),
                                     (2.5e6, "2.5 MB")])
def test_size_text(n, text):
    assert doctor.size_text(n) == text


def test_command_line_with_a_config(tiny_models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAGGLEKIT_SCRATCH", "")
    base = ["--set", f"backbone={tiny_models('bert')}", "--set", f"output_dir={tmp_path / 'run'}", "--set", "n_folds=3"]
    args = parse(*base, "--folds", "0,2")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ok    output size: ~[\d.]+ MB for 2 folds \(fp32 weights [\d.]+ kB each, resume state ", out, re.M), out
    assert re.search(r"^ok    disk space: ", out, re.M)
    everything = parse(*base)  # --folds all by default
    everything.func(everything)
    assert "for 3 folds (fp32" in capsys.readouterr().out
    with_full = parse(*base, "--folds", "0,2,full")  # the full-data fit is one more model folder
    with_full.func(with_full)
    sizes = re.search(r"output size: ~([\d.]+) MB for 2 folds \+ the full fit \(fp32 weights ([\d.]+) kB each", capsys.readouterr().out)
    assert sizes and float(sizes[1]) * 1000 >= 3 * float(sizes[2])


@pytest.mark.parametrize("argv, message", [
    (["--folds", "0,x"], "--fold '0,x': expected a fold number 0..4, a list such as 1,3, 'all', or 'full'"),
    (["--folds", "5"], "--fold 5: out of range for n_folds=5"),
    (["--folds", "1", "--config", ""], "--folds says which folds a training session writes: pass --config CFG (or --set) too."),
])
def test_bad_folds_raise_before_any_check(tiny_models, tmp_path, capsys, argv, message):
    base = [] if "--config" in argv else ["--set", f"backbone={tiny_models('bert')}", "--set", f"output_dir={tmp_path / 'run'}"]
    args = parse(*base, *argv)
    with pytest.raises(ValueError, match=re.escape(message)):
        args.func(args)
    assert capsys.readouterr().out == ""
