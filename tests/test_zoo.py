"""Tests of cfct.zoo: spec parsing, shapes of every architecture, small inputs, checkpoints, ImageNet."""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from cfct import config, paths, results, sources, train, zoo
from cfct.errors import ConfigError, DataMissingError, IncompatibleError


@functools.cache
def _model(arch: str) -> zoo.Classifier:
    """One seeded random model per architecture, shared by the shape tests (building VGG11 takes seconds)."""
    return sources.create(f"random:{arch}", 3, input_size=28, seed=0).eval()


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    """Free the shared models (VGG11 alone holds 0.5 GB) when this module's tests are done."""
    yield
    _model.cache_clear()


def _tv_model(arch: str) -> nn.Module:
    kwargs = {"aux_logits": True, "init_weights": True} if arch == "googlenet" else {}
    return tvm.get_model(zoo.REGISTRY[arch].builder, weights=None, **kwargs).eval()


# ----------------------------------------------------------------------------------------------------
# Spec strings


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("random:resnet18", ("random", "resnet18", None)),
        ("imagenet:resnet50", ("imagenet", "resnet50", None)),
        ("checkpoint:resnet50:/tmp/a:b.safetensors", ("checkpoint", "resnet50", "/tmp/a:b.safetensors")),
        ("pretrained:resnet18:cifar10", ("pretrained", "resnet18", "cifar10")),
        ("pretrained:resnet18:cifar10@5000", ("pretrained", "resnet18", "cifar10@5000")),
        (
            "pretrained:resnet18:medmnist-lto:breastmnist",
            ("pretrained", "resnet18", "medmnist-lto:breastmnist"),
        ),
        ("imagenet:efficientnet_v2_s", ("imagenet", "efficientnetv2_s", None)),  # torchvision alias
        (" Random:ResNet18 ", ("random", "resnet18", None)),
    ],
)
def test_parse_spec(spec: str, expected: tuple) -> None:
    parsed = sources.parse_spec(spec)
    assert (parsed.kind, parsed.arch, parsed.arg) == expected
    assert sources.parse_spec(str(parsed)) == parsed  # the canonical string round-trips


def test_parse_spec_unknown_kind_lists_kinds() -> None:
    with pytest.raises(
        ConfigError,
        match="unknown source kind 'torchhub'; valid choices: random, imagenet, ct, checkpoint, pretrained",
    ):
        sources.parse_spec("torchhub:resnet18")


def test_parse_spec_unknown_arch_lists_architectures() -> None:
    with pytest.raises(ConfigError) as info:
        sources.parse_spec("imagenet:resnet34")
    assert "unknown architecture 'resnet34'" in str(info.value)
    for arch in zoo.architectures():
        assert arch in str(info.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet18", "must look like '<kind>:<arch>"),
        ("checkpoint:resnet50", "needs a checkpoint path"),
        ("pretrained:resnet18:", "needs a dataset spec"),
        ("random:resnet18:cifar10", "takes no argument"),
    ],
)
def test_parse_spec_malformed(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sources.parse_spec(spec)


def test_registry_is_extensible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "REGISTRY", dict(zoo.REGISTRY))
    entry = zoo.register(zoo.Architecture(
        "resnet34", "resnet34", 8, 512, "fc", ("conv1", "layer1.0.conv1", "layer1", "layer2", "layer3", "layer4"),
        ("conv1", "layer1.0.conv1")))
    assert zoo.get_architecture("RESNET34") is entry and "resnet34" in zoo.architectures()
    model = sources.create("random:resnet34", 3, input_size=28)
    assert model.features(torch.randn(2, 3, 28, 28)).shape == (2, 512)
    assert [type(m).__name__ for m in model.conv_layers()] == ["Conv2d", "Conv2d"]
    with pytest.raises(ConfigError, match="already registered"):
        zoo.register(entry)
    with pytest.raises(ConfigError, match="unknown architecture 'resnet101'"):
        zoo.get_architecture("resnet101")


# ----------------------------------------------------------------------------------------------------
# Shapes, layers, small inputs


