"""Real-CT settings compared on the training side, as one table per budget: each compared setting's
selection figure in every fold beside the shipped CT config's, their means over the folds and the
difference, and the rule's threshold (the largest difference between two seeds of the shipped config in
one fold).

    python bench/quality_settings.py            # writes bench/reports/quality/settings/settings.md

It trains nothing: it reads the run summaries that ``bench/quality.py`` wrote (``bench/reports/quality/runs``
for the shipped config, its augmentation and plane comparisons; ``bench/reports/quality/settings/runs`` for
the ``--selection-only --variant NAME --set ...`` comparisons).  In each fold, budget, seed, validation
set and processor, the shipped config's run is the one of the benchmark's folder with the fewest ``--set``
values (the baseline, or the variant the benchmark ran the fold as: augmentation in fold 7 at 20 minutes),
or, where the benchmark has no run on that processor, the settings folder's; a compared run is named by the
values it sets beyond that run's.  Runs on another processor than the benchmark's own get tables of their
own: the same minutes buy another number of epochs there.  The selection figure is validation liver + tumour
Dice on blocks of the fold's training patients (or on a training case held out whole): no test patient.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import fmt_num  # noqa: E402
from quality import CT_CONFIG, candidate_label, natural_key, selection_score  # noqa: E402

from flexunet.config.loader import load_config  # noqa: E402

REPO = HERE.parent
REPORTS = HERE / "reports" / "quality"


def load_runs(folder: Path) -> list[dict]:
    """The single-model recipe (b) runs of ``folder/runs`` that have a selection figure."""
    out = []
    for f in sorted((folder / "runs").glob("b*.json")):
        s = json.loads(f.read_text())
        score = selection_score(s)
        if s.get("recipe") != "b" or not s.get("ok") or score is None or not isinstance(s.get("seed"), int):
            continue
        valid = s.get("valid")
        out.append({"run": s["run"], "fold": s["fold"], "seed": s["seed"], "budget": float(s["budget_minutes"]),
                    "cpu": cpu_name(s.get("machine")), "precision": (s.get("train") or {}).get("precision"),
                    "valid": ", ".join(valid) + " held out" if isinstance(valid, list) and valid else "blocks",
                    "sets": dict(s.get("variant_sets") or {}), "score": score,
                    "candidates": {r["label"]: r["score"] for r in (s.get("selection") or {}).get("table", [])
                                   if r.get("score") is not None},
                    "epochs": (s.get("train") or {}).get("epochs"),
                    "img_per_s": (s.get("train") or {}).get("img_per_s")})
    return out


def cpu_name(machine) -> str:
    """The processor a run trained on, as its summary's ``machine`` line names it first ("" if unknown):
    a budget in wall-clock minutes buys another number of epochs on another processor, so runs are only
    compared with the shipped config's run on the same one."""
    return str(machine or "").split(" (", 1)[0].strip()


def _short(value) -> str:
    """A setting's value as the tables show it: paths inside this checkout relative to it."""
    return str(value).replace(str(REPO) + os.sep, "")


def build(shipped_runs: list[dict], other_runs: list[dict]) -> dict:
    """``{(budget, valid, cpu): {"folds", "shipped": {seed: {fold: run}}, "compared": {(label, seed): {fold: run}}}}``.

    The shipped run of a fold, budget, seed, validation and processor is the benchmark's run there with the
    fewest ``--set`` values; where the benchmark has none on that processor, the settings folder's run that
    sets the same values as the benchmark's run of that fold (the shipped config run beside the compared
    settings: ``quality.py --selection-only`` with no ``--set``, or fold 7's augmentation alone).  A fold
    with no shipped run on a processor has no row there."""
    groups: dict = {}
    for own, runs in ((True, shipped_runs), (False, other_runs)):
        for r in runs:
            key = (r["budget"], r["valid"], r["cpu"], r["fold"], r["seed"])
            groups.setdefault(key, {True: [], False: []})[own].append(r)
    base, as_run = {}, {}
    for key, by_folder in groups.items():
        runs = by_folder[True]
        if runs:
            fewest = min(len(r["sets"]) for r in runs)
            pick = [r for r in runs if len(r["sets"]) == fewest]
            if len(pick) == 1:
                base[key] = pick[0]
                as_run[key[:2] + key[3:]] = pick[0]["sets"]
    for key, by_folder in groups.items():
        if by_folder[True]:
            continue
        # no benchmark run on this processor: the settings folder's run that sets what the benchmark's run
        # of the fold sets and nothing more (never a compared setting standing in for the shipped config)
        want = as_run.get(key[:2] + key[3:], {})
        pick = [r for r in by_folder[False] if r["sets"] == want]
        if len(pick) == 1:
            base[key] = pick[0]
    tables: dict = {}
    for r in shipped_runs + other_runs:
        ref = base.get((r["budget"], r["valid"], r["cpu"], r["fold"], r["seed"]))
        if ref is None:
            continue
        t = tables.setdefault((r["budget"], r["valid"], r["cpu"]),
                              {"folds": set(), "shipped": {}, "compared": {}, "precision": set()})
        t["folds"].add(r["fold"])
        if r.get("precision"):
            t["precision"].add(r["precision"])
        if r is ref:
            t["shipped"].setdefault(r["seed"], {})[r["fold"]] = r
            continue
        extra = {k: v for k, v in r["sets"].items() if ref["sets"].get(k) != v}
        if not extra:
            continue  # the same settings as the shipped run (a repeat): not a comparison
        label = ", ".join(f"{k}={_short(v)}" for k, v in sorted(extra.items()))
        t["compared"].setdefault((label, r["seed"]), {})[r["fold"]] = r
    return tables


