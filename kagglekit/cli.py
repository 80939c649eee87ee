"""The command line: ``kagglekit tiny-model | id-vocab | train | pretrain | predict | ensemble | export | report | doctor`` (also ``python -m kagglekit``).

Each command imports what it needs when it runs, so ``kagglekit --help`` is instant. Bad input
exits with status 2 and one line that names the file, column or key and the fix.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings


def _cmd_tiny_model(args) -> int:
    from kagglekit.testing import build_tiny_model

    path = build_tiny_model(args.arch, args.out, seed=args.seed)
    print(f"wrote a tiny {args.arch} model folder: {path}")
    return 0


def _cmd_train(args) -> int:
    from kagglekit.config import load_config
    from kagglekit.discover import resolve_paths
    from kagglekit.train import train_folds
    from kagglekit.train.parallel import FoldsFailed

    cfg = load_config(args.config, args.set)
    values = cfg.to_dict()
    found = resolve_paths(values)  # "auto" and bare file names (a built-in config's): found under the input root
    if found != values:
        cfg = load_config(None, found)
    try:
        card = train_folds(cfg, folds=args.fold, resume=args.resume)
    except FoldsFailed as err:  # folds that failed in their own processes (one fold per GPU), named with their logs
        print(f"kagglekit train: error: {err}", file=sys.stderr)
        return 1
    print(f"run folder: {cfg.output_dir}")
    if "cv" in card:
        print(f"cv ({card['metric']}, folds {card['cv_folds']}): {card['cv']:.4f}")
    stopped = card.get("stopped")
    if stopped:  # a clean stop before the session's end: exit 0 so the saved version succeeds
        print(f"stopped by time_budget: fold(s) {stopped['folds_left']} left (mid-way: {stopped['mid_way']}); "
              f"continue with:\n  {stopped['how']}")
    return 0


def _cmd_id_vocab(args) -> int:
    from kagglekit._paths import check_outputs
    from kagglekit.models.ids import build_id_vocab

    check_outputs({"--out": args.out}, {"files": args.files}, folders={"--out"})  # the folder is replaced as a whole
    path = build_id_vocab([str(f) for f in args.files], args.out, min_freq=args.min_freq)
    print(f"wrote an id-text tokenizer folder: {path}")
    return 0


def _cmd_pretrain(args) -> int:
    from kagglekit._paths import check_outputs
    from kagglekit.train.pretrain import load_pretrain_config, run_pretraining

    cfg = load_pretrain_config(args.config, args.set)
    inputs = {"files": cfg.files, "backbone": cfg.backbone or None, "tokenizer_dir": cfg.tokenizer_dir or None}
    check_outputs({"output_dir": cfg.output_dir}, inputs, folders={"output_dir"}, into={"output_dir"})
    result = run_pretraining(cfg, resume=args.resume)
    print(f"pretrained {result['steps']} steps on {result['texts']} texts; final loss {result['final_loss']:.4f}\n"
          f"backbone folder for kagglekit train: {result['last_dir']}")
    return 0


def _cmd_predict(args) -> int:
    from kagglekit.infer.per_fold import predict_per_fold
    from kagglekit.infer.predict import FolderFailed, models_path, predict

    devices = [d for d in args.devices.split(",") if d.strip()] if args.devices is not None else None
    # --per-fold: no blend and no submission but the fold models' rows, kept apart (the teacher file of distillation);
    # the same options, and those that shape a submission are refused
    run = predict_per_fold if args.per_fold else predict
    try:
        sub = run(
            args.models, args.data, args.out, sample_submission=args.sample_submission, average=args.average,
            tta=args.tta, weights=args.weights, batch_size=args.batch_size, device=args.device, precision=args.precision,
            full_weight=args.full_weight, devices=devices, strict=args.strict, base_model=args.base_model or None,
        )
    except FolderFailed as err:  # a model folder that failed on one of several devices, named with its error
        print(f"kagglekit predict: error: {err}", file=sys.stderr)
        return 1
    if args.per_fold:
        print(f"wrote {len(sub)} rows ({sub['id'].nunique()} ids × teacher models {sub['fold'].unique().tolist()}) to {args.out}; "
              f"distil from them with --set teacher_oof={args.out}")
        return 0
    print(f"wrote {len(sub)} rows to {args.out}; each run's predictions to {models_path(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import kagglekit
    from kagglekit.testing import TINY_ARCHS

    parser = argparse.ArgumentParser(prog="kagglekit", description="Kaggle kit for text-pair competitions.")
    parser.add_argument("--version", action="version", version=f"kagglekit {kagglekit.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tiny-model", help="write a tiny random model folder (offline) for dry runs and tests")
    p.add_argument("--arch", required=True, choices=list(TINY_ARCHS))
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_tiny_model)

    p = sub.add_parser("train", help="train folds of a run; writes the run folder")
    p.add_argument("--config", help="YAML config file (keys: see kagglekit.config.Config)")
    p.add_argument("--fold", default="all",
                   help="fold number, a comma-separated list (1,3), or 'all' (default); 'full' fits every row after CV, "
                        "alone or in the list (0,1,full; it trains after the folds)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="skip complete folds; continue an interrupted or time-budget-stopped fold from its saved state")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("id-vocab", help="a tokenizer folder over desensitized id text (task ids), for pretraining from scratch")
    p.add_argument("files", nargs="+", help="id-text files (tab-separated; train and test together)")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--min-freq", type=int, default=1, help="rarer ids become [UNK]")
    p.set_defaults(func=_cmd_id_vocab)

    p = sub.add_parser("pretrain", help="MLM further pretraining (n-gram masking); checkpoints are backbones for train")
    p.add_argument("--config", help="YAML file of pretraining keys (see kagglekit.train.pretrain.PretrainConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the saved state in output_dir/resume")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("predict", help="predict a test file with trained run folders; writes submission.csv")
    p.add_argument("--models", nargs="+", required=True, help="run folders (or model folders)")
    p.add_argument("--data", required=True, help="test CSV")
    p.add_argument("--out", default="submission.csv")
    p.add_argument("--sample-submission", help="sample_submission.csv: its ids and columns must match")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: every visible GPU at once when there are two or more (one model folder per GPU; a lone model "
                        "gets a copy on each, with half of the rows or, with --tta swap, one text order each), else the one device")
    p.add_argument("--devices", metavar="DEV,DEV", help="the devices to spread the model folders over, e.g. cuda:0,cuda:1")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16", "8bit", "4bit"],
                   help="auto: fp16/bf16 on a GPU, fp32 on a CPU; 8bit/4bit: the weights in 8 or 4 bits (CUDA, bitsandbytes)")
    p.add_argument("--average", default="prob", choices=["prob", "logit"],
                   help="average the folds' predictions (prob) or their logits (logit); the same for regression outputs")
    p.add_argument("--tta", default="none", choices=["none", "swap"],
                   help="swap: also predict every pair with its two texts exchanged, and average (runs trained with swap=true)")
    p.add_argument("--weights", help="weights.json from kagglekit ensemble: blend the runs with its weights (and ranks); default: equal")
    p.add_argument("--full-weight", type=float, metavar="W",
                   help="share in [0, 1] of each run's full-data fits (full*/): (1-W)·mean(folds) + W·mean(full); "
                        "default: each full fit counts as one more fold model")
    p.add_argument("--strict", action="store_true",
                   help="refuse a run folder holding anything that is not one of its complete models (a copy such as "
                        "fold0_backup/, an unfinished fold, a folder whose kagglekit.json disagrees); default: skip it with a warning")
    p.add_argument("--base-model", nargs="+", metavar="DIR",
                   help="runs trained with LoRA hold adapters only: their base model's folder (one per base when runs differ); "
                        "checked against the digests recorded at training. Default: the folder recorded at training")
    p.add_argument("--per-fold", action="store_true",
                   help="write every fold model's predictions on --data as rows id, fold, row_fold, pred (+ class logits), "
                        "not a submission: the teacher file for distillation (teacher_oof), e.g. --data train.csv")
    p.set_defaults(func=_cmd_predict)

    from kagglekit.infer.ensemble import add_parser as add_ensemble_parser
    from kagglekit.infer.export import add_parser as add_export_parser

    add_ensemble_parser(sub)
    add_export_parser(sub)

    from kagglekit.tools.merge import add_parser as add_merge_parser
    from kagglekit.tools.report import add_parser as add_report_parser

    add_merge_parser(sub)
    add_report_parser(sub)

    from kagglekit.tools.doctor import add_parser as add_doctor_parser

    add_doctor_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input exits 2 and a problem of the machine 1, each with one line naming the path and the fix.

    ValueError and FileNotFoundError (the user's input) exit 2. Operating-system errors (`kagglekit._paths.os_error_line`):
    a file where a folder is needed, or the reverse, exits 2; no permission, a full or read-only disk
    (`kagglekit._io.StorageError`) and other OS errors exit 1. The kit's own warnings print as one line each.
    """
    from kagglekit.kaggle import set_offline_env

    args = build_parser().parse_args(argv)
    from kagglekit._io import StorageError  # after parsing: --help stays instant
    from kagglekit._paths import os_error_line

    set_offline_env()  # hubs are unreachable: fail fast instead of retrying for ~20 s per file
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warnings(args.command, formatwarning)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:  # TrainingDiverged is a ValueError too
        print(f"kagglekit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except StorageError as err:  # full disk, quota or read-only file system: where, and what to do
        print(f"kagglekit {args.command}: error: {err.strerror}", file=sys.stderr)
        return 1
    except OSError as err:  # a folder where a file belongs, no permission...: the path and the fix
        status, line = os_error_line(err)
        print(f"kagglekit {args.command}: error: {line}", file=sys.stderr)
        return status
    finally:
        warnings.formatwarning = formatwarning


def _one_line_warnings(command: str, default):
    """A `warnings.formatwarning` that prints the kit's own warnings as ``kagglekit CMD: warning: ...`` (others as `default`)."""
    package = os.path.dirname(os.path.abspath(__file__))

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(package + os.sep):
            return f"kagglekit {command}: warning: {' '.join(str(message).split())}\n"
        return default(message, category, filename, lineno, line)

    return formatwarning


if __name__ == "__main__":
    raise SystemExit(main())
