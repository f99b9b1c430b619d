"""MRC/CCP4 maps (also .mrc.gz): :func:`read_mrc`.

mrcfile stores ``data[z, y, x]``; the volume is ``array[x, y, z]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flexunet.errors import DataError
from flexunet.io.orientation import Volume, as_label_array, axcodes_affine, short_error

__all__ = ["read_mrc"]


def read_mrc(path: str | os.PathLike, spacing=None, *, label: bool = False, axcodes: str | None = None) -> Volume:
    """Read an MRC/CCP4 map (also .mrc.gz) with mrcfile.

    mrcfile returns ``data[section, row, column]`` = ``(z, y, x)`` for the
    standard axis mapping; the volume is indexed ``(x, y, z)`` (MAPC/MAPR/MAPS
    are honoured if they differ from 1/2/3).  Voxel size per axis: the
    header's ``voxel_size`` when non-zero, else ``spacing`` (a number or a
    3-sequence in mm), else 1 mm.  The header's numbers are taken as
    millimetres (MRC nominally uses ångström; CT tools that write MRC, such as
    the LiTS-117 package, store mm or nothing).  MRC has no patient
    orientation: the affine is diagonal (axis directions taken as RAS) with the
    header ``origin`` as translation, unless ``axcodes`` names where the
    (x, y, z) axes point, e.g. ``"SLP"`` for the LiTS-117 crop.
    """
    import mrcfile

    p = Path(path)
    try:
        with mrcfile.open(str(p), mode="r", permissive=True) as mrc:
            if mrc.data is None:
                raise DataError(f"{p}: holds no data block; expected an MRC volume")
            data = np.array(mrc.data)
            hdr = mrc.header.copy()
            vs = mrc.voxel_size
            voxel = np.array([float(vs.x), float(vs.y), float(vs.z)])
            origin = np.array([float(hdr.origin.x), float(hdr.origin.y), float(hdr.origin.z)])
            axmap = (int(hdr.mapc), int(hdr.mapr), int(hdr.maps))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{p}: file not found; expected an MRC volume") from None
    except Exception as exc:
        raise DataError(f"{p}: cannot read as MRC ({short_error(exc)}); expected a valid .mrc file") from None
    if data.ndim != 3:
        raise DataError(f"{p}: data has shape {tuple(data.shape)}; expected a 3-D volume")
    arr = data.transpose(2, 1, 0)  # (col, row, section)
    if sorted(axmap) == [1, 2, 3] and axmap != (1, 2, 3):
        perm = np.argsort(axmap)  # data axis holding X, then Y, then Z
        arr = arr.transpose(tuple(int(a) for a in perm))
    arr = np.ascontiguousarray(arr)
    if spacing is None:
        fallback = np.ones(3)
    else:
        fallback = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
        if np.any(~np.isfinite(fallback)) or np.any(fallback <= 0):
            raise DataError(f"{p}: spacing {spacing!r}; expected positive voxel sizes in mm")
    good = np.isfinite(voxel) & (voxel > 0)
    sizes = np.where(good, voxel, fallback)
    aff = axcodes_affine(axcodes or "RAS", sizes, origin if np.all(np.isfinite(origin)) else None,
                         where=f"{p}: axcodes")
    if label:
        arr = as_label_array(arr, str(p))
    else:
        arr = arr.astype(np.float32, copy=False)
    return Volume(arr, aff, hdr, str(p))
