"""Tests of cfct.train: metrics against scikit-learn, fine-tuning on real PneumoniaMNIST, caching, resume,
freeze-then-full, pre-training and input errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from cfct import data, results, sources, train
from cfct.errors import ConfigError, IncompatibleError
from cfct.stats import roc_auc

# ------------------------------------------------------------------------------------------ metrics


def test_accuracy() -> None:
    assert train.accuracy([0, 1, 2, 1], np.eye(3)[[0, 1, 1, 1]]) == pytest.approx(0.75)
    assert train.accuracy([0, 1, 1], [0.2, 0.7, 0.4]) == pytest.approx(2 / 3)
    multi = train.accuracy(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.6, 0.8]]))
    assert multi == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------ config


def test_finetune_config_validation_names_choices() -> None:
    with pytest.raises(ConfigError, match="valid choices: adam, sgd"):
        train.FinetuneConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="val_loss, val_auc"):
        train.FinetuneConfig(monitor="val_acc")
    with pytest.raises(ConfigError, match="none, freeze_then_full"):
        train.FinetuneConfig(freeze="partial")
    with pytest.raises(ConfigError, match="lr"):
        train.FinetuneConfig(lr=0.0)
    with pytest.raises(ConfigError, match="batch_size"):
        train.FinetuneConfig(batch_size=0)
    ch6 = train.FinetuneConfig.thesis_ch6(lr=1e-3)
    assert (ch6.optimizer, ch6.monitor, ch6.selected, ch6.patience, ch6.max_epochs) == \
        ("sgd", "val_auc", "val_loss", 50, 400)
    ch3 = train.FinetuneConfig.thesis_ch3()
    assert (ch3.optimizer, ch3.lr, ch3.monitor, ch3.selected, ch3.patience, ch3.max_epochs) == \
        ("adam", 1e-5, "val_loss", "val_loss", 30, 200)


def test_resolve_device() -> None:
    assert train.resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert train.resolve_device("auto").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="not available"):
            train.resolve_device("cuda")
    with pytest.raises(ConfigError, match="valid choices"):
        train.resolve_device("tpu")


# ------------------------------------------------------------------------------------------ fine-tuning
# Real PneumoniaMNIST at 28 px, cut small: stratified subsets of the official splits.


@pytest.fixture(scope="module")
def pneumonia() -> tuple[data.ImageSet, data.ImageSet, data.ImageSet]:
    splits = []
    for split, n in (("train", 300), ("val", 100), ("test", 200)):
        ds = data.load_target("pneumoniamnist", split, 28)
        splits.append(ds.subset(data.stratified_subsample(ds.labels, n, seed=0)))
    return tuple(splits)


@pytest.fixture(scope="module")
def tiny(pneumonia) -> tuple[data.ImageSet, data.ImageSet, data.ImageSet]:
    tr, va, te = pneumonia
    return tr.subset(np.arange(0, 300, 4)), va.subset(np.arange(0, 100, 2)), te.subset(np.arange(0, 200, 5))


CPU = dict(device="cpu")


def test_finetune_learns_real_target_and_is_cached(pneumonia, tmp_path) -> None:
    """random:resnet18 on 300 PneumoniaMNIST images: validation AUC far above chance (measured ~0.92-0.96)."""
    tr, va, te = pneumonia
    store = results.Store(tmp_path)
    cfg = train.FinetuneConfig(lr=1e-3, batch_size=32, max_epochs=4, patience=4, **CPU)
    res = train.finetune("random:resnet18", tr, va, te, cfg, store=store, progress=False)
    m = res.metrics
    assert m["val_auc"] > 0.8, m
    assert m["test_auc"] > 0.75, m
    assert m["epochs"] == 4 and 1 <= m["best_epoch"] <= 4
    assert m["hflip"] is False  # chest X-ray: no horizontal flips (3.4.1)
    assert res.test_probs.shape == (200, 2)
    np.testing.assert_allclose(res.test_probs.sum(1), 1.0, atol=1e-6)
    assert m["test_auc"] == pytest.approx(roc_auc(res.test_labels, res.test_probs), abs=1e-12)
    # the restored model is the selected (lowest validation loss) epoch
    hist = res.history
    assert len(hist) == 4
    assert hist["val_loss"].idxmin() + 1 == m["best_epoch"]
    assert m["val_loss"] == pytest.approx(hist["val_loss"].min(), rel=1e-6)

    # second call: served from the store, nothing recomputed
    t0 = time.perf_counter()
    again = train.finetune("random:resnet18", tr, va, te, cfg, store=store, progress=False)
    assert time.perf_counter() - t0 < 1.0
    assert again.run.path == res.run.path
    np.testing.assert_array_equal(again.test_probs, res.test_probs)

    # the stored weights reproduce the stored predictions
    model = res.load_model()
    probs = train.predict(model, te, batch_size=64, device="cpu")
    np.testing.assert_allclose(probs, res.test_probs, atol=1e-5)
    assert not list(res.run.path.glob("*.pt"))  # resume files are removed once complete


def _kill_after(epoch: int):
    def callback(row: dict) -> None:
        if row["global_epoch"] == epoch:
            raise KeyboardInterrupt(f"simulated kill after epoch {epoch}")
    return callback


def test_deterministic_and_resume_after_kill(tiny, tmp_path) -> None:
    tr, va, te = tiny
    cfg = train.FinetuneConfig(lr=1e-3, batch_size=32, max_epochs=2, patience=2, **CPU)
    full = train.finetune("random:resnet18", tr, va, te, cfg, store=results.Store(tmp_path / "a"),
                          progress=False)
    same = train.finetune("random:resnet18", tr, va, te, cfg, store=results.Store(tmp_path / "b"),
                          progress=False)
    np.testing.assert_array_equal(same.test_probs, full.test_probs)  # same seed, same numbers (CPU)
    assert same.metrics["test_auc"] == full.metrics["test_auc"]

    store = results.Store(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        train.finetune("random:resnet18", tr, va, te, cfg, store=store, progress=False,
                       on_epoch_end=_kill_after(1))
    key = train.finetune_config("random:resnet18", tr, va, te, cfg)
    assert store.get("finetune", key) is None  # a killed run is never read back as complete
    partial = store.root / "finetune" / (results.config_hash(key) + ".partial")
    assert (partial / "epoch.pt").exists()

    seen: list[int] = []
    resumed = train.finetune("random:resnet18", tr, va, te, cfg, store=store, progress=False,
                             on_epoch_end=lambda row: seen.append(row["global_epoch"]))
    assert seen == [2]  # epoch 1 was not trained again
    np.testing.assert_array_equal(resumed.test_probs, full.test_probs)
    assert resumed.metrics["best_epoch"] == full.metrics["best_epoch"]
    assert len(resumed.history) == 2
    np.testing.assert_array_equal(resumed.history["val_loss"], full.history["val_loss"])


def test_freeze_then_full_freezes_backbone_in_phase_one(tiny, tmp_path) -> None:
    tr, va, te = tiny
    cfg = train.FinetuneConfig(lr=1e-3, batch_size=32, max_epochs=1, patience=1, freeze="freeze_then_full",
                               monitor="val_loss", **CPU)
    store = results.Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # stop after the head-only epoch, keep its checkpoint
        train.finetune("random:resnet18", tr, va, te, cfg, store=store, progress=False,
                       on_epoch_end=_kill_after(1))
    key = train.finetune_config("random:resnet18", tr, va, te, cfg)
    ckpt = torch.load(store.root / "finetune" / (results.config_hash(key) + ".partial") / "epoch.pt",
                      weights_only=True)
    initial = sources.create("random:resnet18", 2, input_size=28, seed=cfg.seed).state_dict()
    body = [k for k in initial if k.startswith("body.")]
    assert body and all(torch.equal(ckpt["model"][k], initial[k]) for k in body)  # BN statistics included
    assert not torch.equal(ckpt["model"]["head.fc.weight"], initial["head.fc.weight"])

    res = train.finetune("random:resnet18", tr, va, te, cfg, store=store, progress=False)
    assert list(res.history["phase"]) == ["head", "full"]
    final = res.load_model().state_dict()
    assert not torch.equal(final["body.conv1.weight"], initial["body.conv1.weight"])  # phase 2 trains all
    assert res.metrics["epochs"] == 2 and res.metrics["best_epoch"] == 2


def test_monitor_and_select_are_separate(tiny, tmp_path) -> None:
    """6.4.2: stop on validation AUC, keep the epoch of lowest validation loss."""
    tr, va, te = tiny
    cfg = train.FinetuneConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=32,
                               max_epochs=3, patience=3, monitor="val_auc", select="val_loss", augment="ch6",
                               **CPU)
    res = train.finetune("random:resnet18", tr, va, te, cfg, store=results.Store(tmp_path), progress=False)
    hist = res.history
    assert res.metrics["best_epoch"] == hist["val_loss"].idxmin() + 1
    assert res.metrics["val_loss"] == pytest.approx(hist["val_loss"].min(), rel=1e-6)


@pytest.mark.parametrize("arch", ["mnasnet1_0", "shufflenetv2_x0_5"])
def test_best_epoch_is_restored_for_versioned_torchvision_modules(arch: str, tiny, tmp_path) -> None:
    """MNASNet checks module versions when loading a state dict: restoring the best epoch must still work."""
    tr, va, te = tiny
    cfg = train.FinetuneConfig(optimizer="adam", lr=1e-3, batch_size=32, max_epochs=2, patience=2, **CPU)
    res = train.finetune(f"random:{arch}", tr, va, te, cfg, store=results.Store(tmp_path), progress=False)
    assert 1 <= res.metrics["best_epoch"] <= 2
    probs = train.predict(res.load_model(), te, device="cpu")
    np.testing.assert_allclose(probs, res.test_probs, atol=1e-5)


# ------------------------------------------------------------------------------------------ errors


def test_single_class_split_is_a_clear_error(tiny, tmp_path) -> None:
    tr, va, te = tiny
    one_class = va.subset(np.flatnonzero(va.labels == 1))
    with pytest.raises(IncompatibleError, match=r"val split .*single class"):
        train.finetune("random:resnet18", tr, one_class, te, store=results.Store(tmp_path), progress=False)
    other = data.load_target("breastmnist", "test", 28)
    other = other.subset(np.arange(40))
    other = data.ImageSet(other.images, other.labels, "multi-class", ("a", "b", "c"), other.name)
    with pytest.raises(IncompatibleError, match="does not match"):
        train.finetune("random:resnet18", tr, va, other, store=results.Store(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        train.finetune("random:resnet999", tr, va, te, store=results.Store(tmp_path), progress=False)


# ------------------------------------------------------------------------------------------ pre-training


def test_pretrain_writes_a_loadable_cached_source(tmp_path) -> None:
    store = results.Store(tmp_path)
    kwargs = dict(image_size=28, epochs=2, max_images=200, batch_size=64, store=store, progress=False,
                  device="cpu")
    run = train.pretrain("resnet18", "medmnist:breastmnist", **kwargs)
    assert run.metrics["n_images"] == 200 and run.metrics["n_classes"] == 2
    assert run.metrics["epochs"] == 2 and np.isfinite(run.metrics["train_loss"])
    model = sources.create(f"checkpoint:resnet18:{run.file('model.safetensors')}", None, input_size=28)
    assert model.num_classes == 2 and model.normalization == "half"
    assert not list(run.path.glob("*.pt"))
    t0 = time.perf_counter()
    assert train.pretrain("resnet18", "medmnist:breastmnist", **kwargs).path == run.path
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(ConfigError, match="architecture"):
        train.pretrain("resnet7", "medmnist:breastmnist", **kwargs)
