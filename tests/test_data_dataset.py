"""Machine registry, discovery on disk, clip records and ground truth."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from conftest import SYNTH_SIZES

from asdx.data import (
    MACHINES_2026,
    canonical_name,
    clips,
    list_machines,
    machine_clips,
    machine_type,
    read_attributes_csv,
    read_ground_truth,
    registry_names,
    resolve_machines,
)
from asdx.data.dataset import ground_truth_dir
from asdx.data.machines import resolve_registry

DEV = ["ToyCar", "ToyCarEmu", "bearingEmu", "fan", "gearboxEmu", "sliderEmu", "valveEmu"]
EVAL = ["ToyDrone", "ToothBrush", "SewingMachine", "BlowerDustCollector", "Sander"]


def test_registry_2026():
    assert registry_names("dev") == DEV and registry_names("eval") == EVAL
    assert len(MACHINES_2026) == 12
    assert canonical_name("Toy-Drone") == "ToyDrone" and canonical_name("toy-drone") == "ToyDrone"
    assert canonical_name("ToyCar_r2") == "ToyCar" and machine_type("TOYCAR").revision == "r2"
    assert canonical_name("MyPump") == "MyPump" and machine_type("MyPump") is None
    assert [m.name for m in resolve_registry("eval,fan")] == [*EVAL, "fan"]
    with pytest.raises(ValueError, match="unknown machine type 'pump'.*ToyDrone"):
        resolve_registry("pump")


def test_missing_root_suggests_synth(tmp_path):
    with pytest.raises(FileNotFoundError, match="asdx synth --out"):
        list_machines(tmp_path / "nothing")


def test_resolve_on_disk(synth_root):
    found = list_machines(synth_root)
    assert [m.name for m in found] == sorted(DEV) + sorted(EVAL)
    assert [m.dataset for m in found] == ["dev"] * 7 + ["eval"] * 5
    assert {m.name for m in resolve_machines(synth_root, "dev")} == set(DEV)
    assert {m.name for m in resolve_machines(synth_root, "EVAL")} == set(EVAL)
    assert len(resolve_machines(synth_root, "all")) == 12
    assert [m.name for m in resolve_machines(synth_root, "toy-drone")] == ["ToyDrone"]
    assert [m.name for m in resolve_machines(synth_root, ["fan", "Sander", "fan"])] == ["fan", "Sander"]
    with pytest.raises(ValueError, match="'pump' is not under .*found: .*ToyCar \\(dev\\)"):
        resolve_machines(synth_root, "fan,pump")


def test_dev_records(synth_root):
    (fan,) = resolve_machines(synth_root, "fan")
    train = machine_clips(fan, "train")
    assert len(train) == SYNTH_SIZES["n_source"] + SYNTH_SIZES["n_target"]
    assert [c.name for c in train] == sorted(c.name for c in train)
    assert sum(c.domain == "source" for c in train) == SYNTH_SIZES["n_source"]
    assert all(c.label == "normal" and c.split == "train" and c.dataset == "dev" for c in train)
    assert list(train[0].attributes) == ["m-n", "spd"] and not train[0].hidden_attributes
    test = machine_clips(fan, "test")
    cells = {(d, lab): sum(c.domain == d and c.label == lab for c in test)
             for d in ("source", "target") for lab in ("normal", "anomaly")}
    assert set(cells.values()) == {SYNTH_SIZES["n_test"]}
    assert {c.is_anomaly for c in test} == {True, False}
    hash(test[0])  # records are hashable despite the attribute mapping


def test_eval_records_from_ground_truth(synth_root):
    test = clips(synth_root, "SewingMachine", "test")
    assert len(test) == 4 * SYNTH_SIZES["n_test"]
    assert all(c.reference_name is not None and c.label is not None for c in test)
    assert sum(c.is_anomaly for c in test) == 2 * SYNTH_SIZES["n_test"]
    assert sum(c.domain == "target" for c in test) == 2 * SYNTH_SIZES["n_test"]
    assert all(list(c.attributes) == ["spd", "fabric"] for c in test)
    hidden = clips(synth_root, "ToothBrush", "test")
    assert all(c.hidden_attributes and dict(c.attributes) == {} for c in hidden)


def _copy_eval_machine(synth_root, tmp_path, machine):
    root = tmp_path / "root"
    shutil.copytree(synth_root / "eval_data" / "raw" / machine, root / "eval_data" / "raw" / machine)
    return root


def test_eval_without_ground_truth_is_unlabelled(synth_root, tmp_path):
    root = _copy_eval_machine(synth_root, tmp_path, "Sander")
    test = clips(root, "Sander", "test")
    assert len(test) == 4 * SYNTH_SIZES["n_test"]
    assert all(c.label is None and c.domain is None and c.is_anomaly is None for c in test)


def test_test_rename_is_preferred(synth_root, tmp_path):
    root = _copy_eval_machine(synth_root, tmp_path, "Sander")
    truth = read_ground_truth(ground_truth_dir(synth_root), "Sander")
    rename = root / "eval_data" / "raw" / "Sander" / "test_rename"
    rename.mkdir()
    for name, (_, _, renamed) in truth.items():
        shutil.copy(root / "eval_data" / "raw" / "Sander" / "test" / name, rename / (renamed + ".wav"))
    test = clips(root, "Sander", "test")
    assert {c.path.parent.name for c in test} == {"test_rename"}
    by_index = {c.index: c for c in clips(synth_root, "Sander", "test")}
    for clip in test:
        reference = by_index[clip.index]
        assert (clip.label, clip.domain, dict(clip.attributes)) == (
            reference.label, reference.domain, dict(reference.attributes))


def test_incomplete_ground_truth(synth_root, tmp_path):
    root = _copy_eval_machine(synth_root, tmp_path, "Sander")
    gt = ground_truth_dir(root)
    shutil.copytree(ground_truth_dir(synth_root), gt)
    data_file = gt / "ground_truth_data" / "ground_truth_Sander_section_00_test.csv"
    lines = data_file.read_text().splitlines()
    data_file.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(ValueError, match="clip names differ"):
        clips(root, "Sander", "test")
    domain_file = gt / "ground_truth_domain" / "ground_truth_Sander_section_00_test.csv"
    domain_file.write_text("\n".join(domain_file.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ValueError, match="not in the ground_truth_data file"):  # the attributes file still has it
        clips(root, "Sander", "test")
    attributes_file = gt / "ground_truth_attributes" / "ground_truth_Sander_section_00_test.csv"
    attributes_file.write_text("\n".join(attributes_file.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ValueError, match="not listed in the ground truth"):
        clips(root, "Sander", "test")


def test_unknown_and_aliased_machine_folders(tmp_path):
    audio = np.zeros((160, 2)) + 0.01
    for folder, name in [("MyPump", "section_00_source_train_normal_0000_x_1.wav"),
                         ("ToyCar_r2", "section_00_target_train_normal_0001_car_A1.wav")]:
        path = tmp_path / "dev_data" / "raw" / folder / "train" / name
        path.parent.mkdir(parents=True)
        sf.write(str(path), audio, 16000, subtype="PCM_16")
    found = list_machines(tmp_path)
    assert [(m.name, m.folder, m.registered is None) for m in found] == [
        ("MyPump", "MyPump", True), ("ToyCar", "ToyCar_r2", False)]
    (toycar,) = resolve_machines(tmp_path, "toycar")
    assert machine_clips(toycar, "train")[0].machine == "ToyCar"
    (pump,) = clips(tmp_path, "MyPump", "train")
    assert pump.machine == "MyPump" and dict(pump.attributes) == {"x": "1"}
    with pytest.raises(FileNotFoundError, match="missing test folder"):
        clips(tmp_path, "MyPump", "test")
    with pytest.raises(ValueError, match="no eval machines"):
        resolve_machines(tmp_path, "eval")


def test_misplaced_or_misnamed_files(tmp_path):
    folder = tmp_path / "dev_data" / "raw" / "fan" / "test"
    folder.mkdir(parents=True)
    sf.write(str(folder / "section_00_source_train_normal_0000_a_1.wav"), np.zeros((10, 2)), 16000)
    with pytest.raises(ValueError, match="section_00_source_train_normal_0000_a_1.wav: the name says split .train."):
        clips(tmp_path, "fan", "test")
    (folder / "section_00_source_train_normal_0000_a_1.wav").rename(folder / "fan_0001.wav")
    with pytest.raises(ValueError, match="fan_0001.wav"):
        clips(tmp_path, "fan", "test")


def test_attributes_csv(synth_root):
    rows = read_attributes_csv(synth_root / "dev_data" / "raw" / "fan" / "attributes_00.csv")
    names = {f"fan/{c.split}/{c.name}": dict(c.attributes) for split in ("train", "test")
             for c in clips(synth_root, "fan", split)}
    assert rows == names
    hidden = read_attributes_csv(synth_root / "dev_data" / "raw" / "sliderEmu" / "attributes_00.csv")
    assert len(hidden) == 2 * 0 + SYNTH_SIZES["n_source"] + SYNTH_SIZES["n_target"] + 4 * SYNTH_SIZES["n_test"]
    assert all(v == {} for v in hidden.values())
    eval_rows = read_attributes_csv(synth_root / "eval_data" / "raw" / "Sander" / "attributes_00.csv")
    assert all(k.startswith("Sander/train/") for k in eval_rows)