def main_cpu(shipped_runs: list[dict]) -> str:
    """The processor most of the benchmark's own runs trained on: its tables' headings name no processor."""
    names = [r["cpu"] for r in shipped_runs]
    return max(sorted(set(names)), key=names.count) if names else ""


def seed_spread(shipped: dict, folds: list[str]) -> tuple[float, str] | None:
    """The largest difference between two seeds' selection figures of the shipped config in one fold."""
    best = None
    for fold in folds:
        got = {seed: runs[fold]["score"] for seed, runs in shipped.items() if fold in runs}
        if len(got) < 2:
            continue
        hi, lo = max(got, key=got.get), min(got, key=got.get)
        gap = got[hi] - got[lo]
        if best is None or gap > best[0]:
            best = (gap, f"{fold}, seeds {lo} and {hi}")
    return best


def shipped_candidate(config: Path) -> str:
    """The selection step's label of the postprocessing a config ships (its ``[infer]`` values)."""
    i = load_config(config).infer
    return candidate_label({"postprocess": True, "fill_holes": i.fill_holes, "min_tumour_mm3": i.min_tumour_mm3,
                            "tumour_grow": i.tumour_grow, "tumour_grow_beyond": i.tumour_grow_beyond})


def postprocessing_rows(shipped: dict, folds: list[str]) -> list[tuple[str, float, dict]]:
    """Every postprocessing candidate scored in all the shipped runs of a table: its mean selection figure
    over the folds and seeds, and per seed; best first."""
    seeds = [s for s, runs in shipped.items() if all(f in runs for f in folds)]
    labels = None
    for s in seeds:
        for f in folds:
            have = set(shipped[s][f]["candidates"])
            labels = have if labels is None else labels & have
    rows = []
    for label in labels or ():
        per_seed = {s: statistics.fmean(shipped[s][f]["candidates"][label] for f in folds) for s in seeds}
        rows.append((label, statistics.fmean(per_seed.values()), per_seed))
    return sorted(rows, key=lambda r: -r[1])


def render_postprocessing(shipped: dict, folds: list[str], ship_label: str | None, top: int = 5) -> list[str]:
    rows = postprocessing_rows(shipped, folds)
    if not rows:
        return []
    seeds = sorted(rows[0][2])
    L = ["", "Postprocessing (`[infer]`) of the shipped runs: each candidate of the selection step's grid "
         "scored on every fold's validation blocks; mean over the folds" + (" and seeds" if len(seeds) > 1 else ""),
         f"(the {top} best, the shipped config's and none):", "",
         "| postprocessing | rank | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | against shipped |",
         "|---" * (len(seeds) + 4) + "|"]
    ship = next((r for r in rows if r[0] == ship_label), None)
    for rank, (label, mean, per_seed) in enumerate(rows, 1):
        if rank > top and label not in (ship_label, "none"):
            continue
        name = f"{label} (shipped)" if label == ship_label else label
        diff = "–" if ship is None or label == ship_label else fmt_num(mean - ship[1], signed=True)
        L.append(f"| {name} | {rank} | " + " | ".join(fmt_num(per_seed[s]) for s in seeds)
                 + f" | {fmt_num(mean)} | {diff} |")
    return L