@pytest.mark.parametrize("arch", zoo.architectures())
def test_output_shapes_at_28_and_224(arch: str) -> None:
    model = _model(arch)
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str, out: torch.Tensor) -> None:  # a hook must return None, or it replaces the output
        seen.setdefault(name, tuple(out.shape))

    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
        for name, m in model.layers().items()
    ]
    try:
        with torch.no_grad():
            assert model(torch.randn(2, 3, 28, 28)).shape == (2, 3)
            assert model.features(torch.randn(2, 3, 28, 28)).shape == (2, zoo.REGISTRY[arch].feature_dim)
            seen_28 = dict(seen)
            seen.clear()
            assert model(torch.randn(1, 3, 224, 224)).shape == (1, 3)
    finally:
        for h in hooks:
            h.remove()
    # every named layer fires, in the order layers() lists them, at both sizes
    assert list(seen_28) == list(model.layers()) == list(seen)
    assert model.feature_dim == zoo.REGISTRY[arch].feature_dim


def test_resnet_layer_names() -> None:
    model = _model("resnet18")
    assert list(model.layers()) == ["conv1", "layer1.0.conv1", "layer1", "layer2", "layer3", "layer4"]
    assert model.conv_layers() == (model.body.conv1, model.body.layer1[0].conv1)


@pytest.mark.parametrize("arch", zoo.architectures())
def test_conv_layers_are_the_first_two_convolutions_executed(arch: str) -> None:
    model = _model(arch)
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    first, second = model.conv_layers()
    assert isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d)
    assert order[0] is first and order[1] is second


@pytest.mark.parametrize("arch", zoo.architectures())
def test_min_input_is_the_true_minimum(arch: str) -> None:
    body = _model(arch).body  # the unchanged ImageNet layout, without cfct's upsampling
    size = zoo.REGISTRY[arch].min_input
    with torch.no_grad():
        assert body(torch.randn(1, 3, size, size)).shape == (1, zoo.REGISTRY[arch].feature_dim)
        if size > zoo.MIN_IMAGE_SIZE:
            with pytest.raises(RuntimeError):
                body(torch.randn(1, 3, size - 1, size - 1))


@pytest.mark.parametrize(
    ("arch", "size", "first_conv_input"),
    [
        ("vgg11", 28, (32, 32)),
        ("convnext_tiny", 28, (32, 32)),
        ("densenet121", 28, (29, 29)),
        ("googlenet", 12, (15, 15)),
        ("resnet18", 28, (28, 28)),
        ("vgg11", (28, 42), (32, 48)),
    ],
)
def test_small_inputs_are_upsampled_to_the_minimum(
    arch: str, size, first_conv_input: tuple[int, int]
) -> None:
    model = _model(arch)
    h, w = (size, size) if isinstance(size, int) else size
    seen = []
    hook = model.conv_layers()[0].register_forward_hook(
        lambda _m, inp, _o: seen.append(tuple(inp[0].shape[-2:]))
    )
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    hook.remove()
    assert seen == [first_conv_input]
    assert out.shape == (2, 3)


def test_too_small_or_wrong_inputs_are_refused() -> None:
    model = _model("resnet18")
    with pytest.raises(IncompatibleError, match="smallest side cfct accepts is 8 px"):
        model(torch.randn(1, 3, 7, 28))
    with pytest.raises(IncompatibleError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 28, 28))
    with pytest.raises(IncompatibleError, match="vgg11 cannot take 4x4 px images"):
        sources.create("random:vgg11", 2, input_size=4)


# ----------------------------------------------------------------------------------------------------
# Initialisation, heads, parameter groups


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = sources.create("random:resnet18", 2, seed=7).state_dict()
    b = sources.create("random:resnet18", 2, seed=7).state_dict()
    c = sources.create("random:resnet18", 2, seed=8).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["body.conv1.weight"], c["body.conv1.weight"])
    assert not torch.equal(a["head.fc.weight"], c["head.fc.weight"])


def test_random_source_needs_num_classes() -> None:
    with pytest.raises(ConfigError, match="has no source head: pass num_classes"):
        sources.create("random:resnet18")


def test_head_and_parameter_groups() -> None:
    model = sources.create("random:resnet18", 2, seed=0)
    assert isinstance(model.head.dropout, nn.Dropout) and model.head.dropout.p == 0.5  # thesis 3.4.2
    backbone, head = list(model.backbone_parameters()), list(model.head_parameters())
    assert {id(p) for p in backbone}.isdisjoint({id(p) for p in head})
    assert len(backbone) + len(head) == len(list(model.parameters()))
    model.replace_head(5, seed=1)
    assert model.num_classes == 5 and model(torch.randn(2, 3, 28, 28)).shape == (2, 5)


