#!/usr/bin/env python
"""Model zoo on the real-CT benchmark: every registered architecture, one short equal training budget.

    python bench/zoo_quality.py [--minutes 3] [--only unet,u2net] [--out bench/results/zoo_quality]

Each model is trained with FlexUNet's recommended CT recipe (``projects/liver-tumor-ct``: HU window,
2.5D, Dice+CE, AdamW, augmentation, postprocessing) where only ``[model] model`` changes, on the
patient-17 fold of ``bench/quality.py`` (train IRCADb patients 1 and 7 + LiTS 117, hold out IRCADb
patient 17), for ``--minutes`` of training each.  The stages are those of ``bench/quality.py`` (slice,
train, the selection step on the training patients, infer-volume with the selected postprocessing,
evaluate-volume).  A short budget favours small, fast models: the table says how far each
model got (epochs) beside its Dice, and is a ranking under that budget, not of the architectures at
convergence.

Output: ``<out>/zoo_quality.md`` and ``<out>/zoo_quality.json`` (git-ignored), also printed.  With
``--only``, the rows of the other models already in ``<out>/zoo_quality.json`` (same ``--minutes``)
are kept, so one model can be rerun.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import _quality_data as qd  # noqa: E402
import quality  # noqa: E402

_common.ensure_src_on_path()

DEFAULT_OUT = BENCH / "results" / "zoo_quality"


def _fmt(v, nd=3):
    return "-" if v is None else f"{v:.{nd}f}"


def render(report: dict) -> str:
    m = report["meta"]
    lines = ["# Model zoo on the real-CT benchmark", "",
             f"- command: `{m.get('command', '')}`",
             f"- machine: {_common.machine_line(m['machine']) if isinstance(m.get('machine'), dict) else ''}",
             f"- budget: {report['minutes']:g} min of training per model; fold {report['fold']['name']}: "
             f"train {', '.join(report['fold']['train'])}, held out {', '.join(report['fold']['test'])}",
             "- recipe: projects/liver-tumor-ct with only `[model] model` changed", ""]
    rows = []
    for r in report["runs"]:
        case = next(iter((r.get("cases") or {}).values()), None)
        tr = r.get("train") or {}
        rows.append([r["model"], f"{r['params']:,}" if r.get("params") else "-",
                     tr.get("history_epochs", "-") if r.get("ok") else "-",
                     _fmt(case["liver"]["dice"]) if case else "-",
                     _fmt(case["tumour"]["dice"]) if case and case.get("tumour") else "-",
                     _fmt(case["liver"].get("hd95_mm"), 1) if case else "-",
                     "" if r.get("ok") else f"failed: {r.get('error', '')}"[:120]])
    lines.append(_common.md_table(["model", "params", "epochs", "liver Dice", "tumour Dice", "liver HD95 mm",
                                   "note"], rows))
    lines += ["", f"wall time {m.get('wall_minutes', 0):.1f} min"
              + (f"; rows of other models kept from `{report['merged_from']}`" if report.get("merged_from") else "")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--minutes", type=float, default=3.0, help="training minutes per model (default 3)")
    ap.add_argument("--only", default="", help="comma list of model names or aliases (default: all registered)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--cache", default=str(quality.DEFAULT_CACHE))
    ap.add_argument("--data-root", default=str(qd.SHARED_DATA))
    ap.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a config value for every model, repeatable")
    args = ap.parse_args(argv)

    from flexunet.config import load_config
    from flexunet.models import list_models, resolve_name
    from flexunet.models.registry import create_model
    from flexunet.models.summary import count_parameters

    names = ([resolve_name(n.strip()) for n in args.only.split(",") if n.strip()]
             or [e.name for e in list_models()])
    meta = _common.print_header("FlexUNet model zoo on real CT",
                                argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    data = qd.prepare_real(Path(args.cache), Path(args.data_root))
    folds, notes = quality.real_folds(set(data["cases"]), "tumour")
    for n in data["notes"] + notes:
        qd.log(n)
    if not folds:
        print("zoo_quality.py: the tumour fold cannot run (IRCADb patient 17 absent); nothing to do")
        return 0
    fold = folds[0]
    ct_text, ct_src = quality._template(quality.CT_CONFIG)
    base = quality.build_recipes(["b"], ct_text, ct_src, "", "")["b"]
    cfg_model = load_config(quality.CT_CONFIG).model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = quality._parse_sets(args.set)
    ctx = {"out": str(out), "cases": data["cases_dir"], "cases_minmax": data["cases_dir"], "sets": sets,
           "reuse": False, "inprocess": False, "keep_checkpoints": False}
    report = {"meta": meta, "minutes": args.minutes, "fold": dataclasses.asdict(fold), "runs": []}
    old_path = out / "zoo_quality.json"
    if args.only and old_path.exists():  # rerun some models: keep the others' rows of the same budget
        old = json.loads(old_path.read_text())
        if old.get("minutes") == args.minutes:
            report["runs"] = [r for r in old.get("runs", []) if r.get("model") not in names]
            report["merged_from"] = old.get("meta", {}).get("command")
            qd.log(f"keeping {len(report['runs'])} rows of {old_path} ({report['merged_from']})")
    order = {e.name: i for i, e in enumerate(list_models())}
    t0 = time.perf_counter()
    for name in names:
        key = name.replace("TensorFlowFlex", "").lower() or name
        recipe = dataclasses.replace(base, key=key, title=f"{name} with the recommended CT recipe",
                                     sets={**base.sets, "model.model": name})
        try:
            params = count_parameters(create_model(dataclasses.replace(cfg_model, model=name)))
        except Exception as exc:  # reported in the table, the others go on
            params = None
            qd.log(f"{name}: cannot build ({exc})")
        qd.log(f"{name}: {params or '?'} parameters, {args.minutes:g} min")
        try:
            res = quality.run_one(recipe, fold, args.minutes, ctx)
        except Exception as exc:  # keep going: one failed model must not lose the others
            qd.log(f"{name} FAILED: {exc}")
            res = {"ok": False, "error": str(exc)}
        res = {k: v for k, v in res.items() if k != "config_text"}
        report["runs"].append({"model": name, "params": params, **res})
        report["runs"].sort(key=lambda r: order.get(r["model"], len(order)))
        meta["wall_minutes"] = (time.perf_counter() - t0) / 60
        (out / "zoo_quality.md").write_text(render(report))
        _common.save_results("zoo_quality", report, out / "zoo_quality.json")
    text = render(report)
    print(text)
    print(f"wrote {out / 'zoo_quality.md'} and {out / 'zoo_quality.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
