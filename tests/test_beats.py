"""The clean-room BEATs against the reference implementation's fixtures, the full-size key table and hand values."""

import json
import math

import numpy as np
import pytest
import torch

from asdx import reference
from asdx.models.beats import (BEATs, BEATsConfig, gate_factor, parameter_count, relative_position_bucket,
                               state_dict_shapes, tiny_config)
from asdx.models.beats_checkpoint import (ENV_VAR, RANDOM_TINY, RANDOM_TINY_NOTE, is_random_tiny, load_beats,
                                          random_tiny_beats, resolve_beats_checkpoint)
from conftest import fixture_path

FIXTURES = ["beats_tiny", "beats_tiny_finetuned"]


def _load(name):
    model = BEATs.from_checkpoint(fixture_path(f"{name}.pt"))
    expected = np.load(fixture_path(f"{name}_expected.npz"))
    return model, expected


def _output(model, features):
    return model.predict(features.tokens) if model.cfg.finetuned_model else features.tokens


# ----------------------------------------------------------------------------- reference fixtures
@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("sdpa", [True, False])
def test_model_reproduces_the_reference_output_on_its_fbank(name, sdpa):
    """The proof that the model is the real BEATs: same weights, same input -> same output."""
    model, expected = _load(name)
    model.set_attention(sdpa)
    with torch.no_grad():
        out = _output(model, model.encode(torch.from_numpy(expected["fbank_normalised"])))
    assert out.shape == expected["output"].shape
    np.testing.assert_allclose(out.numpy(), expected["output"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", FIXTURES)
def test_preprocessing_matches_the_reference_fbank(name):
    model, expected = _load(name)
    fbank = model.preprocess(torch.from_numpy(expected["waveform"])).numpy()
    stored = expected["fbank_normalised"]
    assert fbank.shape == stored.shape == (3, 198, 128)
    # The stored fbank is torchaudio's float32: bands more than 60 dB below a frame's
    # peak are FFT rounding noise there (up to 3.2e-3 off here; see
    # test_features_fixtures). Those are compared with the float64 reference instead.
    raw = stored * (2 * 6.55582) + 15.41663
    reliable = raw >= raw.max(axis=-1, keepdims=True) - np.log(1e6)
    assert reliable.mean() > 0.5
    np.testing.assert_allclose(fbank[reliable], stored[reliable], rtol=0, atol=1e-3)
    exact = (reference.kaldi_fbank(expected["waveform"][:, None].astype(np.float64))[:, 0] - 15.41663) / 13.11164
    np.testing.assert_allclose(fbank, exact, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name, atol", [("beats_tiny_finetuned", 1e-4), ("beats_tiny", 1e-3)])
def test_waveform_to_output_end_to_end(name, atol):
    """From the stored waveform. The token output inherits the fixture's float32 fbank noise (<= 6e-4 measured
    on tokens of magnitude ~3.5); the clip probabilities average it out and stay within 1e-4."""
    model, expected = _load(name)
    with torch.no_grad():
        out = _output(model, model.extract(torch.from_numpy(expected["waveform"])))
    np.testing.assert_allclose(out.numpy(), expected["output"], rtol=0, atol=atol)


def test_fixture_relative_bias_copies_are_tied_after_loading():
    model, _ = _load("beats_tiny")
    first = model.encoder.layers[0].self_attn.relative_attention_bias
    assert all(layer.self_attn.relative_attention_bias is first for layer in model.encoder.layers)
    assert sum(1 for k in model.state_dict() if k.endswith("relative_attention_bias.weight")) == 2


# ----------------------------------------------------------------------------- full-size configuration
def _full_json():
    return json.loads(fixture_path("beats_full_state_dict.json").read_text())


def test_full_size_keys_shapes_and_parameter_count():
    spec = _full_json()
    assert state_dict_shapes(spec["cfg"]) == {k: tuple(v) for k, v in spec["state_dict"].items()}
    assert parameter_count(spec["cfg"]) == spec["n_parameters"] == 90_311_792
    assert parameter_count(BEATsConfig()) == 90_311_792  # the defaults are the released configuration


def test_full_size_finetuned_parameter_count():
    assert parameter_count(BEATsConfig(finetuned_model=True)) == 90_311_792 + 768 * 527 + 527
    assert len(state_dict_shapes(BEATsConfig(finetuned_model=True))) == 252


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 0


def test_full_size_output_shape_for_ten_seconds():
    if _available_memory() < 3 * 2**30:
        pytest.skip("needs about 3 GiB of free memory for the full-size random BEATs")
    torch.manual_seed(0)
    model = BEATs().eval()
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 160000)).astype(np.float32))
    with torch.no_grad():
        features = model.extract(wave, layers=[4])
    assert features.tokens.shape == (1, 496, 768)
    assert (features.time_patches, features.bands) == (62, 8)
    assert features.hidden[4].shape == (1, 496, 768)
    assert torch.isfinite(features.tokens).all()


