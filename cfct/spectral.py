"""Spectral analysis of data, artifacts and models (thesis Chapter 5).

- :func:`radial_psd` is Eq. 5.1: the 2D spectrum magnitude of an image integrated over angle into a 1D density
  over radial frequency, for one image or a whole batch, on NumPy or torch input (one FFT per batch, radial
  binning by a precomputed index); the power spectrum and the ring sum are named options.
- :func:`artifact_psd` is the spectrum of a frequency artifact: the PSD of the residual (modified - original).
- :func:`learning_priority` is the PSD of the gradient of the loss with respect to the input image, averaged
  over a dataset (Lin et al. 2022, the thesis's reference [117]).
- :func:`normalize_spectrum` / :func:`whiten` are Eq. 5.2, the spectrum normalisation and whitening the thesis
  applied to its medical source; :func:`lowpass` and :func:`coarse_merge` are the low-pass filtering and class
  merge it applied to its natural source (5.2.4). :func:`edit_source` maps an
  :class:`~cfct.data.ImageSet` to an edited one, so an edited source can be pre-trained like any other.
- :func:`nlm_denoise` is the non-local-means denoising artifact of 5.1.2 (scikit-image's
  ``denoise_nl_means``).

Conventions (used by every function here)
-----------------------------------------
*DFT normalisation.* The unitary ("ortho") DFT, so Parseval holds without a factor: the sum of the power
spectrum over all frequencies equals the image energy ``sum(x**2)``.

*Radial frequency.* A DFT coefficient at integer frequency (u, v) (cycles per image, ``u, v`` in
``[-M/2, M/2)``) has radius ``r = sqrt(u**2 + v**2)`` and falls into bin ``k = round(r)``. Eq. 5.1 keeps
``k = 0 .. M/2 - 1`` (M the image side); the corners of the spectrum (``r >= M/2 - 1/2``, beyond the largest
circle that fits) are dropped unless ``include_corners=True``. Integrating over angle is ``2 pi`` times the mean
over the coefficients of a ring, so an image with a flat spectrum (white noise, in expectation) has a flat PSD;
the ring *sum* (``reduce='sum'``), which grows linearly with k for white noise, is kept as an option.

*Normalised frequency* (the x-axis of Fig. 5.3): ``omega_bar_k = k / (M/2 - 1)``, 1 at the highest radial
frequency kept; see :func:`normalized_frequencies`.

*Channels.* A colour image's PSD is the mean over its channels' PSDs, so a grey image repeated to three
channels has the PSD of the grey image.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from cfct import shortcuts
from cfct.data import ImageSet, normalize, to_tensor
from cfct.errors import ConfigError, IncompatibleError, unknown_choice
from cfct.shortcuts import lowpass_denoise
from cfct.train import resolve_device

ArrayLike = np.ndarray | torch.Tensor

LAYOUTS = ("HW", "NHW", "NHWC", "NCHW")


# ----------------------------------------------------------------------------------------------------------
# Eq. 5.1: radial power spectral density
# ----------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _radial_index_cpu(height: int, width: int, include_corners: bool) -> tuple[torch.Tensor, int]:
    size = min(height, width)
    # integer frequencies in cycles per image along each axis, as in np.fft.fftfreq(n) * n, rescaled to the
    # shorter side so non-square images share one radial axis
    fy = torch.fft.fftfreq(height, dtype=torch.float64) * size
    fx = torch.fft.fftfreq(width, dtype=torch.float64) * size
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    index = torch.round(radius).long().reshape(-1)
    n_bins = int(index.max()) + 1 if include_corners else size // 2
    # coefficients beyond the last kept bin go to a dump bin n_bins, dropped after binning
    index = torch.clamp(index, max=n_bins)
    return index, n_bins


@functools.lru_cache(maxsize=32)
def _rfft_index_cpu(height: int, width: int, include_corners: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Bins and weights of the half spectrum ``rfft2`` returns (half the FFT work of ``fft2``).

    A real image's spectrum is conjugate-symmetric, ``|F(-u, -v)| = |F(u, v)|``; ``rfft2`` keeps the columns
    ``v = 0 .. W // 2``. Each kept column except ``v = 0`` (and ``v = W/2`` for even W) stands for itself and
    its mirror, which has the same radius, so it counts twice.
    """
    full, n_bins = _radial_index_cpu(height, width, include_corners)
    half = width // 2 + 1
    index = full.reshape(height, width)[:, :half].reshape(-1)
    weight = torch.full((half,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    return index, weight, n_bins


def radial_index(height: int, width: int, *, include_corners: bool = False) -> tuple[np.ndarray, int]:
    """The radial-frequency bin of every DFT coefficient of an ``height x width`` image (Eq. 5.1).

    Parameters
    ----------
    height, width : int
        Image size in pixels (at least 2 each).
    include_corners : bool
        Keep the corner frequencies beyond ``M/2 - 1`` (needed for Parseval); Eq. 5.1 drops them.

    Returns
    -------
    index : ndarray of int, shape (height * width,)
        Bin of each coefficient in ``np.fft.fft2`` order (flattened); ``n_bins`` marks a dropped coefficient.
    n_bins : int
        Number of radial bins kept (``min(height, width) // 2`` unless ``include_corners``).
    """
    _check_size(height, width)
    index, n_bins = _radial_index_cpu(int(height), int(width), bool(include_corners))
    return index.numpy().copy(), n_bins


def normalized_frequencies(n_bins: int) -> np.ndarray:
    """Normalised radial frequency ``omega_bar_k = k / (n_bins - 1)`` of Fig. 5.3 (1 = highest kept bin).

    Examples
    --------
    >>> normalized_frequencies(5)
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    if int(n_bins) < 2:
        raise ConfigError(f"n_bins must be at least 2, got {n_bins}")
    return np.arange(int(n_bins)) / (int(n_bins) - 1)


def _check_size(height: int, width: int) -> None:
    if int(height) < 2 or int(width) < 2:
        raise IncompatibleError(f"images must be at least 2x2 pixels for a radial PSD, got {height}x{width}")


def _as_nchw(x: ArrayLike, layout: str | None) -> tuple[torch.Tensor, bool]:
    """(batch as float tensor (N, C, H, W), whether the input was a single image)."""
    is_numpy = isinstance(x, np.ndarray)
    if not is_numpy and not isinstance(x, torch.Tensor):
        raise ConfigError(f"expected a numpy array or torch tensor, got {type(x).__name__}")
    ndim = x.ndim
    if layout is None:
        # ImageSet arrays are NHWC (numpy); torch tensors are NCHW
        layout = {2: "HW", 3: "NHW", 4: "NHWC" if is_numpy else "NCHW"}.get(ndim)
        if layout is None:
            raise IncompatibleError(
                f"expected an image (H, W) or a batch (N, H, W[, C]), got shape {tuple(x.shape)}"
            )
    if layout not in LAYOUTS:
        raise unknown_choice("layout", layout, LAYOUTS)
    if len(layout) != ndim:
        raise IncompatibleError(
            f"layout {layout!r} needs {len(layout)} dimensions, got shape {tuple(x.shape)}"
        )
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if not (torch.is_floating_point(t) or torch.is_complex(t)):
        t = t.to(torch.float32)
    elif t.dtype == torch.float16 or t.dtype == torch.bfloat16:
        t = t.float()
    if layout == "HW":
        t = t[None, None]
    elif layout == "NHW":
        t = t[:, None]
    elif layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
    return t, layout == "HW"


PSD_REDUCTIONS = ("integral", "sum")


def radial_psd(
    x: ArrayLike,
    *,
    exponent: float = 1.0,
    reduce: str = "integral",
    layout: str | None = None,
    include_corners: bool = False,
    batch_size: int = 4096,
) -> ArrayLike:
    r"""Radial spectral density of an image or a batch of images (Eq. 5.1).

    .. math::
        PSD(\omega_k) = \int_0^{2\pi} \|\mathcal{F}(X)(\omega_k \cos\phi, \omega_k \sin\phi)\| \, d\phi

    By default this is the equation as printed: the *magnitude* ``|F|`` (``exponent=1``) integrated over the
    angle, discretised as the mean of ``|F(X)(u, v)|`` over the DFT coefficients whose radius rounds to ``k``
    times ``2 pi`` (``reduce='integral'``; unitary DFT, see the module docstring). An image whose spectrum
    magnitude does not depend on the direction or the radius (a single bright pixel) has a flat PSD.

    Two named variants reproduce other conventions:

    * ``exponent=2``: the power spectrum ``|F|**2`` instead of the magnitude;
    * ``reduce='sum'``: the *sum* over the ring's coefficients instead of the angular integral. A ring at radius
      k holds about ``2 pi k`` coefficients, so the sum weights each radius by its circumference (a white-noise
      image then rises linearly with k). ``exponent=2, reduce='sum'`` is the book's earlier ``radial_psd``, for
      which Parseval holds: with ``include_corners=True``, ``radial_psd(x, exponent=2, reduce='sum').sum() ==
      (x ** 2).sum()`` (mean over channels).

    Parameters
    ----------
    x : ndarray or Tensor
        One image ``(H, W)``, a batch of grey images ``(N, H, W)``, or a batch with channels: ``(N, H, W, C)``
        for NumPy (the ImageSet layout), ``(N, C, H, W)`` for torch. Any dtype (uint8 is cast to float).
    exponent : float
        ``p`` in ``|F|**p``: 1, the magnitude of Eq. 5.1 (default), or 2 for the power spectrum.
    reduce : {'integral', 'sum'}
        ``'integral'``: ``2 pi`` x the ring mean, the angular integral of Eq. 5.1 (default); ``'sum'``: the ring
        sum.
    layout : {'HW', 'NHW', 'NHWC', 'NCHW'}, optional
        Override the layout inferred from the number of dimensions.
    include_corners : bool
        Also keep the corner frequencies beyond ``M/2 - 1`` (rings there are incomplete circles; their ring
        mean is over the coefficients that exist).
    batch_size : int
        Images per FFT; bounds memory for large sets (the work within a batch is one vectorised FFT).

    Returns
    -------
    ndarray or Tensor
        ``(n_bins,)`` for one image, ``(N, n_bins)`` for a batch; NumPy in, NumPy (float64) out; torch in,
        torch out (same device). ``n_bins = min(H, W) // 2``.

    Examples
    --------
    >>> import numpy as np
    >>> n = np.arange(32)
    >>> wave = np.cos(2 * np.pi * (3 * n[:, None] + 4 * n[None, :]) / 32)   # radius sqrt(3**2 + 4**2) = 5
    >>> int(np.argmax(radial_psd(wave)))
    5
    >>> delta = np.zeros((8, 8)); delta[0, 0] = 1.0           # |F| = 1/8 at every frequency
    >>> np.allclose(radial_psd(delta), 2 * np.pi / 8)
    True
    """
    if exponent <= 0:
        raise ConfigError(f"exponent must be positive, got {exponent}")
    if reduce not in PSD_REDUCTIONS:
        raise unknown_choice("PSD reduction", reduce, PSD_REDUCTIONS)
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    is_numpy = isinstance(x, np.ndarray)
    batch, single = _as_nchw(x, layout)
    n, _, height, width = batch.shape
    _check_size(height, width)
    real_input = not torch.is_complex(batch)
    if real_input:
        index, weight, n_bins = _rfft_index_cpu(int(height), int(width), bool(include_corners))
    else:
        index, n_bins = _radial_index_cpu(int(height), int(width), bool(include_corners))
    # float64 input keeps float64 (exact Parseval); anything else is transformed in float32
    dtype = torch.float64 if batch.dtype in (torch.float64, torch.complex128) else torch.float32
    index = index.to(batch.device)
    if real_input:
        weight = weight.to(device=batch.device, dtype=dtype)
    out = torch.zeros(n, n_bins + 1, dtype=dtype, device=batch.device)
    for start in range(0, n, int(batch_size)):
        chunk = batch[start : start + int(batch_size)]
        if real_input:
            spectrum = torch.fft.rfft2(chunk.to(dtype), norm="ortho")
        else:
            spectrum = torch.fft.fft2(chunk, norm="ortho")
        magnitude = spectrum.abs()
        power = magnitude if exponent == 1 else magnitude.square() if exponent == 2 else magnitude.pow(exponent)
        # mean over channels, then one scatter-add of every coefficient into its radial bin
        power = power.mean(dim=1)
        if real_input:
            power = power * weight
        out[start : start + chunk.shape[0]].index_add_(1, index, power.reshape(chunk.shape[0], -1))
    psd = out[:, :n_bins]
    if reduce == "integral":
        counts = _ring_counts_cpu(int(height), int(width), bool(include_corners), real_input)
        psd = psd * (2 * np.pi / counts.to(device=psd.device, dtype=psd.dtype))
    if single:
        psd = psd[0]
    return psd.cpu().numpy().astype(np.float64) if is_numpy else psd


@functools.lru_cache(maxsize=32)
def _ring_counts_cpu(height: int, width: int, include_corners: bool, real_input: bool) -> torch.Tensor:
    """Number of DFT coefficients in each kept radial bin (the full spectrum's count, mirrors included)."""
    full, n_bins = _radial_index_cpu(height, width, include_corners)
    return torch.bincount(full, minlength=n_bins + 1)[:n_bins].to(torch.float64)


def normalize_psd(psd: ArrayLike, how: str = "sum") -> ArrayLike:
    """Scale PSD curves (last axis) for comparison across models and data, as in Fig. 5.3.

    Parameters
    ----------
    psd : ndarray or Tensor
        One PSD ``(K,)`` or several ``(..., K)``.
    how : {'sum', 'max'}
        ``'sum'``: a density over frequency (each curve sums to 1); ``'max'``: peak at 1.
    """
    if how not in ("sum", "max"):
        raise unknown_choice("PSD normalisation", how, ("sum", "max"))
    if isinstance(psd, torch.Tensor):
        scale = psd.sum(-1, keepdim=True) if how == "sum" else psd.amax(-1, keepdim=True)
        return psd / scale.clamp_min(torch.finfo(psd.dtype).tiny)
    psd = np.asarray(psd, dtype=np.float64)
    scale = psd.sum(-1, keepdims=True) if how == "sum" else psd.max(-1, keepdims=True)
    return psd / np.maximum(scale, np.finfo(np.float64).tiny)


def artifact_psd(original: ArrayLike, modified: ArrayLike, **kwargs: Any) -> np.ndarray:
    """Mean radial PSD of an artifact: the residual ``modified - original`` over a batch (5.2.3).

    Parameters
    ----------
    original, modified : ndarray
        Batches of the same shape (any layout :func:`radial_psd` accepts); uint8 is cast to float first, so
        the residual is signed.
    **kwargs
        Passed to :func:`radial_psd`.

    Returns
    -------
    ndarray, shape (n_bins,)
        The residual's PSD averaged over the images.
    """
    if tuple(original.shape) != tuple(modified.shape):
        raise IncompatibleError(
            f"original and modified images differ in shape: "
            f"{tuple(original.shape)} vs {tuple(modified.shape)}"
        )
    residual = _to_float64(modified) - _to_float64(original)
    psd = radial_psd(residual, **kwargs)
    return psd if psd.ndim == 1 else psd.mean(axis=0)


def _to_float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# Learning priority: PSD of the loss gradient with respect to the input (Lin et al. 2022)
# ----------------------------------------------------------------------------------------------------------
def _loss_per_sample(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    if task == "multi-label":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(1)
    return nn.functional.cross_entropy(logits, labels.long().reshape(-1), reduction="none")


def input_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    task: str = "multi-class",
    normalization: str | None = None,
) -> torch.Tensor:
    """Gradient of each image's prediction loss with respect to that image (one backward pass per batch).

    Parameters
    ----------
    model : nn.Module
        Takes float ``(B, 3, H, W)`` (after ``normalization``) and returns logits; put in eval mode here so
        batch-norm uses its running statistics and every image's gradient depends on that image alone (which
        is what makes one backward pass of the summed loss give each image's own gradient).
    images : Tensor
        ``(B, 3, H, W)`` in [0, 1], on the model's device.
    labels : Tensor, optional
        Labels for the loss; None uses the model's own predicted class (for a source model whose head knows
        none of the target's classes).
    task : str
        'multi-label' uses binary cross-entropy, anything else cross-entropy.
    normalization : str, optional
        Name for :func:`cfct.data.normalize` applied inside the graph ('imagenet', 'half'); None or 'none'
        feeds the images as they are. The gradient is with respect to the un-normalised image.

    Returns
    -------
    Tensor
        ``(B, 3, H, W)`` gradients.
    """
    model.eval()
    x = images.detach().clone().requires_grad_(True)
    inputs = x
    if normalization not in (None, "none"):
        inputs = normalize(x, normalization)
    with torch.enable_grad():
        logits = model(inputs)
        if labels is None:
            labels = logits.detach().argmax(1) if task != "multi-label" else (logits.detach() > 0).long()
        loss = _loss_per_sample(logits, labels.to(logits.device), task).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def learning_priority(
    model: nn.Module,
    data: ImageSet | tuple[ArrayLike, ArrayLike | None],
    *,
    labels: str = "true",
    normalization: str | None = "model",
    batch_size: int = 128,
    max_images: int | None = None,
    device: str | torch.device = "auto",
    exponent: float = 1.0,
    reduce: str = "integral",
    progress: bool = False,
) -> np.ndarray:
    """Learning priority of a model: the radial PSD of the input gradient of its loss, averaged over data.

    Following Lin et al. (2022; thesis reference [117], used in 5.1.3), the gradient map back-propagated from
    the prediction loss to the input image is treated as the image ``X`` of Eq. 5.1; the PSDs of the
    per-image gradients are averaged (the gradients themselves are not: their signs differ from image to
    image). Batched: one forward/backward pass per batch gives every image's gradient.

    Parameters
    ----------
    model : nn.Module
        A classifier taking ``(B, 3, H, W)`` (a :class:`cfct.zoo.Classifier` or any module); its parameters
        are left unchanged (no gradient is accumulated on them).
    data : ImageSet or (images, labels)
        Images as an ImageSet (uint8 NHWC) or a pair: float tensor ``(N, 3, H, W)`` in [0, 1] and labels
        (or None).
    labels : {'true', 'predicted'}
        Loss against the data's labels, or against the model's own predicted class (for a pre-trained source
        whose head has other classes than the data).
    normalization : str or None
        'model' (default): the model's own ``normalization`` attribute (no normalisation when it has none);
        or a name for :func:`cfct.data.normalize`; None / 'none' for none.
    batch_size : int
        Images per forward/backward pass.
    max_images : int, optional
        Use only the first ``max_images`` images.
    device : str or torch.device
        'auto' uses :func:`cfct.train.resolve_device` when available, else the model's device.
    exponent, reduce : float, str
        Passed to :func:`radial_psd`: Eq. 5.1 as printed by default (magnitude, angular integral);
        ``exponent=2, reduce='sum'`` is the book's earlier ring-summed power spectrum.
    progress : bool
        Show a tqdm bar over batches.

    Returns
    -------
    ndarray, shape (n_bins,)
        Mean radial PSD of the input gradients (un-normalised; see :func:`normalize_psd`).
    """
    if labels not in ("true", "predicted"):
        raise unknown_choice("labels", labels, ("true", "predicted"))
    images, targets, task = _as_tensors(data)
    if max_images is not None:
        if int(max_images) < 1:
            raise ConfigError(f"max_images must be at least 1, got {max_images}")
        images = images[: int(max_images)]
        targets = None if targets is None else targets[: int(max_images)]
    if labels == "true" and targets is None:
        raise ConfigError(
            "labels='true' needs labels; pass labels='predicted' to use the model's predictions"
        )
    if normalization == "model":
        normalization = getattr(model, "normalization", None)
    dev = _resolve_device(model, device)
    was_training = model.training
    model.to(dev)
    total: torch.Tensor | None = None
    batches = range(0, len(images), int(batch_size))
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="learning priority", unit="batch", leave=False)
    try:
        for start in batches:
            x = images[start : start + int(batch_size)].to(dev)
            y = None if labels == "predicted" else targets[start : start + int(batch_size)].to(dev)
            grad = input_gradients(model, x, y, task=task, normalization=normalization)
            psd = radial_psd(grad.double(), exponent=exponent, reduce=reduce).sum(0)
            total = psd if total is None else total + psd
    finally:
        model.train(was_training)
    assert total is not None
    return (total / len(images)).cpu().numpy()


def _as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        images = torch.as_tensor(images)
        if not torch.is_floating_point(images):
            images = images.to(torch.float32)
        if images.ndim != 4 or images.shape[1] != 3:
            raise IncompatibleError(
                f"images must be float (N, 3, H, W) in [0, 1], got shape {tuple(images.shape)}"
            )
        labels = None if labels is None else torch.as_tensor(np.asarray(labels))
        task = "multi-label" if labels is not None and labels.ndim == 2 else "multi-class"
        return images, labels, task
    if hasattr(data, "images") and hasattr(data, "labels"):
        if len(data) == 0:
            raise ConfigError(f"dataset {data.name!r} is empty")
        return to_tensor(data.images), torch.as_tensor(np.asarray(data.labels)), data.task
    raise ConfigError(f"data must be an ImageSet or an (images, labels) pair, got {type(data).__name__}")


def _resolve_device(model: nn.Module, device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return resolve_device("auto")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------------------
# Eq. 5.2: spectrum normalisation and whitening (medical-source editing, 5.2.4)
# ----------------------------------------------------------------------------------------------------------
def _images_float(images: np.ndarray) -> tuple[np.ndarray, bool]:
    """Float64 (N, H, W, C) view of ``(H, W)``, ``(N, H, W)`` or ``(N, H, W, C)``; True for one image.

    The layouts are those of :func:`radial_psd` for NumPy input (3D is a batch of grey images; pass one
    colour image as ``image[None]``).
    """
    arr = np.asarray(images)
    if arr.ndim == 2:
        return arr[None, :, :, None].astype(np.float64), True
    if arr.ndim == 3:
        return arr[..., None].astype(np.float64), False
    if arr.ndim == 4:
        return arr.astype(np.float64), False
    raise IncompatibleError(f"expected an image (H, W) or a batch (N, H, W[, C]), got shape {arr.shape}")


def _restore_shape(result: np.ndarray, like: np.ndarray, single: bool) -> np.ndarray:
    like = np.asarray(like)
    if single:
        return result[0, :, :, 0]
    return result[..., 0] if like.ndim == 3 else result


def normalize_spectrum(images: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    r"""Spectrum normalisation of Eq. 5.2, :math:`I_n = \mathcal{F}^{-1}(\mathcal{F}(I)/\|\mathcal{F}(I)\|)`.

    Every DFT coefficient is scaled to unit magnitude (its phase kept), per image and channel, so the
    magnitude spectrum of ``I_n`` is flat (exactly 1 wherever ``F(I)`` is non-zero; coefficients that are
    zero stay zero). The unitary DFT is used; the result is real because the input is.

    Parameters
    ----------
    images : ndarray
        ``(H, W)``, ``(N, H, W)`` or ``(N, H, W, C)``; any real dtype.
    eps : float
        Magnitudes below ``eps`` are treated as zero.

    Returns
    -------
    ndarray of float64, same shape as ``images``.
    """
    x, single = _images_float(images)
    spectrum = np.fft.fft2(x, axes=(1, 2), norm="ortho")
    magnitude = np.abs(spectrum)
    flat = np.where(magnitude > eps, spectrum / np.maximum(magnitude, eps), 0.0)
    normalized = np.fft.ifft2(flat, axes=(1, 2), norm="ortho").real
    return _restore_shape(normalized, images, single)


def whiten(normalized: np.ndarray, original: np.ndarray) -> np.ndarray:
    r"""Whitening of Eq. 5.2: :math:`I_w = (I_n - \mu_n)\,\sigma_o / \sigma_n + \mu_o`, per image and channel.

    Gives ``normalized`` the mean and standard deviation of ``original`` (same shape). A constant
    ``normalized`` image (``sigma_n = 0``) becomes the constant ``mu_o``.
    """
    if np.shape(normalized) != np.shape(original):
        raise IncompatibleError(f"shapes differ: {np.shape(normalized)} vs {np.shape(original)}")
    n, single = _images_float(normalized)
    o, _ = _images_float(original)
    mu_n, sd_n = n.mean(axis=(1, 2), keepdims=True), n.std(axis=(1, 2), keepdims=True)
    mu_o, sd_o = o.mean(axis=(1, 2), keepdims=True), o.std(axis=(1, 2), keepdims=True)
    scale = np.divide(sd_o, sd_n, out=np.zeros_like(sd_o), where=sd_n > 0)
    return _restore_shape((n - mu_n) * scale + mu_o, normalized, single)


def spectrum_whiten(images: np.ndarray) -> np.ndarray:
    """Eq. 5.2 in one step: spectrum-normalise, then whiten to the original mean and std (float64)."""
    return whiten(normalize_spectrum(images), images)


# ----------------------------------------------------------------------------------------------------------
# Low-pass filtering (natural-source editing, 5.2.4)
# ----------------------------------------------------------------------------------------------------------
def lowpass(images: np.ndarray, cutoff: float) -> np.ndarray:
    """Ideal low-pass filter (Eq. 4.1) of an image or batch, cutoff as a normalised radial frequency.

    Frequencies with ``omega_bar > cutoff`` are removed (the mean, at frequency 0, is kept). The filter is
    Chapter 4's :func:`cfct.shortcuts.lowpass_denoise` (one batched FFT), whose cutoff is in cycles per pixel;
    this wrapper takes it on Fig. 5.3's axis (``omega_bar = 1`` at radius ``M/2 - 1`` cycles per image), so
    the edit can be read off the learning-priority plots, and follows this module's layouts. Returns float64
    of the input's shape (no rounding).
    """
    x, single = _images_float(images)
    side = min(x.shape[1], x.shape[2])
    cycles_per_pixel = float(cutoff) * (side // 2 - 1) / side * (1 + 1e-9)  # ring edge stays inside
    if not 0 < float(cutoff) <= 1:
        raise ConfigError(f"cutoff is a normalised radial frequency in (0, 1], got {cutoff}")
    return _restore_shape(lowpass_denoise(x, cycles_per_pixel), images, single)


# ----------------------------------------------------------------------------------------------------------
# Class merge of the natural source (5.2.4)
# ----------------------------------------------------------------------------------------------------------
#: CIFAR-10's classes in the two top-level WordNet categories the thesis kept for ImageNet. Every CIFAR-10
#: class is an animal (WordNet "living thing") or a vehicle (WordNet "artifact"); none falls into the thesis's
#: third group, "miscellaneous" (ImageNet's foods, plants' fruit, geological formations, ...), so the merge
#: has two classes here.
CIFAR10_COARSE: dict[str, str] = {
    "airplane": "artifact",
    "automobile": "artifact",
    "ship": "artifact",
    "truck": "artifact",
    "bird": "living thing",
    "cat": "living thing",
    "deer": "living thing",
    "dog": "living thing",
    "frog": "living thing",
    "horse": "living thing",
}


def coarse_merge(ds: ImageSet, mapping: Mapping[str, str] | None = None) -> ImageSet:
    """Merge an ImageSet's classes into coarse ones (5.2.4: ImageNet into living thing / artifact / misc.).

    Parameters
    ----------
    ds : ImageSet
        A single-label dataset whose ``class_names`` are all keys of ``mapping``.
    mapping : mapping, optional
        Fine class name -> coarse class name; default :data:`CIFAR10_COARSE`.

    Returns
    -------
    ImageSet
        Same images, labels re-indexed to the sorted coarse names, task 'binary' for two classes else
        'multi-class', name suffixed with ``|coarse``.
    """
    mapping = dict(CIFAR10_COARSE if mapping is None else mapping)
    if ds.labels.ndim != 1:
        raise ConfigError(f"coarse_merge needs single-label data; {ds.name!r} is {ds.task}")
    missing = [c for c in ds.class_names if c not in mapping]
    if missing:
        raise ConfigError(
            f"classes {missing} of {ds.name!r} have no coarse class; mapping covers: {', '.join(mapping)}"
        )
    coarse = tuple(sorted(set(mapping[c] for c in ds.class_names)))
    lookup = np.array([coarse.index(mapping[c]) for c in ds.class_names], dtype=np.int64)
    return dataclasses.replace(
        ds,
        labels=lookup[ds.labels],
        class_names=coarse,
        task="binary" if len(coarse) == 2 else "multi-class",
        name=f"{ds.name}|coarse",
    )


# ----------------------------------------------------------------------------------------------------------
# Source-data editing: ImageSet -> ImageSet
# ----------------------------------------------------------------------------------------------------------
def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _check_imageset(ds: Any) -> None:
    if not (hasattr(ds, "images") and hasattr(ds, "labels")):
        raise ConfigError(f"expected an ImageSet, got {type(ds).__name__}")
    if ds.images.dtype != np.uint8 or ds.images.ndim != 4:
        raise IncompatibleError(
            f"ImageSet images must be uint8 (N, H, W, C), got {ds.images.dtype} {ds.images.shape}"
        )


def spectrum_whiten_source(ds: ImageSet) -> ImageSet:
    """Edit (a) of 5.2.4: every image spectrum-normalised and whitened (Eq. 5.2), back to uint8.

    Rounding to uint8 clips the whitened image to [0, 255]; the chapter reports how many pixels that
    touches.
    """
    _check_imageset(ds)
    edited = _to_uint8(spectrum_whiten(ds.images))
    return dataclasses.replace(ds, images=edited, name=f"{ds.name}|spectrum-whiten")


def lowpass_coarse_source(
    ds: ImageSet, cutoff: float = 0.5, mapping: Mapping[str, str] | None = None
) -> ImageSet:
    """Edit (b) of 5.2.4: low-pass every image (:func:`lowpass`), merge classes (:func:`coarse_merge`)."""
    _check_imageset(ds)
    filtered = _to_uint8(lowpass(ds.images, cutoff))
    merged = coarse_merge(ds, mapping)
    return dataclasses.replace(merged, images=filtered, name=f"{ds.name}|lowpass{cutoff:g}|coarse")


SOURCE_EDITS: dict[str, Callable[..., Any]] = {
    "spectrum-whiten": spectrum_whiten_source,
    "lowpass-coarse": lowpass_coarse_source,
}


def edit_source(ds: ImageSet, edit: str, **params: Any) -> ImageSet:
    """Apply a named source edit of 5.2.4 (one of :data:`SOURCE_EDITS`) to an ImageSet.

    The edited set's ``name`` records the edit (and its parameters), so its fingerprint, and every cached run
    pre-trained on it, differs from the original's.
    """
    if edit not in SOURCE_EDITS:
        raise unknown_choice("source edit", edit, SOURCE_EDITS)
    return SOURCE_EDITS[edit](ds, **params)


# ----------------------------------------------------------------------------------------------------------
# Non-local-means denoising (the MRI artifact of 5.1.2)
# ----------------------------------------------------------------------------------------------------------
def estimate_noise_sigma(images: np.ndarray) -> np.ndarray:
    """Standard deviation of additive noise per image and channel (Immerkaer 1996), for a whole batch at once.

    Convolves with the difference of two Laplacians, ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which cancels
    locally linear image content, and scales the mean absolute response:
    ``sigma = sqrt(pi / 2) / (6 (H - 2) (W - 2)) * sum |I * N|``. Written here, vectorised over the batch,
    because scikit-image's ``estimate_sigma`` needs PyWavelets and works one image at a time.

    Parameters
    ----------
    images : ndarray
        ``(H, W)``, ``(N, H, W)`` or ``(N, H, W, C)``, in the units wanted for sigma.

    Returns
    -------
    ndarray
        ``(N, C)`` (``(1, 1)`` for one image).
    """
    x, _ = _images_float(images)
    if x.shape[1] < 3 or x.shape[2] < 3:
        raise IncompatibleError(f"noise estimation needs images of at least 3x3 pixels, got {x.shape[1:3]}")
    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    height, width = x.shape[1] - 2, x.shape[2] - 2
    response = sum(
        kernel[i, j] * x[:, i : i + height, j : j + width] for i in range(3) for j in range(3)
    )
    return np.sqrt(np.pi / 2) / (6 * height * width) * np.abs(response).sum(axis=(1, 2))


def nlm_denoise(
    images: np.ndarray,
    *,
    strength: float = 1.0,
    patch_size: int | None = None,
    patch_distance: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Non-local-means denoising (Manjón et al. 2008, the thesis's reference [116]) of an image or batch.

    scikit-image's ``denoise_nl_means`` with the noise standard deviation estimated per image
    (:func:`estimate_noise_sigma`) and the filter parameter ``h = 0.8 * strength * sigma`` (scikit-image's
    advice for ``fast_mode``). Patch size and search distance scale linearly with the image side: 5 and 6 px
    at 64 px (5 and 5 at 28 px), reaching scikit-image's defaults, 7 and 11, at 224 px.

    ``denoise_nl_means`` takes one 2D image (a 3D array would be read as a volume, mixing images), so this
    loops over the images; it is the only per-image loop in this module (about 1 ms per 28 px image).

    Parameters
    ----------
    images : ndarray
        uint8 ``(H, W)``, ``(N, H, W)`` or ``(N, H, W, C)``.
    strength : float
        Multiplier of ``h``: larger smooths more.
    patch_size, patch_distance : int, optional
        Override the size-scaled defaults.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    ndarray of uint8, the input's shape.
    """
    from skimage.restoration import denoise_nl_means

    if strength <= 0:
        raise ConfigError(f"strength must be positive, got {strength}")
    x, single = _images_float(images)
    side = min(x.shape[1], x.shape[2])
    if patch_size is None:
        patch_size = int(np.clip(round(5 + 2 * (side - 64) / 160), 3, 7))
    if patch_distance is None:
        patch_distance = int(np.clip(round(6 + 5 * (side - 64) / 160), 3, 11))
    out = np.empty_like(x)
    items = range(len(x))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="NLM denoising", unit="img", leave=False)
    channel_axis = -1 if x.shape[-1] > 1 else None
    sigmas = estimate_noise_sigma(x / 255.0).mean(axis=1)
    for i in items:
        image = x[i] / 255.0 if channel_axis is not None else x[i, :, :, 0] / 255.0
        sigma = float(sigmas[i])
        denoised = denoise_nl_means(
            image,
            patch_size=patch_size,
            patch_distance=patch_distance,
            h=0.8 * strength * max(sigma, 1e-3),
            sigma=sigma,
            fast_mode=True,
            channel_axis=channel_axis,
        )
        out[i] = denoised.reshape(out[i].shape) * 255.0
    return _restore_shape(_to_uint8(out), images, single)


# ----------------------------------------------------------------------------------------------------------
# Frequency artifacts of 5.1.2 as Chapter 4 confounders
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpectralArtifact(shortcuts.Confounder):
    """A :class:`cfct.shortcuts.Confounder` whose artifact function lives in this module (NLM denoising).

    Chapter 4's set construction (:func:`cfct.experiments.robustness.experiment_sets`: the artifact in a fraction of the
    positive training images, in every negative of the o.o.d. test set) and its on-disk cache take it like
    any registered confounder; only :meth:`add` differs.
    """

    def add(self, images: np.ndarray, *, seed: int = 0) -> np.ndarray:  # noqa: ARG002 - deterministic
        if self.function not in _ARTIFACT_FUNCTIONS:
            raise unknown_choice("spectral artifact function", self.function, _ARTIFACT_FUNCTIONS)
        return _ARTIFACT_FUNCTIONS[self.function](images, **dict(self.params))


_ARTIFACT_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {"nlm_denoise": nlm_denoise}

#: The two frequency artifacts of 5.1.2: projection-domain photon noise for CT (Chapter 4's ``ct-noise``,
#: LoDoPaB-CT's low-dose N0 = 4096) and non-local-means denoising (the thesis's MRI artifact).
ARTIFACTS: dict[str, shortcuts.Confounder] = {
    "ct-noise": shortcuts.CONFOUNDERS["ct-noise"],
    "nlm-denoising": SpectralArtifact(
        "nlm-denoising",
        "imaging confounders",
        "image",
        "nlm_denoise",
        {"strength": 1.0},
        description="non-local-means denoising (scikit-image), the MRI artifact of 5.1.2 [116]",
    ),
}


def get_artifact(name: str, **params: Any) -> shortcuts.Confounder:
    """A frequency artifact of :data:`ARTIFACTS`, optionally with its function's parameters overridden.

    Examples
    --------
    >>> get_artifact("nlm-denoising", strength=2.0).params["strength"]
    2.0
    """
    if name not in ARTIFACTS:
        raise unknown_choice("frequency artifact", name, ARTIFACTS)
    base = ARTIFACTS[name]
    return dataclasses.replace(base, params={**base.params, **params}) if params else base


def artifact_spectrum(
    images: np.ndarray, artifact: str | shortcuts.Confounder, *, seed: int = 0
) -> np.ndarray:
    """Mean radial PSD of an artifact's residual on a batch of clean images (the green lines of Fig. 5.3)."""
    conf = artifact if isinstance(artifact, shortcuts.Confounder) else get_artifact(artifact)
    return artifact_psd(images, conf.add(images, seed=seed))


# ----------------------------------------------------------------------------------------------------------
# Edited sources (5.2.4): edit the images a source is pre-trained on, then pre-train as usual
# ----------------------------------------------------------------------------------------------------------


def clipped_fraction(ds: ImageSet) -> float:
    """Share of pixels the whitening of Eq. 5.2 pushes outside [0, 255] (clipped when stored as uint8)."""
    _check_imageset(ds)
    white = spectrum_whiten(ds.images)
    return float(np.mean((white < -0.5) | (white > 255.5)))


# ----------------------------------------------------------------------------------------------------------
# Learning priorities, cached
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# The experiment of 5.2: robustness vs degradation, with learning priorities
# ----------------------------------------------------------------------------------------------------------


def spectral_centroid(psd: np.ndarray) -> float:
    """Mean normalised frequency of a PSD, ``sum(omega_bar * p) / sum(p)``: where its power sits (0 to 1)."""
    psd = np.asarray(psd, dtype=np.float64)
    return float((normalized_frequencies(len(psd)) * psd).sum() / max(psd.sum(), np.finfo(float).tiny))


def spectral_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two PSDs as densities over frequency: ``sum(min(a / sum(a), b / sum(b)))`` (1 = identical).

    The quantity behind 5.2.3's "overlap" of a learning priority with an artifact's PSD; both curves must be
    on the same radial bins.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise IncompatibleError(f"PSDs must share their radial bins; got {a.shape} and {b.shape}")
    return float(np.minimum(normalize_psd(a), normalize_psd(b)).sum())


# ----------------------------------------------------------------------------------------------------------
# Chapter helpers: source data, edited specs, and the tables the chapter's statements are computed from
# ----------------------------------------------------------------------------------------------------------




def band_fraction(psd: np.ndarray, above: float = 1 / 3) -> float:
    """Share of a PSD's total above a normalised frequency: ``sum(p[omega_bar > above]) / sum(p)`` (0 to 1).

    5.2.3's "mid-to-high frequencies" read as the band above a third of the highest frequency kept
    (``above=1/3``, declared with the claim in ``claims_registry.yaml``).
    """
    psd = np.asarray(psd, dtype=np.float64)
    if psd.ndim != 1 or len(psd) < 2:
        raise ConfigError(f"band_fraction needs one PSD curve of at least 2 bins, got shape {psd.shape}")
    if not 0.0 <= float(above) < 1.0:
        raise ConfigError(f"above must lie in [0, 1), got {above}")
    high = normalized_frequencies(len(psd)) > float(above)
    return float(psd[high].sum() / max(psd.sum(), np.finfo(float).tiny))


@dataclasses.dataclass(frozen=True)
class VariantComparison:
    """How much two variants of :func:`radial_psd` differ once normalised (:func:`compare_psd_variants`).

    Attributes
    ----------
    max_abs_difference : float
        Largest absolute difference between the two sum-normalised mean curves (densities over the bins).
    centroid_a, centroid_b : float
        Spectral centroids (:func:`spectral_centroid`) of the two mean curves.
    centroid_shift : float
        ``centroid_b - centroid_a``.
    tolerance : float
        The centroid shift below which the variants "change little" (on the normalised frequency axis).
    """

    max_abs_difference: float
    centroid_a: float
    centroid_b: float
    centroid_shift: float
    tolerance: float

    @property
    def changes_little(self) -> bool:
        """True when the centroid moves by less than ``tolerance``."""
        return abs(self.centroid_shift) < self.tolerance


def compare_psd_variants(
    images: ArrayLike,
    a: Mapping[str, Any] | None = None,
    b: Mapping[str, Any] | None = None,
    *,
    tolerance: float = 0.02,
) -> VariantComparison:
    """Compare two variants of :func:`radial_psd` on the same images, after normalising each mean curve.

    Parameters
    ----------
    images : ndarray or Tensor
        Any batch :func:`radial_psd` accepts (uint8 is cast to float).
    a, b : mapping, optional
        Keyword arguments of :func:`radial_psd` for each variant. Default: Eq. 5.1 as printed
        (``exponent=1``) against the power spectrum (``exponent=2``), both angular integrals.
    tolerance : float
        Centroid shift (normalised frequency, 0 to 1) below which the curves "change little".

    Returns
    -------
    VariantComparison
    """
    if not tolerance > 0:
        raise ConfigError(f"tolerance must be positive, got {tolerance}")
    a = {"exponent": 1.0} if a is None else dict(a)
    b = {"exponent": 2.0} if b is None else dict(b)
    x = _to_float64(images)
    curves = []
    for kwargs in (a, b):
        psd = np.asarray(radial_psd(x, **kwargs))
        curves.append(psd if psd.ndim == 1 else psd.mean(axis=0))
    if curves[0].shape != curves[1].shape:
        raise IncompatibleError(f"the two variants give different bins: {curves[0].shape} vs {curves[1].shape}")
    ca, cb = spectral_centroid(curves[0]), spectral_centroid(curves[1])
    diff = float(np.abs(normalize_psd(curves[0]) - normalize_psd(curves[1])).max())
    return VariantComparison(diff, ca, cb, cb - ca, float(tolerance))
