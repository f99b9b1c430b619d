"""Read the original's INI config into typed, frozen :mod:`~flexunet.config.schema` objects.

Values are Python literals parsed with :func:`ast.literal_eval`; nothing is ever
``eval``-ed.  A bare word (``Adam``, ``./models/``) is taken as a string, but
only when it holds no brackets, quotes or spaces, so ``__import__('os')...`` is
an error, not a string.
"""
from __future__ import annotations

import ast
import configparser
import dataclasses
import difflib
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError
from .rules import LOSS_NAMES, PLANES, context_enabled
from .schema import DEFAULT_RGB_MAP, PATH_KEYS, SECTIONS, Config


class ConfigWarning(UserWarning):
    """An unknown section or key (ignored)."""


class UnusedKeyWarning(ConfigWarning):
    """An original key that FlexUNet accepts but does not act on, set to a value that asks for something."""


#: metric names FlexUNet computes for the original's ``metrics`` keys (any others are not used)
_COMPUTED_METRICS = {
    "model": (("dice_coef_multiclass",), "training reports loss and dice_coef_multiclass"),
    "train": (("dice_coef_multiclass", "val_dice_coef_multiclass"),
              "train_metrics.png plots dice_coef_multiclass and val_dice_coef_multiclass"),
}
#: unused-key warnings already given in this process (each is given once)
_WARNED_UNUSED: set[str] = set()


def unused_keys(raw: Mapping[str, Mapping[str, Any]], cfg: Config) -> list[str]:
    """The original's keys in a config that FlexUNet accepts but does not act on.

    Only values that ask for something FlexUNet does not do are listed: ``[infer] sharpening = True``,
    ``[tiledinfer] bitwise_blending = True`` given in the file, and ``metrics`` names other than the
    ones FlexUNet computes anyway.

    Args:
        raw: the parsed INI, ``{section: {key: value}}``.
        cfg: the config built from it.

    Returns:
        One description per such key (empty when every key given is honoured).
    """
    out = []
    if cfg.infer.sharpening:
        out.append("[infer] sharpening = True (masks are written unsharpened)")
    if raw.get("tiledinfer", {}).get("bitwise_blending") in (True, 1):
        out.append("[tiledinfer] bitwise_blending = True (tiles are blended with a Gaussian window; the "
                   "whole-image mask is not AND-ed in)")
    for section, (computed, what) in _COMPUTED_METRICS.items():
        names = [str(m) for m in getattr(cfg, section).metrics if m not in computed]
        if names:
            out.append(f"[{section}] metrics {', '.join(names)} ({what})")
    return out


_BARE = re.compile(r"^[A-Za-z0-9_.\-/\\:+~]+$")


def parse_literal(text: str, where: str) -> Any:
    """Parse one config value: a Python literal, or a bare safe word taken as a string."""
    text = text.strip()
    if text == "":
        raise ConfigError(f"{where}: empty value; expected a Python literal such as 1, 0.5, \"text\" or (3,3)")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if text in ("true", "false"):
        return text == "true"
    if text in ("none", "null"):
        return None
    if _BARE.match(text):
        return text
    raise ConfigError(f"{where} = {text!r}: not a Python literal; expected a number, a quoted string, "
                      "True/False/None, or a list/tuple/dict of those")


def _closest(name: str, candidates: Iterable[str]) -> str | None:
    cands = list(candidates)
    match = difflib.get_close_matches(name, cands, n=1, cutoff=0.0)
    return match[0] if match else None


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _to_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_to_tuple(v) for v in value)
    return value


