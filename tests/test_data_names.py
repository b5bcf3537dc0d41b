"""File-name parser: every released DCASE Task 2 name form (see asdx.data.names), and bad names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asdx.data import anonymised_name, labelled_name, parse_name


@pytest.mark.parametrize(
    "name, expected",
    [
        # 2023/2025 dev train, 0-based, three key/value pairs
        ("section_00_source_train_normal_0000_pro_A_vel_12_loc_B.wav",
         dict(domain="source", split="train", label="normal", index=0,
              attributes={"pro": "A", "vel": "12", "loc": "B"})),
        # documented test example with a trailing unpaired token
        ("section_00_source_test_anomaly_0001_pro_A_wt_200_damage1.wav",
         dict(domain="source", split="test", label="anomaly", index=1,
              attributes={"pro": "A", "wt": "200", "damage1": ""})),
        # 2023 ToyCar style: four pairs, values with units
        ("section_00_target_train_normal_0009_car_A1_spd_28V_mic_1_noise_1.wav",
         dict(domain="target", split="train", label="normal", index=9,
              attributes={"car": "A1", "spd": "28V", "mic": "1", "noise": "1"})),
        # 2024 dev is 1-based: last source train clip and last test clip
        ("section_00_source_train_normal_0990_volt_1.0_wt_30.wav",
         dict(domain="source", split="train", label="normal", index=990, attributes={"volt": "1.0", "wt": "30"})),
        ("section_00_target_test_anomaly_0050_m-n_W.wav",
         dict(domain="target", split="test", label="anomaly", index=50, attributes={"m-n": "W"})),
        # renamed eval test name (NNNN is the anonymised index)
        ("section_00_target_test_normal_0123_spd_3_mic_2.wav",
         dict(domain="target", split="test", label="normal", index=123, attributes={"spd": "3", "mic": "2"})),
        # 2024 RoboticArm renamed names lack _test_
        ("section_00_source_normal_0035_weight15_BckgF.wav",
         dict(domain="source", split=None, label="normal", index=35, attributes={"weight15": "BckgF"})),
        # README placeholder (empty attributes) and no attribute part at all
        ("section_00_source_train_normal_0000_.wav",
         dict(domain="source", split="train", label="normal", index=0, attributes={})),
        ("section_00_target_test_anomaly_0007.wav",
         dict(domain="target", split="test", label="anomaly", index=7, attributes={})),
    ],
)
def test_labelled_forms(name, expected):
    parsed = parse_name(name)
    assert parsed.form == "labelled"
    assert parsed.section == "00" and parsed.name == name and not parsed.hidden_attributes
    for key, value in expected.items():
        if key == "attributes":
            assert list(parsed.attributes.items()) == list(value.items())  # order matters
        else:
            assert getattr(parsed, key) == value


def test_hidden_attributes():
    parsed = parse_name("section_00_source_train_normal_0001_noAttribute.wav")
    assert parsed.hidden_attributes and dict(parsed.attributes) == {}
    assert parsed.attribute_string == "noAttribute" and parsed.index == 1


@pytest.mark.parametrize("name, index", [("section_00_0000.wav", 0), ("section_00_0199.wav", 199),
                                         ("section_00_0200.wav", 200)])
def test_anonymised(name, index):
    parsed = parse_name(name)
    assert parsed.form == "anonymised" and parsed.section == "00" and parsed.index == index
    assert parsed.domain is None and parsed.label is None and parsed.split is None and dict(parsed.attributes) == {}


def test_supplemental_and_other_sections_and_paths():
    parsed = parse_name("section_00_machine_0100_.wav")
    assert parsed.form == "supplemental" and parsed.index == 100 and parsed.label is None
    parsed = parse_name(Path("/x/ToyCar/train/section_01_target_train_normal_0003_a_b.WAV"))
    assert parsed.section == "01" and parsed.domain == "target" and parsed.attributes["a"] == "b"


@pytest.mark.parametrize(
    "name, message",
    [
        ("normal_id_00_00000000.wav", "not a DCASE clip name"),
        ("section_00_source_train_normal.wav", "not a DCASE clip name"),
        ("section_00_sourse_train_normal_0000_a_b.wav", "not a DCASE clip name"),
        ("section_00_source_train_broken_0000_a_b.wav", "not a DCASE clip name"),
        ("section_00_source_train_normal_0000_pro__A.wav", "empty token"),
        ("section_00_source_train_normal_0000_a_1_a_2.wav", "appears twice"),
        ("section_00_source_train_normal_0000_noAttribute_a_1.wav", "must stand alone"),
        ("section_00_source_train_normal_0000_a_1.flac", "not a .wav"),
    ],
)
def test_bad_names_raise_naming_the_file(name, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_name(name)
    assert name in str(info.value)


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.-", min_size=1, max_size=6).filter(
    lambda s: s != "noAttribute")


@given(domain=st.sampled_from(["source", "target"]), split=st.sampled_from(["train", "test", None]),
       label=st.sampled_from(["normal", "anomaly"]), index=st.integers(0, 9999),
       attributes=st.dictionaries(_token, _token, max_size=4), hidden=st.booleans())
def test_labelled_name_round_trip(domain, split, label, index, attributes, hidden):
    name = labelled_name("00", domain, split, label, index, attributes, hidden)
    parsed = parse_name(name)
    assert (parsed.domain, parsed.split, parsed.label, parsed.index) == (domain, split, label, index)
    assert parsed.hidden_attributes == hidden
    assert list(parsed.attributes.items()) == ([] if hidden else list(attributes.items()))


def test_anonymised_name_round_trip():
    assert parse_name(anonymised_name("00", 42)).index == 42
    assert anonymised_name("00", 7) == "section_00_0007.wav"
