"""A seeded synthetic 3D Cell Painting mini dataset (z-stacks, ground truth, sample sheet).

The generator draws adherent cells as flat 3D domes on a coverslip and renders the five
Cell Painting channels (DNA, ER, RNA, AGP, Mito) through an anisotropic Gaussian PSF and a
camera model (Poisson shot noise, gain, Gaussian read noise, offset). Three compounds change
one morphological trait each, as a shift of a per-cell distribution that still overlaps the
control's (DMSO):

- ``CompoundA`` enlarges nuclei (and dilutes their DNA stain);
- ``CompoundB`` fragments mitochondria (tubular network -> puncta);
- ``CompoundC`` coarsens the ER texture (fine reticulum -> coarse clumps).

Treatment effects live inside cells only. With ``confounded=True`` non-biological,
treatment-coded debris (bright specks) is added to the *background* (voxels outside every
cell) of some channels: a local shortcut a classifier can learn without looking at cells,
and one a map could point at.

Everything is a pure function of a :class:`numpy.random.Generator`; the generator of each
site is seeded from ``(seed, plate, well, site)`` (:func:`site_seed`), so sites do not
depend on the order they are made in. Axes: images ZCYX, labels ZYX; the voxel size is
:data:`VOXEL_SIZE` (Z, Y, X) µm.

One module because the dataset is one seeded generator: placement, traits, rendering and
camera draw from a site's generator in a fixed order that fixes every voxel, an order kept
in view in one file; the sample sheet and the writer only say where its sites go.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.segmentation import find_boundaries, relabel_sequential

from gradcamo.errors import InputError
from gradcamo.io import atomic_path, write_labels, write_zstack

CHANNELS: tuple[str, ...] = ("DNA", "ER", "RNA", "AGP", "Mito")
VOXEL_SIZE: tuple[float, float, float] = (1.0, 0.65, 0.65)  # µm, (Z, Y, X)
PLATES: tuple[str, ...] = ("P1", "P2")
WELLS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "C02", "C03", "C04", "C05")
SITES: tuple[int, ...] = (1, 2, 3)
CONTROL = "DMSO"
#: Treatment -> concentration (µM); the control's is 0.
CONCENTRATIONS: dict[str, float] = {
    "DMSO": 0.0,
    "CompoundA": 10.0,
    "CompoundB": 1.0,
    "CompoundC": 3.0,
}
SHEET_COLUMNS = (
    "plate",
    "well",
    "site",
    "image",
    "labels",
    "treatment",
    "concentration",
    "control",
)


@dataclass(frozen=True)
class TreatmentEffect:
    """Per-cell trait distributions a treatment shifts.

    nucleus_scale: mean factor on the nuclear radius in Y/X (Z grows as its square root).
    mito_fragmentation: mean share (0..1) of mitochondria drawn as puncta, not network.
    er_coarseness: mean share (0..1) of ER drawn as coarse clumps, not fine reticulum.
    responder_fraction: share of cells that respond; the others draw their traits from the
        untreated defaults (heterogeneous response, as in real screens).
    """

    nucleus_scale: float = 1.0
    mito_fragmentation: float = 0.2
    er_coarseness: float = 0.2
    responder_fraction: float = 1.0


def _default_effects() -> dict[str, TreatmentEffect]:
    return {
        "DMSO": TreatmentEffect(),
        "CompoundA": TreatmentEffect(nucleus_scale=1.4, responder_fraction=0.9),
        "CompoundB": TreatmentEffect(mito_fragmentation=0.85, responder_fraction=0.9),
        "CompoundC": TreatmentEffect(er_coarseness=0.85, responder_fraction=0.9),
    }


@dataclass(frozen=True)
class SynthesisParams:
    """Everything that shapes a synthetic site. Lengths in voxels unless the name says µm.

    shape: image size (Z, Y, X).
    cells_per_site: inclusive range of cells placed per site (some end up cut by the border).
    cell_radius: mean and SD of the cell radius in Y/X.
    cell_spacing: minimum centre distance as a fraction of the two radii's sum (< 1 lets
        neighbours touch; their territories are split where their shapes meet).
    cell_height: mean cell height (Z planes) over the nucleus.
    nucleus_z_radius: mean nuclear semi-axis in Z (planes; untreated).
    nucleus_fraction: mean and SD of nuclear radius / cell radius (untreated).
    trait_sd: SD of the per-cell nucleus scale (log) and concentration of the Beta
        distributions of the mitochondrial/ER traits (higher = narrower).
    effects: treatment -> :class:`TreatmentEffect`; its key order fixes the confounder code.
    brightness: photons per unit of rendered intensity, per channel (CHANNELS order).
    cell_brightness_sd: log-normal SD of per-cell, per-channel brightness.
    site_gain_sd: log-normal SD of per-site, per-channel illumination.
    background_photons: autofluorescence photons per voxel, per channel.
    psf_sigma_um: Gaussian PSF SD (Z, Y, X) in µm.
    camera_offset, camera_gain, read_noise: counts = offset + gain * Poisson(photons)
        + N(0, read_noise), rounded; a low gain (counts per photon) keeps files small.
    confounder_channels: channels that carry the background debris when confounded
        (:func:`background_confounder`).
    confounder_debris_per_site: debris specks per site of a treated well.
    confounder_debris_photons: peak photons of a speck.
    confounder_debris_sigma_um: Gaussian SD (Z, Y, X) of a speck in µm.
    zlib_level: compression of the written z-stacks (:func:`gradcamo.io.write_zstack`): 9 the
        bundled data's, 6 writes a paper-sized site in 1 s instead of 10 (files 10 % larger).
    """

    shape: tuple[int, int, int] = (12, 96, 96)
    cells_per_site: tuple[int, int] = (18, 24)
    cell_radius: tuple[float, float] = (9.5, 1.1)
    cell_spacing: float = 0.7
    cell_height: float = 6.5
    nucleus_z_radius: float = 2.2
    nucleus_fraction: tuple[float, float] = (0.5, 0.05)
    trait_sd: tuple[float, float] = (0.08, 6.0)
    effects: dict[str, TreatmentEffect] = field(default_factory=_default_effects)
    brightness: tuple[float, ...] = (160.0, 70.0, 90.0, 70.0, 90.0)
    cell_brightness_sd: float = 0.2
    site_gain_sd: float = 0.08
    background_photons: tuple[float, ...] = (1.0, 1.5, 1.0, 1.5, 1.0)
    psf_sigma_um: tuple[float, float, float] = (1.0, 0.45, 0.45)
    camera_offset: float = 100.0
    camera_gain: float = 0.3
    read_noise: float = 0.5
    confounder_channels: tuple[str, ...] = ("ER", "Mito")
    confounder_debris_per_site: int = 150
    confounder_debris_photons: float = 60.0
    confounder_debris_sigma_um: tuple[float, float, float] = (0.8, 0.5, 0.5)
    zlib_level: int = 9


# --------------------------------------------------------------------------- plate map


def plate_map(
    seed: int = 0,
    plates: tuple[str, ...] = PLATES,
    wells: tuple[str, ...] = WELLS,
    concentrations: dict[str, float] = CONCENTRATIONS,
) -> pd.DataFrame:
    """The treatment of every well: each treatment on ``len(wells) / n_treatments`` wells per plate.

    Layouts are seeded shuffles, redrawn until no well holds the same treatment as on any
    earlier plate, so a well's position does not predict its treatment.

    Returns a DataFrame with columns ``plate, well, treatment, concentration, control``
    sorted by plate and well.
    """
    treatments = list(concentrations)
    if len(wells) % len(treatments):
        raise InputError(f"{len(wells)} wells cannot hold {len(treatments)} treatments equally")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x504C41]))  # "PLA"
    per_plate = np.repeat(np.array(treatments, dtype=object), len(wells) // len(treatments))
    layouts: list[np.ndarray] = []
    for _ in plates:
        for _attempt in range(10_000):
            layout = rng.permutation(per_plate)
            if all(np.all(layout != earlier) for earlier in layouts):
                break
        else:  # pragma: no cover - only for degenerate plate/well counts
            raise InputError("cannot find plate layouts that differ in every well")
        layouts.append(layout)
    rows = [
        {
            "plate": plate,
            "well": well,
            "treatment": str(treatment),
            "concentration": float(concentrations[treatment]),
            "control": treatment == CONTROL,
        }
        for plate, layout in zip(plates, layouts)
        for well, treatment in zip(wells, layout)
    ]
    return pd.DataFrame(rows).sort_values(["plate", "well"], ignore_index=True)


def site_seed(seed: int, plate: str, well: str, site: int) -> np.random.SeedSequence:
    """A seed sequence for one site from ``(seed, plate, well, site)``, independent of order."""
    key = zlib.crc32(f"{plate}/{well}/{site}".encode())
    return np.random.SeedSequence([int(seed), key])


# --------------------------------------------------------------------------- geometry


def _voxels(sigma_um: float | tuple[float, float, float]) -> tuple[float, float, float]:
    """A length (or Z, Y, X lengths) in µm as voxel SDs per axis."""
    s = np.broadcast_to(np.asarray(sigma_um, dtype=float), (3,))
    return tuple(float(v) for v in s / np.asarray(VOXEL_SIZE))


def place_cells(rng: np.random.Generator, params: SynthesisParams) -> pd.DataFrame:
    """Random cell centres and shapes in Y/X (random sequential adsorption).

    Centres may fall up to 0.4 radii outside the image, so some cells are cut by the
    border. Returns one row per cell: ``y, x, radius, aspect, angle`` and shape harmonics
    ``h2..h4`` (amplitude) / ``p2..p4`` (phase).
    """
    _, ny, nx = params.shape
    n_target = int(rng.integers(params.cells_per_site[0], params.cells_per_site[1] + 1))
    mean_r, sd_r = params.cell_radius
    cells: list[dict] = []
    for _ in range(200 * n_target):
        if len(cells) == n_target:
            break
        r = float(np.clip(rng.normal(mean_r, sd_r), 0.65 * mean_r, 1.4 * mean_r))
        m = 0.4 * r
        y, x = rng.uniform(-m, ny + m), rng.uniform(-m, nx + m)
        if all(np.hypot(y - c["y"], x - c["x"]) >= params.cell_spacing * (r + c["radius"]) for c in cells):
            cell = {
                "y": y,
                "x": x,
                "radius": r,
                "aspect": rng.uniform(1.0, 1.5),
                "angle": rng.uniform(0, np.pi),
            }
            for k in (2, 3, 4):
                cell[f"h{k}"] = abs(rng.normal(0, 0.08 / (k - 1)))
                cell[f"p{k}"] = rng.uniform(0, 2 * np.pi)
            cells.append(cell)
    return pd.DataFrame(cells)


def _normalized_distance(
    yy: np.ndarray,
    xx: np.ndarray,
    y: float,
    x: float,
    radius: float,
    aspect: float,
    angle: float,
    harmonics: tuple[tuple[float, float], ...] = (),
) -> np.ndarray:
    """Distance from (y, x) in units of an ellipse's radius along that direction (1 = edge)."""
    dy, dx = yy - y, xx - x
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    u, v = u / (radius * np.sqrt(aspect)), v / (radius / np.sqrt(aspect))
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    edge = np.ones_like(rho)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        edge += amp * np.cos(k * theta + phase)
    return rho / edge