def _coerce(where: str, value: Any, annotation: str) -> Any:
    optional = annotation.startswith("Optional[")
    base = annotation[len("Optional["):-1] if optional else annotation
    if value is None:
        if optional or base == "object":
            return None
        raise ConfigError(f"{where} = None: expected {base}")
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where} = {value!r}: expected True or False")
    if base == "int":
        # 1E400 reads as inf and int(inf) raises OverflowError: refuse non-finite values first
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
            raise ConfigError(f"{where} = {value!r}: expected an integer")
        return int(value)
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{where} = {value!r}: expected a finite number")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string")
        return value
    if base == "tuple":
        if isinstance(value, (list, tuple)):
            return _to_tuple(value)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return (value,)
        raise ConfigError(f"{where} = {value!r}: expected a list or tuple")
    if base == "dict":
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a dict")
        return {_to_tuple(k): v for k, v in value.items()}
    return _to_tuple(value)


def _section_from_raw(section: str, raw: Mapping[str, Any], cls: type, source: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    alias_of = {a: f.name for f in fields.values() for a in f.metadata.get("aliases", ())}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = alias_of.get(key, key)
        if name not in fields:
            hint = _closest(key, fields)
            warnings.warn(f"{source}: unknown key [{section}] {key} (ignored); closest known key: {hint}",
                          ConfigWarning, stacklevel=3)
            continue
        f = fields[name]
        where = f"{source}: [{section}] {key}"
        val = _coerce(where, value, _type_name(f.type))
        choices = f.metadata.get("choices")
        if choices and val not in choices:
            # case-insensitive match for names such as "adam"
            lowered = {str(c).lower(): c for c in choices}
            if isinstance(val, str) and val.lower() in lowered:
                val = lowered[val.lower()]
            else:
                raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(map(str, choices))}")
        kwargs[name] = val
    return cls(**kwargs)


def _resolve_paths(section: str, obj: Any, base_dir: Path) -> Any:
    keys = PATH_KEYS.get(section, set())
    changes = {}
    for key in keys:
        val = getattr(obj, key)
        if isinstance(val, str) and val and not os.path.isabs(val):
            changes[key] = str((base_dir / os.path.expanduser(val)).resolve())
        elif isinstance(val, str) and val:
            changes[key] = os.path.expanduser(val)
    return dataclasses.replace(obj, **changes) if changes else obj


def read_ini(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read an INI file into ``{section: {key: literal}}``; raises ConfigError when unreadable."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a config file such as train_eval_infer.config")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.__class__.__name__}: {exc}); expected a UTF-8 INI file")
    return parse_ini(text, str(path))


def parse_ini(text: str, source: str = "<text>") -> dict[str, dict[str, Any]]:
    """Parse INI ``text`` into ``{section: {key: literal}}``; ``source`` names it in error messages."""
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=(";", "#"),
                                       inline_comment_prefixes=(";",), strict=False)
    parser.optionxform = str  # keep key case
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{source}: not a valid INI config ({first})")
    out: dict[str, dict[str, Any]] = {}
    for section in parser.sections():
        out[section] = {}
        for key, text_value in parser.items(section):
            out[section][key] = parse_literal(text_value, f"{source}: [{section}] {key}")
    return out


