"""One model spec for every script, and weights that say what they are (sidecar, or shapes for the authors')."""
import argparse
import json
import re
import shutil

import pytest
import torch
from conftest import REPO, assert_clean_error, run_script, tiny_synthetic_dataset
from parity_recipe import make_state, read_layout

from nets import Network
from nets.weights import architecture_of, embedded_record, read_trained_weights
from utils.data.bundled import DAUB
from utils.errors import SSTNetError
from utils.model_spec import ModelSpec, TrainedModel
from utils.runtime.model_options import resolve_spec
from utils.sidecar import sidecar_path
from utils.train.options import parse_config
from utils.train.trainer import Trainer

TRAIN = ["--input-size", "64", "--phi", "nano", "--lstm-hidden", "8", "--num-frame", "3", "--batch-size", "2",
         "--workers", "0", "--epoch-fraction", "1", "--val-fraction", "0.5", "--eval-period", "1", "--device", "cpu"]
SHARED_FLAGS = ("--phi", "--num-frame", "--input-size", "--lstm-hidden", "--computation", "--device", "--amp",
                "--threads")


def namespace(**flags):
    values = {"phi": None, "num_frame": None, "input_size": None, "lstm_hidden": None, "computation": None,
              "device": "auto", "amp": "none", "threads": None}
    values.update(flags)
    return argparse.Namespace(**values)


TRAINED = TrainedModel("w.pth", "nano", 3, 8, 2, (256, 256), ("a", "b"), True)


def test_flags_left_out_take_the_trained_values_then_the_defaults():
    assert resolve_spec(namespace()) == ModelSpec()
    spec = resolve_spec(namespace(), TRAINED)
    assert (spec.phi, spec.num_frame, spec.lstm_hidden, spec.input_shape) == ("nano", 3, 8, (256, 256))
    assert resolve_spec(namespace(phi="nano", num_frame=3), TRAINED) == spec
    assert resolve_spec(namespace(), engine="window").computation == "released"
    assert resolve_spec(namespace(computation="fast"), engine="window").computation == "fast"


@pytest.mark.parametrize("flags,fragment", [({"phi": "s"}, "--phi s: w.pth (sidecar) holds a model with --phi nano"),
                                            ({"num_frame": 5}, "--num-frame 5: w.pth (sidecar) holds a model with "
                                                               "--num-frame 3"),
                                            ({"lstm_hidden": 64}, "with --lstm-hidden 8")])
def test_a_flag_contradicting_the_weights_names_both_values(flags, fragment):
    with pytest.raises(SSTNetError, match=re.escape(fragment)):
        resolve_spec(namespace(**flags), TRAINED)
    # --pretrained: a partial load into another shape is legitimate, the flag wins
    assert getattr(resolve_spec(namespace(**flags), TRAINED, flags_win=True), next(iter(flags))) == next(
        iter(flags.values()))


def test_another_input_size_is_allowed_and_noted_once():
    notes = []
    spec = resolve_spec(namespace(input_size="512"), TRAINED, note=notes.append)
    assert spec.input_shape == (512, 512)
    assert len(notes) == 1 and "trained at 256" in notes[0]


@pytest.mark.parametrize("bad", [{"num_frame": 1}, {"lstm_hidden": 0}, {"input_shape": "100"}, {"threads": 0},
                                 {"phi": "q"}])
def test_spec_validates(bad):
    with pytest.raises(SSTNetError):
        ModelSpec(**bad)


