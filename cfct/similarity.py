"""Representation and prediction similarity of two networks (thesis 3.3).

Layer-wise similarity compares the activations of two networks at the same layer over the same stimulus
images: CCA similarity (Eq. 3.1, Raghu et al. 2017, the measure the thesis uses), SVCCA (CCA after an SVD
reduction) and linear CKA (Kornblith et al. 2019, the measure 3.6.2 names as the next one to try). Activation
matrices have shape ``(samples, neurons)``: for a convolutional layer one row per image position
(``n * h * w`` rows) and one column per channel.

The 3.3.1 sampling protocol (:func:`sampling_plan`) draws images and channels so that a layer's matrix has
about 20,000 rows and 64 columns, five times with different draws, and averages the five similarities.
:func:`capture_activations` records those samples with forward hooks on every compared layer in one pass
over the stimulus images, keeping only the sampled rows and channels of each batch, so memory grows with
the sample, not with the full activation maps.

Prediction similarity (Eq. 3.2, Mania et al. 2019) is the probability that two networks make a mistake on
the same test images, against the value two independent classifiers of the same accuracies would reach.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cfct import data
from cfct.errors import ConfigError, IncompatibleError, unknown_choice

__all__ = [
    "MEASURES",
    "LayerSample",
    "PredictionSimilarity",
    "canonical_correlations",
    "capture_activations",
    "cca_similarity",
    "layer_output_shapes",
    "layer_similarity",
    "linear_cka",
    "pair_similarities",
    "prediction_similarity",
    "sampling_plan",
    "svcca_similarity",
]

# 3.3.1: "n x h_L x w_L ~ 20,000 and p_L = 64 ... repeated five times".
TARGET_ROWS = 20_000
N_CHANNELS = 64
REPEATS = 5
# The thesis's CCA call (google/svcca ``get_cca_similarity`` with epsilon=1e-12): channels whose (rescaled)
# variance is below epsilon are dropped, and epsilon is added to the diagonal before inversion.
CCA_EPSILON = 1e-12


# --------------------------------------------------------------------------------------------------
# Similarity of two activation matrices


def _as_matrix(name: str, value: Any) -> np.ndarray:
    """Validate one activation matrix: 2-D, finite, at least two rows; returned as float64."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise IncompatibleError(f"{name} must be a 2-D (samples, neurons) matrix, got shape {array.shape}")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise IncompatibleError(f"{name} needs at least 2 samples and 1 neuron, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise IncompatibleError(f"{name} contains NaN or infinite values")
    return array


def _check_pair(X: Any, Y: Any, *, need_more_rows: bool) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _as_matrix("X", X), _as_matrix("Y", Y)
    if X.shape[0] != Y.shape[0]:
        raise IncompatibleError(f"X and Y must hold the same samples (rows): got {X.shape[0]} and {Y.shape[0]} rows")
    if need_more_rows and X.shape[0] <= max(X.shape[1], Y.shape[1]):
        # With no more samples than neurons every canonical correlation is trivially 1.
        raise IncompatibleError(
            f"CCA needs more samples than neurons: got {X.shape[0]} rows for {X.shape[1]} and "
            f"{Y.shape[1]} columns; sample more images or fewer channels"
        )
    return X, Y


