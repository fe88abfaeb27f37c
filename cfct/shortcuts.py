"""Shortcut transfer (thesis Chapter 4): the MICCAT taxonomy, confounders as code, confounded data sets.

Three layers, each usable without the next:

1. **MICCAT as data** (Sec. 4.2.1, Fig. 4.1): :data:`MICCAT` lists the four confounder categories at the two
   levels with the thesis's examples; :func:`confounder_table` maps every confounder implemented here to its
   category.
2. **Confounders** (Sec. 4.2.2): pure, seeded functions on image arrays of any size and channel count,
   batched over the whole array: :func:`inject_tag`, :func:`lowpass_denoise` (Eq. 4.1),
   :func:`poisson_noise` (Eq. 4.2, image domain, X-ray), :func:`ct_photon_noise` (Eq. 4.2 in the projection
   domain, CT streaks), two-level noise (the ``noise-levels`` confounder) and
   :func:`attribute_confounded_split` (patient sex).
3. **Development / i.i.d. / o.o.d. sets** (Sec. 4.2.2, "Evaluation"): :func:`artifact_mask`,
   :func:`split_dev_test` and :func:`confounded_sets` put the confounder into a fraction ``p_art`` of the
   positive class of the development set and of the i.i.d. test set, and into every negative (and no positive)
   of the o.o.d. test set. Confounded versions are cached on disk by a hash of their configuration.

The experiment itself (fine-tuning natural, medical and random sources on every set) is
:func:`robustness_experiment`; it imports the training stack lazily so that everything above stays light.

Image arrays follow one convention everywhere: ``(H, W)`` is one grey image, ``(H, W, C)`` one image with
``C`` channels and ``(N, H, W, C)`` a batch (the layout of :class:`cfct.data.ImageSet`). Grey values live on
the 8-bit scale ``[0, 255]``; ``uint8`` input gives ``uint8`` output (rounded and clipped), floating input
gives output of the same float dtype without rounding, which is what the tests use to check the defining
properties exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cfct.errors import ConfigError, unknown_choice

__all__ = [
    "P_ART_LEVELS",
    "MICCAT",
    "MiccatCategory",
    "miccat_table",
    "confounder_table",
    "inject_tag",
    "tag_box",
    "lowpass_denoise",
    "poisson_noise",
    "poisson_noise_std",
    "ct_photon_noise",
    "Confounder",
    "CONFOUNDERS",
    "get_confounder",
    "artifact_mask",
    "ood_mask",
    "split_dev_test",
    "attribute_confounded_split",
    "dev_splits",
    "positive_class",
]

#: The correlation levels of Sec. 4.2.2: fraction of positive development images carrying the confounder.
P_ART_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 0.8, 1.0)

# ---------------------------------------------------------------------------------------------------------
# 1. MICCAT (Sec. 4.2.1, Fig. 4.1)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MiccatCategory:
    """One category of the Medical Imaging Contextualized Confounder Taxonomy (Fig. 4.1).

    Attributes
    ----------
    level : {'patient', 'environment'}
        The first split of MICCAT.
    name : str
        Category name in the thesis's words.
    definition : str
        What belongs in the category (Sec. 4.2.1).
    examples : tuple of str
        Further examples named in the thesis text (Sec. 4.2.1, 4.3 and the discussion); Fig. 4.1 itself is an
        image, so its exact wording is not reproduced.
    studied : tuple of str
        Confounders of this category studied in Chapter 4 (bold in Fig. 4.1), as :data:`CONFOUNDERS` keys.
    """

    level: str
    name: str
    definition: str
    examples: tuple[str, ...]
    studied: tuple[str, ...] = ()


MICCAT: tuple[MiccatCategory, ...] = (
    MiccatCategory(
        "patient",
        "demographic attributes",
        "standard, often protected attributes of the patient, frequently proxies of the true shortcut cause",
        ("age", "race / ethnicity"),
        ("sex",),
    ),
    MiccatCategory(
        "patient",
        "anatomical confounders",
        "inherent anatomical properties of organs and body, or disease variations visible in the image",
        ("skin colour (proxied by ethnicity)", "organ shape and size", "disease variations"),
    ),
    MiccatCategory(
        "environment",
        "external confounders",
        "physical or virtual elements in the image due to external factors",
        ("hospitalization devices", "chest tubes"),
        ("tag",),
    ),
    MiccatCategory(
        "environment",
        "imaging confounders",
        "characteristics of the imaging modality itself, equipment or acquisition parameters",
        ("motion blur", "intensity differences (equipment, acquisition)"),
        ("denoising", "noise", "noise-levels", "ct-noise"),
    ),
)

#: How the figure and tables name each studied confounder.
CONFOUNDER_LABELS: dict[str, str] = {
    "sex": "patient sex ('Female')",
    "tag": "tag ('R')",
    "denoising": "denoising (low-pass, Eq. 4.1)",
    "noise": "Poisson noise (Eq. 4.2)",
    "noise-levels": "high vs low noise",
    "ct-noise": "CT photon noise (projections)",
}


def miccat_table() -> pd.DataFrame:
    """MICCAT (Fig. 4.1) as a tidy table: one row per category, studied confounders and other examples."""
    return pd.DataFrame(
        [
            {
                "level": c.level,
                "category": c.name,
                "definition": c.definition,
                "studied in Ch. 4": "; ".join(CONFOUNDER_LABELS[k] for k in c.studied),
                "other examples": "; ".join(c.examples),
            }
            for c in MICCAT
        ]
    )


# ---------------------------------------------------------------------------------------------------------
# Array conventions
# ---------------------------------------------------------------------------------------------------------


def _as_batch(images: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """View ``images`` as ``(N, H, W, C)`` and return the inverse reshaper."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        return arr[None, :, :, None], lambda y: y[0, :, :, 0]
    if arr.ndim == 3:
        return arr[None], lambda y: y[0]
    if arr.ndim == 4:
        return arr, lambda y: y
    raise ConfigError(f"images must have shape (H, W), (H, W, C) or (N, H, W, C); got an array with shape {arr.shape}")