def test_freeze_backbone_keeps_batchnorm_in_inference_mode() -> None:
    model = sources.create("random:resnet18", 2, seed=0)
    model.freeze_backbone()
    model.train()
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    assert not model.body.bn1.training and model.head.training
    running = model.body.bn1.running_mean.clone()
    model(torch.randn(4, 3, 28, 28)).sum().backward()
    assert torch.equal(model.body.bn1.running_mean, running) and model.body.conv1.weight.grad is None
    model.freeze_backbone(False)
    model.train()
    assert model.body.bn1.training and all(p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = sources.create("random:mobilenetv3_small", 4, seed=3).eval()
    file = zoo.save_checkpoint(model, tmp_path / "m.safetensors", {"epochs": 3})
    _, meta = zoo.read_checkpoint(file)
    assert meta["arch"] == "mobilenetv3_small" and meta["num_classes"] == "4" and meta["epochs"] == "3"
    assert meta["spec"] == "random:mobilenetv3_small" and meta["normalization"] == "half"
    loaded = sources.create(f"checkpoint:mobilenetv3_small:{file}").eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.num_classes == 4 and loaded.num_source_classes == 4
    # a target head replaces the source's; the backbone is the checkpoint's
    target = sources.create(f"checkpoint:mobilenetv3_small:{file}", 2).eval()
    with torch.no_grad():
        assert torch.equal(target.features(x), model.features(x))
    assert target.num_classes == 2 and target.num_source_classes == 4


def test_checkpoint_in_torchvision_layout(tmp_path: Path) -> None:
    # e.g. a RadImageNet ResNet50 converted into torchvision's layout (cfct.radimagenet)
    reference = _tv_model("resnet50")
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    model = sources.create(f"checkpoint:resnet50:{tmp_path / 'tv.pth'}").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert model.num_source_classes == 1000 and model.normalization == "half"
    # the same weights without the ImageNet head: fine with a target head, refused without one
    headless = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": headless}, tmp_path / "headless.pt")
    assert sources.create(f"checkpoint:resnet50:{tmp_path / 'headless.pt'}", 3).num_source_classes is None
    with pytest.raises(IncompatibleError, match="has no classification head"):
        sources.create(f"checkpoint:resnet50:{tmp_path / 'headless.pt'}")


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    state = _model("resnet18").state_dict()
    state["body.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "r18.pt")
    with pytest.raises(IncompatibleError) as info:
        sources.create(f"checkpoint:resnet50:{tmp_path / 'r18.pt'}", 2)
    message = str(info.value)
    assert "does not fit resnet50" in message and str(tmp_path / "r18.pt") in message
    assert "missing keys" in message and "body.layer1.0.conv3.weight" in message
    assert "unexpected keys (1): body.extra.weight" in message
    assert (
        "shape mismatches" in message
        and "body.layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)" in message
    )


def test_checkpoint_head_mismatch_suggests_skip(tmp_path: Path) -> None:
    file = zoo.save_checkpoint(sources.create("random:resnet18", 4, seed=0), tmp_path / "h.safetensors")
    model = sources.create("random:resnet18", 2, seed=0)
    with pytest.raises(IncompatibleError, match=r"head.fc.weight \(4, 512\) vs \(2, 512\).*head='skip'"):
        zoo.load_checkpoint(model, file)
    zoo.load_checkpoint(model, file, head="skip")
    with pytest.raises(IncompatibleError, match="holds a resnet18, not a vgg11"):
        sources.create(f"checkpoint:vgg11:{file}")


class _Payload:  # a class outside torch's allow-list: unpickling it would run code
    pass


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    torch.save({"net": _Payload()}, tmp_path / "code.pt")
    with pytest.raises(IncompatibleError, match="never unpickles code"):
        sources.create(f"checkpoint:resnet18:{tmp_path / 'code.pt'}", 2)


def test_missing_checkpoint_names_the_file() -> None:
    with pytest.raises(
        DataMissingError, match="checkpoint file 'nowhere/m.safetensors' not found; looked in"
    ):
        sources.create("checkpoint:resnet18:nowhere/m.safetensors", 2)


def test_source_config_tracks_checkpoint_content(tmp_path: Path) -> None:
    file = tmp_path / "m.safetensors"
    zoo.save_checkpoint(sources.create("random:resnet18", 2, seed=0), file)
    first = sources.source_config(f"checkpoint:resnet18:{file}")
    zoo.save_checkpoint(sources.create("random:resnet18", 2, seed=1), file)
    assert sources.source_config(f"checkpoint:resnet18:{file}")["sha256"] != first["sha256"]
    assert sources.source_config("imagenet:resnet50") == {"spec": "imagenet:resnet50", "weights": "IMAGENET1K_V1"}


# ----------------------------------------------------------------------------------------------------
# ImageNet weights


def test_imagenet_offline_fails_fast_with_file_folder_and_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CFCT_OFFLINE", "1")
    paths.is_offline.cache_clear()
    start = time.perf_counter()
    with pytest.raises(DataMissingError) as info:
        sources.create("imagenet:resnet50", 2)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert "pretrained:resnet50:cifar10" in message
    paths.is_offline.cache_clear()


@pytest.mark.parametrize("arch", ["resnet18", "googlenet", "densenet121"])
def test_imagenet_weights_from_the_hub_cache(arch: str, tmp_path: Path, monkeypatch) -> None:
    # torchvision's file layout, written by torchvision's own model (random weights: no download here)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = _tv_model(arch)
    state = reference.state_dict()
    if arch == "densenet121":  # torchvision's DenseNet files still use the old 'norm.1' style keys
        state = {
            k.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1."): v
            for k, v in state.items()
            if not k.endswith("num_batches_tracked")
        }
    file, url = sources.imagenet_weights_file(arch)
    assert file.parent == tmp_path / "hub" / "checkpoints" and url.endswith(file.name)
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    model = sources.create(f"imagenet:{arch}").eval()
    assert model.normalization == "imagenet" and model.num_source_classes == 1000
    if arch == "googlenet":
        reference.transform_input = True  # as torchvision sets for its ImageNet GoogLeNet
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert sources.create(f"imagenet:{arch}", 2).num_classes == 2


# ----------------------------------------------------------------------------------------------------
# pretrained: sources


def test_pretrain_settings_come_from_the_typed_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    smoke = config.get_profile("smoke")
    natural = sources.pretrain_settings("cifar10@500", smoke)
    assert natural == {"image_size": smoke.natural_size, "epochs": smoke.pretrain_epochs,
                       "max_images": smoke.pretrain_max_images, "batch_size": smoke.pretrain_batch_size, "seed": 0}
    medical = sources.pretrain_settings("medmnist-lto:breastmnist", "smoke", seed=3, epochs=9)
    assert (medical["image_size"], medical["epochs"], medical["seed"]) == (smoke.image_size, 9, 3)
    custom = dataclasses.replace(smoke, pretrain_image_size=48, pretrain_lr=0.01)
    assert sources.pretrain_settings("cifar10", custom)["image_size"] == 48
    assert sources.pretrain_settings("cifar10", custom)["lr"] == 0.01
    monkeypatch.setenv("CFCT_PROFILE", "paper")
    assert sources.pretrain_settings("cifar10")["epochs"] == config.get_profile("paper").pretrain_epochs


def test_pretrained_source_not_yet_trained_names_the_way(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="not been pre-trained.*load_source"):
        sources.create("pretrained:resnet18:cifar10@500", None, store=results.Store(tmp_path), pretrain="smoke")


def test_pretrained_source_end_to_end_is_cached(mirror: Path) -> None:
    # a real (tiny) pre-training on BreastMNIST through cfct.train.pretrain, then a cached second create
    settings = {"image_size": 28, "epochs": 1, "max_images": 64, "batch_size": 32}
    spec = "pretrained:resnet18:medmnist:breastmnist@64"
    source = train.load_source(spec, None, pretrain_kwargs=settings).eval()
    assert source.num_source_classes == 2 and source.normalization == "half" and source.spec == spec
    start = time.perf_counter()
    target = train.load_source(spec, 3, pretrain_kwargs=settings).eval()
    assert time.perf_counter() - start < 5.0  # read from the store, not trained again
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(target.features(x), source.features(x))
    assert sources.source_config(spec, pretrain_kwargs=settings)["pretrain"]["max_images"] == 64
