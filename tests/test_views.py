"""--view for the systems that read one channel: the field, the AE's --channel alias, the channels decoded, the
BEATs cache key, and `asdx run sera --view w1` end to end (random-tiny BEATs)."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest
import torch

from asdx.cli import main
from asdx.config import build_config
from asdx.data import generate
from asdx.features import VIEWS, stereo_view
from asdx.systems import configs
from asdx.systems._beats import Backbone
from asdx.systems._stereo import view_audio, view_channels
from asdx.systems.ae import AESystem, clip_vectors


def test_the_views_are_the_kernels_views_and_defaults_follow_the_report():
    assert typing.get_args(configs.View) == VIEWS
    assert configs.AEConfig().view == configs.SeraConfig().view == configs.FusionConfig().view == "near"
    assert configs.ProtoConfig().view == "near"
    assert configs.BeamConfig().view == "w1"  # the beam issue's default


@pytest.mark.parametrize("system", ["ae", "sera", "fusion", "proto", "beam"])
def test_every_system_lists_the_views_in_its_help(system, capsys):
    with pytest.raises(SystemExit):
        main(["run", system, "--help"])
    assert "--view {near,far,mid,w1}" in capsys.readouterr().out


def test_the_ae_channel_alias():
    assert build_config(configs.AEConfig, cli_values={"channel": "1"}).view == "far"
    assert build_config(configs.AEConfig, file_values={"channel": 0}).view == "near"
    config = configs.AEConfig(channel=1)
    assert (config.view, config.channel) == ("far", None)  # one field recorded
    with pytest.raises(ValueError, match="channel: 1 means view far, but view is 'w1'"):
        build_config(configs.AEConfig, file_values={"channel": 1, "view": "w1"})


def test_view_audio_and_channels():
    audio = np.random.default_rng(0).standard_normal((2, 2, 8000)).astype(np.float32)
    assert view_channels("near") == 1 and all(view_channels(v) == 2 for v in ("far", "mid", "w1"))
    np.testing.assert_array_equal(view_audio(audio[:, :1], "near"), audio[:, 0])
    for view in ("far", "mid", "w1"):
        np.testing.assert_array_equal(view_audio(audio, view), stereo_view(audio, view))
    assert AESystem(configs.AEConfig(view="w1")).input_channels == 2
    assert AESystem(configs.AEConfig()).input_channels == 1
    w1 = clip_vectors(audio, configs.AEConfig(view="w1", n_mels=16))
    near = clip_vectors(audio[:, :1], configs.AEConfig(n_mels=16))
    assert w1.shape == near.shape and not torch.allclose(w1, near)


def test_the_beats_cache_key_differs_by_view(tmp_path):
    backbone = Backbone.load("random-tiny", torch.device("cpu"), _Context(), "tests", "sera")
    keys = {}
    for view in VIEWS:
        backbone.view = view
        keys[view] = json.dumps(backbone.cache(tmp_path, 1, 1.0).preprocessing, sort_keys=True)
    assert len(set(keys.values())) == len(VIEWS)
    assert '"channel": 0' in keys["near"]  # the key near had before views: old caches stay valid


class _Context:
    cache_dir = None

    def note(self, text):
        pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("views") / "data", machines="fan,ToyDrone", seconds=1.0, n_source=8,
                    n_target=2, n_test=4, seed=5, progress=False)


def test_sera_w1_end_to_end_and_views_do_not_mix(data, tmp_path):
    fast = ["--data", str(data), "--out", str(tmp_path), "--beats", "random-tiny", "--epochs", "2", "--quiet",
            "--workers", "0", "--machine", "fan"]  # the runs share <out>/cache and the global models
    assert main(["run", "sera", "--view", "w1", "--name", "w1", *fast]) == 0
    cached_w1 = len(list((tmp_path / "cache").rglob("*.npz")))
    assert main(["run", "sera", "--name", "near", *fast]) == 0
    runs = [tmp_path / "sera" / "w1", tmp_path / "sera" / "near"]
    views = sorted(json.loads((run / "config.json").read_text())["config"]["view"] for run in runs)
    assert views == ["near", "w1"]
    for run in runs:
        assert (run / "machines" / "fan" / "sera_machine.npz").exists()
        view = json.loads((run / "config.json").read_text())["config"]["view"]
        assert f"{view} view" in (run / "report.html").read_text()
    # the near run did not reuse the w1 run's global model (the view is in its key), nor its cached tokens
    assert all((run / "global" / "sera_head.pt").exists() for run in runs)
    assert cached_w1 > 0 and len(list((tmp_path / "cache").rglob("*.npz"))) == 2 * cached_w1