def _finish(y: np.ndarray, dtype: np.dtype, *, floor: bool = False) -> np.ndarray:
    """Cast float results back to the input dtype: integer dtypes are rounded (or floored) and clipped."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        y = np.floor(y) if floor else np.rint(y)
        return np.clip(y, max(info.min, 0), min(info.max, 255)).astype(dtype)
    return y.astype(dtype, copy=False)


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _identical_channels(x: np.ndarray) -> bool:
    """True when every channel equals the first (grey images stored as RGB, as in NIH CXR14 PNGs)."""
    return x.shape[-1] > 1 and all(np.array_equal(x[..., 0], x[..., c]) for c in range(1, x.shape[-1]))


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must lie in [0, 1]; got {value}")
    return value


# ---------------------------------------------------------------------------------------------------------
# 2a. External confounder: a tag (Fig. 4.2a)
# ---------------------------------------------------------------------------------------------------------

#: The thesis's tag (``include_tag.py``): the letter 'R', font size 64 px, top-left corner at (200, 200) px
#: of a 1024 px chest X-ray, i.e. 6.25 % and 19.5 % of the image side.
THESIS_TAG_TEXT = "R"
THESIS_TAG_SIZE = 64 / 1024
THESIS_TAG_POSITION = 200 / 1024
#: Smallest legible font: at 28 px the thesis's 6.25 % would be a 1.75 px glyph, i.e. no letter at all.
TAG_MIN_FONT_PX = 8


@functools.lru_cache(maxsize=64)
def _tag_alpha(
    height: int, width: int, text: str, size: float, position: float, min_font_px: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Render the tag once per image size: an opacity map in [0, 1] and its box (r0, c0, r1, c1)."""
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    side = min(height, width)
    font_px = max(int(round(size * side)), int(min_font_px))
    # DejaVu Sans ships with matplotlib, so the glyph is identical on every machine (the thesis used the
    # system's sans-serif font through the same matplotlib lookup).
    font_file = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)
    font = ImageFont.truetype(font_file, font_px)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (right - left, bottom - top), color=0)
    ImageDraw.Draw(canvas).text((-left, -top), text, font=font, fill=255)
    glyph = np.asarray(canvas, dtype=np.float32) / 255.0
    r0, c0 = int(round(position * height)), int(round(position * width))
    r1, c1 = r0 + glyph.shape[0], c0 + glyph.shape[1]
    if r1 > height or c1 > width:
        raise ConfigError(
            f"a {font_px} px tag at {position:.3f} of the side does not fit a {height}x{width} image; "
            "use a smaller `size`/`min_font_px` or a larger image"
        )
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[r0:r1, c0:c1] = glyph
    alpha.setflags(write=False)
    return alpha, (r0, c0, r1, c1)


def tag_box(
    shape: Sequence[int],
    *,
    text: str = THESIS_TAG_TEXT,
    size: float = THESIS_TAG_SIZE,
    position: float = THESIS_TAG_POSITION,
    min_font_px: int = TAG_MIN_FONT_PX,
) -> tuple[int, int, int, int]:
    """The box ``(row0, col0, row1, col1)`` (end-exclusive) that :func:`inject_tag` may change.

    Parameters
    ----------
    shape : sequence of int
        Shape of the images, in any layout :func:`inject_tag` accepts.
    text, size, position, min_font_px
        As in :func:`inject_tag`.
    """
    batch, _ = _as_batch(np.empty(tuple(shape), dtype=np.uint8))
    return _tag_alpha(batch.shape[1], batch.shape[2], text, size, position, min_font_px)[1]


def inject_tag(
    images: np.ndarray,
    *,
    text: str = THESIS_TAG_TEXT,
    size: float = THESIS_TAG_SIZE,
    position: float = THESIS_TAG_POSITION,
    value: float = 255.0,
    min_font_px: int = TAG_MIN_FONT_PX,
) -> np.ndarray:
    """Write a text tag into every image: the *external confounder* of Sec. 4.2.2 (Fig. 4.2a).

    The thesis writes a white 'R' (font size 64 px) whose top-left corner sits at (200, 200) px of a
    1024 px chest X-ray, away from the edges so that it survives the training augmentations (rotation up to
    10 degrees, shifts, shear and zoom of 0.1). Here both the font size and the position are fractions of the
    image side (6.25 % and 19.5 %), so the tag scales with resolution; below 128 px the font is held at
    ``min_font_px`` (8 px) because 6.25 % of 28 or 64 px (1.75 or 4 px) cannot draw a letter. At 28 px the tag
    is thus a ~6x6 px 'R' starting 5 px from the top-left corner (an 8 px font at 64 px starts 12 px in).

    Parameters
    ----------
    images : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` grey values on the 8-bit scale.
    text : str
        Tag text (the thesis: ``'R'``).
    size : float
        Font size as a fraction of the shorter image side.
    position : float
        Row and column of the glyph's top-left corner as a fraction of the image height / width.
    value : float
        Grey value of the tag (255 = white, as in the thesis). The anti-aliased glyph edge blends linearly.
    min_font_px : int
        Smallest font size in pixels.

    Returns
    -------
    ndarray
        Same shape and dtype as ``images``; pixels outside :func:`tag_box` are unchanged, bit for bit.
    """
    x, restore = _as_batch(images)
    alpha, (r0, c0, r1, c1) = _tag_alpha(
        x.shape[1], x.shape[2], str(text), float(size), float(position), int(min_font_px)
    )
    # Blend only inside the glyph's box; everything else is copied untouched (the tests rely on bit equality).
    a = alpha[None, r0:r1, c0:c1, None]
    box = x[:, r0:r1, c0:c1]
    blended = _finish(box.astype(np.float32) * (1.0 - a) + np.float32(value) * a, x.dtype)
    out = x.copy()
    out[:, r0:r1, c0:c1] = np.where(a > 0, blended, box)
    return restore(out)