def test_the_authors_layout_is_recognised_from_its_shapes():
    state = make_state(read_layout())
    assert architecture_of(state) == {"phi": "s", "num_frame": 5, "num_classes": 1, "lstm_hidden": 64}
    for phi, frames, classes, hidden in (("nano", 3, 2, 8), ("tiny", 7, 1, 16), ("m", 2, 4, 4)):
        model = Network(classes, frames, phi, lstm_hidden=hidden)
        assert architecture_of(model.state_dict()) == {"phi": phi, "num_frame": frames, "num_classes": classes,
                                                       "lstm_hidden": hidden}
    with pytest.raises(SSTNetError, match="not SSTNet weights"):
        architecture_of({"backbone.backbone.stem.conv.conv.weight": torch.zeros(32, 12, 3, 3)})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A two-epoch run of a nano model with 3 frames at 64 px: weights with sidecars."""
    root = tmp_path_factory.mktemp("spec")
    data = tiny_synthetic_dataset(root / "data", seed=4, train_sequences=1, frames_per_sequence=8)
    Trainer(parse_config(["--data-root", str(data), "--epochs", "2", "--save-period", "1", "--save-dir",
                        str(root / "run"), *TRAIN], DAUB)).fit()
    return data, root / "run"


def test_every_weights_file_has_a_sidecar_and_stays_a_plain_state_dict(run):
    _, folder = run
    weights = sorted(folder.glob("*weights.pth")) + sorted(folder.glob("ep*.pth"))
    assert {path.name for path in weights} >= {"last_epoch_weights.pth", "best_epoch_weights.pth"}
    assert len(list(folder.glob("ep*.pth"))) == 2
    for path in weights:
        sidecar = json.loads(open(sidecar_path(path)).read())
        assert sidecar["model"] == {"phi": "nano", "num_frame": 3, "input_size": [64, 64], "lstm_hidden": 8,
                                    "num_classes": 1, "frame_step": 1}
        # The same description travels inside the weights file, where the authors' strict load ignores it.
        assert embedded_record(torch.load(path, weights_only=True)) == sidecar
        assert sidecar["class_names"] == ["target"] and sidecar["data_root"] == str(run[0].resolve())
        assert sidecar["commit"] is None or len(sidecar["commit"]) >= 40
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert all(isinstance(value, torch.Tensor) for value in state.values())
        Network(1, 3, "nano", lstm_hidden=8).load_state_dict(state, strict=True)  # as the authors' code loads it
    trained, _ = read_trained_weights(folder / "best_epoch_weights.pth")
    assert trained.from_sidecar and trained.input_shape == (64, 64)


def evaluate(data, weights, out, *flags):
    return run_script("vid_map_coco.py", "--weights", weights, "--data-root", data, "--out-dir", out, "--workers", "0",
                      "--quiet", "--device", "cpu", *flags)


def test_evaluation_needs_no_model_flags(run, tmp_path):
    data, folder = run
    weights = folder / "best_epoch_weights.pth"
    plain = evaluate(data, weights, tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    flagged = evaluate(data, weights, tmp_path / "flags", "--phi", "nano", "--num-frame", "3", "--input-size", "64")
    assert flagged.returncode == 0, flagged.stderr
    assert (tmp_path / "plain/metrics.json").read_text() == (tmp_path / "flags/metrics.json").read_text()
    assert "note:" not in plain.stdout + plain.stderr
    # Without the sidecar (the authors' weights): the architecture comes from the shapes, the size must be given.
    bare = tmp_path / "bare.pth"
    shutil.copy(weights, bare)
    inferred = evaluate(data, bare, tmp_path / "bare", "--input-size", "64")
    assert inferred.returncode == 0, inferred.stderr
    assert (tmp_path / "bare/metrics.json").read_text() == (tmp_path / "plain/metrics.json").read_text()


def test_evaluation_refuses_contradicting_flags_and_notes_another_size(run, tmp_path):
    data, folder = run
    weights = folder / "best_epoch_weights.pth"
    assert_clean_error(evaluate(data, weights, tmp_path / "a", "--num-frame", "5"), "--num-frame 5",
                       "--num-frame 3")
    assert_clean_error(evaluate(data, weights, tmp_path / "b", "--phi", "s"), "--phi s", "--phi nano")
    other = evaluate(data, weights, tmp_path / "c", "--input-size", "96")
    assert other.returncode == 0, other.stderr
    assert (other.stdout + other.stderr).count("note: --input-size 96") == 1


BROKEN_SIDECARS = (("{", "unreadable weights sidecar"), ('{"format": "other"}', "not a weights sidecar"),
                   (json.dumps({"format": "sstnet-weights/1", "model": {"phi": "s", "num_frame": 3, "input_size": 64,
                                                                       "lstm_hidden": 8, "num_classes": 1}}),
                    "belongs to other weights"))


def test_a_broken_sidecar_is_one_error_line(run, tmp_path):
    """Weights that carry no description of their own (the authors', or written before this project embedded one)
    depend on their sidecar: a broken one stops the run."""
    data, folder = run
    weights = tmp_path / "w.pth"
    torch.save(dict(torch.load(folder / "last_epoch_weights.pth", weights_only=True)), weights)
    for text, fragment in BROKEN_SIDECARS:
        open(sidecar_path(weights), "w").write(text)
        assert_clean_error(evaluate(data, weights, tmp_path / "out"), str(weights), fragment)


def test_weights_that_describe_themselves_run_as_what_they_are_whatever_the_sidecar_says(run, tmp_path):
    """A stale, foreign or broken sidecar (a failed write, a copy) cannot make self-describing weights run as another
    model: the description inside wins and the sidecar is named in a note."""
    data, folder = run
    weights = tmp_path / "w.pth"
    shutil.copy(folder / "last_epoch_weights.pth", weights)
    for text, _ in BROKEN_SIDECARS:
        open(sidecar_path(weights), "w").write(text)
        result = evaluate(data, weights, tmp_path / "out")
        assert result.returncode == 0, result.stderr
        assert f"note: {sidecar_path(weights)} does not match the description inside" in result.stdout


def test_pretrained_fills_the_model_flags_reports_by_part_and_applies_the_prior_after(run, tmp_path, capsys):
    data, folder = run
    config = parse_config(["--data-root", str(data), "--pretrained", str(folder / "last_epoch_weights.pth"),
                           "--prior-prob", "0.25", "--epochs", "1", "--save-dir", str(tmp_path / "ft"), "--workers",
                           "0", "--device", "cpu", "--batch-size", "2"], DAUB)
    trainer = Trainer(config)
    model = trainer.config.model
    assert (model.phi, model.num_frame, model.input_size, model.lstm_hidden) == ("nano", 3, "64", 8)
    report = capsys.readouterr().out
    for part in ("backbone", "neck", "head", "motion branch"):
        assert part in report
    assert "all loaded" in report
    prior = -torch.log(torch.tensor((1 - 0.25) / 0.25))
    assert torch.allclose(trainer.model.head.obj_preds[0].bias, prior)


def strip(weights, out, *flags):
    return run_script("strip_weights.py", "--weights", weights, "--out", out, *flags)


def test_detector_only_weights_evaluate_as_the_full_ones_at_a_fraction_of_the_size(run, tmp_path):
    data, folder = run
    full = folder / "best_epoch_weights.pth"
    detector, half = tmp_path / "detector.pth", tmp_path / "half.pth"
    for out, flags in ((detector, ()), (half, ("--half",))):
        result = strip(full, out, *flags)
        assert result.returncode == 0, result.stderr
    state = torch.load(detector, map_location="cpu", weights_only=True)
    assert state and all(key.split(".")[0] in ("backbone", "neck", "head") for key in state)
    assert all(value.dtype == torch.float16 for value in torch.load(half, weights_only=True).values()
               if value.is_floating_point())
    assert half.stat().st_size < 0.6 * detector.stat().st_size < 0.6 * full.stat().st_size
    sidecar = json.loads(open(sidecar_path(half)).read())
    assert sidecar["model"] == json.loads(open(sidecar_path(full)).read())["model"]
    assert sidecar["detector_only"] == {"from": str(full), "dtype": "float16"}

    reference = evaluate(data, full, tmp_path / "full")
    stripped = evaluate(data, detector, tmp_path / "detector")
    assert reference.returncode == 0 and stripped.returncode == 0, reference.stderr + stripped.stderr
    assert (tmp_path / "detector/metrics.json").read_text() == (tmp_path / "full/metrics.json").read_text()

    # float16 storage: the same model to within its rounding, loaded through the evaluation tools' path.
    from utils.infer.engine import build_model
    windows = torch.rand(2, 3, 3, 64, 64)
    outputs = []
    for path in (full, half):
        trained, weights = read_trained_weights(path)
        spec = resolve_spec(namespace(device="cpu"), trained)
        outputs.append(build_model(spec, trained.num_classes, weights, torch.device("cpu"), str(path))(windows))
    for exact, rounded in zip(outputs[0], outputs[1]):
        assert torch.allclose(exact, rounded, rtol=0.02, atol=0.02 * float(exact.abs().max()))


def test_detector_only_weights_run_from_their_embedded_record_and_refuse_without_any(run, tmp_path):
    """Stripped weights carry their description inside, so losing the sidecar changes nothing; weights that carry
    none (a plain state dict saved by other code) and have no sidecar are refused by evaluation and by strip."""
    data, folder = run
    full = folder / "last_epoch_weights.pth"
    detector = tmp_path / "detector.pth"
    assert strip(full, detector).returncode == 0
    (tmp_path / "detector.pth.json").unlink()
    result = evaluate(data, detector, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stdout + result.stderr
    assert evaluate(data, detector, tmp_path / "sized", "--input-size", "64").returncode == 0
    assert (tmp_path / "out/metrics.json").read_text() == (tmp_path / "sized/metrics.json").read_text()
    bare_detector = tmp_path / "bare_detector.pth"
    torch.save(dict(torch.load(detector, weights_only=True)), bare_detector)
    assert embedded_record(torch.load(bare_detector, weights_only=True)) is None
    assert_clean_error(evaluate(data, bare_detector, tmp_path / "out2", "--input-size", "64"), str(bare_detector),
                       "detector-only weights without their sidecar")
    bare = tmp_path / "bare.pth"
    torch.save(dict(torch.load(full, weights_only=True)), bare)
    assert_clean_error(strip(bare, tmp_path / "x.pth"), str(bare), "has no sidecar")
    assert_clean_error(strip(full, full), "--out", "is the input --weights")
    assert not (tmp_path / "x.pth").exists()


def test_pretrained_from_detector_only_weights_fills_the_flags_and_starts_the_motion_branch_afresh(run, tmp_path,
                                                                                                   capsys):
    data, folder = run
    detector = tmp_path / "start.pth"
    assert strip(folder / "last_epoch_weights.pth", detector, "--half").returncode == 0
    config = parse_config(["--data-root", str(data), "--pretrained", str(detector), "--epochs", "1", "--save-dir",
                           str(tmp_path / "ft"), "--workers", "0", "--device", "cpu", "--batch-size", "2"], DAUB)
    trainer = Trainer(config)
    model = trainer.config.model
    assert (model.phi, model.num_frame, model.input_size, model.lstm_hidden) == ("nano", 3, "64", 8)
    report = capsys.readouterr().out
    for part in ("backbone", "neck", "head"):
        assert re.search(rf"{part} +\d+ tensors: all loaded", report), report
    assert re.search(r"motion branch +(\d+) tensors: \1 absent", report), report
    start = torch.load(detector, weights_only=True)
    key = "backbone.backbone.stem.conv.conv.weight"
    assert torch.equal(trainer.model.state_dict()[key], start[key].float())


def test_every_script_shows_the_shared_options_identically():
    def option_help(script):
        text = run_script(script, "--help").stdout
        assert text.count("(default: None)") == 0, script
        blocks, current = {}, None
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                current = stripped.split()[0].rstrip(",")
                blocks[current] = [stripped]
            elif current and stripped and line.startswith(" " * 10):
                blocks[current].append(stripped)
            else:
                current = None
        return {flag: " ".join(lines) for flag, lines in blocks.items()}

    helps = {script: option_help(script) for script in ("train_daub.py", "train_irdst.py", "vid_map_coco.py",
                                                        "vid_predict.py", "export_onnx.py")}
    for flag in SHARED_FLAGS:
        texts = {script: options[flag] for script, options in helps.items()}
        if flag == "--input-size":  # vid_map_coco.py also takes one size per dataset root, and says so after
            scoring = texts.pop("vid_map_coco.py")
            single = texts["vid_predict.py"].split(" S ", 1)[1].strip()
            assert scoring.startswith("--input-size S [S ...] " + single + ";"), scoring
            assert "one per --data-root" in scoring, scoring
        assert len(set(texts.values())) == 1, texts
    for options in helps.values():
        assert all(text.count("(default:") <= 1 for text in options.values()), options
    bench = option_help(str(REPO / "benchmarks" / "bench.py"))
    for flag in SHARED_FLAGS:
        if flag not in ("--computation", "--input-size"):
            assert bench[flag] == helps["vid_map_coco.py"][flag], flag


def fake_cpu_times(monkeypatch, *snapshots):
    """Make /proc/stat answer ``snapshots`` in turn: {cpu: (idle, total)} jiffies, all CPUs allowed."""
    import utils.runtime.cpus as model_spec
    answers = iter(snapshots)
    monkeypatch.setattr(model_spec, "cpu_times", lambda cpus: next(answers))
    monkeypatch.setattr(model_spec.os, "sched_getaffinity", lambda pid: set(snapshots[0]), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return model_spec


def test_default_threads_count_the_cpus_idle_at_start_less_the_workers(monkeypatch):
    start = {0: (100, 1000), 1: (100, 1000)}
    model_spec = fake_cpu_times(monkeypatch, start, {0: (110, 1010), 1: (110, 1010)})
    assert model_spec.default_threads(0) == 2  # both idle: a quiet machine
    model_spec = fake_cpu_times(monkeypatch, start, {0: (110, 1010), 1: (100, 1010)})
    assert model_spec.default_threads(0) == 1  # another process keeps one CPU busy
    model_spec = fake_cpu_times(monkeypatch, start, {0: (110, 1010), 1: (108, 1010)})
    assert model_spec.default_threads(0) == 2  # 80 % idle counts as free
    model_spec = fake_cpu_times(monkeypatch, start, {0: (110, 1010), 1: (106, 1010)})
    assert model_spec.default_threads(0) == 1  # 60 % idle does not
    model_spec = fake_cpu_times(monkeypatch, start, {0: (110, 1010), 1: (110, 1010)})
    assert model_spec.default_threads(1) == 1  # one per DataLoader worker
    model_spec = fake_cpu_times(monkeypatch, start, {0: (100, 1010), 1: (100, 1010)})
    assert model_spec.default_threads(2) == 1  # never fewer than one
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert model_spec.default_threads(0) == 3  # the environment says so


def test_idle_cpus_measures_this_machine_within_its_cpus():
    from utils.runtime.cpus import available_cpus, idle_cpus
    assert 0.0 <= idle_cpus(0.05) <= available_cpus() + 1e-6


@pytest.mark.parametrize("cpus, workers", [(1, 0), (2, 0), (3, 1), (4, 2), (16, 2)])
def test_default_workers_leave_two_cpus_to_the_compute(monkeypatch, cpus, workers):
    import utils.runtime.cpus as model_spec
    monkeypatch.setattr(model_spec, "available_cpus", lambda: cpus)
    assert model_spec.default_workers() == workers
    index = TRAIN.index("--workers")
    config = parse_config(["--save-dir", "unused", *TRAIN[:index], *TRAIN[index + 2:]], DAUB)
    assert config.data.workers == workers and "workers" not in config.given


def test_weights_found_through_a_link_or_renamed_still_run_as_trained(run, tmp_path):
    data, folder = run
    reference = evaluate(data, folder / "last_epoch_weights.pth", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    # Renamed without its sidecar: the description inside says 64 px.
    renamed = tmp_path / "renamed.pth"
    shutil.copy(folder / "last_epoch_weights.pth", renamed)
    # Weights without a description inside, reached through a link: the sidecar beside the real file is read.
    plain = tmp_path / "real" / "plain.pth"
    plain.parent.mkdir()
    torch.save(dict(torch.load(folder / "last_epoch_weights.pth", weights_only=True)), plain)
    shutil.copy(sidecar_path(folder / "last_epoch_weights.pth"), sidecar_path(plain))
    link = tmp_path / "elsewhere" / "link.pth"
    link.parent.mkdir()
    link.symlink_to(plain)
    for weights in (renamed, link):
        result = evaluate(data, weights, tmp_path / weights.stem)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / weights.stem / "metrics.json").read_text()) == expected, weights
        assert "note:" not in result.stdout


def test_weights_that_cannot_say_their_input_size_are_run_with_a_note(run, tmp_path):
    data, folder = run
    bare = tmp_path / "bare.pth"
    torch.save(dict(torch.load(folder / "last_epoch_weights.pth", weights_only=True)), bare)
    result = run_script("summary.py", "--weights", bare)
    assert result.returncode == 0, result.stderr
    assert "does not say the input size it was trained at" in result.stdout and "give --input-size" in result.stdout


def test_weights_with_a_nan_are_refused_everywhere(run, tmp_path):
    data, folder = run
    state = torch.load(folder / "last_epoch_weights.pth", weights_only=True)
    key = "head.cls_preds.0.weight"
    state[key].view(-1)[3] = float("nan")
    broken = tmp_path / "nan.pth"
    torch.save(state, broken)
    shutil.copy(sidecar_path(folder / "last_epoch_weights.pth"), sidecar_path(broken))
    assert_clean_error(evaluate(data, broken, tmp_path / "out"), str(broken), key, "1 NaN or infinite value")
    assert_clean_error(run_script("strip_weights.py", "--weights", broken, "--out", tmp_path / "copy.pth"),
                       "NaN or infinite")
    assert not (tmp_path / "copy.pth").exists()


def test_a_failed_weights_write_leaves_the_previous_weights_and_sidecar_whole(run, tmp_path, monkeypatch):
    from utils.train import run_files
    _, folder = run
    state = torch.load(folder / "last_epoch_weights.pth", weights_only=True)
    target = tmp_path / "w.pth"
    first = {"format": "sstnet-weights/1", "model": {"phi": "nano", "num_frame": 3, "input_size": [64, 64],
                                                     "lstm_hidden": 8, "num_classes": 1}, "class_names": ["target"]}
    run_files.save_weights(state, target, first)
    second = json.loads(json.dumps(first))
    second["model"]["input_size"] = [512, 512]

    def full_disk(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_files.torch, "save", full_disk)
    with pytest.raises(SSTNetError):
        run_files.save_weights(state, target, second)
    monkeypatch.undo()
    assert json.loads(open(sidecar_path(target)).read()) == first
    trained, _ = read_trained_weights(target)
    assert trained.input_shape == (64, 64)