# ----------------------------------------------------------------------------- hand values
@pytest.mark.parametrize("rel, bucket", [
    (0, 0), (1, 161), (-1, 1), (79, 239), (-79, 79),
    (80, 240), (-80, 80),                     # 80 + floor(ln(1) / ln(10) * 80) = 80
    (-160, 104),                              # 80 + floor(ln 2 / ln 10 * 80) = 80 + floor(24.08)
    (-252, 119),                              # 80 + floor(ln 3.15 / ln 10 * 80) = 80 + floor(39.86)
    (495, 303),                               # 160 + 80 + floor(63.32): the largest for 496 tokens
    (-800, 159), (5000, 319),                 # capped at half - 1
])
def test_relative_position_bucket_hand_values(rel, bucket):
    assert relative_position_bucket(torch.tensor([rel])).item() == bucket


def test_gate_hand_example():
    """bias sums: a = 0 -> sigmoid 0.5, b = ln 3 -> 0.75; gate = 0.5 (0.75 grep_a - 1) + 2."""
    linear = torch.nn.Linear(16, 8)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([0.3, -0.3, 1.0, -1.0] + [math.log(3) / 4] * 4))
    grep_a = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1)
    gate = gate_factor(torch.randn(1, 2, 5, 16), linear, grep_a)
    assert gate.shape == (1, 2, 5, 1)
    torch.testing.assert_close(gate[0, 0], torch.full((5, 1), 2.25))
    torch.testing.assert_close(gate[0, 1], torch.full((5, 1), 1.875))


def test_sdpa_and_manual_attention_agree():
    model = random_tiny_beats(seed=3)
    fbank = torch.randn(2, 160, 128)
    with torch.no_grad():
        sdpa = model.set_attention(True).encode(fbank, layers=[1]).tokens
        manual = model.set_attention(False).encode(fbank, layers=[1]).tokens
    torch.testing.assert_close(sdpa, manual, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- loading and saving
def test_round_trip_save_load_gives_identical_outputs(tmp_path):
    model = random_tiny_beats(seed=1)
    model.label_dict = {0: "/m/09x0r"}
    path = model.save_checkpoint(tmp_path / "tiny.pt")
    assert not list(tmp_path.glob(".*partial"))
    loaded = BEATs.from_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"cfg", "model", "label_dict"} and raw["cfg"] == model.cfg.to_dict()
    fbank = torch.randn(2, 100, 128)
    with torch.no_grad():
        assert torch.equal(model.encode(fbank).tokens, loaded.encode(fbank).tokens)
    assert loaded.label_dict == {0: "/m/09x0r"}


def test_fixture_round_trip_keeps_keys_and_values(tmp_path):
    model, _ = _load("beats_tiny_finetuned")
    original = torch.load(fixture_path("beats_tiny_finetuned.pt"), weights_only=True)
    saved = torch.load(model.save_checkpoint(tmp_path / "ft.pt"), weights_only=True)
    assert saved["cfg"] == original["cfg"]
    assert saved["model"].keys() == original["model"].keys()
    assert all(torch.equal(saved["model"][k], original["model"][k]) for k in original["model"])


def _edited_checkpoint(tmp_path, edit):
    checkpoint = torch.load(fixture_path("beats_tiny.pt"), weights_only=True)
    edit(checkpoint)
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    return path


