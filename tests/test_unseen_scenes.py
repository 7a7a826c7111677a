"""What makes a model find targets in scenes it never saw (docs/training.md, the `make real` recipe): mixed datasets, a
validation split of its own, and the augmentation that breaks the memory of one scene."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (DRONE_VIDEOS, REPO, assert_clean_error, daub_excerpt, link_drone_clips, make_training_flags,
                      run_script, tiny_synthetic_dataset)

from utils.data.bundled import DAUB
from utils.train.options import parse_config
from utils.train.trainer import Trainer

TINY = ["--input-size", "64", "--phi", "nano", "--lstm-hidden", "8", "--batch-size", "2", "--workers", "0",
        "--epoch-fraction", "1", "--epochs", "1", "--eval-period", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    return (tiny_synthetic_dataset(root / "a", seed=1, train_sequences=1, frames_per_sequence=6),
            tiny_synthetic_dataset(root / "b", seed=2, train_sequences=2, frames_per_sequence=6))


def test_mix_data_adds_the_other_training_splits_and_val_root_moves_validation(two_datasets, tmp_path):
    a, b = two_datasets
    trainer = Trainer(parse_config(["--data-root", str(a), "--mix-data", str(b), "--val-root", str(b), "--save-dir",
                                  str(tmp_path / "run"), "--dataset-zoom", "1", "2", "--dataset-scale", "1", "1",
                                  "0.6", "1.67", "--flip-lr", "0.5", *TINY], DAUB))
    assert len(trainer.train_set) == 6 + 12
    assert {record.path.parents[3] for record in trainer.train_set.records} == {a, b}
    assert trainer.train_set.zooms == [1.0] * 6 + [2.0] * 12
    # Each set's augmentation keeps the shared knobs and takes its own zoom range.
    assert [(config.scale, config.flip_lr) for config in trainer.train_set.augments] == (
        [((1.0, 1.0), 0.5)] * 6 + [((0.6, 1.67), 0.5)] * 12)
    assert {record.path.parents[3] for record in trainer.val_gt.records} == {b}
    assert trainer.val_set.zooms == [1.0] * len(trainer.val_set)
    trainer.fit()
    sidecar = json.loads((tmp_path / "run" / "last_epoch_weights.pth.json").read_text())
    assert sidecar["data_root"] == str(a) and sidecar["mix_data"] == [str(b)] and sidecar["dataset_zoom"] == [1, 2]
    assert sidecar["dataset_scale"] == [[1, 1], [0.6, 1.67]]
    assert json.loads((tmp_path / "run" / "args.json").read_text())["dataset_zoom"] == [1.0, 2.0]


def test_epoch_steps_keep_the_epoch_length_when_repeats_change_the_frames(two_datasets, tmp_path):
    a, b = two_datasets
    at = TINY.index("--epoch-fraction")
    flags = ["--data-root", str(a), "--mix-data", str(b), *TINY[:at], *TINY[at + 2:]]
    for repeats in ("1", "3"):
        trainer = Trainer(parse_config([*flags, "--dataset-repeats", repeats, "1", "--epoch-steps", "4", "--save-dir",
                                        str(tmp_path / repeats)], DAUB))
        training, _ = trainer.samplers(2)
        assert len(trainer.train_set) == 6 * int(repeats) + 12 and training.steps == 4 and len(training) == 8
        assert len(set(training)) == 8  # drawn without repetition inside the epoch
    assert Trainer(parse_config([*flags, "--epoch-fraction", "1", "--save-dir", str(tmp_path / "fraction")],
                                DAUB)).samplers(2)[0].steps == 9
    flags += ["--save-dir", str(tmp_path / "run")]
    result = run_script("train_daub.py", *flags, "--epoch-steps", "10")
    assert_clean_error(result, "training set: --epoch-steps 10", "18 frames fill (9 of 2)")
    result = run_script("train_daub.py", *flags, "--epoch-steps", "0")
    assert_clean_error(result, "--epoch-steps 0: must be at least 1")
    result = run_script("train_daub.py", *flags, "--epoch-fraction", "1", "--epoch-steps", "2")
    assert result.returncode != 0 and "not allowed with argument" in result.stderr


def test_mixing_a_dataset_with_other_classes_is_refused(two_datasets, tmp_path):
    a, b = two_datasets
    other = shutil.copytree(b, tmp_path / "other")
    ann = other / "annotations/instances_train2017.json"
    content = json.loads(ann.read_text())
    content["categories"][0]["name"] = "bird"
    ann.write_text(json.dumps(content))
    result = run_script("train_daub.py", "--data-root", a, "--mix-data", other, "--save-dir", tmp_path / "r", *TINY)
    assert_clean_error(result, f"--mix-data {other}", "['bird']", "['target']")


def final_scores(run):
    """The last evaluation's mAP50 and recall (COCO's at IoU 0.5: the share of targets boxed at a score of 0.001
    or more)."""
    with open(run / "results.csv", newline="") as handle:
        last = [row for row in csv.DictReader(handle) if row["mAP50"]][-1]
    return float(last["mAP50"]), float(last["recall"])


def test_augmentation_makes_one_scene_generalise_to_another(tmp_path):
    """One training scene whose bright target hardly moves (like DAUB's tracked aircraft), scored on two other
    scenes. Without augmentation the model remembers where the target was and what surrounds it; flips, shifts and
    zoom (identical over the T frames) make it detect the target elsewhere.

    A training outcome differs between CPUs (their rounding sends training down other paths), so the claim is made
    on two seeds' mean and with the margin the measurements leave. mAP50 on the other scenes, plain / augmented:
    2-core AMD EPYC, one thread (2026-12-06): seed 2023 0.65 / 26.0, seed 1 0.00 / 26.1, seed 2 4.12 / 21.5; seed
    2023 elsewhere: 7.07 plain on the CI machine (2026-12-06), 6.77 augmented on an Intel Xeon with AMX (2026-12-05).
    On Intel Xeons the augmented models rank their detections worse: on an Ice Lake Xeon (2026-12-08) seeds 2023 / 1
    give mAP50 0.67 / 8.80 plain and 6.77 / 7.34 augmented (a mean gap of 2.3), while their recall (the share of the
    other scenes' targets boxed at all) is 17.5 / 13.3 plain and 59.2 / 51.7 augmented (a gap of 40; at 24 epochs
    the mAP50 gap opens too, 17.8 against 8.3). Asserted, on the mean of two seeds: augmentation gains 3 points of
    mAP50 or 20 of recall — finding the targets elsewhere by rank or by count; without it neither moves. The
    per-epoch validation loss reads 5 % of the validation frames: it steers nothing here (the last epoch is scored)
    and the training is the same step for step, so the figures above stand (3 epochs: 37 s with every frame, 32 s
    with 5 %)."""
    data = tmp_path / "data"
    result = run_script("utils_coco/make_synthetic.py", "--out", data, "--seed", "21", "--train-sequences", "1",
                        "--test-sequences", "2", "--frames-per-sequence", "40", "--height", "96", "--width", "96",
                        "--target-snr", "15", "30", "--target-speed", "0.1", "0.3", "--drift-speed", "0", "0.2",
                        "--distractors-per-frame", "0", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    recipe = ["--data-root", data, "--input-size", "96", "--phi", "nano", "--lstm-hidden", "8", "--optimizer", "adam",
              "--lr", "1e-3", "--no-scale-lr", "--min-lr-ratio", "0.1", "--prior-prob", "0.01", "--batch-size", "4",
              "--workers", "0", "--epochs", "12", "--epoch-fraction", "1", "--eval-period", "12", "--device", "cpu",
              "--val-fraction", "0.05"]
    augment = ["--flip-lr", "0.5", "--flip-ud", "0.5", "--translate", "0.4", "--scale", "0.8", "1.25"]
    scores = {"plain": [], "augmented": []}  # (mAP50, recall) per seed
    for seed in ("2023", "1"):
        for name, flags in (("plain", []), ("augmented", augment)):
            run = tmp_path / f"{name}_{seed}"
            result = run_script("train_daub.py", *recipe, *flags, "--seed", seed, "--save-dir", run)
            assert result.returncode == 0, result.stderr[-2000:]
            scores[name].append(final_scores(run))
    (plain_map, plain_recall), (augmented_map, augmented_recall) = (
        [sum(column) / len(column) for column in zip(*values)] for values in scores.values())
    assert augmented_map >= plain_map + 3.0 or augmented_recall >= plain_recall + 20.0, scores


def make_real(tmp_path, data, *variables):
    """`make real` shortened to a few steps, with this Python and its outputs under ``tmp_path``."""
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "real", f"PY={sys.executable}",
                           f"DATA={data}", f"REAL_OUT={tmp_path / 'out'}", f"REAL_VIDEO_DATA={tmp_path / 'drone'}",
                           f"REAL_WEIGHTS={tmp_path / 'ir.pth'}", *variables], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def test_make_real_takes_a_zoom_range_per_training_set():
    flags = make_training_flags("real")
    assert "--dataset-scale" not in flags and flags[flags.index("--scale") + 1:][:2] == ["0.8", "1.25"]
    flags = make_training_flags("real", "REAL_DATASET_SCALE=0.8 1.25 0.6 1.67")
    config = parse_config(flags, DAUB)
    assert config.data.scale_ranges == ((0.8, 1.25), (0.6, 1.67)) and config.augment.scale == (0.8, 1.25)


@pytest.fixture
def two_drone_clips(tmp_path):
    """A drone-IR folder with one training and one test clip of the real dataset, as the dataset lays them out."""
    if not (DRONE_VIDEOS / "IR_DRONE_001_LABELS.mat").is_file():
        pytest.skip(f"{DRONE_VIDEOS} not present")
    videos = link_drone_clips(tmp_path / "drone_ir" / "Video_IR", ("IR_DRONE_001", "IR_BIRD_002"))
    splits = {"train": ["IR_DRONE_001"], "test": ["IR_BIRD_002"],
              "distance_bin": {"IR_DRONE_001": "MEDIUM", "IR_BIRD_002": "DISTANT"}}
    (videos.parent / "splits.json").write_text(json.dumps(splits))
    return videos.parent


def test_make_real_trains_on_daub_and_the_imported_videos_scores_both_test_splits_and_ships(daub_real,
                                                                                          two_drone_clips, tmp_path):
    # The first 20 frames of each DAUB clip: the test splits are scored twice at 512x640, and every frame would take
    # minutes of the suite.
    daub_real = daub_excerpt(daub_real, tmp_path / "daub_real", frames=20)
    result = make_real(tmp_path, daub_real, f"DRONE={two_drone_clips}", "REAL_EPOCHS=1", "REAL_EPOCH_STEPS=1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    drone = json.loads((tmp_path / "drone/annotations/instances_test2017.json").read_text())
    assert [video["name"] for video in drone["videos"]] == ["IR_BIRD_002"]
    run = tmp_path / "out" / "train"
    sidecar = json.loads((run / "best_epoch_weights.pth.json").read_text())
    # Paths compare resolved: ../shared may be a link.
    assert Path(sidecar["data_root"]).resolve() == daub_real.resolve()
    assert [Path(path).resolve() for path in sidecar["mix_data"]] == [(tmp_path / "drone").resolve()]
    assert sidecar["model"]["phi"] == "nano" and sidecar["model"]["input_size"] == [256, 320]
    assert sidecar["model"]["frame_step"] == 4
    args = json.loads((run / "args.json").read_text())
    assert args["dataset_repeats"] == [10, 1] and args["select_by"] == "last" and args["eval_period"] == 0
    assert args["epoch_steps"] == 1
    # DAUB shown at twice its size and scored so; the L1 box term in every epoch.
    assert args["dataset_zoom"] == [2, 1] and sidecar["dataset_zoom"] == [2, 1] and args["l1_loss_epochs"] == 1
    assert "input size per --data-root: daub_real 512x640, drone 256x320" in result.stdout
    assert (args["ema_decay"], args["ema_tau"]) == (0.998, 100)
    for scores in ("map", "map_frozen"):
        per_dataset = json.loads((tmp_path / "out" / scores / "per_dataset.json").read_text())
        assert len(per_dataset) == 2
        assert set(json.loads((tmp_path / "out" / scores / "per_distance_bin.json").read_text())) >= {"DISTANT"}
    per_sequence = json.loads((tmp_path / "out" / "map" / "per_sequence.json").read_text())
    assert {"daub_real/images/test/data5", "daub_real/images/test/data6",
            "drone/images/test/IR_BIRD_002"} == set(per_sequence)
    shipped = tmp_path / "ir.pth"
    assert shipped.is_file() and shipped.stat().st_size < 0.6 * (run / "best_epoch_weights.pth").stat().st_size
    assert "with frozen motion: mAP50" in result.stdout


def test_make_real_names_a_data_folder_without_annotations_before_any_work(tmp_path, daub_real):
    result = make_real(tmp_path, tmp_path / "nowhere")
    assert result.returncode != 0
    assert f"DATA={tmp_path / 'nowhere'}: no annotations/instances_train2017.json" in result.stdout
    result = make_real(tmp_path, daub_real, f"DRONE={tmp_path / 'no_drone'}")
    assert result.returncode != 0
    assert f"DRONE={tmp_path / 'no_drone'}: no Video_IR folder" in result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "drone").exists()