def _inverse_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Sigma^{-1/2} of a symmetric positive semi-definite matrix through its eigendecomposition.

    Directions with eigenvalues below machine precision (relative to the largest) are treated as absent
    (pseudo-inverse), which is what a pseudo-inverse followed by a matrix square root does.
    """
    w, v = np.linalg.eigh(sigma)
    keep = w > w.max() * sigma.shape[0] * np.finfo(np.float64).eps
    inv_sqrt = np.zeros_like(w)
    inv_sqrt[keep] = 1.0 / np.sqrt(w[keep])
    return (v * inv_sqrt) @ v.T


def canonical_correlations(X: Any, Y: Any, *, epsilon: float = CCA_EPSILON) -> np.ndarray:
    """Canonical correlations of X (n, p) and Y (n, q), largest first (thesis 3.3.1).

    They are the singular values of ``Sigma_X^{-1/2} Sigma_XY Sigma_Y^{-1/2}``. Numerical care as in the
    thesis's reference implementation (google/svcca ``cca_core``): covariances in float64 with the
    ``n - 1`` normaliser; each covariance block rescaled by the largest absolute entry of its own
    auto-covariance (the correlations are scale invariant, the inversion is better conditioned); neurons
    whose rescaled variance is below ``epsilon`` (dead ReLU channels) are dropped; ``epsilon`` is added to
    the diagonal before the inverse square root.

    Parameters
    ----------
    X, Y : array-like of shape (n_samples, p) and (n_samples, q)
        Activations of the two layers over the same samples; ``n_samples`` must exceed ``max(p, q)``.
    epsilon : float
        Variance cut-off and diagonal regulariser (the thesis used 1e-12).

    Returns
    -------
    numpy.ndarray of shape (min(p', q'),)
        Canonical correlations in [0, 1], where p', q' count the neurons left after dropping dead ones;
        empty when every neuron of X or of Y is dead.
    """
    X, Y = _check_pair(X, Y, need_more_rows=True)
    return _cca_from_covariances(*_covariances(X, Y), epsilon=epsilon)


def _covariances(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma_XX, Sigma_YY, Sigma_XY (float64, n - 1 normaliser) from one product of the joined matrix."""
    n, p = X.shape
    Z = np.hstack([X, Y])
    Z -= Z.mean(axis=0)
    joint = Z.T @ Z / (n - 1)
    return joint[:p, :p], joint[p:, p:], joint[:p, p:]


def _cca_from_covariances(sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray, *, epsilon: float) -> np.ndarray:
    if epsilon < 0:
        raise ConfigError(f"epsilon must be >= 0, got {epsilon}")
    xmax = np.abs(sxx).max()
    ymax = np.abs(syy).max()
    if xmax == 0 or ymax == 0:
        return np.zeros(0)
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    keep_x = np.abs(np.diag(sxx)) >= epsilon
    keep_y = np.abs(np.diag(syy)) >= epsilon
    if not keep_x.any() or not keep_y.any():
        return np.zeros(0)
    sxx = sxx[np.ix_(keep_x, keep_x)] + epsilon * np.eye(keep_x.sum())
    syy = syy[np.ix_(keep_y, keep_y)] + epsilon * np.eye(keep_y.sum())
    sxy = sxy[np.ix_(keep_x, keep_y)]
    whitened = _inverse_sqrt(sxx) @ sxy @ _inverse_sqrt(syy)
    rho = np.linalg.svd(whitened, compute_uv=False)
    return np.clip(rho, 0.0, 1.0)


def _cka_from_covariances(sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray) -> float:
    # ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F); the common 1/(n-1)^2 cancels.
    norm = np.linalg.norm(sxx) * np.linalg.norm(syy)
    return float(np.linalg.norm(sxy) ** 2 / norm) if norm > 0 else 0.0


def cca_similarity(X: Any, Y: Any, *, epsilon: float = CCA_EPSILON) -> float:
    """Layer-wise CCA similarity, Eq. 3.1: the mean of the canonical correlations of X and Y.

    Eq. 3.1 is printed as a sum, but the text ("the average of the correlations") and the thesis's code
    (the mean of google/svcca's ``cca_coef1``) average, so this returns the mean, in [0, 1]. It is
    invariant to invertible linear maps of X or Y and symmetric in X and Y.

    Parameters
    ----------
    X, Y : array-like of shape (n_samples, p) and (n_samples, q)
        Activations over the same samples (rows), ``n_samples > max(p, q)``.
    epsilon : float
        See :func:`canonical_correlations`.

    Returns
    -------
    float
        Mean canonical correlation; 0.0 when every neuron of X or Y is dead (as the reference does).
    """
    rho = canonical_correlations(X, Y, epsilon=epsilon)
    return float(rho.mean()) if rho.size else 0.0


def _svd_reduce(X: np.ndarray, variance: float) -> np.ndarray:
    """Project X onto its top singular directions explaining ``variance`` of its (centred) variance."""
    X = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(X, full_matrices=False)
    energy = np.cumsum(s**2)
    if energy[-1] == 0:
        return X[:, :1]
    k = int(np.searchsorted(energy / energy[-1], variance) + 1)
    return X @ vt[: min(k, len(s))].T


