"""Profiles, chapter schemas and parameter validation (cfct.config, cfct.chapters)."""

from __future__ import annotations

import re

import pytest

from cfct import chapters, config, results, sources
from cfct.chapters import CHAPTERS, get_chapter
from cfct.errors import ConfigError


def test_profiles_scale_up() -> None:
    smoke, quick, paper = (config.get_profile(n) for n in ("smoke", "quick", "paper"))
    assert smoke.finetune_epochs < quick.finetune_epochs < paper.finetune_epochs
    assert paper.image_size == 224 and paper.arch == "resnet50"  # thesis 3.4.2 / 6.4.2


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(ConfigError, match="valid choices: smoke, quick, paper"):
        config.get_profile("fast")


def test_resolve_fills_profile_values_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFCT_PROFILE", raising=False)
    cfg = chapters.resolve("3", profile="smoke")
    assert cfg.folds == config.get_profile("smoke").folds
    assert cfg.natural_source == "pretrained:resnet18:cifar10"
    assert cfg.profile.name == "smoke"
    cfg = chapters.resolve("3", profile="smoke", folds=4, targets="breastmnist")
    assert cfg.folds == 4
    assert cfg.targets == ("breastmnist",)


def test_env_profile_overrides_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFCT_PROFILE", "smoke")
    assert chapters.resolve("3", profile="paper").profile.name == "smoke"


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) 'fold'.*valid parameters: profile, seed"):
        chapters.resolve("3", fold=3)


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match="'folds' expects int, got str '3'"):
        chapters.resolve("3", folds="3")
    with pytest.raises(ConfigError, match="'seed' expects int, got bool"):
        chapters.resolve("3", seed=True)


def test_unknown_chapter_lists_chapters() -> None:
    expected = "unknown chapter '7'; valid choices: 3 (03_hidden_representations)"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        get_chapter(7)
    assert get_chapter("ch6").id == "06_transferability"
    assert get_chapter("hidden_representations").number == 3


def test_unknown_target_and_source_are_refused() -> None:
    with pytest.raises(ConfigError, match="breastmnist"):
        chapters.resolve("3", targets="kneemnist")
    with pytest.raises(ConfigError, match="resnet18"):
        chapters.resolve("3", natural_source="pretrained:resnet19:cifar10")
    with pytest.raises(ConfigError, match="random"):
        chapters.resolve("3", natural_source="imagenette:resnet18")


def test_command_line_text_is_typed() -> None:
    folds = next(p for p in get_chapter(3).params if p.name == "folds")
    assert folds.parse_text("4") == 4
    with pytest.raises(ConfigError, match="expects int"):
        folds.parse_text("four")


def test_every_chapter_has_the_common_parameters() -> None:
    for chapter in CHAPTERS.values():
        names = [p.name for p in chapter.params]
        assert names[:3] == ["profile", "seed", "device"]
        assert len(names) == len(set(names)), f"duplicate parameter in {chapter.id}"


def test_list_items_of_the_wrong_type_are_named() -> None:
    p_arts = config.Param("p_arts", float, "0,1", many=True)
    assert p_arts.validate("0, 0.5,1", config.get_profile("quick")) == (0.0, 0.5, 1.0)
    with pytest.raises(ConfigError, match=r"'p_arts' expects list\[float\] \(comma-separated\), got '0,half'"):
        p_arts.validate("0,half", config.get_profile("quick"))


def test_by_profile_and_as_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    pick = config.by_profile(smoke=1, quick=4, paper=200)
    assert [pick(config.get_profile(n)) for n in ("smoke", "quick", "paper")] == [1, 4, 200]
    smoke = config.get_profile("smoke")
    assert config.as_profile(smoke) is smoke and config.as_profile("paper").name == "paper"
    monkeypatch.setenv("CFCT_PROFILE", "smoke")
    assert config.as_profile(None) is smoke
    with pytest.raises(ConfigError, match="valid choices"):
        config.as_profile("fast")


# Pre-training cache keys computed before PretrainSettings existed (profile fields read directly): existing
# stores stay valid only while these hold.
_PRETRAIN_KEYS = {
    ("smoke", "cifar10@300"): ({"image_size": 32, "epochs": 1, "max_images": 600, "batch_size": 128},
                               "c7f07a4f293a91b1"),
    ("smoke", "medmnist-lto:breastmnist"): ({"image_size": 28, "epochs": 1, "max_images": 600, "batch_size": 128},
                                            "754c8949098870f0"),
    ("quick", "cifar10@300"): ({"image_size": 32, "epochs": 2, "max_images": 3000, "batch_size": 128},
                               "f7c747e2971ca538"),
    ("quick", "medmnist-lto:breastmnist"): ({"image_size": 28, "epochs": 2, "max_images": 3000, "batch_size": 128},
                                            "a90b0521c3bf824a"),
    ("paper", "cifar10@300"): ({"image_size": 224, "epochs": 90, "max_images": None, "batch_size": 256},
                               "181b912cbf96cb52"),
}


@pytest.mark.parametrize(("profile", "dataset"), sorted(_PRETRAIN_KEYS))
def test_pretrain_settings_keep_the_cache_keys(profile: str, dataset: str) -> None:
    fields, key = _PRETRAIN_KEYS[(profile, dataset)]
    prof = config.get_profile(profile)
    assert prof.pretrain == config.PretrainSettings.from_profile(prof)
    for given in (profile, prof, prof.pretrain):
        key_config = sources.pretrain_config("resnet18", dataset, **sources.pretrain_settings(dataset, given))
        assert key_config == {"version": 1, "arch": "resnet18", "dataset": dataset, **fields, "lr": 0.001, "seed": 0,
                          "optimizer": "adam", "augment": "none", "normalization": "half"}
        assert results.config_hash(key_config) == key
