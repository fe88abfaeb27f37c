"""cfct.radimagenet: Keras ResNet50 .h5 -> torchvision ResNet50, tested on a generated file of that layout.

The generated file follows the layout of Keras 2 ``save_weights`` HDF5 files such as RadImageNet's
``RadImageNet-ResNet50_notop.h5``: root attribute ``layer_names``; one group per layer with attribute
``weight_names``; arrays at ``<layer>/<layer>/<weight>:0``. The converted network is compared with a forward
pass written directly from Keras's ResNet50 definition on the raw Keras arrays.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from cfct import radimagenet as rin
from cfct import sources
from cfct.errors import DataMissingError, IncompatibleError


def _keras_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random Keras ResNet50 weights (notop) in Keras shapes; conv biases and BN stats non-trivial."""
    rng = np.random.default_rng(seed)
    out = {}

    def conv_bn(name: str, kh: int, cin: int, cout: int) -> None:
        out[f"{name}_conv/kernel"] = rng.normal(0, np.sqrt(2.0 / (kh * kh * cin)), (kh, kh, cin, cout)).astype("f4")
        out[f"{name}_conv/bias"] = rng.normal(0, 0.1, cout).astype("f4")
        out[f"{name}_bn/gamma"] = rng.uniform(0.5, 1.0, cout).astype("f4")
        out[f"{name}_bn/beta"] = rng.normal(0, 0.1, cout).astype("f4")
        out[f"{name}_bn/moving_mean"] = rng.normal(0, 0.1, cout).astype("f4")
        out[f"{name}_bn/moving_variance"] = rng.uniform(0.5, 2.0, cout).astype("f4")

    conv_bn("conv1", 7, 3, 64)
    cin = 64
    for stage, (blocks, width) in enumerate(zip(rin.BLOCKS, (64, 128, 256, 512)), start=2):
        for b in range(1, blocks + 1):
            p = f"conv{stage}_block{b}"
            if b == 1:
                conv_bn(f"{p}_0", 1, cin, 4 * width)
            conv_bn(f"{p}_1", 1, cin, width)
            conv_bn(f"{p}_2", 3, width, width)
            conv_bn(f"{p}_3", 1, width, 4 * width)
            cin = 4 * width
    return out


def _write_h5(path, weights: dict[str, np.ndarray], nested_under: str | None = None) -> None:
    layers: dict[str, list[str]] = {"input_1": [], "conv1_pad": []}
    for key in weights:
        layer, w = key.split("/")
        layers.setdefault(layer, []).append(w)
    with h5py.File(path, "w") as f:
        root = f.create_group(nested_under) if nested_under else f
        root.attrs["layer_names"] = np.array([n.encode() for n in layers])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.9.0"
        for layer, ws in layers.items():
            g = root.create_group(layer)
            g.attrs["weight_names"] = np.array([f"{layer}/{w}:0".encode() for w in ws])
            for w in ws:
                g.create_dataset(f"{layer}/{w}:0", data=weights[f"{layer}/{w}"])


def _keras_forward(w: dict[str, np.ndarray], x_keras: torch.Tensor) -> torch.Tensor:
    """ResNet50 (Keras applications, v1) written from its definition; x is NCHW in Keras's channel order."""
    t = {k: torch.from_numpy(v.astype("f8")) for k, v in w.items()}

    def conv_bn(x, name, stride=1, padding="valid"):
        k = t[f"{name}_conv/kernel"].permute(3, 2, 0, 1)  # Keras (kh, kw, in, out)
        x = F.conv2d(x, k, t[f"{name}_conv/bias"], stride=stride, padding=padding)
        scale = t[f"{name}_bn/gamma"] / torch.sqrt(t[f"{name}_bn/moving_variance"] + 1.001e-5)
        return (x - t[f"{name}_bn/moving_mean"].view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + t[
            f"{name}_bn/beta"
        ].view(1, -1, 1, 1)

    x = F.pad(x_keras, (3, 3, 3, 3))  # ZeroPadding2D(3)
    x = F.relu(conv_bn(x, "conv1", stride=2))
    x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, stride=2)  # ZeroPadding2D(1) + MaxPooling2D(3, 2)
    for stage, blocks in enumerate(rin.BLOCKS, start=2):
        for b in range(1, blocks + 1):
            p = f"conv{stage}_block{b}"
            s = 2 if (b == 1 and stage > 2) else 1
            short = conv_bn(x, f"{p}_0", stride=s) if b == 1 else x
            h = F.relu(conv_bn(x, f"{p}_1", stride=s))  # v1: stride on the first 1x1 conv
            h = F.relu(conv_bn(h, f"{p}_2", padding="same"))
            x = F.relu(short + conv_bn(h, f"{p}_3"))
    return x.mean((2, 3))


