"""RadImageNet's Keras ResNet50 weights (``.h5``) as a torchvision ResNet50 state dict (thesis 3.4.1).

The thesis fine-tunes the official RadImageNet ResNet50 (Mei et al. 2022), released as Keras HDF5 files such
as ``RadImageNet-ResNet50_notop.h5``. This module reads such a file with h5py (no TensorFlow) and writes a
``safetensors`` file that ``checkpoint:resnet50:<file>`` loads:

- conv kernels HWIO -> OIHW; Keras convolutions carry a bias, torchvision's do not, and every one of them is
  followed by batch norm, so the bias is folded into the running mean (exact);
- Keras batch norm uses eps = 1.001e-5, torchvision 1e-5: the 1e-8 difference is added to the running
  variance (exact);
- Keras's ResNet50 is ResNet v1 (the stride-2 of a stage sits on the block's first 1x1 conv); torchvision's is
  v1.5 (on the 3x3 conv). Same weights, different function: :func:`use_keras_strides` moves the strides, and
  the file's metadata says it is needed (``stride_in_1x1 = "1"``);
- the thesis's code fed Keras ``imagenet_utils.preprocess_input`` images (BGR, 0-255, minus the ImageNet
  channel means, "caffe" mode). With ``preprocessing='caffe'`` that step is folded into ``conv1`` so the
  converted network takes RGB images normalised with ImageNet mean/std like any torchvision model (metadata
  ``normalization = "imagenet"``); exact except at the border pixels where the two zero paddings differ
  by under one grey level.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfct.errors import ConfigError, DataMissingError, IncompatibleError, unknown_choice

__all__ = [
    "BLOCKS",
    "KERAS_BN_EPS",
    "convert_h5",
    "convert_keras_resnet50",
    "keras_layer_names",
    "read_keras_weights",
    "use_keras_strides",
]

BLOCKS = (3, 4, 6, 3)  # bottleneck blocks per stage of ResNet50 (Keras stages conv2..conv5)
KERAS_BN_EPS = 1.001e-5
TORCH_BN_EPS = 1e-5
# Keras "caffe" preprocessing subtracts these (B, G, R) means from 0-255 pixels.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSING = ("caffe", "none")
RADIMAGENET_URL = "https://drive.google.com/drive/folders/1Es7cK1hv7zNHJoUW0tI0e6nLFVYTqPqK"


def keras_layer_names() -> dict[str, tuple[str, str]]:
    """Keras layer name -> (torchvision conv module, torchvision batch-norm module) for ResNet50.

    Keras names: ``conv1_conv``/``conv1_bn`` for the stem and ``conv{s}_block{b}_{k}_conv``/``_{k}_bn`` with
    ``k = 0`` the projection shortcut of a stage's first block and ``k = 1..3`` the bottleneck convolutions.
    """
    names = {"conv1": ("conv1", "bn1")}
    for stage, n_blocks in enumerate(BLOCKS, start=2):
        for block in range(1, n_blocks + 1):
            prefix = f"layer{stage - 1}.{block - 1}"
            for k in (1, 2, 3):
                names[f"conv{stage}_block{block}_{k}"] = (f"{prefix}.conv{k}", f"{prefix}.bn{k}")
            if block == 1:
                names[f"conv{stage}_block{block}_0"] = (f"{prefix}.downsample.0", f"{prefix}.downsample.1")
    return names


def read_keras_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Every weight array of a Keras HDF5 file, keyed ``"<layer>/<weight>"`` (e.g. ``conv1_conv/kernel``).

    Handles weight files (``model.save_weights``), whole-model files (weights under ``model_weights``) and
    nested models: the key is the array's parent group name and its own name without the ``:0`` suffix.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise DataMissingError(
            f"RadImageNet weights {path} not found; download RadImageNet-ResNet50_notop.h5 from "
            f"{RADIMAGENET_URL} (the official release) and pass its path"
        )
    out: dict[str, np.ndarray] = {}
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise IncompatibleError(f"{path} is not an HDF5 file ({err}); expected a Keras .h5 weights file") from err
    with handle as f:
        if "layers" in f and "vars" in str(list(f["layers"].keys())[:1]):
            raise IncompatibleError(f"{path} looks like a Keras 3 .weights.h5 file; save it as Keras 2 .h5")

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                parts = name.split("/")
                weight = parts[-1].split(":")[0]
                layer = parts[-2] if len(parts) > 1 else ""
                out[f"{layer}/{weight}"] = np.asarray(obj[()])

        f.visititems(visit)
    if not out:
        raise IncompatibleError(f"{path} holds no weight arrays")
    return out


def _fetch(weights: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in weights:
        layers = sorted({k.split("/")[0] for k in weights})
        raise IncompatibleError(
            f"Keras weights lack {key!r}: not a Keras ResNet50 layout (layers found: {', '.join(layers[:12])}"
            f"{', ...' if len(layers) > 12 else ''})"
        )
    return np.asarray(weights[key], dtype=np.float64)


def convert_keras_resnet50(
    weights: Mapping[str, np.ndarray], *, preprocessing: str = "caffe"
) -> dict[str, torch.Tensor]:
    """Map Keras ResNet50 weights (from :func:`read_keras_weights`) onto a torchvision ResNet50 state dict.

    Parameters
    ----------
    weights : mapping ``"<layer>/<weight>"`` -> array
    preprocessing : {'caffe', 'none'}
        'caffe' folds Keras's caffe-mode input preprocessing into ``conv1`` so the network takes RGB
        images normalised with ImageNet mean/std; 'none' keeps the weights as they are (BGR 0-255 minus
        channel means expected).

    Returns
    -------
    dict
        torchvision ``resnet50`` state dict; ``fc.weight``/``fc.bias`` only when the file holds exactly one
        dense layer (a Keras ``include_top=True`` file); ``_notop`` files give the backbone only.
    """
    if preprocessing not in PREPROCESSING:
        raise unknown_choice("preprocessing", preprocessing, PREPROCESSING)
    state: dict[str, torch.Tensor] = {}
    for keras, (conv, bn) in keras_layer_names().items():
        kernel = _fetch(weights, f"{keras}_conv/kernel")  # (kh, kw, in, out)
        bias = weights.get(f"{keras}_conv/bias")
        bias = np.zeros(kernel.shape[-1]) if bias is None else np.asarray(bias, dtype=np.float64)
        gamma = _fetch(weights, f"{keras}_bn/gamma")
        beta = _fetch(weights, f"{keras}_bn/beta")
        mean = _fetch(weights, f"{keras}_bn/moving_mean")
        var = _fetch(weights, f"{keras}_bn/moving_variance")
        if kernel.ndim != 4 or not (len(bias) == len(gamma) == len(mean) == kernel.shape[-1]):
            raise IncompatibleError(f"layer {keras}: kernel {kernel.shape} does not fit its batch norm")
        if keras == "conv1" and preprocessing == "caffe":
            kernel, bias = _fold_caffe(kernel, bias)
        state[f"{conv}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).astype(np.float32).copy())
        # BN(conv(x) + b) == BN'(conv(x)) with running mean shifted by b.
        state[f"{bn}.weight"] = torch.from_numpy(gamma.astype(np.float32))
        state[f"{bn}.bias"] = torch.from_numpy(beta.astype(np.float32))
        state[f"{bn}.running_mean"] = torch.from_numpy((mean - bias).astype(np.float32))
        state[f"{bn}.running_var"] = torch.from_numpy((var + KERAS_BN_EPS - TORCH_BN_EPS).astype(np.float32))
        state[f"{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    top = [k for k in weights if k.endswith("/kernel") and np.asarray(weights[k]).ndim == 2]
    if len(top) == 1:
        layer = top[0].split("/")[0]
        state["fc.weight"] = torch.from_numpy(np.asarray(weights[top[0]], dtype=np.float32).T.copy())
        state["fc.bias"] = torch.from_numpy(np.asarray(weights[f"{layer}/bias"], dtype=np.float32))
    return state


def _fold_caffe(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``x_keras[bgr(c)] = 255 (std_c x[c] + mean_c) - caffe_mean[bgr(c)]`` into conv1 (RGB input)."""
    rgb_kernel = kernel[:, :, ::-1, :]  # Keras input channel 0 is blue
    std = np.asarray(IMAGENET_STD)
    shift = 255.0 * np.asarray(IMAGENET_MEAN) - np.asarray(CAFFE_MEAN_BGR)[::-1]
    new_kernel = rgb_kernel * (255.0 * std)[None, None, :, None]
    new_bias = bias + np.einsum("hwco,c->o", rgb_kernel, shift)
    return np.ascontiguousarray(new_kernel), new_bias