def test_wrong_deep_norm_fails_loudly(tmp_path):
    path = _edited_checkpoint(tmp_path, lambda c: c["cfg"].update(deep_norm=False))
    with pytest.raises(ValueError, match="deep_norm"):
        BEATs.from_checkpoint(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    def edit(c):
        del c["model"]["encoder.layers.1.fc1.bias"]
        c["model"]["encoder.pos_conv.0.weight"] = torch.zeros(1)

    with pytest.raises(ValueError) as error:
        BEATs.from_checkpoint(_edited_checkpoint(tmp_path, edit))
    message = str(error.value)
    assert "missing (1): encoder.layers.1.fc1.bias" in message
    assert "unexpected (1): encoder.pos_conv.0.weight" in message


def test_parametrization_style_weight_norm_names_are_rejected(tmp_path):
    def edit(c):
        c["model"]["encoder.pos_conv.0.parametrizations.weight.original0"] = c["model"].pop("encoder.pos_conv.0.weight_g")

    with pytest.raises(ValueError, match="weight_g"):
        BEATs.from_checkpoint(_edited_checkpoint(tmp_path, edit))


def test_wrong_shape_and_untied_bias_copies_fail(tmp_path):
    path = _edited_checkpoint(tmp_path, lambda c: c["model"].update(
        {"encoder.layers.0.fc1.bias": torch.zeros(7)}))
    with pytest.raises(ValueError, match="wrong shape"):
        BEATs.from_checkpoint(path)
    name = "encoder.layers.1.self_attn.relative_attention_bias.weight"
    path = _edited_checkpoint(tmp_path, lambda c: c["model"].update({name: c["model"][name] + 1}))
    with pytest.raises(ValueError, match="shared"):
        BEATs.from_checkpoint(path)


def test_cfg_missing_keys_take_released_defaults_and_unknown_keys_survive(tmp_path):
    def edit(c):
        del c["cfg"]["max_distance"]
        c["cfg"]["future_option"] = "kept"

    model = BEATs.from_checkpoint(_edited_checkpoint(tmp_path, edit))
    assert model.cfg.max_distance == 800 and model.cfg.extra == {"future_option": "kept"}
    assert torch.load(model.save_checkpoint(tmp_path / "again.pt"), weights_only=True)["cfg"]["future_option"] == "kept"


def test_bad_cfg_values_name_the_field():
    with pytest.raises(ValueError, match="encoder_layers"):
        BEATsConfig(encoder_layers="12")
    with pytest.raises(ValueError, match="layer_norm_first"):
        BEATsConfig(layer_norm_first=True)
    with pytest.raises(ValueError, match="encoder_attention_heads"):
        tiny_config(encoder_attention_heads=5)


class _Opaque:
    pass


def test_pickled_objects_need_explicit_permission(tmp_path):
    checkpoint = random_tiny_beats().checkpoint_dict()
    checkpoint["extra_object"] = _Opaque()
    path = tmp_path / "pickled.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="holds pickled Python objects"):
        BEATs.from_checkpoint(path)
    assert BEATs.from_checkpoint(path, allow_pickle=True).cfg == random_tiny_beats().cfg


def test_not_a_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a BEATs checkpoint"):
        BEATs.from_checkpoint(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        BEATs.from_checkpoint(tmp_path / "absent.pt")


# ----------------------------------------------------------------------------- extraction and training subsets
def test_extract_layers_and_errors():
    model = random_tiny_beats()
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 1, 32000)).astype(np.float32))
    with torch.no_grad():
        features = model.extract(wave, layers=[0, 1, 2])
    assert features.tokens.shape == (2, 96, 64) and (features.time_patches, features.bands) == (12, 8)
    assert torch.equal(features.hidden[2], features.tokens)
    assert not torch.equal(features.hidden[0], features.hidden[1])
    with pytest.raises(ValueError, match="layers"):
        model.extract(wave, layers=[3])
    with pytest.raises(ValueError, match="one channel"):
        model.extract(wave.expand(2, 2, 32000))
    with pytest.raises(ValueError, match="shorter than one patch"):
        model.extract(wave[..., :2000])
    with pytest.raises(ValueError, match="no predictor"):
        model.classify(wave)


def test_freeze_and_unfreeze_top():
    model = random_tiny_beats(encoder_layers=3)
    model.freeze()
    assert not any(p.requires_grad for p in model.parameters())
    model.unfreeze_top(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layers.2.") for n in trainable)
    assert "encoder.layers.0.self_attn.relative_attention_bias.weight" not in trainable
    model.unfreeze_top(3)
    assert model.encoder.layers[0].self_attn.relative_attention_bias.weight.requires_grad
    assert not model.patch_embedding.weight.requires_grad
    with pytest.raises(ValueError, match="k"):
        model.unfreeze_top(4)


def test_layer_wise_gradient_decay_scales_front_end_gradients():
    """Each of the 2 layers multiplies the gradient below it by the ratio: 0.6^2 at the patch embedding."""
    fbank = torch.randn(1, 64, 128)

    def front_grad(ratio):
        model = random_tiny_beats(seed=5, layer_wise_gradient_decay_ratio=ratio)
        model.encode(fbank).tokens.square().sum().backward()
        return model.patch_embedding.weight.grad, model.encoder.layers[1].fc1.weight.grad

    scaled, top_scaled = front_grad(0.6)
    plain, top_plain = front_grad(1.0)
    torch.testing.assert_close(scaled, plain * 0.36, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(top_scaled, top_plain)


# ----------------------------------------------------------------------------- checkpoint resolution
def test_missing_checkpoint_message_says_what_to_get_and_where():
    with pytest.raises(FileNotFoundError) as error:
        resolve_beats_checkpoint(None, environ={})
    message = str(error.value)
    assert "BEATs_iter3_plus_AS2M.pt" in message and "--beats PATH" in message and ENV_VAR in message


def test_checkpoint_from_env_and_explicit_path(tmp_path):
    path = random_tiny_beats().save_checkpoint(tmp_path / "b.pt")
    assert resolve_beats_checkpoint(None, environ={ENV_VAR: str(path)}) == path
    assert resolve_beats_checkpoint(str(path), environ={ENV_VAR: "elsewhere"}) == path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_beats_checkpoint(tmp_path / "nope.pt", environ={})
    model = load_beats(None, environ={ENV_VAR: str(path)})
    assert model.notes == () and not model.training and not is_random_tiny(model)


def test_random_tiny_is_marked():
    model = load_beats(RANDOM_TINY, environ={})
    assert is_random_tiny(model) and model.notes == (RANDOM_TINY_NOTE,)
    assert "tests and the demo only" in RANDOM_TINY_NOTE
    again = load_beats(RANDOM_TINY, environ={})
    assert model.fingerprint() == again.fingerprint()  # seeded: the same random model every time