def render(tables: dict, ship_label: str | None = None, primary_cpu: str = "") -> str:
    L = ["# Real-CT settings compared on the training side", "",
         "command: `python bench/quality_settings.py` (reads the run summaries of `bench/reports/quality/runs` and "
         "`bench/reports/quality/settings/runs`; each holds its own command and machine)", "",
         "Selection figure: validation liver + tumour Dice of the run's chosen postprocessing, on held-out slice "
         "blocks of the fold's training patients (or a training case held out whole); the test patient is never "
         "read. The shipped row is the CT config as the benchmark runs each fold; a compared row changes the "
         "setting it names and nothing else. Folds are named by their test patient.", ""]
    for (budget, valid, cpu) in sorted(tables, key=lambda k: (k[0], k[1] != "blocks", k[1], k[2] != primary_cpu,
                                                              k[2])):
        t = tables[(budget, valid, cpu)]
        folds = sorted(t["folds"], key=natural_key)
        where = "" if cpu == primary_cpu else f", on {cpu}"
        L += [f"## {budget:g} training minutes per fold, validation: {valid}{where}", ""]
        if cpu:
            L += [f"Trained on {cpu} (precision {', '.join(sorted(t['precision'])) or 'not recorded'}); "
                  "each row against the shipped config's run on the same processor.", ""]
        L += ["| setting | seed | " + " | ".join(folds) + " | mean over the folds | against shipped | "
              "epochs | slices/s |", "|---" * (len(folds) + 6) + "|"]
        ship_mean, compared_mean = {}, {}
        rows = [("shipped CT config", seed, runs) for seed, runs in sorted(t["shipped"].items())]
        rows += [(label, seed, runs) for (label, seed), runs in sorted(t["compared"].items())]
        for label, seed, runs in rows:
            whole = all(f in runs for f in folds)
            mean = statistics.fmean(runs[f]["score"] for f in folds) if whole else None
            if label == "shipped CT config":
                ship_mean[seed] = mean
            elif mean is not None:
                compared_mean[(label, seed)] = mean
            ref = ship_mean.get(seed)
            diff = None if label == "shipped CT config" or mean is None or ref is None else mean - ref
            cells = [fmt_num(runs[f]["score"]) if f in runs else "–" for f in folds]
            epochs = "/".join(str(runs[f]["epochs"]) if f in runs else "–" for f in folds)
            speeds = [runs[f]["img_per_s"] for f in folds if f in runs and runs[f]["img_per_s"]]
            speed = f"{min(speeds):.1f}-{max(speeds):.1f}" if speeds else "–"
            L.append(f"| {label} | {seed} | " + " | ".join(cells) + f" | {fmt_num(mean)} | "
                     f"{fmt_num(diff, signed=True)} | {epochs} | {speed} |")
        if len(ship_mean) > 1 and all(v is not None for v in ship_mean.values()):
            vals = list(ship_mean.values())
            seeds_mean = statistics.fmean(vals)
            L.append(f"\nShipped CT config, {len(vals)} seeds: mean over the folds {seeds_mean:.3f} "
                     f"(per seed {min(vals):.3f}-{max(vals):.3f}).")
            if compared_mean:  # the compared settings against the seeds' mean rather than one seed's
                L.append("Against that mean: " + "; ".join(
                    f"{label} (seed {seed}) {fmt_num(m - seeds_mean, signed=True)}"
                    for (label, seed), m in sorted(compared_mean.items())) + ".")
        spread = seed_spread(t["shipped"], folds)
        if spread:
            L.append(f"\nLargest difference between two seeds of the shipped config in one fold: "
                     f"{spread[0]:.3f} ({spread[1]}).")
        L += render_postprocessing(t["shipped"], folds, ship_label)
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", default=str(REPORTS), help="the benchmark's report folder (bench/reports/quality)")
    ap.add_argument("--settings", default=None, help="the settings' report folder (REPORTS/settings)")
    ap.add_argument("--config", default=str(CT_CONFIG), help="the shipped CT config (its [infer] postprocessing)")
    ap.add_argument("--out", default=None, help="the table's file (SETTINGS/settings.md; '' for none)")
    args = ap.parse_args(argv)
    reports = Path(args.reports)
    settings = Path(args.settings) if args.settings else reports / "settings"
    shipped_runs = load_runs(reports)
    tables = build(shipped_runs, load_runs(settings))
    text = render(tables, shipped_candidate(Path(args.config)), main_cpu(shipped_runs))
    print(text)
    out = settings / "settings.md" if args.out is None else (Path(args.out) if args.out else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
