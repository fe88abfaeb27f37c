"""cfct.data on real mirror data: MedMNIST files and MD5s, csv folders, CIFAR-10 JPEGs, splits, transforms."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import medmnist
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from cfct import data, paths
from cfct.errors import ConfigError, DataMissingError, HashMismatchError, IncompatibleError


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CFCT_OFFLINE", "1")
    paths.is_offline.cache_clear()
    yield
    paths.is_offline.cache_clear()


@pytest.fixture()
def fake_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline) -> Path:
    """An empty private mirror and data dir, offline."""
    mirror, data_root = tmp_path / "mirror", tmp_path / "data"
    (mirror / "medmnist").mkdir(parents=True)
    monkeypatch.setenv("CFCT_MIRROR", str(mirror))
    monkeypatch.setenv("CFCT_DATA", str(data_root))
    return mirror


# ------------------------------------------------------------------------------------------------ MedMNIST
@pytest.mark.parametrize("size", [28, 64])
def test_breastmnist_official_splits(size: int) -> None:
    n = medmnist.INFO["breastmnist"]["n_samples"]
    for split in ("train", "val", "test"):
        ds = data.load_target("breastmnist", split, size)
        assert ds.images.shape == (n[split], size, size, 1) and ds.images.dtype == np.uint8
        assert ds.labels.shape == (n[split],) and ds.labels.dtype == np.int64
        assert set(np.unique(ds.labels)) == {0, 1}
        assert ds.task == "binary" and ds.class_names == ("malignant", "normal, benign")
        assert ds.name == f"medmnist:breastmnist@{size}:{split}"
    # the official train split of BreastMNIST: 147 malignant, 399 normal/benign
    assert data.load_target("medmnist:breastmnist", "train", size).class_counts().tolist() == [147, 399]


def test_pneumoniamnist_and_all_split() -> None:
    ds = data.load_target("pneumoniamnist", "all", 28)
    assert len(ds) == 4708 + 524 + 624 and ds.images.shape[1:] == (28, 28, 1)
    assert ds.class_names == ("normal", "pneumonia") and ds.labels.max() == 1
    assert 0 < ds.images.mean() < 255


def test_md5_mismatch_names_file_and_hashes(fake_mirror: Path, mirror: Path) -> None:
    bad = fake_mirror / "medmnist" / "breastmnist.npz"
    raw = bytearray((mirror / "medmnist" / "breastmnist.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(HashMismatchError) as e:
        data.load_target("breastmnist", "train", 28)
    msg = str(e.value)
    assert str(bad) in msg and medmnist.INFO["breastmnist"]["MD5"] in msg
    import hashlib

    assert hashlib.md5(bytes(raw)).hexdigest() in msg


def test_missing_offline_names_file_folders_and_url(fake_mirror: Path) -> None:
    with pytest.raises(DataMissingError) as e:
        data.load_target("dermamnist", "train", 64)
    msg = str(e.value)
    assert "dermamnist_64.npz" in msg
    assert str(fake_mirror / "medmnist") in msg and str(paths.data_dir() / "medmnist") in msg
    assert medmnist.INFO["dermamnist"]["url_64"] in msg
    assert isinstance(e.value, FileNotFoundError)


def test_bad_specs_list_valid_choices() -> None:
    with pytest.raises(ConfigError, match="valid choices: .*breastmnist"):
        data.load_target("medmnist:kneemnist", "train", 28)
    with pytest.raises(ConfigError, match="valid choices: 28, 64, 128, 224"):
        data.load_target("breastmnist", "train", 32)
    with pytest.raises(ConfigError, match="valid choices: train, val, test, all"):
        data.load_target("breastmnist", "validation", 28)
    with pytest.raises(ConfigError, match="valid choices: medmnist, csv"):
        data.parse_target("cifar10x:foo")
    with pytest.raises(ConfigError, match="3D"):
        data.parse_target("organmnist3d")
    with pytest.raises(ConfigError, match="valid choices"):
        data.load_dataset("imagenette", 32)
    with pytest.raises(ConfigError, match="must be positive"):
        data.parse_target("breastmnist@0")
    assert data.parse_dataset("medmnist-lto:medmnist:breastmnist@500").spec == "medmnist-lto:breastmnist@500"
    assert data.validate_target("BreastMNIST") == "medmnist:breastmnist"
    assert data.validate_target("csv:nih-cxr14-sample").startswith("csv:")
    with pytest.raises(DataMissingError, match="looked in"):
        data.validate_target("csv:no-such-folder")


def test_targets_cover_every_2d_flag() -> None:
    flags_2d = [f for f in medmnist.INFO if not f.endswith("3d")]
    assert list(data.TARGETS) == flags_2d and "chestmnist" in data.TARGETS and len(data.TARGETS) == 12
    assert set(data._flags_3d()) == set(medmnist.INFO) - set(flags_2d)
    for flag in flags_2d:  # every size's MD5 key exists for every 2D flag
        assert all(len(data.medmnist_file(flag, s)[1]) == 32 for s in data.SIZES)


def test_available_targets_offline(offline) -> None:
    table = data.available_targets()
    status = {(r.target, r.size): r.status for r in table.itertuples()}
    assert status[("medmnist:breastmnist", 28)] == "local"
    assert status[("medmnist:breastmnist", 64)] == "local"
    assert status[("medmnist:pneumoniamnist", 28)] == "local"
    assert status[("medmnist:breastmnist", 224)] == "missing"
    assert {"csv:nih-cxr14-sample", "csv:iqothnccd-lung-ct"} <= set(table.target)


# ------------------------------------------------------------------------------------------------ LTO
def test_leave_target_out_union() -> None:
    ds = data.load_dataset("medmnist-lto:breastmnist", 28)
    assert ds.class_names == ("pneumoniamnist:normal", "pneumoniamnist:pneumonia")
    lto = data.load_dataset("medmnist-lto:pneumoniamnist", 28, split="val")
    assert set(lto.meta["source"]) == {"breastmnist"} and len(lto) == 78


def test_leave_target_out_offsets_labels(fake_mirror: Path, mirror: Path) -> None:
    for f in ("breastmnist.npz", "pneumoniamnist.npz"):
        (fake_mirror / "medmnist" / f).symlink_to(mirror / "medmnist" / f)
    ds = data.load_dataset("medmnist-lto:dermamnist", 28, split="test")
    assert ds.n_classes == 4 and ds.task == "multi-class"
    # medmnist.INFO order: pneumoniamnist (classes 0, 1) before breastmnist (2, 3)
    assert ds.class_names == (
        "pneumoniamnist:normal",
        "pneumoniamnist:pneumonia",
        "breastmnist:malignant",
        "breastmnist:normal, benign",
    )
    src = ds.meta["source"].to_numpy()
    assert set(ds.labels[src == "pneumoniamnist"]) == {0, 1} and set(ds.labels[src == "breastmnist"]) == {
        2,
        3,
    }
    assert len(ds) == 624 + 156
    with pytest.raises(DataMissingError, match="no other MedMNIST flag"):
        data.load_dataset("medmnist-lto:dermamnist", 128)


# ------------------------------------------------------------------------------------------------ csv folders
def test_csv_nih_groups_meta_and_cache(mirror: Path) -> None:
    t0 = time.perf_counter()
    ds = data.load_target("csv:nih-cxr14-sample", "all", 32)
    assert ds.images.shape == (1000, 32, 32, 1)  # R=G=B PNGs stored grey
    assert ds.class_counts().tolist() == [500, 500]
    assert len(set(ds.groups)) == 264 and ds.groups[0] == "patient_id:1"
    assert {"sex", "age", "patient_id", "filename"} <= set(ds.meta.columns) and "label" not in ds.meta
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = data.load_target(f"csv:{mirror / 'nih-cxr14-sample'}", "all", 32)
    assert time.perf_counter() - t0 < max(0.5, first / 2)
    assert np.array_equal(again.images, ds.images)
    # the cached pixels are those of the resized PNG
    png = (
        Image.open(mirror / "nih-cxr14-sample" / ds.meta.filename[3])
        .convert("L")
        .resize((32, 32), Image.BILINEAR)
    )
    assert np.abs(ds.images[3, ..., 0].astype(int) - np.asarray(png).astype(int)).max() <= 1
    with pytest.raises(ConfigError, match="valid choices: all"):
        data.load_target("csv:nih-cxr14-sample", "train", 32)


def test_csv_iqothnccd_mixed_sizes_and_singleton_groups() -> None:
    ds = data.load_target("csv:iqothnccd-lung-ct", "all", 28)
    assert ds.images.shape == (1055, 28, 28, 1)
    assert ds.class_counts().tolist() == [405, 650]
    assert sum(g.startswith("group:") for g in ds.groups) == 279
    grouped = {g for g in ds.groups if g.startswith("group:")}
    assert len(grouped) == 99 and len(set(ds.groups)) == 99 + 1055 - 279


@pytest.mark.parametrize("row", ["../outside.png", "ABSOLUTE", "link.png", "sub/../../outside.png"])
def test_csv_rows_outside_the_folder_are_refused_before_reading(
    row: str, tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pngs = sorted((mirror / "nih-cxr14-sample" / "images").glob("*.png"))[:3]
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(pngs[0], folder / "a.png")
    shutil.copy(pngs[1], folder / "b.png")
    shutil.copy(pngs[2], tmp_path / "outside.png")  # a readable image outside the folder
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    (folder / "inner.png").symlink_to(folder / "a.png")  # a link that stays inside is fine
    name = str(tmp_path / "outside.png") if row == "ABSOLUTE" else row
    (folder / "labels.csv").write_text(f"filename,label\na.png,0\ninner.png,0\nb.png,1\n{name},1\n")

    def no_read(*args, **kwargs):
        raise AssertionError("an image was read before the rows were checked")

    monkeypatch.setattr(data, "_decode_many", no_read)
    with pytest.raises(ConfigError, match=f"labels.csv line 5: filename '{name}'.*outside the folder"):
        data.load_target(f"csv:{folder}", "all", 28)
    (folder / "labels.csv").write_text("filename,label\na.png,0\ninner.png,0\nb.png,1\n")
    monkeypatch.undo()
    assert len(data.load_target(f"csv:{folder}", "all", 28)) == 3


# ------------------------------------------------------------------------------------------------ natural
@pytest.fixture()
def cifar_cut(fake_mirror: Path, mirror: Path) -> Path:
    """A CIFAR-10 image-folder mirror cut to 6 train / 3 test images per class (real JPEGs)."""
    for split, k in (("train", 6), ("test", 3)):
        for c in data.CIFAR10_CLASSES:
            dst = fake_mirror / "cifar10-jpeg" / split / c
            dst.mkdir(parents=True)
            for f in sorted((mirror / "cifar10-jpeg" / split / c).iterdir())[:k]:
                shutil.copy(f, dst / f.name)
    return fake_mirror


def test_cifar10_from_image_folder_copy(cifar_cut: Path) -> None:
    ds = data.load_dataset("cifar10", 32)
    assert ds.images.shape == (60, 32, 32, 3) and ds.class_names == data.CIFAR10_CLASSES
    assert ds.class_counts().tolist() == [6] * 10
    jpg = np.asarray(Image.open(cifar_cut / "cifar10-jpeg/train/cat/0000.jpg").convert("RGB"))
    assert np.array_equal(ds.images[ds.labels == 3][0], jpg)
    big = data.load_dataset("cifar10@20", 64, split="test", seed=1)
    assert big.images.shape == (20, 64, 64, 3) and big.name.startswith("cifar10@64:test")
    assert len(data.load_dataset("cifar10", 32, split="all")) == 90


def test_max_images_decodes_only_the_kept_images(cifar_cut: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the cap must draw exactly the subsample of the whole split (pre-training's results stay the same) while
    # decoding only those images
    full = data.load_dataset("cifar10", 32, seed=3)
    want = full.subset(data.stratified_subsample(full.labels, 20, 3))
    decoded: list[int] = []
    real = data._decode_many
    monkeypatch.setattr(data, "_decode_many", lambda files, *a: decoded.append(len(files)) or real(files, *a))
    monkeypatch.setattr(data, "_cache_file", lambda kind, key: cifar_cut / f"nocache-{len(decoded)}.npz")
    got = data.load_dataset("cifar10", 32, seed=3, max_images=20)
    assert decoded == [20]
    assert np.array_equal(got.images, want.images) and np.array_equal(got.labels, want.labels)
    assert np.array_equal(got.index, want.index) and got.name == want.name
    resized = data.load_dataset("cifar10", 16, seed=3, max_images=20)
    assert resized.images.shape == (20, 16, 16, 3) and np.array_equal(resized.index, want.index)
    assert len(data.load_dataset("cifar10", 32, max_images=1000)) == 60  # a cap above the size keeps all
    at_n = data.load_dataset("cifar10@20", 32, seed=3)  # '@n' decodes only its n too, same draw as before
    assert decoded[-1] == 20 and np.array_equal(at_n.images, want.images)
    assert at_n.name == "cifar10@32:train[n=20,seed=3]"
    assert data.load_dataset("cifar10", 32, split="all", seed=3, max_images=30).class_counts().tolist() == [3] * 10
    with pytest.raises(ConfigError, match="max_images must be None or a positive int"):
        data.load_dataset("cifar10", 32, max_images=0)


def test_cifar10_missing_offline(fake_mirror: Path) -> None:
    with pytest.raises(DataMissingError, match="cifar10-jpeg"):
        data.load_dataset("cifar10", 32)


def test_imagefolder_subsample_decodes_only_n(cifar_cut: Path) -> None:
    root = cifar_cut / "cifar10-jpeg"
    a = data.load_dataset(f"imagefolder:{root}@30", 28, split="train", seed=0)
    b = data.load_dataset(f"imagefolder:{root}@30", 28, split="train", seed=0)
    c = data.load_dataset(f"imagefolder:{root}@30", 28, split="train", seed=1)
    assert a.images.shape == (30, 28, 28, 3) and a.class_counts().tolist() == [3] * 10
    assert np.array_equal(a.index, b.index) and not np.array_equal(a.index, c.index)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    with pytest.raises(ConfigError, match="no 'val' sub-folder.*test, train"):
        data.load_dataset(f"imagefolder:{root}", 28, split="val")


# ------------------------------------------------------------------------------------------------ sampling
def test_subsample_per_class_counts_and_determinism() -> None:
    train = data.load_target("pneumoniamnist", "train", 28)
    a, b = data.subsample_per_class(train, 100, seed=0), data.subsample_per_class(train, 100, seed=0)
    c = data.subsample_per_class(train, 100, seed=1)
    assert a.class_counts().tolist() == [100, 100]
    assert np.array_equal(a.index, b.index) and not np.array_equal(a.index, c.index)
    assert np.array_equal(a.images, train.images[a.index])
    assert a.fingerprint() != c.fingerprint() != train.fingerprint()
    val = data.load_target("breastmnist", "val", 28)  # 21 malignant < 25
    with pytest.warns(UserWarning, match="fewer than 25"):
        v = data.subsample_per_class(val, 25, seed=0)
    assert v.class_counts().tolist() == [21, 25]


def test_at_n_suffix_is_stratified() -> None:
    full = data.load_target("pneumoniamnist", "train", 28)
    sub = data.load_target("pneumoniamnist@1000", "train", 28)
    assert len(sub) == 1000
    frac_full, frac_sub = full.labels.mean(), sub.labels.mean()
    assert abs(frac_full - frac_sub) < 1e-3
    assert np.array_equal(sub.images, full.images[sub.index])


def _assert_partition(splits: list, n: int) -> None:
    for tr, va, te in splits:
        assert len(np.intersect1d(tr, va)) == len(np.intersect1d(tr, te)) == len(np.intersect1d(va, te)) == 0
        assert len(tr) + len(va) + len(te) == n


def test_cv_splits_kfold_test_sets_disjoint_and_groups_never_split() -> None:
    ds = data.load_target("csv:nih-cxr14-sample", "all", 32)
    splits = data.cv_splits(ds, k=3, seed=0)
    assert len(splits) == 3
    _assert_partition(splits, len(ds))
    tests = [te for _, _, te in splits]
    for i in range(3):
        for j in range(i + 1, 3):
            assert len(np.intersect1d(tests[i], tests[j])) == 0  # real replicates: no image tested twice
            assert not set(ds.groups[tests[i]]) & set(ds.groups[tests[j]])
    for tr, va, te in splits:
        g = [set(ds.groups[i]) for i in (tr, va, te)]
        assert not (g[0] & g[1] or g[0] & g[2] or g[1] & g[2])
        # 7 parts of ~14% (patients hold up to ~20 images each, so parts vary), validation 5% of all images
        assert 0.08 < len(te) / len(ds) < 0.22 and 0.03 < len(va) / len(ds) < 0.09
        assert all(len(np.unique(ds.labels[i])) == 2 for i in (tr, va, te))
    again = data.cv_splits(ds, k=3, seed=0)
    assert all(np.array_equal(x, y) for s, t in zip(splits, again, strict=True) for x, y in zip(s, t, strict=True))
    other = data.cv_splits(ds, k=3, seed=1)
    assert not np.array_equal(other[0][2], splits[0][2])
    # seven folds at the default 15% use every part: the test sets cover the data
    seven = data.cv_splits(ds, k=7, seed=0)
    assert np.array_equal(np.sort(np.concatenate([te for _, _, te in seven])), np.arange(len(ds)))


def test_cv_splits_kfold_cover_is_classic_kfold() -> None:
    ds = data.load_target("breastmnist", "train", 28).subset(np.arange(200))
    splits = data.cv_splits(ds, k=4, seed=3, cover=True)
    _assert_partition(splits, len(ds))
    tests = np.concatenate([te for _, _, te in splits])
    assert np.array_equal(np.sort(tests), np.arange(len(ds)))  # disjoint and covering
    for _, va, te in splits:
        assert 0.2 < len(te) / len(ds) < 0.3 and 0.03 < len(va) / len(ds) < 0.08
        # stratified: each test fold has about the class balance of the whole set
        assert abs(ds.labels[te].mean() - ds.labels.mean()) < 0.06


def test_cv_splits_repeated_scheme_keeps_earlier_protocol() -> None:
    ds = data.load_target("csv:nih-cxr14-sample", "all", 32)
    splits = data.cv_splits(ds, k=3, seed=0, scheme="repeated")
    _assert_partition(splits, len(ds))
    for _, va, te in splits:
        assert 0.12 < len(te) / len(ds) < 0.2 and 0.03 < len(va) / len(ds) < 0.09
    # independent draws: test sets overlap, which is why k-fold is the default
    assert len(np.intersect1d(splits[0][2], splits[1][2])) > 0


def test_cv_splits_errors() -> None:
    ds = data.load_target("breastmnist", "train", 28)
    tiny = ds.subset(np.r_[np.flatnonzero(ds.labels == 1)[:40], np.flatnonzero(ds.labels == 0)[:2]])
    with pytest.raises(IncompatibleError, match="single class|1 class"):
        data.cv_splits(tiny, k=1, seed=0, scheme="repeated")
    with pytest.raises(IncompatibleError, match="single class|1 class"):
        data.cv_splits(tiny, k=2, seed=0)
    with pytest.raises(ConfigError, match="k >= 2"):
        data.cv_splits(ds, k=1, seed=0, cover=True)
    (tr, va, te), = data.cv_splits(ds, k=1, seed=0)  # one fold: one held-out part of about 15 %
    assert 0.12 < len(te) / len(ds) < 0.16 and len(np.intersect1d(tr, te)) == 0
    with pytest.raises(ConfigError, match="valid choices: kfold, repeated"):
        data.cv_splits(ds, k=3, seed=0, scheme="bootstrap")


def test_multi_label_handling() -> None:
    rng = np.random.default_rng(0)
    base = data.load_target("breastmnist", "test", 28)
    ml = data.ImageSet(base.images, rng.integers(0, 2, (len(base), 3)), "multi-label", ("a", "b", "c"), "ml")
    assert ml.n_classes == 3 and ml.class_counts().shape == (3,)
    with pytest.raises(IncompatibleError, match="multi-label"):
        data.subsample_per_class(ml, 5, seed=0)
    tr, va, te = data.cv_splits(ml, k=1, seed=0, scheme="repeated")[0]
    assert len(tr) + len(va) + len(te) == len(ml)
    _assert_partition(data.cv_splits(ml, k=3, seed=0), len(ml))
    assert len(data.stratified_subsample(ml.labels, 10, 0)) == 10
    assert medmnist.INFO["chestmnist"]["task"].startswith("multi-label")  # mapped to 'multi-label'


# ------------------------------------------------------------------------------------------------ transforms
def test_to_tensor_normalize_resize() -> None:
    ds = data.load_target("breastmnist", "test", 28)
    x = data.to_tensor(ds.images[:4])
    assert x.shape == (4, 3, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2]) and torch.allclose(
        x[:, 0] * 255, torch.from_numpy(ds.images[:4, ..., 0]).float()
    )
    h = data.normalize(x, "half")
    assert torch.allclose(h, x * 2 - 1)
    im = data.normalize(torch.full((1, 3, 2, 2), 0.485), "imagenet")
    assert abs(im[0, 0].mean().item()) < 1e-6
    with pytest.raises(ConfigError, match="valid choices: imagenet, half"):
        data.normalize(x, "cifar")
    assert data.resize(x, 64).shape == (4, 3, 64, 64)
    up = data.resize(ds.images[:4], 56)
    assert up.shape == (4, 56, 56, 1) and up.dtype == np.uint8


def test_sharpness_equals_torchvision() -> None:
    x = data.to_tensor(data.load_target("breastmnist", "test", 28).images[:16])
    assert torch.allclose(data.adjust_sharpness(x, 2.0), TF.adjust_sharpness(x, 2.0), atol=1e-6)


@pytest.mark.parametrize("policy", ["ch3", "ch6"])
def test_augment_deterministic_and_in_range(policy: str) -> None:
    x = data.to_tensor(data.load_target("breastmnist", "test", 28).images[:32])
    aug = data.BatchAugment(policy)
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)
    assert torch.equal(aug.eval()(x), x)  # identity at evaluation time


def test_fast_grid_equals_affine_grid() -> None:
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    for h, w in ((28, 28), (17, 33)):
        ref = torch.nn.functional.affine_grid(theta, [5, 3, h, w], align_corners=False)
        assert torch.allclose(data.BatchAugment._grid(theta, h, w), ref, atol=1e-5)


def test_ch3_zero_ranges_is_identity_and_flip() -> None:
    x = data.to_tensor(data.load_target("breastmnist", "test", 28).images[:32])
    zero = {"rotation": 0.0, "shift": 0.0, "shear": 0.0, "zoom": 0.0}
    assert torch.allclose(data.BatchAugment("ch3", hflip=False, **zero)(x), x, atol=1e-6)
    y = data.BatchAugment("ch3", hflip=True, **zero)(x, torch.Generator().manual_seed(0))
    same = torch.isclose(y, x, atol=1e-6).flatten(1).all(1)
    flipped = torch.isclose(y, x.flip(-1), atol=1e-6).flatten(1).all(1)
    assert (same | flipped).all() and flipped.any() and same.any()


def test_ch6_geometry_without_crop_is_flip_only() -> None:
    x = data.to_tensor(data.load_target("breastmnist", "test", 28).images[:32])
    y = data.BatchAugment("ch6", scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, p=0.0)(x)
    same = torch.isclose(y, x, atol=1e-5).flatten(1).all(1)
    flipped = torch.isclose(y, x.flip(-1), atol=1e-5).flatten(1).all(1)
    assert (same | flipped).all() and flipped.any()


def test_augment_bad_policy_and_param() -> None:
    with pytest.raises(ConfigError, match="valid choices: none, ch3, ch6"):
        data.BatchAugment("keras")
    with pytest.raises(ConfigError, match="valid choices: rotation, shift, shear, zoom"):
        data.BatchAugment("ch3", degrees=3)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(data.BatchAugment("none")(x), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.reference_transform("ch6", size=28)


# ------------------------------------------------------------------------------------------------ pooch files
def test_fetch_file_sha256(mirror: Path, offline) -> None:
    line = (mirror / "nih-cxr14-sample" / "SHA256SUMS").read_text().splitlines()[1]
    sha, rel = line.split()
    path = paths.fetch_file(f"nih-cxr14-sample/{rel}", sha)
    assert path == mirror / "nih-cxr14-sample" / rel
    with pytest.raises(HashMismatchError, match=sha[:8] + "|expected"):
        paths.fetch_file(f"nih-cxr14-sample/{rel}", "0" * 64)
    with pytest.raises(DataMissingError, match="nope.csv"):
        paths.fetch_file("published/nope.csv", "0" * 64, url="https://example.org/nope.csv")


def test_csv_folder_without_splits_pretrains_on_all_images() -> None:
    # A csv folder has no official splits: as a pre-training source its 'train' split is every image,
    # while as a target only 'all' exists (3.4.3 splits are drawn by cv_splits).
    source = data.load_dataset("csv:nih-cxr14-sample", 28)
    assert len(source) == 1000 and source.name.endswith(":all")
    with pytest.raises(ConfigError, match="no official 'train' split"):
        data.load_target("csv:nih-cxr14-sample", "train", 28)
