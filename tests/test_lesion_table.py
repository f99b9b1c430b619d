"""The lesion table: diameters, volumes, centroids and surface distances of known synthetic ellipsoids."""
import math

import numpy as np
import pytest

from flexunet.errors import DataError
from flexunet.metrics.lesions import axial_axis, lesion_table
from flexunet.metrics.volumetry import volumetry, voxel_volume_ml


def ellipsoid(shape, spacing, centre_mm, semi_mm, angle=0.0):
    """Boolean (X, Y, Z): voxel centres inside an ellipsoid rotated by ``angle`` about z (mm, RAS grid)."""
    x, y, z = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    dx, dy, dz = x - centre_mm[0], y - centre_mm[1], z - centre_mm[2]
    u = math.cos(angle) * dx + math.sin(angle) * dy
    v = -math.sin(angle) * dx + math.cos(angle) * dy
    return (u / semi_mm[0]) ** 2 + (v / semi_mm[1]) ** 2 + (dz / semi_mm[2]) ** 2 <= 1.0


def ellipsoid_ml(a, b, c):
    return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


CASES = [  # in-plane spacing x, y, slice spacing; semi-axes a > b (in plane), c (along z); in-plane angle
    ((0.75, 0.75, 2.5), (14.3, 8.2, 11.0), 0.0),
    ((0.75, 0.75, 2.5), (14.3, 8.2, 11.0), 0.6),
    ((0.7, 0.9, 1.6), (21.7, 12.4, 15.0), 2.2),
    ((1.0, 1.0, 1.0), (9.6, 6.3, 7.1), 0.785),
    ((0.6, 0.6, 3.0), (6.4, 4.1, 9.0), 1.3),
]


@pytest.mark.parametrize("spacing,semi,angle", CASES)
def test_ellipsoid_diameters_volume_and_centroid_within_one_voxel(spacing, semi, angle):
    shape = tuple(int(round(70 / s)) for s in spacing[:2]) + (int(round(60 / spacing[2])),)
    k = shape[2] // 2
    centre = (35.3, 34.6, k * spacing[2])  # centred on a slice: that slice holds the true long axis
    lesion = ellipsoid(shape, spacing, centre, semi, angle)
    labels = np.zeros(shape, np.uint8)
    labels[2:-2, 2:-2, 1:-1] = 1
    labels[lesion] = 2
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-40.0, 12.5, 300.0)
    (les,) = lesion_table(labels, affine)
    pixel = max(spacing[:2])
    assert abs(les.long_axis_mm - 2 * semi[0]) <= pixel, (les.long_axis_mm, 2 * semi[0])
    assert abs(les.short_axis_mm - 2 * semi[1]) <= pixel, (les.short_axis_mm, 2 * semi[1])
    # the measurement slice is the central one, or its neighbour where voxels make that one a hair longer
    assert abs(les.slice - k) <= 1 and les.slice_axis == 2
    # the voxelised volume lies between the ellipsoid shrunk and grown by half a voxel per axis
    half = [s / 2 for s in (pixel, pixel, spacing[2])]
    lo = ellipsoid_ml(*(a - h for a, h in zip(semi, half)))
    hi = ellipsoid_ml(*(a + h for a, h in zip(semi, half)))
    assert lo <= les.volume_ml <= hi and les.voxels == int(lesion.sum())
    assert les.volume_ml == pytest.approx(lesion.sum() * voxel_volume_ml(affine))
    world = np.array(centre) + affine[:3, 3]
    assert np.all(np.abs(np.array(les.centroid_mm) - world) <= np.array(spacing)), (les.centroid_mm, world)
    # the drawn long axis has the measured length
    ends = np.array(les.long_axis_voxels) * np.array(spacing)
    assert np.linalg.norm(ends[1] - ends[0]) == pytest.approx(les.long_axis_mm, rel=1e-6)
    assert ends[0][2] == ends[1][2] == pytest.approx(les.slice * spacing[2])
    short = np.array(les.short_axis_voxels) * np.array(spacing)
    assert np.linalg.norm(short[1] - short[0]) == pytest.approx(les.short_axis_mm, rel=1e-6)
    assert abs(np.dot(short[1] - short[0], ends[1] - ends[0])) < 1e-6 * les.long_axis_mm ** 2  # perpendicular


def _three_lesions():
    spacing = (0.8, 0.8, 2.0)
    shape = (120, 110, 40)
    labels = np.zeros(shape, np.uint8)
    labels[5:-5, 5:-5, 2:-2] = 1
    for centre, semi in (((30, 30, 40), (6, 5, 6)), ((60, 55, 40), (12, 9, 10)), ((30, 60, 36), (4, 4, 4))):
        labels[ellipsoid(shape, spacing, centre, semi)] = 2
    return labels, np.diag([*spacing, 1.0])


def test_lesions_are_sorted_by_volume_with_stable_ids_and_counted_as_volumetry():
    labels, affine = _three_lesions()
    first = lesion_table(labels, affine)
    again = lesion_table(labels.copy(), affine.copy())
    assert [les.as_dict() for les in first] == [les.as_dict() for les in again]
    assert [les.id for les in first] == [1, 2, 3]
    volumes = [les.volume_ml for les in first]
    assert volumes == sorted(volumes, reverse=True)
    assert len(first) == volumetry(labels, voxel_volume_ml(affine)).lesion_count
    assert sum(les.voxels for les in first) == int((labels == 2).sum())
    # the largest is the one centred at (60, 55, 40) mm
    assert np.allclose(first[0].centroid_mm, (60, 55, 40), atol=0.8)