# ---------------------------------------------------------------------------------------------------------
# 2b. Imaging confounder: denoising by an ideal low-pass filter (Eq. 4.1, Fig. 4.2c)
# ---------------------------------------------------------------------------------------------------------

#: The thesis's cutoff in the frequency units of the model input: ``include_lowpass.py`` passes a disc of
#: *diameter* D0 = 500 frequency bins of a 1024 px X-ray (radius 250 bins = 0.244 cycles/pixel), and the model
#: sees those images at 512 px, where the same disc reaches 250/512 = 0.488 cycles/pixel.
THESIS_LOWPASS_CUTOFF = 250 / 512


def _frequency_radius(height: int, width: int) -> np.ndarray:
    """D(u, v) of Eq. 4.1 on the ``rfft2`` grid, in cycles per pixel (0 = DC, 0.5 = Nyquist on an axis)."""
    fu = np.fft.fftfreq(height)[:, None]
    fv = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fu**2 + fv**2)


def lowpass_denoise(images: np.ndarray, cutoff: float = THESIS_LOWPASS_CUTOFF, *, chunk: int = 512) -> np.ndarray:
    """Denoise by an ideal low-pass filter in the DFT domain, Eq. 4.1 (Fig. 4.2c).

    .. math:: H_{LPF}(u, v) = 1 \\text{ if } D(u, v) \\le D_0 \\text{ else } 0

    Every image (and channel) is transformed with one batched real FFT, multiplied by :math:`H_{LPF}` and
    transformed back. :math:`D(u, v)` is the distance from the zero frequency in cycles per pixel, so a
    cutoff means the same thing at every image size. The default reproduces the thesis's filter *as the model
    saw it*: the authors' code passes a disc of diameter D0 = 500 bins of the 1024 px original (radius 250
    bins, 0.244 cycles/pixel), and the images were fed at 512 px, where that disc reaches 0.488
    cycles/pixel, just inside Nyquist (0.5). (Read as a radius at 1024 px, Eq. 4.1's D0 = 500 px would keep
    every frequency a 512 px input can represent.) The filter keeps the zero frequency, hence the image
    mean, and removes all power above the cutoff; ``uint8`` output is then rounded and clipped to [0, 255] as
    in the thesis.

    Parameters
    ----------
    images : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``.
    cutoff : float
        :math:`D_0` in cycles per pixel, in ``(0, 0.5 * sqrt(2)]`` (0.5 = Nyquist along an axis).
    chunk : int
        Images per FFT batch (bounds memory; the result does not depend on it).

    Returns
    -------
    ndarray
        Same shape and dtype as ``images``.
    """
    cutoff = float(cutoff)
    if not 0.0 < cutoff <= np.sqrt(0.5):
        raise ConfigError(f"cutoff must lie in (0, {np.sqrt(0.5):.4f}] cycles per pixel; got {cutoff}")
    x, restore = _as_batch(images)
    n, h, w, _ = x.shape
    passband = (_frequency_radius(h, w) <= cutoff)[None, :, :, None]
    out = np.empty(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    for start in range(0, max(n, 1), max(int(chunk), 1)):
        block = x[start : start + chunk].astype(out.dtype)
        spectrum = np.fft.rfft2(block, axes=(1, 2)) * passband
        out[start : start + chunk] = np.fft.irfft2(spectrum, s=(h, w), axes=(1, 2))
    return restore(_finish(out, x.dtype))


# ---------------------------------------------------------------------------------------------------------
# 2c. Imaging confounder: Poisson (photon) noise, Eq. 4.2 (Fig. 4.2d)
# ---------------------------------------------------------------------------------------------------------

#: Attenuation conversion of the thesis's ``include_noise.py`` (after [104]): 8-bit grey values are read as a
#: display window in Hounsfield units and mapped linearly to attenuation coefficients.
MU_WATER = 0.1837
MU_AIR = 0.1662
DISPLAY_WINDOW = (-1200.0, 800.0)
#: Source intensity of the thesis's experiments (Sec. 4.2.2); Fig. 4.2d shows 2e6 to make the grain visible.
THESIS_N0 = 2e7
#: The second, stronger noise level of the two-level confounder (Sec. 4.3: "N0 = 2e7 for the positives and
#: N0 = 1e7 for the negatives", reversed for the o.o.d. test set).
THESIS_N0_HIGH_NOISE = 1e7


def _grey_to_attenuation(grey: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    hu = grey / 255.0 * (window[1] - window[0]) + window[0]
    return hu * (MU_WATER - MU_AIR) / 1000.0 + MU_WATER


def _attenuation_to_grey(mu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    hu = 1000.0 * (mu - MU_WATER) / (MU_WATER - MU_AIR)
    hu = np.clip(hu, window[0], window[1])
    return (hu - window[0]) / (window[1] - window[0]) * 255.0


def poisson_noise_std(grey: float | np.ndarray, n0: float, window: tuple[float, float] = DISPLAY_WINDOW) -> np.ndarray:
    """Standard deviation (grey levels) of :func:`poisson_noise` at a grey value, from Eq. 4.2.

    With :math:`p_r = N_0 e^{-p_a}` counts, :math:`\\mathrm{Var}[\\hat p_a] \\approx 1 / (N_0 e^{-p_a})`
    (delta method on :math:`-\\log`), scaled by the slope of the grey -> attenuation conversion.
    """
    mu = _grey_to_attenuation(np.asarray(grey, dtype=np.float64), window)
    slope = 255.0 / (window[1] - window[0]) * 1000.0 / (MU_WATER - MU_AIR)
    return slope / np.sqrt(float(n0) * np.exp(-mu))


def poisson_noise(
    images: np.ndarray,
    n0: float = THESIS_N0,
    *,
    seed: int | np.random.Generator | None = 0,
    dither: bool | None = None,
    window: tuple[float, float] = DISPLAY_WINDOW,
    chunk: int = 1024,
) -> np.ndarray:
    """Add photon (Poisson) noise in the image domain, Eq. 4.2: :math:`p_r + N_p = \\mathcal{P}(p_r)`.

    Following the thesis (after [104]), each grey value is read as Hounsfield units of the display window,
    converted to an attenuation :math:`p_a`, turned into expected photon counts :math:`p_r = e^{-p_a} N_0`,
    replaced by a Poisson draw, converted back with :math:`-\\log(\\cdot / N_0)` and re-windowed. Noise is
    independent per pixel: the graininess of X-ray noise (Sec. 4.3). Lower :math:`N_0` = more noise; the
    thesis uses :math:`N_0 = 2 \\times 10^7` (std ~1.8 grey levels, "imperceptible").

    Parameters
    ----------
    images : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` on the 8-bit grey scale. Identical channels (grey stored
        as RGB) receive identical noise; distinct channels receive independent noise.
    n0 : float
        Source intensity :math:`N_0` (photons per pixel), > 0.
    seed : int, Generator or None
        Randomness; the same seed gives the same noise.
    dither : bool, optional
        Add uniform [0, 1) de-quantisation noise first and floor at the end, as the thesis's code does (the
        round trip is then unbiased). Default: True for integer input, False for float input.
    window : (float, float)
        Hounsfield window that the 8-bit range represents.
    chunk : int
        Images per batch (bounds memory).

    Returns
    -------
    ndarray
        Same shape and dtype as ``images``, clipped to the window (i.e. to [0, 255]).
    """
    n0 = float(n0)
    if not n0 > 0:
        raise ConfigError(f"n0 (photons per pixel) must be > 0; got {n0}")
    x, restore = _as_batch(images)
    integer = np.issubdtype(x.dtype, np.integer)
    dither = integer if dither is None else bool(dither)
    rng = _rng(seed)
    shared = _identical_channels(x)
    planes = x[..., :1] if shared else x
    out = np.empty(planes.shape, dtype=np.float64)
    for start in range(0, max(len(planes), 1), max(int(chunk), 1)):
        grey = planes[start : start + chunk].astype(np.float64)
        if dither:
            grey = grey + rng.uniform(0.0, 1.0, size=grey.shape)
        counts = rng.poisson(np.exp(-_grey_to_attenuation(grey, window)) * n0)
        mu = -np.log(np.maximum(counts / n0, 1e-8))
        out[start : start + chunk] = _attenuation_to_grey(mu, window)
    if shared:
        out = np.repeat(out, x.shape[-1], axis=-1)
    return restore(_finish(out, x.dtype, floor=dither))


# ---------------------------------------------------------------------------------------------------------
# 2d. Imaging confounder: CT photon noise in the projection domain (Sec. 4.3; Ch. 5's LoDoPaB-CT artifact)
# ---------------------------------------------------------------------------------------------------------

#: LoDoPaB-CT's simulation [104]: attenuation of water ~20 / m, a 26 cm field of view and N0 = 4096 photons
#: per detector bin (its low-dose setting).
CT_MU_WATER_PER_M = 20.0
CT_FIELD_OF_VIEW_M = 0.26
LODOPAB_N0 = 4096.0
#: Default source intensity of :func:`ct_photon_noise` and of the registered ``ct-noise`` confounder: LoDoPaB-CT's
#: low-dose level, a visible, strong artifact (Chapter 5's projection-domain noise). Chapter 4 uses the thesis's
#: imperceptible :data:`THESIS_N0` instead (its ``ct_n0`` parameter).
CT_N0 = LODOPAB_N0


def ct_photon_noise(
    images: np.ndarray,
    n0: float = CT_N0,
    *,
    seed: int | np.random.Generator | None = 0,
    n_angles: int | None = None,
    window: tuple[float, float] = DISPLAY_WINDOW,
    field_of_view_m: float = CT_FIELD_OF_VIEW_M,
    mu_water_per_m: float = CT_MU_WATER_PER_M,
    progress: bool = False,
) -> np.ndarray:
    """Photon noise of a CT scan, simulated in the projection domain (Eq. 4.2 applied to the sinogram).

    Each slice is read as Hounsfield units of the display window, converted to attenuation
    :math:`\\mu = \\mu_{water}(1 + HU/1000)` over a ``field_of_view_m`` wide field, forward projected
    (parallel-beam Radon transform, :func:`skimage.transform.radon`) into line integrals :math:`p_a`, turned
    into counts :math:`p_r = N_0 e^{-p_a}` per detector bin, replaced by Poisson draws, log-converted back and
    reconstructed by filtered back-projection (:func:`skimage.transform.iradon`, ramp filter). Only the
    reconstructed *noise* (FBP of noisy minus FBP of clean sinogram) is added to the slice, so the result is
    the original slice plus photon noise, without the blur of a discretised Radon round trip. Because every
    detector reading is smeared back along its ray, the noise is correlated along projection lines: the streak
    artifacts that Sec. 4.3 contrasts with the pixel-independent grain of :func:`poisson_noise`.

    Parameters
    ----------
    images : ndarray
        ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` CT slices on the 8-bit grey scale; non-square slices are
        zero-padded to a square for the projection and cropped back. Identical channels share one noise draw.
    n0 : float
        Photons per detector bin (> 0); LoDoPaB-CT's low-dose 4096 by default. Lower = noisier.
    seed : int, Generator or None
        Randomness.
    n_angles : int, optional
        Projection angles over 180 degrees; default = the (padded) image side.
    window : (float, float)
        Hounsfield window that the 8-bit range represents.
    field_of_view_m : float
        Physical width of the image in metres (sets the line-integral scale, hence the counts).
    mu_water_per_m : float
        Attenuation of water in 1/m.
    progress : bool
        Show a tqdm bar (one projection + reconstruction per slice; this is the slow confounder).

    Returns
    -------
    ndarray
        Same shape and dtype as ``images``.
    """
    from skimage.transform import iradon, radon
    from tqdm.auto import tqdm

    n0 = float(n0)
    if not n0 > 0:
        raise ConfigError(f"n0 (photons per detector bin) must be > 0; got {n0}")
    x, restore = _as_batch(images)
    n, h, w, c = x.shape
    shared = _identical_channels(x)
    planes = x[..., :1] if shared else x
    side = max(h, w)
    angles = int(n_angles) if n_angles is not None else side
    if angles < 2:
        raise ConfigError(f"n_angles must be >= 2; got {angles}")
    theta = np.linspace(0.0, 180.0, angles, endpoint=False)
    pixel_m = float(field_of_view_m) / side
    grey_per_mu = 1000.0 / float(mu_water_per_m) * 255.0 / (window[1] - window[0])
    rng = _rng(seed)
    out = planes.astype(np.float64)
    jobs = [(i, ch) for i in range(n) for ch in range(planes.shape[-1])]
    for i, ch in tqdm(jobs, desc="CT photon noise", disable=not progress, leave=False):
        grey = np.zeros((side, side))
        grey[:h, :w] = out[i, :, :, ch]
        hu = grey / 255.0 * (window[1] - window[0]) + window[0]
        mu = np.maximum(float(mu_water_per_m) * (1.0 + hu / 1000.0), 0.0)
        line_integrals = radon(mu, theta=theta, circle=False) * pixel_m
        counts = rng.poisson(n0 * np.exp(-line_integrals))
        # A zero count has no logarithm; clamp at half a photon (a common convention in low-dose simulation).
        noisy = -np.log(np.maximum(counts, 0.5) / n0)
        noise_mu = iradon(noisy - line_integrals, theta=theta, output_size=side, circle=False, filter_name="ramp")
        out[i, :, :, ch] += (noise_mu / pixel_m * grey_per_mu)[:h, :w]
    out = np.clip(out, 0.0, 255.0)
    if shared:
        out = np.repeat(out, c, axis=-1)
    return restore(_finish(out, x.dtype))


# ---------------------------------------------------------------------------------------------------------
# Confounder registry
# ---------------------------------------------------------------------------------------------------------


def _identity(images: np.ndarray, *, seed: Any = None) -> np.ndarray:  # noqa: ARG001 - uniform signature
    return np.array(images, copy=True)


@dataclass(frozen=True)
class Confounder:
    """A confounder of Chapter 4: what to do to images that carry it, and to those that do not.

    Attributes
    ----------
    name : str
        Key in :data:`CONFOUNDERS`.
    category : str
        MICCAT category (a :attr:`MiccatCategory.name`).
    kind : {'image', 'attribute'}
        ``'image'`` confounders change pixels; ``'attribute'`` ones (patient sex) select images by metadata.
    function : str
        Name of the function in this module that adds the artifact (empty for attributes).
    params : dict
        Keyword arguments of ``function`` (JSON-able; part of every cache key).
    base_function, base_params
        Function applied to the images *without* the artifact (two-level noise: every image gets the lower
        noise level). Empty = leave them untouched.
    attribute, value : str
        For ``kind='attribute'``: metadata column and the value that acts as the confounder (thesis: 'F').
    description : str
        One line in the thesis's words.
    """

    name: str
    category: str
    kind: str
    function: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    base_function: str = ""
    base_params: Mapping[str, Any] = field(default_factory=dict)
    attribute: str = ""
    value: str = ""
    description: str = ""

    def config(self) -> dict[str, Any]:
        """JSON-able identity of the confounder (used in cache keys)."""
        return {
            "name": self.name,
            "function": self.function,
            "params": dict(self.params),
            "base_function": self.base_function,
            "base_params": dict(self.base_params),
            "attribute": self.attribute,
            "value": self.value,
        }

    def _call(self, fname: str, params: Mapping[str, Any], images: np.ndarray, seed: int) -> np.ndarray:
        fn = _FUNCTIONS[fname]
        kwargs = dict(params)
        if fname in _SEEDED:
            kwargs["seed"] = seed
        return fn(images, **kwargs)

    def add(self, images: np.ndarray, *, seed: int = 0) -> np.ndarray:
        """The artifact applied to every image of ``images``."""
        if self.kind != "image":
            raise ConfigError(
                f"confounder {self.name!r} is a patient attribute; it selects images, see attribute_confounded_split"
            )
        return self._call(self.function, self.params, images, seed)

    def apply(self, images: np.ndarray, mask: np.ndarray, *, seed: int = 0) -> np.ndarray:
        """Images with the artifact where ``mask`` is True and the base treatment elsewhere.

        Parameters
        ----------
        images : ndarray
            ``(N, H, W, C)`` batch.
        mask : ndarray of bool
            ``(N,)``, which images carry the artifact.
        seed : int
            Randomness of noise confounders (artifact and base use distinct streams).
        """
        x = np.asarray(images)
        mask = np.asarray(mask, dtype=bool)
        if x.ndim != 4 or mask.shape != (len(x),):
            raise ConfigError(f"apply needs an (N, H, W, C) batch and an (N,) mask; got {x.shape} and {mask.shape}")
        out = x.copy()
        if self.base_function and (~mask).any():
            out[~mask] = self._call(self.base_function, self.base_params, x[~mask], seed + 1_000_003)
        if mask.any():
            out[mask] = self.add(x[mask], seed=seed)
        return out


_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "inject_tag": inject_tag,
    "lowpass_denoise": lowpass_denoise,
    "poisson_noise": poisson_noise,
    "ct_photon_noise": ct_photon_noise,
    "identity": _identity,
}
_SEEDED = {"poisson_noise", "ct_photon_noise"}

#: Every confounder cfct implements, keyed by the name chapters use.
CONFOUNDERS: dict[str, Confounder] = {
    c.name: c
    for c in (
        Confounder(
            "tag",
            "external confounders",
            "image",
            "inject_tag",
            description="a hospital/device tag: white 'R' away from the edges (Fig. 4.2a)",
        ),
        Confounder(
            "denoising",
            "imaging confounders",
            "image",
            "lowpass_denoise",
            {"cutoff": THESIS_LOWPASS_CUTOFF},
            description="vendor denoising as an ideal low-pass filter, Eq. 4.1 (Fig. 4.2c)",
        ),
        Confounder(
            "noise",
            "imaging confounders",
            "image",
            "poisson_noise",
            {"n0": THESIS_N0},
            description="Poisson (photon) noise in the image domain, Eq. 4.2, noise vs no noise (Fig. 4.2d)",
        ),
        # Sec. 4.3's text: "N0 = 2e7 for the positives and N0 = 1e7 for the negatives (reversed for the o.o.d.
        # test set)": the images that carry the confounder (positives) get the *lower* noise level.
        Confounder(
            "noise-levels",
            "imaging confounders",
            "image",
            "poisson_noise",
            {"n0": THESIS_N0},
            "poisson_noise",
            {"n0": THESIS_N0_HIGH_NOISE},
            description="two-level Poisson noise: N0 = 2e7 (low noise) on the confounded positives vs 1e7 (high "
            "noise) on all others (Sec. 4.3)",
        ),
        Confounder(
            "ct-noise",
            "imaging confounders",
            "image",
            "ct_photon_noise",
            {"n0": CT_N0},
            description="CT photon noise in the projection domain (Radon, Poisson, FBP): streaks (Sec. 4.3)",
        ),
        Confounder(
            "sex",
            "demographic attributes",
            "attribute",
            attribute="sex",
            value="F",
            description="patient sex ('Female' correlated with the label), a proxy of anatomical confounders",
        ),
    )
}


def get_confounder(name: str | Confounder, **params: Any) -> Confounder:
    """A registered confounder, optionally with parameters of its artifact function overridden.

    Examples
    --------
    >>> get_confounder("denoising", cutoff=0.3).params["cutoff"]
    0.3
    """
    if isinstance(name, Confounder):
        base = name
    else:
        if name not in CONFOUNDERS:
            raise unknown_choice("confounder", name, CONFOUNDERS)
        base = CONFOUNDERS[name]
    if not params:
        return base
    if base.kind != "image":
        raise ConfigError(f"confounder {base.name!r} takes no parameters; got {sorted(params)}")
    return dataclasses.replace(base, params={**base.params, **params})


def confounder_table() -> pd.DataFrame:
    """Every implemented confounder with its MICCAT level and category (the chapter's mapping table)."""
    level = {c.name: c.level for c in MICCAT}
    rows = []
    for conf in CONFOUNDERS.values():
        how = conf.function or f"attribute_confounded_split({conf.attribute}={conf.value!r})"
        if conf.params:
            how += (
                "("
                + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in conf.params.items())
                + ")"
            )
        if conf.base_function:
            how += (
                f"; others: {conf.base_function}(" + ", ".join(f"{k}={v:g}" for k, v in conf.base_params.items()) + ")"
            )
        rows.append(
            {
                "confounder": conf.name,
                "MICCAT level": level[conf.category],
                "MICCAT category": conf.category,
                "cfct": how,
                "what": conf.description,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# 3. Development, i.i.d. and o.o.d. sets (Sec. 4.2.2, "Evaluation")
# ---------------------------------------------------------------------------------------------------------

#: The class that carries the confounder ("positive", i.e. the finding) for targets whose finding is not
#: label 1. BreastMNIST: 0 = malignant, 1 = normal or benign.
POSITIVE_CLASS: dict[str, int] = {"breastmnist": 0, "medmnist:breastmnist": 0}


def positive_class(target: str) -> int:
    """Label of the finding (the class that receives the confounder) of a target spec; 1 unless listed."""
    return POSITIVE_CLASS.get(str(target).split("@")[0], 1)


def _binary_labels(labels: np.ndarray, positive: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ConfigError(f"shortcut sets need binary labels of shape (N,); got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1} or positive not in (0, 1):
        raise ConfigError(f"shortcut sets need binary 0/1 labels and positive in (0, 1); got {sorted(values)}")
    return y == positive


def artifact_mask(labels: np.ndarray, p_art: float, *, positive: int = 1, seed: int = 0) -> np.ndarray:
    """Which images carry the artifact in a development (or i.i.d. test) set: exactly ``round(p_art * n_pos)``
    positives, no negatives (Sec. 4.2.2).

    The positives are taken in one seeded random order, so the sets are nested: every image confounded at
    ``p_art = 0.2`` is also confounded at 0.5, and the sweep changes nothing but the correlation.

    Parameters
    ----------
    labels : ndarray
        ``(N,)`` binary labels.
    p_art : float
        Fraction of positives carrying the artifact, in [0, 1].
    positive : int
        Label of the positive (finding) class.
    seed : int
        Order in which positives receive the artifact.
    """
    p_art = _check_fraction("p_art", p_art)
    pos = np.flatnonzero(_binary_labels(labels, positive))
    order = np.random.default_rng(seed).permutation(pos)
    mask = np.zeros(len(np.asarray(labels)), dtype=bool)
    mask[order[: int(round(p_art * len(pos)))]] = True
    return mask


def ood_mask(labels: np.ndarray, *, positive: int = 1) -> np.ndarray:
    """The o.o.d. test composition: the artifact in every negative and in no positive (Sec. 4.2.2)."""
    return ~_binary_labels(labels, positive)


def _groups_or_index(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Group ids per image; images without a group (None / NaN / '') form a group of their own."""
    if groups is None:
        return np.arange(n).astype(str)
    g = pd.Series(np.asarray(groups, dtype=object))
    missing = g.isna() | (g.astype(str) == "")
    g = g.astype(str)
    g[missing] = [f"__single_{i}" for i in np.flatnonzero(missing.to_numpy())]
    return g.to_numpy()


def _group_disjoint_pools(
    cells: np.ndarray, groups: np.ndarray, test_needs: Mapping[Any, int], rng: np.random.Generator,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean test-pool mask: whole groups, added in random order while they help an unmet test need; a group
    with any image in ``exclude`` never enters (the test sets of earlier replicates stay out, patient-wise)."""
    uniq = rng.permutation(np.unique(groups))
    have = dict.fromkeys(test_needs, 0)
    test = np.zeros(len(groups), dtype=bool)
    by_group = pd.Series(np.arange(len(groups))).groupby(groups).indices
    banned = set() if exclude is None else set(np.asarray(groups)[_exclude_mask(exclude, len(groups))].tolist())
    for g in uniq:
        if g in banned:
            continue
        idx = by_group[g]
        contributes = {c: int(np.sum(cells[idx] == c)) for c in test_needs}
        if any(n and have[c] < test_needs[c] for c, n in contributes.items()):
            test[idx] = True
            for c, n in contributes.items():
                have[c] += n
    short = {c: (have[c], n) for c, n in test_needs.items() if have[c] < n}
    if short:
        raise ConfigError(f"not enough images for the test set (have, need) per cell: {short}")
    return test


def _exclude_mask(exclude: np.ndarray | None, n: int) -> np.ndarray:
    """A boolean ``(n,)`` mask from ``exclude`` (a boolean mask or integer indices; None = nothing)."""
    if exclude is None:
        return np.zeros(n, dtype=bool)
    e = np.asarray(exclude)
    if e.dtype == bool:
        if e.shape != (n,):
            raise ConfigError(f"test_exclude must be a boolean mask of {n} images; got shape {e.shape}")
        return e
    mask = np.zeros(n, dtype=bool)
    mask[e.astype(int)] = True
    return mask


def _take(pool: np.ndarray, n: int, rng: np.random.Generator, what: str) -> np.ndarray:
    if len(pool) < n:
        raise ConfigError(f"{what}: need {n} images, only {len(pool)} available; lower n_dev / n_test")
    return np.sort(rng.permutation(pool)[:n])


def _class_counts(n: int, pos_fraction: float) -> tuple[int, int]:
    n_pos = int(round(n * _check_fraction("pos_fraction", pos_fraction)))
    if n < 2 or n_pos < 1 or n_pos > n - 1:
        raise ConfigError(f"a set of {n} images at pos_fraction={pos_fraction} would hold a single class")
    return n_pos, n - n_pos


def split_dev_test(
    labels: np.ndarray,
    *,
    n_dev: int,
    n_test: int,
    pos_fraction: float = 0.5,
    positive: int = 1,
    groups: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    seed: int = 0,
    test_exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a development set and a test set with exact class proportions (Table 4.1).

    Two modes: with ``test_labels`` the target has an official test split (MedMNIST) and the test set is drawn
    from it (indices into ``test_labels``); without, both are drawn from one pool, disjoint by ``groups``
    (patient ids, else near-duplicate groups) so that no patient lands on both sides.

    Parameters
    ----------
    labels : ndarray
        ``(N,)`` binary labels of the development pool (and of the test pool when ``test_labels`` is None).
    n_dev, n_test : int
        Set sizes.
    pos_fraction : float
        Share of positives in both sets (thesis: 0.3 for X-ray lung mass, 0.5 for CT and atelectasis).
    positive : int
        Label of the positive class.
    groups : ndarray, optional
        Patient or group id per image of the pool.
    test_labels : ndarray, optional
        Labels of a separate official test split.
    seed : int
        Randomness.
    test_exclude : ndarray, optional
        Images (boolean mask or indices, into ``test_labels`` when given, else into ``labels``) that may not be
        tested on, e.g. the test sets of earlier replicates; with ``groups``, their whole groups stay out of the
        test set. The development set may use them.

    Returns
    -------
    dev_idx, test_idx : ndarray of int
        Sorted indices (``test_idx`` into ``test_labels`` when given).
    """
    rng = np.random.default_rng(seed)
    is_pos = _binary_labels(labels, positive)
    d_pos, d_neg = _class_counts(int(n_dev), pos_fraction)
    t_pos, t_neg = _class_counts(int(n_test), pos_fraction)
    if test_labels is not None:
        t_is_pos = _binary_labels(test_labels, positive)
        allowed = ~_exclude_mask(test_exclude, len(t_is_pos))
        dev = np.concatenate(
            [
                _take(np.flatnonzero(is_pos), d_pos, rng, "development positives"),
                _take(np.flatnonzero(~is_pos), d_neg, rng, "development negatives"),
            ]
        )
        test = np.concatenate(
            [
                _take(np.flatnonzero(t_is_pos & allowed), t_pos, rng, "test positives"),
                _take(np.flatnonzero(~t_is_pos & allowed), t_neg, rng, "test negatives"),
            ]
        )
        return np.sort(dev), np.sort(test)
    g = _groups_or_index(groups, len(is_pos))
    in_test = _group_disjoint_pools(is_pos, g, {True: t_pos, False: t_neg}, rng, test_exclude)
    test = np.concatenate(
        [
            _take(np.flatnonzero(is_pos & in_test), t_pos, rng, "test positives"),
            _take(np.flatnonzero(~is_pos & in_test), t_neg, rng, "test negatives"),
        ]
    )
    dev = np.concatenate(
        [
            _take(np.flatnonzero(is_pos & ~in_test), d_pos, rng, "development positives"),
            _take(np.flatnonzero(~is_pos & ~in_test), d_neg, rng, "development negatives"),
        ]
    )
    return np.sort(dev), np.sort(test)


def attribute_confounded_split(
    metadata: pd.DataFrame,
    label: str,
    attribute: str,
    p_art: float,
    *,
    value: Any = "F",
    n_dev: int = 400,
    n_test: int = 400,
    pos_fraction: float = 0.5,
    positive: int = 1,
    group: str | None = "patient_id",
    seed: int = 0,
    test_exclude: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sample sets in which a patient attribute co-occurs with the positive class (the atelectasis / gender
    experiment of Sec. 4.2.2-4.3).

    The thesis draws PA atelectasis (positive) and no-finding (negative) images of NIH CXR14 such that
    ``p_art`` of the development positives are 'Female' and every development negative is 'Male'; its o.o.d.
    test set holds male positives and female negatives (the attribute in every negative, no positive). The
    i.i.d. test set is drawn like the development set. Patients never cross between development and test
    pools, and the pools are fixed across ``p_art`` (only which positives are used changes, nested as in
    :func:`artifact_mask`), so the sweep varies the correlation alone.

    Parameters
    ----------
    metadata : DataFrame
        One row per image (row order = image order), with columns ``label``, ``attribute`` and ``group``.
    label : str
        Binary label column.
    attribute : str
        Attribute column (e.g. ``'sex'``).
    p_art : float
        Fraction of development (and i.i.d. test) positives with ``attribute == value``.
    value : Any
        The confounding attribute value (thesis: 'F').
    n_dev, n_test : int
        Set sizes (thesis: 400 and 400).
    pos_fraction : float
        Share of positives (thesis: 0.5).
    positive : int
        Label of the positive class.
    group : str or None
        Patient-id column for patient-disjoint pools (None or a missing column: images are independent).
    seed : int
        Randomness (pools and orders; independent of ``p_art``).
    test_exclude : ndarray, optional
        Rows (boolean mask or positions) whose patients may not enter the test pool, e.g. the test pools of
        earlier replicates (:func:`split_dev_test`).

    Returns
    -------
    dict
        ``dev``, ``iid``, ``ood``: sorted integer row positions; ``dev_attr``, ``iid_attr``, ``ood_attr``:
        boolean arrays aligned with them, True where the image has the attribute.
    """
    p_art = _check_fraction("p_art", p_art)
    for col in (label, attribute):
        if col not in metadata.columns:
            raise unknown_choice("metadata column", col, list(metadata.columns))
    is_pos = _binary_labels(metadata[label].to_numpy(), positive)
    has = (metadata[attribute] == value).to_numpy()
    d_pos, d_neg = _class_counts(int(n_dev), pos_fraction)
    t_pos, t_neg = _class_counts(int(n_test), pos_fraction)
    rng = np.random.default_rng(seed)
    groups = metadata[group].to_numpy() if group and group in metadata.columns else None
    cells = np.array(["pos+" if p and a else "pos-" if p else "neg+" if a else "neg-" for p, a in zip(is_pos, has)])
    g = _groups_or_index(groups, len(metadata))
    in_test = _group_disjoint_pools(cells, g, {"pos+": t_pos, "pos-": t_pos, "neg+": t_neg, "neg-": t_neg}, rng,
                                    test_exclude)

    def ordered(cell: str, pool: np.ndarray, n: int, what: str) -> np.ndarray:
        idx = np.flatnonzero((cells == cell) & pool)
        if len(idx) < n:
            raise ConfigError(f"{what}: need {n} images, only {len(idx)} available; lower n_dev / n_test")
        return rng.permutation(idx)[:n]

    # Fixed candidate lists (drawn once, before p_art is used) make the sweep nested and the pools stable.
    dev_pos_a = ordered("pos+", ~in_test, d_pos, f"development positives with {attribute}={value!r}")
    dev_pos_n = ordered("pos-", ~in_test, d_pos, f"development positives without {attribute}={value!r}")
    dev_neg_n = ordered("neg-", ~in_test, d_neg, f"development negatives without {attribute}={value!r}")
    test_pos_a = ordered("pos+", in_test, t_pos, "test positives with the attribute")
    test_pos_n = ordered("pos-", in_test, t_pos, "test positives without the attribute")
    test_neg_a = ordered("neg+", in_test, t_neg, "test negatives with the attribute")
    test_neg_n = ordered("neg-", in_test, t_neg, "test negatives without the attribute")

    k_dev, k_test = int(round(p_art * d_pos)), int(round(p_art * t_pos))
    sets = {
        "dev": np.concatenate([dev_pos_a[:k_dev], dev_pos_n[: d_pos - k_dev], dev_neg_n]),
        "iid": np.concatenate([test_pos_a[:k_test], test_pos_n[: t_pos - k_test], test_neg_n]),
        "ood": np.concatenate([test_pos_n, test_neg_a]),
    }
    out: dict[str, np.ndarray] = {}
    for name, idx in sets.items():
        idx = np.sort(idx)
        out[name] = idx
        out[f"{name}_attr"] = has[idx]
    return out


def dev_splits(
    labels: np.ndarray,
    *,
    k: int,
    val_fraction: float = 0.15,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` seeded train/validation splits of a development set (Table 4.1's "% split train/val").

    The thesis's CSVs are five shuffle splits (not a partition), disjoint by patient where ids exist and
    stratified by class otherwise; so are these. Every split keeps both classes in both parts.

    Returns
    -------
    list of (train_idx, val_idx)
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    y = np.asarray(labels)
    if int(k) < 1:
        raise ConfigError(f"k (folds) must be >= 1; got {k}")
    _check_fraction("val_fraction", val_fraction)
    out = []
    if groups is not None and len(set(np.asarray(groups).tolist())) < len(y):
        g = _groups_or_index(groups, len(y))
        splitter = GroupShuffleSplit(n_splits=50 * int(k), test_size=val_fraction, random_state=seed)
        for tr, va in splitter.split(y, y, groups=g):
            if len(np.unique(y[tr])) == 2 and len(np.unique(y[va])) == 2:
                out.append((np.sort(tr), np.sort(va)))
            if len(out) == int(k):
                return out
        raise ConfigError(
            "could not draw patient-disjoint train/val splits holding both classes; "
            "raise val_fraction or the development set size"
        )
    splitter = StratifiedShuffleSplit(n_splits=int(k), test_size=val_fraction, random_state=seed)
    for tr, va in splitter.split(np.zeros(len(y)), y):
        out.append((np.sort(tr), np.sort(va)))
    return out


# ---------------------------------------------------------------------------------------------------------
# Confounded ImageSets, cached
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# 4. The robustness experiment of Sec. 4.2.2-4.3
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# 5. The chapter's plan and the thesis's published numbers
# ---------------------------------------------------------------------------------------------------------


