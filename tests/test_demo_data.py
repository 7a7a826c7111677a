"""The committed json/ files and index txts are exactly what `make data` regenerates from the default seed, and the
shipped starting weights fit the model `make demo` trains."""
import subprocess
import sys

from conftest import REPO, make_training_flags


def test_default_synthetic_dataset_regenerates_the_committed_files(tmp_path):
    root = tmp_path / "synthetic_daub"
    result = subprocess.run([sys.executable, "utils_coco/make_synthetic.py", "--out", str(root), "--quiet"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for split, index in (("train", "coco_train.txt"), ("test", "coco_val.txt")):
        json_path = root / "annotations" / f"instances_{split}2017.json"
        assert json_path.read_bytes() == (REPO / "json" / json_path.name).read_bytes()
        out = tmp_path / index
        result = subprocess.run([sys.executable, "utils_coco/coco_to_txt.py", "--json", str(json_path), "--out",
                                 str(out)], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == (REPO / index).read_bytes()


def test_the_shipped_starting_weights_fit_the_demo_model_and_say_what_they_are():
    from nets import Network
    from nets.weights import load_weights, read_trained_weights
    from utils.data.bundled import DAUB
    from utils.runtime.model_options import resolve_spec
    from utils.train.options import parse_config

    config = parse_config(make_training_flags("demo"), DAUB)
    start = REPO / config.start.pretrained
    assert start.parent.name == "weights" and start.stat().st_size < 6 * 2**20
    trained, state = read_trained_weights(start)
    assert trained.from_sidecar and trained.extra["detector_only"]["dtype"] == "float16"
    assert trained.input_shape == (int(config.model.input_size),) * 2
    spec = resolve_spec(config.model, trained)  # a demo flag contradicting the weights would raise here
    model = Network(trained.num_classes, spec.num_frame, spec.phi, lstm_hidden=spec.lstm_hidden)
    report = load_weights(model, state, mode="partial")
    parts = report.by_part()
    assert all(parts[part]["loaded"] > 0 and parts[part]["loaded"] == sum(parts[part].values())
               for part in ("backbone", "neck", "head")), parts
    assert parts["motion branch"]["loaded"] == 0 and report.num_skipped == 0
