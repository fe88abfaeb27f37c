"""An independent re-implementation of the reference CCA *algorithm* the thesis ran (google/svcca).

Written from reading google/svcca ``cca_core.get_cca_similarity`` as the thesis's script called it
(``epsilon=1e-12``, mean of ``cca_coef1``); no code copied. The steps, in the reference's own order:

1. activations are (neurons, datapoints); the joint covariance of both sets via ``np.cov`` (ddof 1);
2. the X block is divided by max|Sigma_xx|, the Y block by max|Sigma_yy|, the cross block by the square root
   of their product;
3. neurons whose rescaled variance is below epsilon are removed;
4. epsilon is added to both diagonals, each auto-covariance is pseudo-inverted (``np.linalg.pinv``) and the
   matrix square root of the pseudo-inverse is taken through ``eigh``;
5. the singular values of ``invsqrt_xx @ sigma_xy @ invsqrt_yy`` (absolute values) are the correlations.

This file exists only to check :mod:`cfct.similarity` against the reference's algorithm (tests and bench).
"""

from __future__ import annotations

import numpy as np


def reference_cca_coefficients(acts1: np.ndarray, acts2: np.ndarray, epsilon: float = 1e-12) -> np.ndarray:
    """Canonical correlations by the reference's steps; inputs are (neurons, datapoints)."""
    n1 = acts1.shape[0]
    joint = np.cov(np.vstack([acts1, acts2]))
    sxx = joint[:n1, :n1].copy()
    syy = joint[n1:, n1:].copy()
    sxy = joint[:n1, n1:].copy()
    mx, my = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx /= mx
    syy /= my
    sxy /= np.sqrt(mx * my)
    kx = np.abs(np.diagonal(sxx)) >= epsilon
    ky = np.abs(np.diagonal(syy)) >= epsilon
    if not kx.any() or not ky.any():
        return np.zeros(1)
    sxx = sxx[kx][:, kx] + epsilon * np.eye(kx.sum())
    syy = syy[ky][:, ky] + epsilon * np.eye(ky.sum())
    sxy = sxy[kx][:, ky]

    def sqrt_psd(a: np.ndarray) -> np.ndarray:
        vals, vecs = np.linalg.eigh(a)
        return vecs @ np.diag(np.sqrt(vals)) @ vecs.conj().T

    ix = sqrt_psd(np.linalg.pinv(sxx))
    iy = sqrt_psd(np.linalg.pinv(syy))
    return np.abs(np.linalg.svd(ix @ sxy @ iy, compute_uv=False))


def reference_cca_similarity(X: np.ndarray, Y: np.ndarray, epsilon: float = 1e-12) -> float:
    """Mean canonical correlation as the thesis's script took it; X, Y are (samples, neurons)."""
    return float(np.mean(reference_cca_coefficients(np.asarray(X, float).T, np.asarray(Y, float).T, epsilon)))