def config_from_dict(raw: Mapping[str, Mapping[str, Any]], base_dir: str | os.PathLike = ".",
                     source: str = "<dict>") -> Config:
    """Build and validate a :class:`Config` from ``{section: {key: value}}`` (values already parsed).

    Unknown sections and keys give a :class:`ConfigWarning`; the original's keys FlexUNet accepts but
    does not act on (:func:`unused_keys`) give one :class:`UnusedKeyWarning` per config and process.

    Args:
        raw: ``{section: {key: value}}``.
        base_dir: the folder relative paths are resolved against.
        source: the config's name in messages.

    Returns:
        The frozen, validated config.

    Raises:
        ConfigError: a value has the wrong type, is out of range or contradicts another.
    """
    base = Path(base_dir).resolve()
    sections: dict[str, Any] = {}
    for name in raw:
        if name not in SECTIONS:
            hint = _closest(name, SECTIONS)
            warnings.warn(f"{source}: unknown section [{name}] (ignored); closest known section: [{hint}]",
                          ConfigWarning, stacklevel=2)
    for name, cls in SECTIONS.items():
        obj = _section_from_raw(name, raw.get(name, {}), cls, source)
        sections[name] = _resolve_paths(name, obj, base)
    if sections["mask"].rgb_map is None:
        sections["mask"] = dataclasses.replace(sections["mask"], rgb_map=dict(DEFAULT_RGB_MAP))
    if "tiledinfer" in raw and "enabled" not in raw["tiledinfer"]:
        # the original turns tiling on by having the section at all
        sections["tiledinfer"] = dataclasses.replace(sections["tiledinfer"], enabled=True)
    cfg = Config(**sections, base_dir=str(base), source=source)
    validate(cfg)
    unused = unused_keys(raw, cfg)
    message = f"{source}: accepted, not used: {'; '.join(unused)}"
    if unused and message not in _WARNED_UNUSED:
        _WARNED_UNUSED.add(message)
        warnings.warn(message, UnusedKeyWarning, stacklevel=2)
    return cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Load ``path``; ``overrides`` are ``section.key=value`` strings (CLI ``--set``)."""
    raw = read_ini(path)
    for item in overrides:
        apply_override(raw, item, source="--set")
    return config_from_dict(raw, base_dir=Path(path).resolve().parent, source=str(path))


def apply_override(raw: dict[str, dict[str, Any]], item: str, source: str = "--set") -> None:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"{source} {item!r}: expected section.key=value, e.g. train.epochs=5")
    lhs, value = item.split("=", 1)
    section, key = lhs.strip().split(".", 1)
    raw.setdefault(section, {})[key] = parse_literal(value, f"{source} [{section}] {key}")


def default_config(base_dir: str | os.PathLike = ".") -> Config:
    return config_from_dict({}, base_dir=base_dir, source="<defaults>")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Config) -> None:
    """Raise ConfigError on values that are out of range or contradict each other."""
    src, m, t = cfg.source, cfg.model, cfg.train
    rgb = cfg.mask.rgb_map
    for col, cid in rgb.items():
        _check(isinstance(col, tuple) and len(col) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in col),
               f"{src}: [mask] rgb_map key {col!r}: expected an (R,G,B) tuple of ints 0..255")
        _check(isinstance(cid, int) and not isinstance(cid, bool),
               f"{src}: [mask] rgb_map value {cid!r} for {col}: expected an integer class id")
    ids = sorted(set(rgb.values()))
    _check(ids == list(range(len(ids))),
           f"{src}: [mask] rgb_map class ids {ids}: expected consecutive ids 0..{len(ids) - 1}")
    _check(len(ids) == len(rgb), f"{src}: [mask] rgb_map maps two colours to one class; expected one colour per class")
    _check(m.num_classes == len(ids),
           f"{src}: [model] num_classes = {m.num_classes} but [mask] rgb_map has {len(ids)} classes; expected them equal")
    _check(m.num_classes >= 2, f"{src}: [model] num_classes = {m.num_classes}: expected at least 2 (background + 1)")
    for key in ("image_width", "image_height", "base_filters", "num_layers"):
        _check(getattr(m, key) >= 1, f"{src}: [model] {key} = {getattr(m, key)}: expected a positive integer")
    div = 2 ** (m.num_layers - 1)
    for key in ("image_width", "image_height"):
        _check(getattr(m, key) % div == 0,
               f"{src}: [model] {key} = {getattr(m, key)} is not divisible by 2^(num_layers-1) = {div} "
               f"(num_layers = {m.num_layers}); expected a multiple of {div}")
    for key in ("base_kernels", "dilation"):
        val = getattr(m, key)
        _check(len(val) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in val),
               f"{src}: [model] {key} = {val!r}: expected two positive integers, e.g. (3,3)")
    _check(all(k % 2 == 1 for k in m.base_kernels),
           f"{src}: [model] base_kernels = {m.base_kernels!r}: expected odd sizes so 'same' padding is symmetric")
    _check(0.0 <= m.dropout_rate * max(m.num_layers - 1, 1) < 1.0,
           f"{src}: [model] dropout_rate = {m.dropout_rate}: dropout_rate*(num_layers-1) must be in [0, 1)")
    _check(m.learning_rate > 0, f"{src}: [model] learning_rate = {m.learning_rate}: expected > 0")
    _check(m.clipvalue is None or m.clipvalue > 0, f"{src}: [model] clipvalue = {m.clipvalue}: expected > 0")
    _check(m.loss in LOSS_NAMES, f"{src}: [model] loss = {m.loss!r}: expected one of {', '.join(LOSS_NAMES)}")
    _check(t.epochs >= 1, f"{src}: [train] epochs = {t.epochs}: expected >= 1")
    _check(t.batch_size >= 1, f"{src}: [train] batch_size = {t.batch_size}: expected >= 1")
    _check(t.num_workers >= 0, f"{src}: [train] num_workers = {t.num_workers}: expected >= 0")
    _check(t.lr_schedule in ("plateau", "poly"),
           f"{src}: [train] lr_schedule = {t.lr_schedule!r}: expected plateau or poly")
    _check(0 < t.reducer_factor < 1, f"{src}: [train] reducer_factor = {t.reducer_factor}: expected in (0, 1)")
    _check(t.oversample_class is None or (isinstance(t.oversample_class, int) and not isinstance(t.oversample_class, bool)
                                          and 0 < t.oversample_class < m.num_classes),
           f"{src}: [train] oversample_class = {t.oversample_class!r}: expected None or a foreground class id "
           f"1..{m.num_classes - 1}")
    _check(0 < t.oversample_fraction < 1,
           f"{src}: [train] oversample_fraction = {t.oversample_fraction}: expected in (0, 1)")
    if t.patch_size is not None:
        ps = t.patch_size
        _check(len(ps) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in ps),
               f"{src}: [train] patch_size = {ps!r}: expected None or two positive integers (height, width)")
        _check(ps[0] <= m.image_height and ps[1] <= m.image_width,
               f"{src}: [train] patch_size = {ps!r}: expected at most the model's image size "
               f"({m.image_height}, {m.image_width})")
        _check(ps[0] % div == 0 and ps[1] % div == 0,
               f"{src}: [train] patch_size = {ps!r}: expected multiples of 2^(num_layers-1) = {div}")
    _check(0 <= t.patch_foreground_fraction <= 1,
           f"{src}: [train] patch_foreground_fraction = {t.patch_foreground_fraction}: expected in [0, 1]")
    _check(0 <= t.synth_lesions <= 1, f"{src}: [train] synth_lesions = {t.synth_lesions}: expected in [0, 1]")
    _check(0 <= t.ema_decay < 1, f"{src}: [train] ema_decay = {t.ema_decay}: expected in [0, 1) (0: off)")
    _check(0 <= t.context_flip <= 1, f"{src}: [train] context_flip = {t.context_flip}: expected in [0, 1]")
    _check(t.context_flip == 0 or context_enabled(m.image_channels, cfg.slice.context_slices),
           f"{src}: [train] context_flip = {t.context_flip}: expected 0 without 2.5D context "
           f"(image_channels = 3 and [slice] context_slices not False)")
    planes = [str(p).strip().lower() for p in cfg.slice.planes]
    _check(bool(planes) and all(p in PLANES for p in planes),
           f"{src}: [slice] planes = {cfg.slice.planes!r}: expected axial, coronal, sagittal or a list of them")
    _check(not cfg.infer.tta_context_flip or context_enabled(m.image_channels, cfg.slice.context_slices),
           f"{src}: [infer] tta_context_flip = True: expected False without 2.5D context "
           f"(image_channels = 3 and [slice] context_slices not False)")
    for key, lo, integer in (("synth_lesion_count", 1, True), ("synth_lesion_radius", 1, False),
                             ("synth_lesion_contrast", 0, False), ("synth_lesion_half_slices", 1, False)):
        val = getattr(t, key)
        _check(isinstance(val, tuple) and len(val) == 2
               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in val)
               and (not integer or all(isinstance(v, int) for v in val)) and lo <= val[0] <= val[1],
               f"{src}: [train] {key} = {val!r}: expected ({'min, max' if integer else 'low, high'}) with "
               f"{lo} <= min <= max{' (integers)' if integer else ''}")
    _check(t.synth_lesions == 0 or (isinstance(t.synth_lesion_class, int) and not isinstance(t.synth_lesion_class, bool)
                                    and 0 < t.synth_lesion_class < m.num_classes),
           f"{src}: [train] synth_lesion_class = {t.synth_lesion_class!r}: expected a foreground class id "
           f"1..{m.num_classes - 1}")
    _check(t.precision in ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16", "64"),
           f"{src}: [train] precision = {t.precision!r}: expected auto, 32, bf16-mixed or 16-mixed")
    _check(not cfg.mask.class_names or len(cfg.mask.class_names) == m.num_classes,
           f"{src}: [mask] class_names = {cfg.mask.class_names!r}: expected {m.num_classes} names, one per class")
    _check(cfg.mask.mask_file_format.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npz", ".npy"),
           f"{src}: [mask] mask_file_format = {cfg.mask.mask_file_format!r}: expected .png, .jpg, .tif or .npz")
    s = cfg.slice
    _check(len(s.hu_window) == 2 and s.hu_window[0] < s.hu_window[1],
           f"{src}: [slice] hu_window = {s.hu_window!r}: expected (low, high) with low < high")
    _check(len(s.split_ratios) == 3 and all(r >= 0 for r in s.split_ratios) and abs(sum(s.split_ratios) - 1) < 1e-6,
           f"{src}: [slice] split_ratios = {s.split_ratios!r}: expected three non-negative ratios summing to 1")
    _check(0 <= s.background_fraction <= 1,
           f"{src}: [slice] background_fraction = {s.background_fraction}: expected in [0, 1]")
    _check(0 <= cfg.augmentor.probability <= 1,
           f"{src}: [augmentor] probability = {cfg.augmentor.probability}: expected in [0, 1]")
    _check(all(isinstance(w, str) and w.strip() for w in cfg.infer.weights),
           f"{src}: [infer] weights = {cfg.infer.weights!r}: expected a list of checkpoint paths, "
           "e.g. [\"best.pt\", \"last.ckpt\"]")
    _check(cfg.infer.min_tumour_mm3 >= 0,
           f"{src}: [infer] min_tumour_mm3 = {cfg.infer.min_tumour_mm3}: expected >= 0 (mm^3; 0 keeps all)")
    _check(0 <= cfg.infer.tumour_liver_contact <= 1,
           f"{src}: [infer] tumour_liver_contact = {cfg.infer.tumour_liver_contact}: expected in [0, 1] (0: off)")
    _check(cfg.infer.tumour_grow >= 0,
           f"{src}: [infer] tumour_grow = {cfg.infer.tumour_grow}: expected >= 0 (voxel steps; 0: off)")
    _check(cfg.infer.tumour_grow_beyond >= 0,
           f"{src}: [infer] tumour_grow_beyond = {cfg.infer.tumour_grow_beyond}: expected >= 0 (voxels outside the organ)")
    _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(cfg.infer.device)) is not None,
           f"{src}: [infer] device = {cfg.infer.device!r}: expected auto, cpu, cuda or cuda:N")
    _check(cfg.tiledinfer.overlapping >= 0,
           f"{src}: [tiledinfer] overlapping = {cfg.tiledinfer.overlapping}: expected >= 0")


def reference_markdown() -> str:
    """The config reference: every section and key with its default and meaning."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"### [{name}]\n")
        lines.append("| key | default | meaning |\n|---|---|---|")
        for f in dataclasses.fields(cls):
            aliases = f.metadata.get("aliases", ())
            key = f.name + (f" (alias: {', '.join(aliases)})" if aliases else "")
            lines.append(f"| `{key}` | `{f.default!r}` | {f.metadata.get('doc', '')} |")
        lines.append("")
    return "\n".join(lines)
