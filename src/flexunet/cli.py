"""``flexunet`` command line: parses arguments and calls one function per command.

Heavy modules (torch, lightning, monai) are imported inside the command
functions, so ``flexunet --help`` answers at once.  Errors from bad input are
one line (``flexunet: error: ...``) with a non-zero exit; ``--debug`` shows
the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

EXIT_INPUT = 2
EXIT_ABORTED = 3
EXIT_INTERNAL = 1


def _config(args):
    from .api import load_config

    return load_config(args.config, overrides=args.set or [])


def cmd_train(args):
    from .api import train, train_summary

    res = train(_config(args), resume=args.resume, quiet=args.quiet)
    if res.get("is_global_zero", True):
        print(train_summary(res))


def cmd_evaluate(args):
    from .api import evaluate

    evaluate(_config(args), weights=args.weights, output_dir=args.output, quiet=args.quiet)


def cmd_infer(args):
    from .api import infer

    res = infer(_config(args), weights=args.weights, tiled=True if args.tiled else None,
                keep_going=args.keep_going, quiet=args.quiet)
    return _report_failures(res["failures"])


def _report_failures(failures) -> int:
    if not failures:
        return 0
    print(f"flexunet: {len(failures)} file(s) failed:", file=sys.stderr)
    for name, msg in failures:
        print(f"  {msg}" if str(name) in msg else f"  {name}: {msg}", file=sys.stderr)
    return EXIT_INPUT


def cmd_stats(args):
    from .config import default_config, load_config
    from .data.stats import run_stats

    cfg = load_config(args.config) if args.config else default_config()
    out = args.output or os.path.join(args.dataset_dir, "dataset_statistics.png")
    run_stats(args.dataset_dir, cfg, out)


def _spacing_arg(text: str):
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (1, 3) or not all(v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number or three, e.g. 1.45 or 0.8,0.8,2.5")
    return vals[0] if len(vals) == 1 else tuple(vals)


def cmd_import(args):
    from .data.importers import import_dataset

    manifest = import_dataset(args.format, args.src, args.dst, progress=not args.quiet,
                              mrc_spacing=args.spacing, mrc_axcodes=args.axcodes)
    print(f"wrote {manifest}")


def cmd_phantom(args):
    from .api import write_phantoms

    manifest = write_phantoms(args.dst, cases=args.cases, seed=args.seed)
    print(f"wrote {args.cases} phantom cases, manifest {manifest}")


def cmd_slice(args):
    from .api import slice_cases

    slice_cases(_config(args), quiet=args.quiet)


def cmd_infer_volume(args):
    from .api import infer_volumes

    res = infer_volumes(_config(args), args.inputs, args.output, weights=args.weights,
                        postprocess=not args.no_postprocess, keep_going=args.keep_going, quiet=args.quiet,
                        num_parts=args.num_parts, part_id=args.part_id, statistics=args.statistics,
                        report=args.report, output_format=args.output_format, series_uid=args.series)
    if not args.quiet and res.get("statistics_csv"):
        print(f"wrote {res['statistics_csv']} and {len(res['statistics'])} <case>.json")
    if not args.quiet and res.get("reports"):
        print(f"wrote {len(res['reports'])} report(s): {', '.join(res['reports'][:3])}"
              f"{', ...' if len(res['reports']) > 3 else ''}")
    return _report_failures(res["failures"])


def cmd_evaluate_volume(args):
    from .api import evaluate_volumes
    from .metrics.volume_eval import format_table

    out = args.output or args.pred_dir
    res = evaluate_volumes(args.pred_dir, args.gt_dir, output_dir=out)
    print(format_table(res))
    print(f"wrote {os.path.join(out, 'volume_metrics.csv')} and volume_metrics.json")


def cmd_models(args):
    from .config import default_config, load_config
    from .models.summary import format_models_table, models_table

    cfg = load_config(args.config) if args.config else default_config()
    import dataclasses

    m = dataclasses.replace(cfg.model, image_width=args.size, image_height=args.size)
    rows = models_table(m, size=args.size, flops=not args.no_flops)
    print(format_models_table(rows))


def cmd_augment_preview(args):
    from .data.preview import preview_from_config

    out = preview_from_config(_config(args), n=args.n, out_png=args.output, seed=args.seed)
    print(f"wrote {out}")


def cmd_demo(args):
    from .api import run_demo

    res = run_demo(args.dir, minutes=args.minutes, cases=args.cases, quiet=args.quiet, overrides=args.set or [])
    return 0 if all(res["verdict"].values()) or not args.strict else EXIT_ABORTED


def cmd_export(args):
    from .api import export_onnx

    out = export_onnx(_config(args), args.output, weights=args.weights, int8=args.int8)
    print(f"wrote {out}")


def cmd_config_doc(args):
    from .config import reference_markdown

    print(reference_markdown())


def add_weights(sp: argparse.ArgumentParser) -> None:
    """``--weights`` of the commands that run a trained model (evaluate, infer, infer-volume)."""
    sp.add_argument("--weights", action="append", metavar="CKPT",
                    help="checkpoint; repeat for an ensemble (softmax averaged) (default: [infer] weights, "
                         "else model_dir/best.pt)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flexunet", description="Liver and liver-tumour CT segmentation "
                                "(successor of TensorFlowFlexUNet; reads its train_eval_infer.config).")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("config", help="train_eval_infer.config")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=2 (repeatable)")
        sp.set_defaults(func=fn)
        return sp

    sp = with_config("train", cmd_train, "train the [model] on [train]/[valid]")
    sp.add_argument("--resume", action="store_true", help="continue from model_dir/last.ckpt")
    sp = with_config("evaluate", cmd_evaluate, "evaluate the model ([infer] weights, default best.pt) on [test]: "
                                                    "evaluation.csv/.json")
    add_weights(sp)
    sp.add_argument("--output", help="folder of evaluation.csv (default: the config's folder)")
    sp = with_config("infer", cmd_infer, "segment [infer] images_dir into palette PNGs and overlays")
    add_weights(sp)
    sp.add_argument("--tiled", action="store_true", help="sliding-window inference for large images")
    sp.add_argument("--keep-going", action="store_true", help="report failing files and continue")

    sp = sub.add_parser("stats", help="dataset statistics chart and class fractions")
    sp.add_argument("dataset_dir", help="folder with train/valid/test x images/masks")
    sp.add_argument("--config", help="config giving rgb_map (default: black/blue/red)")
    sp.add_argument("--output", help="PNG path (default: DATASET_DIR/dataset_statistics.png)")
    sp.set_defaults(func=cmd_stats)

    sp = sub.add_parser("import", help="import CT datasets into canonical case folders")
    sp.add_argument("format", choices=["lits", "kaggle", "msd", "ircadb", "mrc"])
    sp.add_argument("src")
    sp.add_argument("dst")
    sp.add_argument("--spacing", type=_spacing_arg, default=None, metavar="MM",
                    help="mrc: voxel size in mm when the header has none (one number or X,Y,Z)")
    sp.add_argument("--axcodes", default=None, metavar="XYZ",
                    help="mrc: where the array axes point, e.g. SLP (default RAS; MRC has no orientation)")
    sp.set_defaults(func=cmd_import)

    sp = sub.add_parser("phantom", help="generate synthetic abdominal CT cases (NIfTI, labels 0/1/2)")
    sp.add_argument("dst")
    sp.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_phantom)

    with_config("slice", cmd_slice, "cut [slice] cases into the 2D train/valid/test layout, split by patient")

    sp = with_config("infer-volume", cmd_infer_volume, "segment CT volumes (NIfTI/DICOM/MRC) into label NIfTI")
    sp.add_argument("inputs", nargs="+", help="volumes: .nii/.nii.gz files, DICOM folders or .zip, .mrc")
    sp.add_argument("--output", required=True, help="output folder for <case>.nii.gz")
    add_weights(sp)
    sp.add_argument("--no-postprocess", action="store_true", help="skip largest-component / hole filling")
    sp.add_argument("--keep-going", action="store_true", help="report failing volumes and continue")
    sp.add_argument("--series", metavar="UID", default=None,
                    help="the SeriesInstanceUID to read from a DICOM folder or zip holding several series")
    sp.add_argument("--num-parts", type=int, default=1, metavar="N",
                    help="split the inputs into N parts (for a job array over machines; default 1)")
    sp.add_argument("--part-id", type=int, default=0, metavar="K",
                    help="segment part K (0..N-1): every N-th input from the K-th on (default 0)")
    sp.add_argument("--statistics", action="store_true",
                    help="also write <case>.json (volumes, burden, HU, lesion table, model), <case>_lesions.csv "
                         "and one row per case in statistics.csv")
    sp.add_argument("--report", action="store_true",
                    help="also write <case>.html: a self-contained report with overlays and the lesion table")
    sp.add_argument("--output-format", default="nifti", metavar="FORMAT",
                    help="nifti (<case>.nii.gz, default), dicom-seg (<case>.seg.dcm, DICOM input only) or "
                         "nifti,dicom-seg")

    sp = sub.add_parser("evaluate-volume", help="LiTS metrics of label volumes against ground truth")
    sp.add_argument("pred_dir")
    sp.add_argument("gt_dir")
    sp.add_argument("--output", help="folder for volume_metrics.csv/json (default: PRED_DIR)")
    sp.set_defaults(func=cmd_evaluate_volume)

    sp = sub.add_parser("models", help="list registered architectures with parameters and GFLOPs")
    sp.add_argument("--config", help="config whose [model] section sizes the models")
    sp.add_argument("--size", type=int, default=256)
    sp.add_argument("--no-flops", action="store_true")
    sp.set_defaults(func=cmd_models)

    sp = with_config("augment-preview", cmd_augment_preview, "grid PNG of augmented training samples")
    sp.add_argument("--n", type=int, default=16)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--output", help="PNG path (default: eval_dir/augment_preview.png)")

    sp = sub.add_parser("demo", help="phantom -> slice -> train -> evaluate -> infer-volume -> evaluate-volume")
    sp.add_argument("dir", nargs="?", default="demo_run", help="working folder (default: demo_run)")
    sp.add_argument("--minutes", type=float,
                    help="training time cap in minutes (default: the demo config's 11; it trains 29 epochs within it)")
    sp.add_argument("--cases", type=int, default=10,
                    help="phantom cases, at least 3 (default 10: the demo config trains on 7, validates on 1, "
                         "tests on 2; other counts test on the last two (one below 5) and validate on the one before)")
    sp.add_argument("--strict", action="store_true", help="exit non-zero when the Dice targets are not met")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a value of the demo config in every step, e.g. --set model.loss=dice_ce")
    sp.set_defaults(func=cmd_demo)

    sp = with_config("export", cmd_export, "write the model as ONNX with its preprocessing contract in the metadata")
    add_weights(sp)
    sp.add_argument("--output", required=True, help="the .onnx file to write")
    sp.add_argument("--int8", action="store_true",
                    help="quantize to int8, calibrated on up to 64 [valid] (else [train]) images")

    sp = sub.add_parser("config-doc", help="print the config reference (markdown)")
    sp.set_defaults(func=cmd_config_doc)
    return p


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"flexunet: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # global flags are accepted anywhere on the line: `flexunet train CONFIG --debug` works too
    flags = [a for a in argv if a in ("--debug", "--quiet")]
    rest = [a for a in argv if a not in ("--debug", "--quiet")]
    args = build_parser().parse_args(flags + rest)
    # PyTorch's OpenMP threads spin while they wait; on a small machine shared with DataLoader
    # workers or other jobs a spinning thread steals its partner's core (bench/speed.py measured
    # inference 3.5x faster with PASSIVE under such load). Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .errors import FlexUNetError, TrainingAborted, one_line, unwrap_worker_error

    if not args.debug:
        _one_line_warnings()
    try:
        rc = args.func(args)
        return int(rc or 0)
    except TrainingAborted as exc:
        if args.debug:
            raise
        print(f"flexunet: stopped: {one_line(exc)}", file=sys.stderr)
        return EXIT_ABORTED
    except FlexUNetError as exc:
        if args.debug:
            raise
        print(f"flexunet: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("flexunet: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file system problem (unwritable output, disk full, ...): the path and the reason
        if args.debug:
            raise
        if exc.filename is None:
            print(f"flexunet: error: {exc.__class__.__name__}: {one_line(exc)} (run with --debug for the traceback)",
                  file=sys.stderr)
            return EXIT_INTERNAL
        print(f"flexunet: error: {exc.filename}: {exc.strerror or exc} ({exc.__class__.__name__}); "
              "expected a readable input and a writable output path", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        plain = unwrap_worker_error(exc)
        first = str(plain).strip().splitlines()[0] if str(plain).strip() else ""
        print(f"flexunet: error: {exc.__class__.__name__}: {first} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