def test_equal_lesions_keep_the_order_of_their_first_voxel():
    labels = np.zeros((40, 40, 10), np.uint8)
    labels[:, :, :] = 1
    labels[20:23, 5:8, 4:6] = 2   # scanned second (larger i)
    labels[5:8, 30:33, 4:6] = 2   # scanned first
    lesions = lesion_table(labels, np.eye(4))
    assert [les.voxels for les in lesions] == [18, 18]
    assert lesions[0].centroid_mm[0] == pytest.approx(6.0) and lesions[1].centroid_mm[0] == pytest.approx(21.0)


def test_a_permuted_and_flipped_grid_measures_the_same_in_world_space():
    spacing, semi, angle = (0.75, 0.75, 2.5), (14.3, 8.2, 11.0), 0.6
    shape = (93, 93, 24)
    centre = (35.3, 34.6, 12 * 2.5)
    labels = np.ones(shape, np.uint8)
    labels[ellipsoid(shape, spacing, centre, semi, angle)] = 2
    affine = np.diag([*spacing, 1.0])
    ref = lesion_table(labels, affine)[0]
    # array axes (z, y, x) with x flipped: the same voxels in the same world places
    permuted = np.ascontiguousarray(labels.transpose(2, 1, 0)[:, :, ::-1])
    p_aff = np.zeros((4, 4))
    p_aff[0, 2] = -spacing[0]
    p_aff[0, 3] = (shape[0] - 1) * spacing[0]
    p_aff[1, 1] = spacing[1]
    p_aff[2, 0] = spacing[2]
    p_aff[3, 3] = 1.0
    assert axial_axis(p_aff) == 0
    les = lesion_table(permuted, p_aff)[0]
    assert les.slice_axis == 0 and les.slice == ref.slice
    assert les.long_axis_mm == pytest.approx(ref.long_axis_mm, abs=1e-6)
    assert les.short_axis_mm == pytest.approx(ref.short_axis_mm, abs=0.75)
    assert np.allclose(les.centroid_mm, ref.centroid_mm, atol=1e-6)
    assert les.volume_ml == pytest.approx(ref.volume_ml)


def test_lps_coordinates_negate_x_and_y():
    labels, affine = _three_lesions()
    ras = lesion_table(labels, affine)[0]
    lps = lesion_table(labels, affine, coordinates="LPS")[0]
    assert lps.coordinates == "LPS" and ras.coordinates == "RAS"
    assert np.allclose(lps.centroid_mm, (-ras.centroid_mm[0], -ras.centroid_mm[1], ras.centroid_mm[2]))
    assert set(lps.row()) >= {"centroid_l_mm", "centroid_p_mm", "centroid_s_mm"}


@pytest.mark.parametrize("depth_mm", [0.0, 4.0, 11.5, 30.0])
def test_distance_to_the_liver_surface_within_one_voxel(depth_mm):
    spacing = (0.8, 0.8, 1.5)
    shape = (150, 150, 100)
    centre = np.array([60.0, 60.0, 75.0])
    radius, r_lesion = 50.0, 6.0
    labels = ellipsoid(shape, spacing, centre, (radius,) * 3).astype(np.uint8)
    # a lesion whose edge lies depth_mm below the surface, towards +x
    lesion_centre = centre + np.array([radius - r_lesion - depth_mm, 0.0, 0.0])
    labels[ellipsoid(shape, spacing, lesion_centre, (r_lesion,) * 3) & (labels == 1)] = 2
    (les,) = lesion_table(labels, np.diag([*spacing, 1.0]))
    assert abs(les.liver_surface_mm - depth_mm) <= max(spacing), les.liver_surface_mm
    assert les.liver_surface_mm >= 0.0


def test_the_scan_border_is_no_liver_surface():
    labels = np.ones((40, 40, 20), np.uint8)  # a liver that fills the scan: it goes on beyond it
    labels[10:15, 10:15, 0:4] = 2
    labels[:, :, 19] = 0                      # ... except at the top, where it ends
    (les,) = lesion_table(labels, np.eye(4))
    assert les.liver_surface_mm == pytest.approx(18.5 - 3.5)  # from the lesion's top edge to the outside slice


def test_mean_hu_and_the_empty_table():
    labels, affine = _three_lesions()
    image = np.where(labels == 2, 35.0, 110.0).astype(np.float32)
    lesions = lesion_table(labels, affine, image)
    assert all(les.mean_hu == pytest.approx(35.0) for les in lesions)
    assert all(math.isnan(les.mean_hu) for les in lesion_table(labels, affine))
    assert lesion_table(np.ones((5, 5, 5), np.uint8), np.eye(4)) == []
    row = lesions[0].row()
    assert row["id"] == 1 and row["mean_hu"] == pytest.approx(35.0)
    assert lesions[0].as_dict()["long_axis_voxels"][0] == list(lesions[0].long_axis_voxels[0])


@pytest.mark.parametrize("kwargs,needle", [
    ({"coordinates": "XYZ"}, "coordinates='XYZ'"),
    ({"image": np.zeros((2, 2, 2))}, "image of shape (2, 2, 2)"),
])
def test_bad_arguments_give_one_line_errors(kwargs, needle):
    labels, affine = _three_lesions()
    with pytest.raises(DataError) as err:
        lesion_table(labels, affine, **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="expected a 3-D label volume"):
        lesion_table(labels[0], affine)
    with pytest.raises(DataError, match="invertible"):
        lesion_table(labels, np.zeros((4, 4)))
