"""Model zoo: the registry of architectures, the classifier every chapter fine-tunes, and checkpoint I/O.

Each architecture is one :class:`Architecture` entry of :data:`REGISTRY` (library name, minimum input, feature
dimension, head, named layers, the two convolutions of S_FU); :func:`register` adds one. Source specs
(``random:``, ``imagenet:``, ``ct:``, ``checkpoint:``, ``pretrained:``) are turned into weights by
:mod:`cfct.sources`. Most architectures are torchvision's; the EfficientNet-Lite0/1/2 of the released ImageNet
weights (:mod:`cfct.released`) are timm's ``tf_efficientnet_lite*`` (:attr:`Architecture.library`), whose
``classifier`` is the final linear layer and whose own dropout in front of it is off (the head's is used).

The classifier (thesis 3.4.2) is *backbone -> global average pooling -> dropout (p = 0.5) -> linear*. The
backbone is torchvision's own ImageNet layout of each architecture, unchanged, so ImageNet weights,
checkpoints in torchvision layout (e.g. a converted RadImageNet ResNet50) and cfct's own pre-trained sources
are interchangeable. The "pooled features" are the input of the last linear layer of torchvision's ImageNet
model: for most architectures that is the global average pool itself; ConvNeXt keeps its LayerNorm after the
pool, MobileNetV3 its pre-logit ``Linear(576, 1024) + Hardswish`` and VGG11 its ``7x7`` adaptive pool and two
4096-unit layers, because those hold pre-trained weights (90 % of VGG11's) that the thesis's PyTorch models of
6.5.2 keep and that LEEP needs to use the source's own head. Only the final linear layer (and the dropout in
front of it, always p = 0.5 here) forms the head.

Small inputs (28-32 px MedMNIST / CIFAR-10)
-------------------------------------------
Every architecture accepts images down to :data:`MIN_IMAGE_SIZE` (8 px). Rather than swapping the stem for a
small-input one (which would change the weight layout and make ``imagenet:`` and ``checkpoint:`` weights
unusable, and make the same architecture differ between profiles), :meth:`Classifier.forward` bilinearly
upsamples an input whose shorter side is below the architecture's smallest workable size
(:attr:`Architecture.min_input`, found empirically: the smallest side length the unchanged ImageNet layout
runs on) to that size. Only three architectures need it at 28 px: DenseNet121 (29 px: its un-padded transition
poolings), VGG11 (32 px: five 2x2 max-pools) and ConvNeXt-Tiny (32 px: a stride-4 stem and three stride-2 down-sampling
convolutions, all un-padded). Because the per-channel normalisation is affine and bilinear weights sum to one,
upsampling after normalising equals normalising after upsampling.

Layers for hooks and gradient ratios
------------------------------------
:meth:`Classifier.layers` names the first convolution, the second convolution and each stage's output by
their torchvision module path (ResNet: ``conv1``, ``layer1.0.conv1``, ``layer1`` ... ``layer4``); see
:attr:`Architecture.layers`.
:meth:`Classifier.conv_layers` returns the first two ``Conv2d`` modules in execution order, the "first two
convolutional layers" of the feature-update score S_FU (thesis Eq. 6.4). Per architecture the second one is a
depthwise convolution in MobileNetV3, MnasNet, ConvNeXt and ShuffleNetV2 (their first block starts with one),
``layer1.0.conv1`` in ResNets, the first dense layer's 1x1 convolution in DenseNet121, GoogLeNet's ``conv2``,
VGG11's ``features.3`` and EfficientNetV2's first fused-MBConv convolution.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from cfct import paths
from cfct.errors import ConfigError, DataMissingError, IncompatibleError, unknown_choice

__all__ = [
    "Architecture",
    "REGISTRY",
    "register",
    "architectures",
    "get_architecture",
    "MIN_IMAGE_SIZE",
    "Classifier",
    "load_checkpoint",
    "save_checkpoint",
    "read_checkpoint",
    "check_input_size",
]

@dataclass(frozen=True)
class Architecture:
    """One registry entry: everything cfct needs to know about an architecture.

    Attributes
    ----------
    name : str
        cfct's name (``resnet18``); the key of :data:`REGISTRY` and of source specs.
    builder : str
        Name of the model in its library (``torchvision.models.get_model`` name, e.g. ``efficientnet_v2_s``;
        accepted as an alias of ``name``).
    min_input : int
        Smallest square side (px) the unchanged ImageNet layout runs on (measured; at least
        :data:`MIN_IMAGE_SIZE`); smaller inputs are bilinearly upsampled in :meth:`Classifier.forward`.
        ``tests/test_zoo.py`` checks that each layout runs at this size and, where it is above MIN_IMAGE_SIZE,
        fails one pixel below it.
    feature_dim : int
        Dimension D of the pooled (penultimate) features, the input of the linear head.
    head : str
        Module path of the library model's final linear layer; it becomes ``head.fc`` of the Classifier.
    layers : tuple of str
        Layers of :meth:`Classifier.layers` in execution order: first conv, second conv, each stage's output.
    convs : (str, str)
        First and second ``Conv2d`` in execution order (S_FU of thesis Eq. 6.4).
    keep_classifier : int or None
        For models whose ``classifier`` is a Sequential with pre-logit layers that hold pre-trained weights:
        how many of its modules the backbone keeps (MobileNetV3: 2, VGG11: 5, ConvNeXt: 2); None when the head
        module is simply removed.
    library : str
        ``'torchvision'`` (``torchvision.models.get_model``) or ``'timm'`` (``timm.create_model``, used for the
        released EfficientNet-Lite weights of :mod:`cfct.released`). Another library is a new branch of
        :func:`_build_backbone` and a new value here.
    """

    name: str
    builder: str
    min_input: int
    feature_dim: int
    head: str
    layers: tuple[str, ...]
    convs: tuple[str, str]
    keep_classifier: int | None = None
    library: str = "torchvision"


def _entry(name: str, builder: str, min_input: int, feature_dim: int, head: str, layers: tuple[str, ...],
           *, second_conv: int = 1, keep_classifier: int | None = None, library: str = "torchvision") -> Architecture:
    return Architecture(name, builder, min_input, feature_dim, head, layers, (layers[0], layers[second_conv]),
                        keep_classifier, library)


LIBRARIES: tuple[str, ...] = ("torchvision", "timm")
"""Libraries :func:`_build_backbone` builds architectures from."""

# timm's EfficientNet-Lite: the stem, the first block's depthwise convolution (the first block is a depthwise-
# separable one), the output of each of the seven stages, and the head's 1x1 convolution with its BN + ReLU6.
_LITE_LAYERS = ("conv_stem", "blocks.0.0.conv_dw", *(f"blocks.{i}" for i in range(7)), "bn2")


_RESNET_LAYERS = ("conv1", "layer1.0.conv1", "layer1", "layer2", "layer3", "layer4")
REGISTRY: dict[str, Architecture] = {
    a.name: a
    for a in (
        # ResNet18/50 (Ch. 3-5) and the nine ImageNet models of thesis 6.5.2.
        _entry("resnet18", "resnet18", 8, 512, "fc", _RESNET_LAYERS),
        _entry("resnet50", "resnet50", 8, 2048, "fc", _RESNET_LAYERS),
        _entry("densenet121", "densenet121", 29, 1024, "classifier", (
            "features.conv0", "features.denseblock1.denselayer1.conv1", "features.denseblock1",
            "features.denseblock2", "features.denseblock3", "features.denseblock4")),
        # EfficientNetV2's stages 1-7 of the paper's Table 4 (features.7 is the final 1x1 convolution).
        _entry("efficientnetv2_s", "efficientnet_v2_s", 8, 1280, "classifier.1", (
            "features.0.0", "features.1.0.block.0.0", "features.1", "features.2", "features.3", "features.4",
            "features.5", "features.6", "features.7")),
        # Last block at each resolution (1/4, 1/8, 1/16, 1/32 of the input side); Linear(576, 1024) + Hardswish
        # is the pre-logit layer the backbone keeps.
        _entry("mobilenetv3_small", "mobilenet_v3_small", 8, 1024, "classifier.3", (
            "features.0.0", "features.1.block.0.0", "features.1", "features.3", "features.8", "features.12"),
            keep_classifier=2),
        _entry("googlenet", "googlenet", 15, 1024, "fc",
               ("conv1.conv", "conv2.conv", "conv3", "inception3b", "inception4e", "inception5b")),
        _entry("mnasnet1_0", "mnasnet1_0", 8, 1280, "classifier.1",
               ("layers.0", "layers.3", "layers.7", "layers.8", "layers.9", "layers.11", "layers.16")),
        # Output of each of the five convolution + max-pool blocks; a max-pool lies between the first two convs.
        # The backbone keeps Linear, ReLU, Dropout, Linear, ReLU -> 4096.
        _entry("vgg11", "vgg11", 32, 4096, "classifier.6", (
            "features.0", "features.2", "features.3", "features.5", "features.10", "features.15", "features.20"),
            second_conv=2, keep_classifier=5),
        # LayerNorm2d + Flatten after the average pool stay in the backbone.
        _entry("convnext_tiny", "convnext_tiny", 32, 768, "classifier.2", (
            "features.0.0", "features.1.0.block.0", "features.1", "features.3", "features.5", "features.7"),
            keep_classifier=2),
        _entry("shufflenetv2_x0_5", "shufflenet_v2_x0_5", 8, 1024, "fc",
               ("conv1.0", "stage2.0.branch1.0", "stage2", "stage3", "stage4", "conv5")),
        # Architectures of the released weights (cfct.released): ResNet-152 (Astra's CT encoder, depth-summed
        # to 2D; also torchvision's ImageNet ResNet-152) and timm's TensorFlow-ported EfficientNet-Lite0/1/2
        # ("SAME" padding computed per input, so any size runs; 1280 pooled features for all three).
        _entry("resnet152", "resnet152", 8, 2048, "fc", _RESNET_LAYERS),
        *(_entry(f"efficientnet_lite{i}", f"tf_efficientnet_lite{i}", 8, 1280, "classifier", _LITE_LAYERS,
                 library="timm") for i in range(3)),
    )
}
"""Every architecture cfct builds, one :class:`Architecture` each; extend it with :func:`register`."""


MIN_IMAGE_SIZE = 8
"""Smallest image side cfct accepts at all: below it, upsampling would invent most of the image."""


def register(arch: Architecture) -> Architecture:
    """Add an architecture to :data:`REGISTRY` (e.g. one with released weights); an existing name is an error."""
    if not isinstance(arch, Architecture):
        raise ConfigError(f"register() takes an Architecture, got {type(arch).__name__}")
    if arch.name in REGISTRY or arch.name in _aliases():
        raise ConfigError(f"architecture {arch.name!r} is already registered")
    if arch.library not in LIBRARIES:
        raise unknown_choice("model library", arch.library, LIBRARIES)
    if arch.min_input < MIN_IMAGE_SIZE or arch.feature_dim < 1 or len(arch.layers) < 3:
        raise ConfigError(f"architecture {arch.name!r}: min_input >= {MIN_IMAGE_SIZE}, feature_dim >= 1 and at "
                          "least three named layers are required")
    REGISTRY[arch.name] = arch
    return arch


def architectures() -> tuple[str, ...]:
    """Names of every registered architecture, in registration order."""
    return tuple(REGISTRY)


def _aliases() -> dict[str, str]:
    return {a.builder: a.name for a in REGISTRY.values()}


def get_architecture(name: str) -> Architecture:
    """The registry entry of ``name`` (library names such as ``efficientnet_v2_s`` are aliases)."""
    key = name.strip().lower() if isinstance(name, str) else name
    key = _aliases().get(key, key)
    if key not in REGISTRY:
        raise unknown_choice("architecture", name, REGISTRY)
    return REGISTRY[key]


NORMALIZATIONS: tuple[str, ...] = ("imagenet", "half", "unit")
"""Input normalisations a source can ask for (keys of ``cfct.data.NORMALIZATION``, thesis 6.4.2; ``unit``: the
[0, 1] image unchanged, as Astra's CT encoder takes it)."""

_HEAD_PREFIX = "head.fc."
_CFCT_FORMAT = "cfct-classifier-v1"


# ----------------------------------------------------------------------------------------------------
# Spec strings


def _canonical_arch(arch: str) -> str:
    return get_architecture(arch).name


def check_input_size(arch: str, size: int | tuple[int, int]) -> None:
    """Raise :class:`IncompatibleError` if ``arch`` cannot take images of ``size`` px (side or (H, W))."""
    arch = _canonical_arch(arch)
    sides = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    if len(sides) != 2 or any(not isinstance(s, numbers.Integral) or isinstance(s, bool) for s in sides):
        raise IncompatibleError(f"image size must be an int or an (H, W) pair of ints, got {size!r}")
    sides = (int(sides[0]), int(sides[1]))
    if min(sides) < MIN_IMAGE_SIZE:
        raise IncompatibleError(
            f"{arch} cannot take {sides[0]}x{sides[1]} px images: the smallest side cfct accepts is "
            f"{MIN_IMAGE_SIZE} px (inputs below {REGISTRY[arch].min_input} px are upsampled to that size)"
        )


# ----------------------------------------------------------------------------------------------------
# Building the torchvision trunk


def _build_backbone(arch: str, *, transform_input: bool = False) -> nn.Module:
    """The library's ImageNet layout of ``arch`` (random init, global RNG) without its last linear layer.

    The rest of the ImageNet classifier stays part of the backbone, so that module paths match the library's
    state dicts (:attr:`Architecture.keep_classifier`).
    """
    entry = REGISTRY[arch]
    if entry.library == "timm":
        try:
            import timm  # heavy import, needed only for timm architectures
        except ImportError as err:
            raise ConfigError(f"architecture {arch!r} is built by timm, which is not installed ({err}); "
                              "install it with: pip install timm") from None
        # drop_rate 0: the dropout of the classifier is cfct's head (p = 0.5), not timm's in front of it
        net = timm.create_model(entry.builder, pretrained=False, drop_rate=0.0)
        setattr(net, entry.head, nn.Identity())  # forward: features -> global pool -> flatten (1280)
        return net
    if entry.library != "torchvision":
        raise ConfigError(f"architecture {arch!r}: no builder for library {entry.library!r}")
    if arch == "googlenet":
        net = tvm.get_model(
            entry.builder, weights=None, aux_logits=False, init_weights=True, transform_input=transform_input
        )
        net.dropout = nn.Identity()  # torchvision's own dropout in front of fc; ours is in the head
    else:
        net = tvm.get_model(entry.builder, weights=None)
    parent, _, last = entry.head.rpartition(".")
    if entry.keep_classifier is not None:
        net.classifier = net.classifier[: entry.keep_classifier]
    elif parent:  # Sequential(Dropout, Linear): the whole classifier goes (its dropout is torchvision's)
        setattr(net, parent, nn.Identity())
    else:
        setattr(net, last, nn.Identity())
    return net


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded, restoring the global RNG state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def _new_head(in_features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(dropout=nn.Dropout(0.5), fc=nn.Linear(in_features, num_classes)))


# ----------------------------------------------------------------------------------------------------
# The classifier


class Classifier(nn.Module):
    """Backbone -> global average pooling -> Dropout(0.5) -> Linear (thesis 3.4.2).

    Build it with :func:`create`. The input is a normalised float batch ``(B, 3, H, W)`` (see
    :attr:`normalization`); inputs whose shorter side is below :attr:`min_input` are bilinearly upsampled to
    it (module docstring: why).

    Attributes
    ----------
    arch : str
        Architecture name (:data:`REGISTRY`).
    spec : str
        Canonical source spec the weights came from.
    normalization : str
        The source's input normalisation, a key of ``cfct.data.NORMALIZATION`` chosen by
        :func:`cfct.sources.normalization`: ``'imagenet'`` for torchvision's ImageNet weights, ``'unit'`` for
        Astra's CT encoder, ``'half'`` (mean 0.5, std 0.5, thesis 6.4.2) otherwise unless a checkpoint's
        metadata says otherwise.
    min_input : int
        Smallest input side the backbone runs on without upsampling.
    input_size : int
        Image side the model was created for (informational; any size >= MIN_IMAGE_SIZE works).
    num_classes : int
        Outputs of the current head.
    num_source_classes : int or None
        Classes of the source's own head (ImageNet: 1000; checkpoint / pre-trained: its head), None for
        ``random:`` or a checkpoint without head.
    feature_dim : int
        D of :meth:`features`.
    body : nn.Module
        torchvision's layout without its last linear layer; returns pooled features.
    head : nn.Sequential
        ``dropout`` (p = 0.5) and ``fc`` (Linear(D, num_classes)).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        *,
        spec: str | None = None,
        normalization: str = "half",
        transform_input: bool = False,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        arch = _canonical_arch(arch)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        check_input_size(arch, input_size)
        if normalization not in NORMALIZATIONS:
            raise unknown_choice("normalization", normalization, NORMALIZATIONS)
        self.arch = arch
        self.spec = spec if spec is not None else f"random:{arch}"
        self.normalization = normalization
        self.transform_input = bool(transform_input)
        self.min_input = REGISTRY[arch].min_input
        self.input_size = int(input_size)
        self.feature_dim = REGISTRY[arch].feature_dim
        self.num_source_classes: int | None = None
        # Keras ResNet50 (v1) strides in the first 1x1 conv; set by create() for converted RadImageNet files.
        self.stride_in_1x1 = False
        self._backbone_frozen = False
        self.body = _build_backbone(arch, transform_input=self.transform_input)
        self.head = _new_head(self.feature_dim, num_classes)

    # -- forward ---------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of outputs of the current head."""
        return self.head.fc.out_features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check the input's shape; upsample bilinearly when its shorter side is below :attr:`min_input`."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise IncompatibleError(
                f"{self.arch} expects a float batch of shape (B, 3, H, W), got {tuple(x.shape)} "
                "(grey images: repeat to 3 channels, e.g. cfct.data.to_tensor)"
            )
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if min(h, w) < MIN_IMAGE_SIZE:
            check_input_size(self.arch, (h, w))
        if min(h, w) < self.min_input:
            scale = self.min_input / min(h, w)
            size = (
                max(self.min_input, math.ceil(h * scale - 1e-9)),
                max(self.min_input, math.ceil(w * scale - 1e-9)),
            )
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled) features, shape ``(B, feature_dim)``: the input of the head's dropout."""
        return self.body(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.head(self.features(x))

    # -- layers ----------------------------------------------------------------------------------------------
    def layers(self) -> dict[str, nn.Module]:
        """Ordered named layers for hooks: first conv, second conv, each stage's output (:attr:`Architecture.layers`).

        Names are torchvision module paths relative to :attr:`body` (ResNet: ``conv1``, ``layer1.0.conv1``,
        ``layer1`` ... ``layer4``). Hooked activations are those of the (possibly upsampled) input.
        """
        return OrderedDict((name, self.body.get_submodule(name)) for name in REGISTRY[self.arch].layers)

    def conv_layers(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The first and second convolution in execution order (the conv1 / conv2 of S_FU, thesis Eq. 6.4)."""
        first, second = REGISTRY[self.arch].convs
        return self.body.get_submodule(first), self.body.get_submodule(second)

    # -- head and parameter groups ---------------------------------------------------------------------------
    def replace_head(self, num_classes: int, *, seed: int | None = None) -> None:
        """Replace the head by a fresh Dropout(0.5) + Linear(D, num_classes), seeded if ``seed`` is given."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
        device = self.head.fc.weight.device
        dtype = self.head.fc.weight.dtype
        with _seeded(seed):
            self.head = _new_head(self.feature_dim, num_classes).to(device=device, dtype=dtype)
        self.head.train(self.training)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the backbone (everything but the final linear layer)."""
        return self.body.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the head's linear layer."""
        return self.head.parameters()

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the backbone for the first phase of freeze-then-full fine-tuning (3.4.2).

        Frozen means no gradients *and* the whole backbone in inference mode even while the model trains:
        batch-norm running statistics stay fixed (as Keras, the thesis's framework, does for non-trainable
        batch-norm layers), and the backbone's own dropout (VGG11) and stochastic depth (EfficientNetV2,
        ConvNeXt) are off. The head's dropout stays active.
        """
        self._backbone_frozen = bool(frozen)
        for p in self.body.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> Classifier:
        """Set training mode; a frozen backbone stays in eval mode (see :meth:`freeze_backbone`)."""
        super().train(mode)
        if self._backbone_frozen:
            self.body.eval()
        return self

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, spec={self.spec!r}, num_classes={self.num_classes}, "
            f"normalization={self.normalization!r}, min_input={self.min_input}"
        )

    def metadata(self) -> dict[str, str]:
        """String metadata written by :func:`save_checkpoint`."""
        return {
            "format": _CFCT_FORMAT,
            "arch": self.arch,
            "num_classes": str(self.num_classes),
            "normalization": self.normalization,
            "spec": self.spec,
            "transform_input": "1" if self.transform_input else "0",
            "stride_in_1x1": "1" if self.stride_in_1x1 else "0",
        }


# ----------------------------------------------------------------------------------------------------
# Checkpoints

_DENSE_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _resolve_path(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if p.is_file():
        return p
    looked = [str(p.resolve())]
    if not p.is_absolute():
        found = paths.find_file(str(p))
        if found is not None and found.is_file():
            return found
        looked += [str(d / p) for d in paths.search_dirs()]
    raise DataMissingError(
        f"checkpoint file {str(path)!r} not found; looked in: {', '.join(looked)}. Give an absolute path, "
        "a path relative to the working directory, or one relative to $CFCT_MIRROR / $CFCT_DATA"
    )


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state dict and its metadata without executing pickled code.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``,
    unwrapping a ``{'state_dict' | 'model' | 'net': {...}}`` container and a ``module.`` prefix.

    Returns
    -------
    state_dict, metadata
        Tensors on the CPU and the safetensors metadata (empty for other formats).

    Raises
    ------
    DataMissingError
        The file does not exist (the message names where cfct looked).
    IncompatibleError
        The file is not a tensor state dict or needs code execution to unpickle.
    """
    file = _resolve_path(path)
    metadata: dict[str, str] = {}
    if file.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(file), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
            state = load_file(str(file), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise IncompatibleError(f"cannot read safetensors checkpoint {file}: {exc}") from exc
    else:
        try:
            obj = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code objects, RuntimeError for non-torch files
            raise IncompatibleError(
                f"cannot load {file} with torch.load(weights_only=True) ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). cfct never unpickles code: save a plain "
                "state dict (torch.save(model.state_dict(), ...)) or a .safetensors file"
            ) from exc
        for key in ("state_dict", "model", "net", "model_state_dict"):
            if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise IncompatibleError(
                f"{file} does not hold a state dict of tensors (got {type(obj).__name__})"
            )
        state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, metadata


def _to_classifier_layout(arch: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a torchvision-layout state dict (or cfct's own) to Classifier keys (``body.*``, ``head.fc.*``)."""
    if any(k.startswith(("body.", "head.")) for k in state):
        return dict(state)
    head = REGISTRY[arch].head + "."
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if arch == "googlenet" and key.startswith(("aux1.", "aux2.")):
            continue  # GoogLeNet's auxiliary classifiers only serve ImageNet training
        if arch == "densenet121":
            match = _DENSE_OLD_KEY.match(key)
            if match:  # torchvision's own densenet files still use 'norm.1'-style keys
                key = match.group(1) + match.group(2)
        if key.startswith(head):
            out[_HEAD_PREFIX + key[len(head) :]] = value
        else:
            out["body." + key] = value
    return out


def _head_classes(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    weight = _to_classifier_layout(arch, state).get(_HEAD_PREFIX + "weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _first(items: list[str], n: int = 10) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_checkpoint(
    model: Classifier, path: str | os.PathLike | Mapping[str, torch.Tensor], *, head: str = "auto"
) -> dict[str, str]:
    """Load weights into ``model`` in place, checking that every key fits.

    Parameters
    ----------
    model : Classifier
    path : path or state dict
        A ``.safetensors`` file (cfct's own, see :func:`save_checkpoint`), a ``torch.save``-d state dict (read
        with ``weights_only=True``), or an in-memory state dict. Keys may be in cfct's layout (``body.*``,
        ``head.fc.*``) or in torchvision's layout of the architecture (``conv1.weight`` ... ``fc.weight``),
        with or without the final linear layer.
    head : {'auto', 'load', 'skip'}
        ``'auto'``: load the head when the checkpoint has one; ``'load'``: require it; ``'skip'``: ignore it
        (keep the model's head, e.g. a new head for a target task).

    Returns
    -------
    dict
        The checkpoint's metadata (empty if none).

    Raises
    ------
    IncompatibleError
        Keys missing from the checkpoint, unexpected keys, or shape mismatches (the first 10 of each are
        named), or a metadata architecture that differs from the model's.
    """
    if head not in ("auto", "load", "skip"):
        raise unknown_choice("head mode", head, ("auto", "load", "skip"))
    if isinstance(path, Mapping):
        state, metadata, where = dict(path), {}, "state dict"
    else:
        state, metadata = read_checkpoint(path)
        where = str(path)
    if metadata.get("arch") and metadata["arch"] != model.arch:
        raise IncompatibleError(f"checkpoint {where} holds a {metadata['arch']}, not a {model.arch}")
    state = _to_classifier_layout(model.arch, state)
    expected = model.state_dict()
    head_keys = {k for k in expected if k.startswith("head.")}
    has_head = any(k in state for k in head_keys)
    if head == "load" and not has_head:
        raise IncompatibleError(
            f"checkpoint {where} has no head ({REGISTRY[model.arch].head}.weight / head.fc.weight)"
        )
    load_head = has_head and head != "skip"
    if not load_head:
        state = {k: v for k, v in state.items() if k not in head_keys}
    wanted = {k for k in expected if load_head or k not in head_keys}
    # Files converted from other frameworks (Keras RadImageNet) carry no batch counters: tolerate that.
    missing = sorted(k for k in wanted - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state.keys() & expected.keys()
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [f"checkpoint {where} does not fit {model.arch}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_first(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches (checkpoint vs model) ({len(mismatched)}): {_first(mismatched)}")
        if any(k.startswith("head.") for k in mismatched) and not [
            m for m in mismatched if m.startswith("body.")
        ]:
            parts.append("pass head='skip' (or create(spec, num_classes=k)) to keep a new head")
        raise IncompatibleError("; ".join(parts))
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value.to(dtype=expected[key].dtype))
    return metadata


def save_checkpoint(
    model: Classifier, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s weights as safetensors, with metadata (arch, num_classes, normalization, spec, ...).

    Extra ``metadata`` values that are not strings are stored as JSON. The file is written atomically.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"checkpoint path must end in .safetensors, got {path.name!r}")
    meta = model.metadata()
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------------
# ImageNet weights


# ----------------------------------------------------------------------------------------------------
# Pre-trained sources


# ----------------------------------------------------------------------------------------------------
# create