def cell_footprints(cells: pd.DataFrame, yx_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Split the plane into cell territories: each pixel goes to the cell it is deepest in.

    Returns ``owner`` (Y, X) int, 0 = no cell, cell ``i`` of ``cells`` = ``i + 1``, and
    ``depth`` (Y, X) float: the normalised distance to the owner's centre (0 centre, 1 edge).
    Where two shapes overlap the shared edge is where their normalised distances are equal,
    so neighbours touch along a line without overlapping.
    """
    # Hand-written: scikit-image draws single shapes (skimage.draw.ellipse, polygon) but
    # has no way to split overlapping star-convex shapes into touching territories.
    yy, xx = np.mgrid[0 : yx_shape[0], 0 : yx_shape[1]].astype(float)
    if len(cells) == 0:
        return np.zeros(yx_shape, int), np.ones(yx_shape)
    dist = np.stack(
        [
            _normalized_distance(
                yy,
                xx,
                c.y,
                c.x,
                c.radius,
                c.aspect,
                c.angle,
                ((c.h2, c.p2), (c.h3, c.p3), (c.h4, c.p4)),
            )
            for c in cells.itertuples()
        ]
    )
    nearest = np.argmin(dist, axis=0)
    depth = np.take_along_axis(dist, nearest[None], axis=0)[0]
    owner = np.where(depth < 1.0, nearest + 1, 0)
    return owner, np.minimum(depth, 1.0)


def coverslip_height(rng: np.random.Generator, yx_shape: tuple[int, int]) -> np.ndarray:
    """The (slightly tilted) Z position of the coverslip surface per (Y, X), in planes."""
    yy, xx = np.mgrid[0 : yx_shape[0], 0 : yx_shape[1]].astype(float)
    z0 = rng.uniform(1.6, 2.4)
    tilt = rng.normal(0, 0.5 / max(yx_shape), size=2)  # ≲ 1 plane over the field
    return z0 + tilt[0] * (yy - yx_shape[0] / 2) + tilt[1] * (xx - yx_shape[1] / 2)


def cell_volumes(
    owner: np.ndarray, depth: np.ndarray, base: np.ndarray, heights: np.ndarray, n_planes: int
) -> np.ndarray:
    """3D cell labels (ZYX): each territory filled from the coverslip up to a dome.

    The height at a pixel is ``heights[cell] * (1 - depth**2) ** 0.6`` (at least one
    plane), so cells are flat at their edges and thickest over the nucleus.
    """
    h = np.concatenate([[0.0], heights])[owner] * (1 - depth**2) ** 0.6
    h = np.where(owner > 0, np.maximum(h, 1.2), 0.0)
    zz = np.arange(n_planes, dtype=float)[:, None, None] + 0.5
    inside = (zz >= base[None]) & (zz < base[None] + h[None])
    return np.where(inside, owner[None], 0)


# --------------------------------------------------------------------------- textures


def _unit(field_: np.ndarray) -> np.ndarray:
    """Zero mean, unit SD."""
    return (field_ - field_.mean()) / (field_.std() + 1e-12)


def _unit_mean(texture: np.ndarray) -> np.ndarray:
    """Scaled to mean 1, so that mixing textures changes texture, not brightness."""
    return texture / (texture.mean() + 1e-12)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_um: float) -> np.ndarray:
    """Gaussian random field with correlation length ``sigma_um`` (isotropic in µm), unit SD."""
    return _unit(ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), _voxels(sigma_um)))


def ridges(band: np.ndarray, width: float) -> np.ndarray:
    """A network of tubes along the zero crossings of a zero-mean field, values in [0, 1]."""
    return np.exp(-((band / width) ** 2))


def puncta(rng: np.random.Generator, shape: tuple[int, ...], density: float, sigma_um: float) -> np.ndarray:
    """Sparse Gaussian spots (``density`` per voxel) of SD ``sigma_um``, peaks ≈ 1."""
    sigma = _voxels(sigma_um)
    points = (rng.random(shape) < density).astype(np.float32)
    spots = ndimage.gaussian_filter(points, sigma)
    peak = ndimage.gaussian_filter(np.pad(np.ones((1, 1, 1), np.float32), 4), sigma).max()
    return np.minimum(spots / peak, 1.5)


# --------------------------------------------------------------------------- site


def _per_cell(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Broadcast one value per cell (cell ``i`` = label ``i + 1``) to a label image; 0 outside."""
    # The table cast to float32 before indexing: the same values as indexing in float64 and
    # casting after, without a float64 copy of the whole volume.
    table = np.concatenate([[0.0], np.asarray(values, dtype=np.float32)]).astype(np.float32)
    return table[labels]


def _beta(rng: np.random.Generator, mean: np.ndarray, concentration: float, n: int) -> np.ndarray:
    """``n`` Beta draws with the given mean(s) and concentration (a + b)."""
    return rng.beta(mean * concentration, (1 - mean) * concentration, size=n)


def cell_traits(
    rng: np.random.Generator, effect: TreatmentEffect, n: int, params: SynthesisParams
) -> pd.DataFrame:
    """Per-cell traits drawn from the treatment's distributions (one row per cell).

    Columns: ``responder`` (bool; non-responders draw from the untreated defaults),
    ``nucleus_fraction`` (nuclear / cell radius, includes the treatment's scale),
    ``nucleus_z_scale``, ``mito_fragmentation``, ``er_coarseness``, ``dna_content``
    (1 = G1, 1.9 = G2), ``height`` (planes) and one ``brightness_<channel>`` per channel.
    """
    log_sd, concentration = params.trait_sd
    untreated = TreatmentEffect()
    responder = rng.random(n) < effect.responder_fraction

    def mean(name: str) -> np.ndarray:
        return np.where(responder, getattr(effect, name), getattr(untreated, name))

    scale = mean("nucleus_scale") * np.exp(rng.normal(0, log_sd, n))
    traits = pd.DataFrame(
        {
            "responder": responder,
            "nucleus_fraction": np.clip(rng.normal(*params.nucleus_fraction, n), 0.3, 0.7) * scale,
            "nucleus_z_scale": np.sqrt(scale),
            "mito_fragmentation": _beta(rng, mean("mito_fragmentation"), concentration, n),
            "er_coarseness": _beta(rng, mean("er_coarseness"), concentration, n),
            "dna_content": np.where(rng.random(n) < 0.25, 1.9, 1.0),
            "height": params.cell_height * np.exp(rng.normal(0, 0.1, n)),
        }
    )
    for c in CHANNELS:
        traits[f"brightness_{c}"] = np.exp(rng.normal(0, params.cell_brightness_sd, n))
    return traits


def nucleus_volumes(
    rng: np.random.Generator,
    cells: pd.DataFrame,
    traits: pd.DataFrame,
    labels: np.ndarray,
    depth: np.ndarray,
    base: np.ndarray,
    z_radius: float = 2.2,
) -> np.ndarray:
    """Nuclear labels (ZYX, same ids as ``labels``): a tilted ellipsoid per cell.

    Each nucleus sits just above the coverslip near its cell's centre, clipped to its cell
    and kept off the cell's edge (normalised depth < 0.9); ``z_radius`` is its untreated
    semi-axis in Z (planes).
    """
    nz, ny, nx = labels.shape
    zz, yy, xx = np.mgrid[0:nz, 0:ny, 0:nx].astype(np.float32)
    zz += 0.5
    nuclei = np.zeros_like(labels)
    for i, (c, t) in enumerate(zip(cells.itertuples(), traits.itertuples()), start=1):
        r = c.radius * t.nucleus_fraction
        cy, cx = c.y + rng.normal(0, 0.08 * c.radius), c.x + rng.normal(0, 0.08 * c.radius)
        rz = z_radius * t.nucleus_z_scale
        floor = base[int(np.clip(round(c.y), 0, ny - 1)), int(np.clip(round(c.x), 0, nx - 1))]
        zc = floor + 0.6 + rz
        d = _normalized_distance(
            yy[0], xx[0], cy, cx, r, rng.uniform(1.0, 1.25), c.angle + rng.normal(0, 0.3)
        )
        inside = (d[None] ** 2 + ((zz - zc) / rz) ** 2 <= 1.0) & (labels == i) & (depth[None] < 0.9)
        nuclei[inside] = i
    return nuclei


def render_channels(
    rng: np.random.Generator,
    labels: np.ndarray,
    nuclei: np.ndarray,
    depth: np.ndarray,
    traits: pd.DataFrame,
    params: SynthesisParams,
) -> np.ndarray:
    """Noise-free, unblurred relative intensities (ZCYX float32, ~0..1.5) of the five channels.

    DNA: nuclei with chromatin texture, dim nucleoli, brighter in G2 cells, diluted by
    nuclear enlargement. ER: perinuclear reticulum (fine ridges) mixed with coarse clumps
    by the cell's ``er_coarseness``, plus the nuclear envelope. RNA: bright nucleoli, dim
    nucleoplasm and cytoplasm. AGP: whole cell with a bright cortex (cell outlines, also
    between touching neighbours). Mito: perinuclear network mixed with puncta by the cell's
    ``mito_fragmentation``.
    """
    shape = labels.shape
    cell = labels > 0
    nucleus = nuclei > 0
    cytoplasm = cell & ~nucleus
    depth3 = np.broadcast_to(depth[None], shape)

    def trait(name: str) -> np.ndarray:
        return _per_cell(traits[name].to_numpy(), labels)

    # Perinuclear density: 1 next to the nucleus, falling off towards the cell edge.
    perinuclear = np.exp(-np.maximum(depth3 - trait("nucleus_fraction"), 0) / 0.35)

    # Nucleoli: 1-4 spots per nucleus.
    nucleoli_points = np.zeros(shape, np.float32)
    for i in range(1, len(traits) + 1):
        zi, yi, xi = np.nonzero(nuclei == i)
        if len(zi) == 0:
            continue
        pick = rng.integers(0, len(zi), size=int(rng.integers(1, 5)))
        nucleoli_points[zi[pick], yi[pick], xi[pick]] = rng.uniform(0.7, 1.3, len(pick))
    nucleoli = np.minimum(ndimage.gaussian_filter(nucleoli_points, _voxels(0.5)) * 25.0, 1.2)
    nucleoli *= nucleus

    # DNA
    chromatin = smooth_noise(rng, shape, 0.4)
    dna_level = trait("dna_content") / np.maximum(trait("nucleus_fraction") / 0.5, 1e-6) ** 1.0
    dna = nucleus * dna_level * (0.85 + 0.15 * chromatin) * (1 - 0.5 * np.minimum(nucleoli, 1))

    # ER: fine reticulum vs coarse clumps.
    fine = _unit_mean(ridges(smooth_noise(rng, shape, 0.35), 0.45))
    coarse = _unit_mean(1 / (1 + np.exp(-(smooth_noise(rng, shape, 1.0) - 0.6) * 5)))
    c = trait("er_coarseness")
    envelope = find_boundaries(nuclei, mode="outer") & cell
    er = cytoplasm * perinuclear * (0.1 + 0.35 * ((1 - c) * fine + c * coarse)) + 0.3 * envelope

    # RNA
    rna = nucleus * (0.15 + nucleoli) + cytoplasm * 0.3 * (0.9 + 0.1 * chromatin)

    # AGP: per-plane cell outlines (inner boundary: touching cells get two lines).
    cortex = np.stack([find_boundaries(plane, mode="inner") for plane in labels])
    agp = cell * (0.3 + 0.03 * fine) + 0.9 * cortex - 0.1 * nucleus

    # Mito: tubular network vs puncta.
    network = _unit_mean(ridges(smooth_noise(rng, shape, 0.45), 0.45))
    spots = _unit_mean(puncta(rng, shape, 0.04, 0.4))
    f = trait("mito_fragmentation")
    mito = cytoplasm * (0.25 + 0.75 * perinuclear) * 0.3 * ((1 - f) * network + f * spots)

    channels = [dna, er, rna, agp, mito]
    out = np.stack([ch * trait(f"brightness_{name}") for name, ch in zip(CHANNELS, channels)], axis=1)
    return out.astype(np.float32)


def camera(
    rng: np.random.Generator,
    photons: np.ndarray,
    params: SynthesisParams,
) -> np.ndarray:
    """Shot noise, gain and read noise around the offset: float counts (ZCYX), not yet rounded."""
    counts = rng.poisson(photons).astype(np.float32) * params.camera_gain
    counts += rng.normal(0, params.read_noise, size=photons.shape).astype(np.float32)
    return counts + params.camera_offset


def background_confounder(
    rng: np.random.Generator,
    treatment: str,
    labels: np.ndarray,
    params: SynthesisParams,
) -> np.ndarray:
    """Extra counts (ZCYX) outside every cell that encode the treatment (a planted shortcut).

    Treatment-coded *debris*: small bright specks (Gaussian, ``confounder_debris_sigma_um``)
    scattered through the background, as precipitate or dust would lie -- a local shortcut
    that an attribution map can point at, unlike a global offset. Treatment code ``k`` (its
    position in ``params.effects``; 0 = the control, no debris) sets which of
    ``params.confounder_channels`` carry it, by the bits of ``k`` (code 1: the first,
    2: the second, 3: both), ``confounder_debris_per_site`` specks per site, with their own
    shot noise; zero inside cells.
    """
    code = list(params.effects).index(treatment)
    nz, ny, nx = labels.shape
    extra = np.zeros((nz, len(CHANNELS), ny, nx), np.float32)
    background = labels == 0
    z, y, x = np.nonzero(background)
    points = np.zeros(labels.shape, np.float32)
    if code and len(z):
        pick = rng.choice(len(z), size=min(params.confounder_debris_per_site, len(z)), replace=False)
        points[z[pick], y[pick], x[pick]] = rng.uniform(0.7, 1.3, len(pick))
    sigma = _voxels(params.confounder_debris_sigma_um)
    # Unit peak height for a single speck, whatever its width.
    peak = ndimage.gaussian_filter(np.pad(np.ones((1, 1, 1), np.float32), 4), sigma).max()
    specks = ndimage.gaussian_filter(points, sigma) / peak * params.confounder_debris_photons
    for bit, name in enumerate(params.confounder_channels):
        if code & (1 << bit):
            extra[:, CHANNELS.index(name)] = rng.poisson(specks) * background
    return extra * params.camera_gain


def synthesize_site(
    rng: np.random.Generator,
    treatment: str,
    params: SynthesisParams | None = None,
    confounded: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic field of view.

    Parameters
    ----------
    rng: the site's generator (e.g. ``np.random.default_rng(site_seed(...))``).
    treatment: a key of ``params.effects``.
    params: :class:`SynthesisParams` (defaults when ``None``).
    confounded: add the treatment-coded background debris (:func:`background_confounder`).
        It draws from ``rng`` only after everything else, so the clean and confounded
        variants of a site are identical inside cells.

    Returns
    -------
    image: ``(Z, C, Y, X)`` uint16, channels :data:`CHANNELS`.
    labels: ``(Z, Y, X)`` uint16 ground-truth cell labels, 0 = background, 1..N.
    """
    params = params or SynthesisParams()
    if treatment not in params.effects:
        raise InputError(f"treatment {treatment!r} has no effect defined; known: {list(params.effects)}")
    nz, ny, nx = params.shape
    cells = place_cells(rng, params)
    traits = cell_traits(rng, params.effects[treatment], len(cells), params)
    owner, depth = cell_footprints(cells, (ny, nx))
    base = coverslip_height(rng, (ny, nx))
    labels = cell_volumes(owner, depth, base, traits["height"].to_numpy(), nz)
    nuclei = nucleus_volumes(rng, cells, traits, labels, depth, base, params.nucleus_z_radius)
    signal = render_channels(rng, labels, nuclei, depth, traits, params)

    sigma = _voxels(params.psf_sigma_um)
    blurred = np.stack([ndimage.gaussian_filter(signal[:, c], sigma) for c in range(len(CHANNELS))], axis=1)
    site_gain = np.exp(rng.normal(0, params.site_gain_sd, len(CHANNELS)))
    scale = (np.asarray(params.brightness) * site_gain).astype(np.float32)
    photons = blurred * scale[None, :, None, None]
    photons += np.asarray(params.background_photons, np.float32)[None, :, None, None]
    counts = camera(rng, np.maximum(photons, 0), params)
    if confounded:
        counts += background_confounder(rng, treatment, labels, params)
    image = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)

    labels, _, _ = relabel_sequential(labels)
    return image, labels.astype(np.uint16)


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class ScreenLayout:
    """Which sites a synthetic screen has, and which of them the sheet lists ground truth for.

    plates, wells: their names; every well of every plate has ``sites``.
    concentrations: treatment -> concentration (µM), the control's 0; each treatment gets an
        equal share of every plate's wells (:func:`plate_map`).
    extra_sites: ``(plate, well, site)`` fields added to their wells beyond ``sites``.
    sparse_sites: ``(plate, well, site)`` fields drawn with ``sparse_cells`` cells instead of
        ``SynthesisParams.cells_per_site``: a nearly empty field, the outlier the
        segmentation QC is there to flag.
    sparse_cells: inclusive range of cells placed on a sparse site.
    annotated: ``"plate/well/site"`` names whose sheet row lists their ground-truth labels
        (the sites a Cellpose model can be trained and scored on); None: every site. The
        label images are written for every site either way.
    """

    plates: tuple[str, ...] = PLATES
    wells: tuple[str, ...] = WELLS
    sites: tuple[int, ...] = SITES
    concentrations: dict[str, float] = field(default_factory=lambda: dict(CONCENTRATIONS))
    extra_sites: tuple[tuple[str, str, int], ...] = ()
    sparse_sites: tuple[tuple[str, str, int], ...] = ()
    sparse_cells: tuple[int, int] = (1, 3)
    annotated: tuple[str, ...] | None = None


#: The bundled mini dataset (resources/mini): 2 plates x 8 wells x 3 sites of 12 x 96 x 96.
MINI_LAYOUT = ScreenLayout()

#: A small screen at the paper's geometry (``make_mini_dataset.py --geometry paper``): sites
#: of 21 planes x 512 x 512 px, cells about 62 px across (the paper's 128 x 128 crops hold a
#: cell and its neighbours' edges) and 13 planes high over the nucleus; a quarter or so of
#: them cut by the border.
PAPER_PARAMS = SynthesisParams(
    zlib_level=6,
    shape=(21, 512, 512),
    cells_per_site=(14, 16),
    cell_radius=(31.0, 3.4),
    cell_height=13.0,
    nucleus_z_radius=4.0,
)
#: One plate, 8 wells of DMSO and CompoundA (4 each: a well-level 0.6 / 0.2 / 0.2 split gives
#: every split a well of each), one site per well, plus a nearly empty second site in C05 for
#: the segmentation QC to flag. Four sites carry ground truth in the sheet: two of each
#: treatment: P1/B02/1 (CompoundA) and P1/C02/1 (DMSO) to train Cellpose on, P1/B03/1 and
#: P1/C03/1 held out to score it.
PAPER_LAYOUT = ScreenLayout(
    plates=("P1",),
    sites=(1,),
    concentrations={"DMSO": 0.0, "CompoundA": 10.0},
    extra_sites=(("P1", "C05", 2),),
    sparse_sites=(("P1", "C05", 2),),
    sparse_cells=(3, 3),
    annotated=("P1/B02/1", "P1/B03/1", "P1/C02/1", "P1/C03/1"),
)

#: ``make_mini_dataset.py --geometry``: the generator's settings and the layout of each.
GEOMETRIES: dict[str, tuple[SynthesisParams, ScreenLayout]] = {
    "mini": (SynthesisParams(), MINI_LAYOUT),
    "paper": (PAPER_PARAMS, PAPER_LAYOUT),
}


def sample_sheet(
    seed: int = 0, sites: tuple[int, ...] = SITES, *, layout: ScreenLayout | None = None
) -> pd.DataFrame:
    """One row per site with relative ``image`` / ``labels`` paths, sorted by plate, well, site.

    ``layout``: the screen's plates, wells and sites (:class:`ScreenLayout`); None: the mini
    dataset's, with ``sites`` per well. Sites not in ``layout.annotated`` get no ``labels``.
    """
    layout = layout or ScreenLayout(sites=tuple(sites))
    wells = plate_map(seed, layout.plates, layout.wells, layout.concentrations)
    rows = []
    for w in wells.itertuples():
        extra = [s for p, well, s in layout.extra_sites if (p, well) == (w.plate, w.well)]
        for site in sorted({*layout.sites, *extra}):
            name = f"{w.plate}_{w.well}_s{site}.tif"
            annotated = layout.annotated is None or f"{w.plate}/{w.well}/{site}" in layout.annotated
            rows.append(
                {
                    "plate": w.plate,
                    "well": w.well,
                    "site": int(site),
                    "image": f"images/{name}",
                    "labels": f"labels/{name}" if annotated else None,
                    "treatment": w.treatment,
                    "concentration": w.concentration,
                    "control": bool(w.control),
                }
            )
    return pd.DataFrame(rows, columns=list(SHEET_COLUMNS)).sort_values(
        ["plate", "well", "site"], ignore_index=True
    )


def write_sheet(path: str | os.PathLike, sheet: pd.DataFrame) -> None:
    """Write a sample sheet as TSV (``control`` as ``true``/``false``), atomically."""
    out = sheet.copy()
    out["control"] = out["control"].map({True: "true", False: "false"})
    with atomic_path(path) as tmp:
        out.to_csv(tmp, sep="\t", index=False)


def write_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    confounded: bool = False,
    params: SynthesisParams | None = None,
    layout: ScreenLayout | None = None,
    progress: bool = False,
    workers: int = 1,
) -> pd.DataFrame:
    """Generate a whole synthetic screen (by default the mini dataset) into ``out_dir``.

    Writes ``images/{plate}_{well}_s{site}.tif`` (ZCYX uint16 OME-TIFF),
    ``labels/{plate}_{well}_s{site}.tif`` (ZYX ground truth, for every site) and
    ``samples.tsv`` (columns :data:`SHEET_COLUMNS`, paths relative to ``out_dir``; ``labels``
    only for ``layout.annotated``). ``params`` and ``layout`` default to the mini dataset's
    (:data:`GEOMETRIES` holds the paper-geometry screen's). Each file is written atomically
    and the sheet last, so an interrupted run never leaves a sheet pointing at missing or
    partial images. Returns the sheet (``control`` as bool).

    ``workers`` > 1 makes the sites in that many processes: the same files, as every site is
    seeded on its own (:func:`site_seed`); a paper-geometry site takes about 20 s and 1.2 GB.
    """
    params = params or SynthesisParams()
    layout = layout or MINI_LAYOUT
    sparse = replace(params, cells_per_site=layout.sparse_cells)
    out_dir = Path(out_dir)
    sheet = sample_sheet(seed, layout=layout)
    jobs = [
        (
            out_dir,
            seed,
            row.plate,
            row.well,
            int(row.site),
            row.image,
            row.treatment,
            sparse if (row.plate, row.well, row.site) in layout.sparse_sites else params,
            confounded,
        )
        for row in sheet.itertuples()
    ]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(min(workers, len(jobs)))
        done = pool.map(_write_site, *zip(*jobs))
    else:
        pool = None
        done = (_write_site(*job) for job in jobs)
    if progress:
        from tqdm import tqdm  # imported here: only the command line shows progress

        done = tqdm(done, total=len(jobs), desc="sites", unit="site")
    try:
        for _ in done:
            pass
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    write_sheet(out_dir / "samples.tsv", sheet)
    return sheet


def _write_site(
    out_dir: Path,
    seed: int,
    plate: str,
    well: str,
    site: int,
    image_path: str,
    treatment: str,
    params: SynthesisParams,
    confounded: bool,
) -> None:
    """Make one site and write its image and ground truth (``write_dataset``'s unit of work)."""
    rng = np.random.default_rng(site_seed(seed, plate, well, site))
    image, labels = synthesize_site(rng, treatment, params, confounded)
    with atomic_path(out_dir / image_path) as tmp:
        write_zstack(tmp, image, CHANNELS, VOXEL_SIZE, level=params.zlib_level)
    with atomic_path(out_dir / "labels" / Path(image_path).name) as tmp:
        write_labels(tmp, labels)