def use_keras_strides(resnet: nn.Module) -> nn.Module:
    """Move each stage's stride from the 3x3 conv (torchvision v1.5) to the first 1x1 conv (Keras v1).

    Needed for a converted Keras ResNet50 to compute what it computed in Keras. Works on a torchvision
    ``ResNet`` or any module holding ``layer2..layer4`` of Bottleneck blocks; returns the module.
    """
    found = False
    for stage in ("layer2", "layer3", "layer4"):
        layer = getattr(resnet, stage, None)
        if layer is None:
            continue
        first = layer[0]
        if not hasattr(first, "conv1") or not hasattr(first, "conv3"):
            raise IncompatibleError(f"{stage}[0] is not a Bottleneck block; Keras strides apply to ResNet50")
        stride = max(first.conv1.stride[0], first.conv2.stride[0])
        first.conv1.stride = (stride, stride)
        first.conv2.stride = (1, 1)
        found = True
    if not found:
        raise IncompatibleError("no layer2..layer4 found: not a torchvision-style ResNet")
    return resnet


def convert_h5(h5_path: str | Path, out_path: str | Path | None = None, *, preprocessing: str = "caffe") -> Path:
    """Convert a Keras ResNet50 ``.h5`` (e.g. RadImageNet's) into a ``.safetensors`` file.

    Parameters
    ----------
    h5_path : path
        The Keras weights file.
    out_path : path, optional
        Destination; default: next to the input with suffix ``.safetensors``.
    preprocessing : {'caffe', 'none'}
        See :func:`convert_keras_resnet50`.

    Returns
    -------
    Path
        The written file; its metadata records ``arch``, ``normalization`` and ``stride_in_1x1``.
    """
    from safetensors.torch import save_file

    h5_path = Path(h5_path)
    out = Path(out_path) if out_path is not None else h5_path.with_suffix(".safetensors")
    if out.resolve() == h5_path.resolve():
        raise ConfigError("out_path must differ from the input file")
    state = convert_keras_resnet50(read_keras_weights(h5_path), preprocessing=preprocessing)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(
        state,
        str(tmp),
        metadata={
            # keys cfct.zoo reads (arch, normalization), plus what zoo must apply after loading
            "source": f"keras:{h5_path.name}",
            "arch": "resnet50",
            "normalization": "imagenet" if preprocessing == "caffe" else "keras-caffe",
            "stride_in_1x1": "1",
        },
    )
    tmp.replace(out)
    return out