def svcca_similarity(X: Any, Y: Any, *, variance: float = 0.99, epsilon: float = CCA_EPSILON) -> float:
    """SVCCA similarity (Raghu et al. 2017): CCA similarity (Eq. 3.1) after an SVD reduction of each side.

    Each matrix is projected onto the fewest singular directions that explain ``variance`` of its variance,
    discarding low-variance noise directions that plain CCA would match as readily as signal.

    Parameters
    ----------
    X, Y : array-like of shape (n_samples, p) and (n_samples, q)
    variance : float in (0, 1]
        Fraction of variance the kept directions explain (Raghu et al.: 0.99).
    epsilon : float
        See :func:`canonical_correlations`.

    Returns
    -------
    float
        Mean canonical correlation of the reduced matrices.
    """
    if not 0 < variance <= 1:
        raise ConfigError(f"variance must be in (0, 1], got {variance}")
    X, Y = _check_pair(X, Y, need_more_rows=True)
    return cca_similarity(_svd_reduce(X, variance), _svd_reduce(Y, variance), epsilon=epsilon)


def linear_cka(X: Any, Y: Any) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019, Eq. 5 there).

    ``CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred X_c, Y_c.
    Invariant to orthogonal transforms and isotropic scaling of either side (not to arbitrary invertible
    maps, unlike CCA), and defined for any number of rows.

    Parameters
    ----------
    X, Y : array-like of shape (n_samples, p) and (n_samples, q)

    Returns
    -------
    float
        Similarity in [0, 1]; 0.0 when either side is constant.
    """
    X, Y = _check_pair(X, Y, need_more_rows=False)
    # Feature-space form: p x q products, cheap for the 20,000 x 64 matrices of 3.3.1.
    return _cka_from_covariances(*_covariances(X, Y))


def pair_similarities(X: Any, Y: Any, measures: Sequence[str] = ("cca", "cka")) -> dict[str, float]:
    """Several measures of one pair at once; CCA and CKA share one covariance computation."""
    for m in measures:
        if m not in MEASURES:
            raise unknown_choice("similarity measure", m, MEASURES)
    X, Y = _check_pair(X, Y, need_more_rows="cca" in measures or "svcca" in measures)
    out: dict[str, float] = {}
    if "cca" in measures or "cka" in measures:
        covs = _covariances(X, Y)
        if "cca" in measures:
            rho = _cca_from_covariances(*covs, epsilon=CCA_EPSILON)
            out["cca"] = float(rho.mean()) if rho.size else 0.0
        if "cka" in measures:
            out["cka"] = _cka_from_covariances(*covs)
    if "svcca" in measures:
        out["svcca"] = svcca_similarity(X, Y)
    return {m: out[m] for m in measures}


MEASURES: dict[str, Callable[[Any, Any], float]] = {
    "cca": cca_similarity,
    "svcca": svcca_similarity,
    "cka": linear_cka,
}


# --------------------------------------------------------------------------------------------------
# Prediction similarity (3.3.2)


@dataclasses.dataclass(frozen=True)
class PredictionSimilarity:
    """Eq. 3.2 and its independence baseline for one pair of networks on one test set."""

    similarity: float  # P(q_f1(x, y) = q_f2(x, y))
    baseline: float  # a1 * a2 + (1 - a1) * (1 - a2)
    accuracy_a: float
    accuracy_b: float
    n: int


def _predicted_classes(name: str, pred: Any, n: int) -> np.ndarray:
    array = np.asarray(pred)
    if array.shape[0] != n:
        raise IncompatibleError(f"{name} has {array.shape[0]} predictions for {n} labels")
    if array.ndim == 2:
        if array.shape[1] == 1:  # one sigmoid output, as a Keras binary head
            return (array[:, 0] > 0.5).astype(np.int64)
        return array.argmax(axis=1)
    if array.ndim == 1:
        if np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_):
            return array.astype(np.int64)
        if ((array >= 0) & (array <= 1)).all():  # binary probabilities of the positive class
            return (array > 0.5).astype(np.int64)
        raise IncompatibleError(f"{name}: 1-D float predictions must be probabilities in [0, 1]")
    raise IncompatibleError(f"{name} must be class indices (N,) or scores (N, C), got shape {array.shape}")


def prediction_similarity(pred_a: Any, pred_b: Any, labels: Any) -> PredictionSimilarity:
    """Prediction similarity, Eq. 3.2: the probability that two networks make the same mistakes.

    A mistake is ``q_f(x, y) = 1[f(x) != y]``; the similarity is the fraction of test images on which both
    networks are right or both are wrong. Two classifiers of accuracies ``a1``, ``a2`` with independent
    mistakes reach ``a1 a2 + (1 - a1)(1 - a2)`` (the baseline). The thesis's script computed the baseline as
    ``a1^2 + (1 - a1)^2`` (the first network's accuracy twice); this follows the text.

    Parameters
    ----------
    pred_a, pred_b : array-like
        Predicted class indices (N,), class scores or probabilities (N, C) (arg-max taken), or positive-class
        probabilities (N,) of a binary task (threshold 0.5).
    labels : array-like of int, shape (N,)
        True classes.

    Returns
    -------
    PredictionSimilarity
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise IncompatibleError(f"labels must be a non-empty 1-D array of classes, got shape {y.shape}")
    y = y.astype(np.int64)
    wrong_a = _predicted_classes("pred_a", pred_a, len(y)) != y
    wrong_b = _predicted_classes("pred_b", pred_b, len(y)) != y
    a1, a2 = 1.0 - wrong_a.mean(), 1.0 - wrong_b.mean()
    return PredictionSimilarity(
        similarity=float((wrong_a == wrong_b).mean()),
        baseline=float(a1 * a2 + (1 - a1) * (1 - a2)),
        accuracy_a=float(a1),
        accuracy_b=float(a2),
        n=len(y),
    )


# --------------------------------------------------------------------------------------------------
# The 3.3.1 sampling protocol and activation capture


@dataclasses.dataclass(frozen=True)
class LayerSample:
    """Which images and channels one layer's repeats use (3.3.1).

    ``images[r]`` are sorted stimulus indices and ``channels[r]`` channel indices of repeat ``r``; the same
    plan is applied to every network so that rows and columns correspond across the compared networks.
    """

    layer: str
    shape: tuple[int, int, int]  # (channels, h, w) of the layer output
    images: tuple[np.ndarray, ...]
    channels: tuple[np.ndarray, ...]

    @property
    def rows(self) -> int:
        """Rows of each sampled matrix: sampled images x h x w."""
        return len(self.images[0]) * self.shape[1] * self.shape[2]

    @property
    def n_channels(self) -> int:
        return len(self.channels[0])

    @property
    def repeats(self) -> int:
        return len(self.images)


def sampling_plan(
    layer_shapes: Mapping[str, Sequence[int]],
    n_images: int,
    *,
    target_rows: int = TARGET_ROWS,
    n_channels: int = N_CHANNELS,
    repeats: int = REPEATS,
    seed: int = 0,
) -> dict[str, LayerSample]:
    """Draw the 3.3.1 samples: per layer, ``n`` images with ``n * h * w ~ target_rows``, and ``n_channels``.

    ``n = max(1, round(target_rows / (h * w)))`` images (the thesis's script drew a batch of that size);
    when the stimulus set holds fewer images, or the layer fewer channels, all of them are used (the
    returned :class:`LayerSample` says how many). Each repeat draws anew, without replacement.

    Parameters
    ----------
    layer_shapes : mapping of layer name to (channels, h, w) or (channels,)
        Output shape of each compared layer for one image (see :func:`layer_output_shapes`).
    n_images : int
        Number of stimulus images available.
    target_rows, n_channels, repeats : int
        The protocol's 20,000 rows, 64 channels and 5 repeats.
    seed : int
        Seeds every draw.

    Returns
    -------
    dict of layer name to LayerSample
    """
    for name, value in (
        ("n_images", n_images),
        ("target_rows", target_rows),
        ("n_channels", n_channels),
        ("repeats", repeats),
    ):
        if int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    rng = np.random.default_rng(seed)
    plan = {}
    for layer, shape in layer_shapes.items():
        shape = tuple(int(s) for s in shape)
        if len(shape) == 1:
            shape = (shape[0], 1, 1)
        if len(shape) != 3:
            raise IncompatibleError(f"layer {layer!r}: expected (channels, h, w), got {shape}")
        c, h, w = shape
        n = min(n_images, max(1, round(target_rows / (h * w))))
        p = min(c, n_channels)
        images = tuple(np.sort(rng.choice(n_images, size=n, replace=False)) for _ in range(repeats))
        channels = tuple(np.sort(rng.choice(c, size=p, replace=False)) for _ in range(repeats))
        plan[layer] = LayerSample(layer, shape, images, channels)
    return plan


def _resolve_layers(model: nn.Module, layers: Iterable[str] | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(layers, Mapping):
        return dict(layers)
    named = model.layers() if hasattr(model, "layers") and callable(model.layers) else None
    if named is None:
        named = dict(model.named_modules())
    out = {}
    for name in layers:
        if name not in named:
            raise unknown_choice("layer", name, list(named)[:40])
        out[name] = named[name]
    return out


def _batches(
    images: Any, index: np.ndarray, batch_size: int, preprocess: Callable[[Any], torch.Tensor] | None
) -> Iterable[tuple[np.ndarray, torch.Tensor]]:
    for start in range(0, len(index), batch_size):
        idx = index[start : start + batch_size]
        chunk = images[torch.as_tensor(idx)] if isinstance(images, torch.Tensor) else images[idx]
        yield idx, (preprocess(chunk) if preprocess is not None else torch.as_tensor(chunk))


@torch.no_grad()
def layer_output_shapes(
    model: nn.Module,
    example: torch.Tensor,
    layers: Iterable[str] | Mapping[str, nn.Module],
) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch axis) of each named layer for one example input (1, 3, H, W)."""
    modules = _resolve_layers(model, layers)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, module in modules.items()
    ]
    was_training = model.training
    try:
        model.eval()
        model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes


@torch.no_grad()
def capture_activations(
    model: nn.Module,
    images: Any,
    plan: Mapping[str, LayerSample],
    *,
    layers: Mapping[str, nn.Module] | None = None,
    preprocess: Callable[[Any], torch.Tensor] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, list[np.ndarray]]:
    """Sampled activations of every planned layer, captured by forward hooks in one pass (3.3.1).

    Only images that some repeat of some layer samples are forwarded. Each hook keeps, from the batch it
    sees, the rows of the sampled images and the sampled channels (moved to the CPU as float32), so peak
    memory is the sample plus one batch's activations. Hooks are removed even when the forward fails.

    Parameters
    ----------
    model : torch.nn.Module
        Network in any mode; it is evaluated in eval mode and restored.
    images : torch.Tensor (N, 3, H, W) or an indexable of raw images
        Stimulus images, in the order the plan's indices refer to.
    plan : mapping of layer name to LayerSample
        From :func:`sampling_plan`; layer names are resolved with ``model.layers()`` when the model has it,
        else ``model.named_modules()``.
    layers : mapping of layer name to module, optional
        Explicit modules to hook (overrides name resolution).
    preprocess : callable, optional
        Turns a batch ``images[idx]`` into the model's input tensor (e.g. uint8 NHWC -> normalised NCHW).
    batch_size : int
    device : str or torch.device
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict of layer name to list (one per repeat) of float32 arrays (rows, channels)
        Rows ordered by image index, then spatial position, identically for every network.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    modules = layers if layers is not None else _resolve_layers(model, list(plan))
    missing = set(plan) - set(modules)
    if missing:
        raise unknown_choice("layer", sorted(missing)[0], sorted(modules))
    device = torch.device(device)
    needed = np.unique(np.concatenate([i for s in plan.values() for i in s.images]))
    # For each layer and repeat: is a global image index sampled?
    member = {name: [np.isin(needed, s.images[r]) for r in range(s.repeats)] for name, s in plan.items()}
    chunks: dict[str, list[list[np.ndarray]]] = {name: [[] for _ in range(s.repeats)] for name, s in plan.items()}
    current: dict[str, slice] = {}

    def hook(name: str) -> Callable[..., None]:
        sample = plan[name]

        def record(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            out = output if output.ndim == 4 else output.reshape(*output.shape[:2], 1, 1)
            if tuple(out.shape[1:]) != sample.shape:
                raise IncompatibleError(
                    f"layer {name!r} outputs {tuple(out.shape[1:])} but the plan was drawn for {sample.shape}"
                )
            for r in range(sample.repeats):
                rows = np.flatnonzero(member[name][r][current["batch"]])
                if rows.size == 0:
                    continue
                picked = out[torch.as_tensor(rows, device=out.device)][
                    :, torch.as_tensor(sample.channels[r], device=out.device)
                ]
                # (b, c, h, w) -> (b * h * w, c): one row per image position, as 3.3.1 reshapes.
                chunks[name][r].append(picked.permute(0, 2, 3, 1).reshape(-1, picked.shape[1]).float().cpu().numpy())

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in plan]
    was_training = model.training
    try:
        model.eval()
        n_batches = -(-len(needed) // batch_size)
        for start, (_idx, batch) in tqdm(
            zip(range(0, len(needed), batch_size), _batches(images, needed, batch_size, preprocess)),
            total=n_batches,
            desc="activations",
            disable=not progress,
            leave=False,
        ):
            current["batch"] = slice(start, start + batch_size)
            model(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: [np.concatenate(c) for c in per_repeat] for name, per_repeat in chunks.items()}


def layer_similarity(
    acts_a: Mapping[str, Sequence[np.ndarray]],
    acts_b: Mapping[str, Sequence[np.ndarray]],
    measure: str = "cca",
) -> dict[str, float]:
    """Per-layer similarity of two networks' sampled activations, averaged over the repeats (3.3.1).

    Parameters
    ----------
    acts_a, acts_b : mapping of layer name to list of (rows, channels) arrays
        Outputs of :func:`capture_activations` for the same plan and stimuli.
    measure : {'cca', 'svcca', 'cka'}

    Returns
    -------
    dict of layer name to mean similarity over repeats
    """
    if measure not in MEASURES:
        raise unknown_choice("similarity measure", measure, MEASURES)
    if set(acts_a) != set(acts_b):
        raise IncompatibleError(f"layers differ: {sorted(acts_a)} vs {sorted(acts_b)}")
    fn = MEASURES[measure]
    out = {}
    for layer in acts_a:
        if len(acts_a[layer]) != len(acts_b[layer]):
            raise IncompatibleError(f"layer {layer!r}: different numbers of repeats")
        out[layer] = float(np.mean([fn(a, b) for a, b in zip(acts_a[layer], acts_b[layer])]))
    return out


# --------------------------------------------------------------------------------------------------
# ResNet stages, stimuli and the layer-wise experiment of 3.5.2

# The thesis compares the stem output (Keras ``conv1_relu``) and each stage output (``conv2_block3_out`` ...
# ``conv5_block3_out``), named conv1 and block1-block4 in its figures.
STAGES = ("conv1", "block1", "block2", "block3", "block4")
_STAGE_MODULES = {"block1": "layer1", "block2": "layer2", "block3": "layer3", "block4": "layer4"}


def resnet_stages(model: nn.Module) -> dict[str, nn.Module]:
    """The five compared layers of a (torchvision or timm) ResNet, possibly wrapped: conv1 (after BN and
    ReLU) and block1-block4 (outputs of ``layer1``-``layer4``).

    Raises
    ------
    IncompatibleError
        When the model has no ResNet stem activation or stages.
    """
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for prefix in sorted({n.rsplit("layer1", 1)[0] for n in modules if n.endswith("layer1")}, key=len):
        stem = next((modules[prefix + a] for a in ("relu", "act1") if prefix + a in modules), None)
        stages = {k: modules.get(prefix + v) for k, v in _STAGE_MODULES.items()}
        if stem is not None and all(m is not None for m in stages.values()):
            out = {"conv1": stem, **stages}  # type: ignore[dict-item]
            break
    if not out:
        raise IncompatibleError(
            f"{type(model).__name__} has no ResNet stem activation (relu/act1) and layer1-layer4; "
            "pass explicit layers for other architectures"
        )
    return out


def stimulus_preprocess(normalization: str) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 NHWC stimulus batch -> float (B, 3, H, W) normalised as the network expects (6.4.2)."""
    if normalization not in data.NORMALIZATION:
        raise unknown_choice("normalization", normalization, data.NORMALIZATION)
    return lambda batch: data.normalize(data.to_tensor(batch), normalization)


def network_activations(
    model: nn.Module,
    images: np.ndarray,
    plan: Mapping[str, LayerSample],
    *,
    normalization: str | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, list[np.ndarray]]:
    """:func:`capture_activations` on a ResNet's five stages with its own input normalisation."""
    norm = normalization or getattr(model, "normalization", None) or "half"
    stages = resnet_stages(model)
    model = model.to(device)
    return capture_activations(
        model,
        images,
        plan,
        layers={k: stages[k] for k in plan},
        preprocess=stimulus_preprocess(norm),
        batch_size=batch_size,
        device=device,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------------
# First-layer filters (Fig. 3.4)


def gabor_bank(
    size: int = 7,
    n_orientations: int = 6,
    wavelengths: Sequence[float] = (3.0, 4.5, 7.0),
    phases: Sequence[float] = (0.0, np.pi / 2),
    sigma_ratio: float = 0.5,
) -> np.ndarray:
    """Synthetic Gabor filters ``g(x, y) = exp(-(x'^2 + y'^2) / (2 s^2)) cos(2 pi x' / lambda + phi)``.

    ``x'`` is the coordinate along orientation theta; ``s = sigma_ratio * lambda``. The default bank has
    6 orientations x 3 wavelengths x 2 phases = 36 filters of 7 x 7, the size of a ResNet ``conv1`` kernel
    (the thesis shows 36 Gabor filters beside 36 ``conv1`` filters, Fig. 3.4c).

    Returns
    -------
    numpy.ndarray of shape (n_orientations * len(wavelengths) * len(phases), size, size)
        Each filter zero-mean and unit-norm.
    """
    if size < 3:
        raise ConfigError(f"size must be >= 3, got {size}")
    half = (size - 1) / 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    out = []
    for theta in np.arange(n_orientations) * np.pi / n_orientations:
        xr = x * np.cos(theta) + y * np.sin(theta)
        yr = -x * np.sin(theta) + y * np.cos(theta)
        for lam in wavelengths:
            s = sigma_ratio * lam
            for phi in phases:
                g = np.exp(-(xr**2 + yr**2) / (2 * s**2)) * np.cos(2 * np.pi * xr / lam + phi)
                g = g - g.mean()
                out.append(g / (np.linalg.norm(g) + 1e-12))
    return np.stack(out)


def gabor_likeness(filters: Any, bank: np.ndarray | None = None) -> np.ndarray:
    """Best |cosine| of each first-layer filter with a dense Gabor bank, a number for Fig. 3.4's claim.

    Each filter ``(out, in, k, k)`` is averaged over input channels (the luminance response: grey targets
    repeat one channel three times) and made zero-mean before the comparison. 1 means a filter is exactly
    some Gabor filter of the bank; random filters score lower.
    """
    w = filters.detach().cpu().numpy() if isinstance(filters, torch.Tensor) else np.asarray(filters)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise IncompatibleError(f"filters must be (out, in, k, k), got shape {w.shape}")
    k = w.shape[2]
    if bank is None:
        bank = np.concatenate(
            [
                gabor_bank(
                    k,
                    n_orientations=16,
                    wavelengths=np.geomspace(2.5, 3 * k, 14),
                    phases=np.linspace(0, np.pi, 8, endpoint=False),
                    sigma_ratio=r,
                )
                for r in (0.35, 0.5, 0.7)
            ]
        )
    f = w.mean(axis=1).reshape(len(w), -1)
    f = f - f.mean(axis=1, keepdims=True)
    f = f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)
    return np.abs(f @ bank.reshape(len(bank), -1).T).max(axis=1)


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The first convolution's weights ``(out, in, k, k)`` of a network (ResNet ``conv1``)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu()
    raise IncompatibleError(f"{type(model).__name__} has no Conv2d layer")


# --------------------------------------------------------------------------------------------------
# AUC gain (Fig. 3.6)


def relative_gain(auc: float, auc_random: float) -> float:
    """AUC gain of pre-training over random initialisation, relative: ``(AUC - AUC_random) / AUC_random``.

    The thesis's Fig. 3.6 script plots this relative difference (its axis label says "AUC difference").
    """
    if auc_random <= 0:
        raise ConfigError(f"random-initialisation AUC must be positive, got {auc_random}")
    return (auc - auc_random) / auc_random


# --------------------------------------------------------------------------------------------------
# The comparisons of Fig. 3.3 (names of the networks of one target and fold)


# --------------------------------------------------------------------------------------------------
# The experiments of 3.5.2-3.5.4 on the fine-tuned runs of 3.5.1 (cfct.experiments.transfer.transfer_matrix)


# --------------------------------------------------------------------------------------------------
# The thesis's statements of 3.5.2-3.5.4, checked against a run's tables


