"""``flexunet evaluate``: the test split -> evaluation.csv (original rows first), evaluation.json, a table."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..errors import DataError


def evaluate(cfg, weights: str | list[str] | None = None, out_dir: str | None = None, quiet: bool = False) -> dict:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from ..data.dataset2d import SliceDataset, build_dataloader
    from ..data.images import find_pairs
    from ..metrics.slices import SegmentationMeter, dice_coef_multiclass
    from ..io.atomic import save_output_text
    from ..train.losses import build_loss
    from .common import load_predictor, weight_paths

    if not cfg.test.images_dir or not cfg.test.masks_dir:
        raise DataError(f"{cfg.source}: [test] images_dir and masks_dir are required for evaluate; "
                        "expected folders of test images and masks")
    pairs = find_pairs(cfg.test.images_dir, cfg.test.masks_dir, cfg.mask.mask_file_format)
    predictor = load_predictor(cfg, weights)
    loss_fn = build_loss(cfg.model.loss)
    loader = build_dataloader(SliceDataset(pairs, cfg), batch_size=max(cfg.train.batch_size, 4), shuffle=False,
                              num_workers=min(cfg.train.num_workers, 2))
    meter = SegmentationMeter(cfg.model.num_classes)
    loss_sum, n = 0.0, 0
    for x, y in tqdm(loader, desc="evaluate", disable=quiet, leave=False):
        probs = predictor.probs(x).cpu()
        logits = torch.log(probs.clamp_min(1e-7))  # log-softmax, so CE == the original's loss on probabilities
        loss = float(loss_fn(logits, y))
        onehot = F.one_hot(y, cfg.model.num_classes).permute(0, 3, 1, 2).float()
        soft = float(dice_coef_multiclass(onehot, probs))
        meter.update(probs.argmax(1).numpy(), y.numpy(), soft_dice=soft, n=len(x))
        loss_sum += loss * len(x)
        n += len(x)
    res = meter.compute(cfg.class_names)
    loss_name = cfg.model.loss
    result = {loss_name: loss_sum / max(n, 1), "dice_coef_multiclass": res.pop("dice_coef_multiclass", math.nan)}
    result.update(res)
    result["images"] = n
    out = Path(out_dir) if out_dir else Path(cfg.base_dir)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for k, v in result.items():
        w.writerow([k, f"{v:.4f}" if isinstance(v, float) else v])
    save_output_text(out / "evaluation.csv", buf.getvalue())
    save_output_text(out / "evaluation.json", json.dumps({"metrics": result, "weights": ", ".join(
                 str(p) for p in weight_paths(cfg, weights)), "test_images": str(cfg.test.images_dir),
                 "notes": {"dice_coef_multiclass": "original metric: soft, background included, ~pixel accuracy",
                           "*_dice_mean": "mean over images where the class is in truth or prediction",
                           "*_dice_pooled": "pooled over all test images"}}, indent=1, allow_nan=True))
    if not quiet:
        print(format_table(result))
        print(f"wrote {out / 'evaluation.csv'} and {out / 'evaluation.json'}")
    return result


def format_table(result: dict) -> str:
    width = max(len(k) for k in result)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ------"]
    for k, v in result.items():
        lines.append(f"{k.ljust(width)}  {v:.4f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}")
    return "\n".join(lines)