def _torch_model(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = torchvision.models.resnet50(weights=None)
    model.fc = torch.nn.Identity()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not missing
    return rin.use_keras_strides(model).double().eval()


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    w = _keras_weights()
    path = tmp_path_factory.mktemp("keras") / "RadImageNet-ResNet50_notop.h5"
    _write_h5(path, w)
    return path, w


def test_layer_mapping_covers_torchvision_resnet50():
    names = rin.keras_layer_names()
    assert len(names) == 53  # 1 stem + 16 blocks x 3 convs + 4 projection shortcuts
    convs = {n for n, m in torchvision.models.resnet50().named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert {conv for conv, _ in names.values()} == convs


def test_read_and_convert_layout(keras_file):
    path, w = keras_file
    read = rin.read_keras_weights(path)
    assert set(read) == set(w)
    np.testing.assert_array_equal(read["conv3_block2_2_conv/kernel"], w["conv3_block2_2_conv/kernel"])
    state = rin.convert_keras_resnet50(read, preprocessing="none")
    assert state["layer2.0.conv1.weight"].shape == (128, 256, 1, 1)
    assert state["layer3.0.downsample.0.weight"].shape == (1024, 512, 1, 1)
    # HWIO -> OIHW, checked element-wise on an asymmetric 7x7 kernel
    k = w["conv1_conv/kernel"]
    assert state["conv1.weight"][5, 2, 1, 4].item() == pytest.approx(float(k[1, 4, 2, 5]))
    # conv bias folded into the running mean, eps difference into the running variance
    np.testing.assert_allclose(
        state["bn1.running_mean"].numpy(), w["conv1_bn/moving_mean"] - w["conv1_conv/bias"], rtol=1e-6
    )
    np.testing.assert_allclose(state["bn1.running_var"].numpy(), w["conv1_bn/moving_variance"] + 1e-8, rtol=1e-6)
    assert "fc.weight" not in state


def test_converted_network_computes_the_keras_network(keras_file):
    path, w = keras_file
    state = rin.convert_keras_resnet50(rin.read_keras_weights(path), preprocessing="none")
    model = _torch_model(state)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64) * 50
    with torch.no_grad():
        expected = _keras_forward(w, x)
        got = model(x)
    assert got.shape == (2, 2048)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6 * expected.abs().max().item())
    # Without moving the strides (torchvision's v1.5) the function differs: the patch matters.
    plain = torchvision.models.resnet50(weights=None)
    plain.fc = torch.nn.Identity()
    plain.load_state_dict(state)
    with torch.no_grad():
        assert (plain.double().eval()(x) - expected).abs().max() > 1e-3 * expected.abs().max()


def test_caffe_preprocessing_is_folded_into_conv1(keras_file):
    path, w = keras_file
    state = rin.convert_keras_resnet50(rin.read_keras_weights(path), preprocessing="caffe")
    model = _torch_model(state)
    rgb = torch.rand(1, 3, 64, 64, dtype=torch.float64)  # an RGB image in [0, 1]
    mean = torch.tensor(rin.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(rin.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    caffe = (255 * rgb).flip(1) - torch.tensor(rin.CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model.bn1(model.conv1((rgb - mean) / std))
        t = {k: torch.from_numpy(v.astype("f8")) for k, v in w.items()}
        keras_conv = F.conv2d(
            F.pad(caffe, (3,) * 4), t["conv1_conv/kernel"].permute(3, 2, 0, 1), t["conv1_conv/bias"], stride=2
        )
        scale = t["conv1_bn/gamma"] / torch.sqrt(t["conv1_bn/moving_variance"] + 1.001e-5)
        keras = (keras_conv - t["conv1_bn/moving_mean"].view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + t[
            "conv1_bn/beta"
        ].view(1, -1, 1, 1)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # outputs whose window misses the padding
    # float32 weights in the converted file: agreement to float32 rounding
    torch.testing.assert_close(ours[inner], keras[inner], rtol=1e-5, atol=1e-5 * keras.abs().max().item())
    # at the border the two paddings differ by under one grey level
    assert (ours - keras).abs().max() < 0.05 * keras.abs().max()


def test_convert_h5_writes_safetensors_with_metadata(keras_file, tmp_path):
    from safetensors import safe_open

    path, _ = keras_file
    out = rin.convert_h5(path, tmp_path / "radimagenet.safetensors")
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert meta["stride_in_1x1"] == "1" and meta["normalization"] == "imagenet" and meta["arch"] == "resnet50"
        assert "layer4.2.bn3.running_var" in f.keys()


def test_nested_whole_model_file_and_top_layer(tmp_path):
    w = _keras_weights(1)
    w["predictions/kernel"] = np.random.default_rng(0).normal(size=(2048, 165)).astype("f4")
    w["predictions/bias"] = np.zeros(165, "f4")
    path = tmp_path / "full.h5"
    _write_h5(path, w, nested_under="model_weights")
    state = rin.convert_keras_resnet50(rin.read_keras_weights(path))
    assert state["fc.weight"].shape == (165, 2048)


def test_errors(tmp_path):
    with pytest.raises(DataMissingError, match="RadImageNet-ResNet50_notop.h5"):
        rin.read_keras_weights(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(IncompatibleError, match="not an HDF5 file"):
        rin.read_keras_weights(bad)
    w = _keras_weights()
    del w["conv4_block3_2_bn/gamma"]
    with pytest.raises(IncompatibleError, match="conv4_block3_2_bn/gamma"):
        rin.convert_keras_resnet50(w)
    with pytest.raises(ValueError, match="valid choices: caffe, none"):
        rin.convert_keras_resnet50(w, preprocessing="torch")
    with pytest.raises(IncompatibleError, match="not a torchvision-style ResNet"):
        rin.use_keras_strides(torch.nn.Linear(2, 2))


def test_converted_file_loads_as_checkpoint_source(keras_file, tmp_path):

    path, w = keras_file
    out = rin.convert_h5(path, tmp_path / "radimagenet.safetensors")
    model = sources.create(f"checkpoint:resnet50:{out}", 2, input_size=64, seed=0)
    assert model.normalization == "imagenet"
    # zoo applies the Keras (v1) strides itself, from the file's metadata
    assert model.stride_in_1x1 and model.body.layer2[0].conv1.stride == (2, 2)
    assert model.metadata()["stride_in_1x1"] == "1"
    model = model.double().eval()
    rgb = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    mean = torch.tensor(rin.IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(rin.IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    caffe = (255 * rgb).flip(1) - torch.tensor(rin.CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, keras = model.features((rgb - mean) / std), _keras_forward(w, caffe)
    # equal up to float32 weights and the border pixels where the two paddings differ (< 1 grey level)
    assert ((ours - keras).norm() / keras.norm()).item() < 1e-2
