"""Training: the CLI, exact resume, interruption, divergence, DDP on CPU, and a run that learns."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, tiny_synthetic_dataset

from nets.training import lr_at_epoch, scaled_lrs
from utils.data.bundled import DAUB
from utils.errors import SSTNetError
from utils.train.options import parse_config
from utils.train.trainer import Phase, Trainer, TrainingDiverged

TINY = ["--input-size", "64", "--phi", "nano", "--lstm-hidden", "8", "--batch-size", "2", "--workers", "0",
        "--epoch-fraction", "1", "--val-fraction", "0.5", "--eval-period", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synthetic_dataset(tmp_path_factory.mktemp("tiny_daub"), seed=5, train_sequences=2,
                                  frames_per_sequence=8)


def parse(*argv):
    return parse_config(list(argv), DAUB)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_continues_exactly(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    Trainer(parse("--data-root", str(tiny_data), "--epochs", "2", "--save-dir", str(straight), *TINY)).fit()
    resumed = tmp_path / "resumed"
    first = Trainer(parse("--data-root", str(tiny_data), "--epochs", "2", "--save-dir", str(resumed), *TINY))
    first.fit(until_epoch=1)
    assert (resumed / "last_epoch_weights.pth").exists() and not list(resumed.glob("ep002-*.pth"))
    second = Trainer(parse("--resume", str(resumed / "last_checkpoint.pth")))
    assert second.start_epoch == 1 and second.config.run.save_dir == str(resumed)
    second.fit()
    assert_same_state(weights(straight / "last_epoch_weights.pth"), weights(resumed / "last_epoch_weights.pth"))
    assert_same_state(torch.load(straight / "last_checkpoint.pth", weights_only=True)["model"],
                      torch.load(resumed / "last_checkpoint.pth", weights_only=True)["model"])
    rows = (resumed / "results.csv").read_text().splitlines()
    assert rows[0] == "epoch,lr,loss,motion_loss,val_loss,mAP50,precision,recall,f1" and len(rows) == 3
    assert rows == (straight / "results.csv").read_text().splitlines()


def test_freeze_training_resumes_exactly_in_and_after_the_frozen_phase(tiny_data, tmp_path):
    """4 epochs, the first 2 frozen at batch 4, in one go and as 1 + 1 + 1 + 1 resumed epochs (resuming inside the
    frozen phase, at the switch and after it): identical weights after every epoch."""
    run_args = ["--data-root", str(tiny_data), "--epochs", "4", *TINY, "--freeze-epochs", "2", "--freeze-batch-size",
                "4", "--eval-period", "0", "--save-period", "1"]
    straight = tmp_path / "straight"
    Trainer(parse(*run_args, "--save-dir", str(straight))).fit()
    chained = tmp_path / "chained"
    first = Trainer(parse(*run_args, "--save-dir", str(chained)))
    assert first.phase == Phase(frozen=True, batch_size=4) and first.train_sampler.global_batch == 4
    initial = {key: value.clone() for key, value in first.model.state_dict().items()}
    first.fit(until_epoch=1)
    checkpoint = chained / "last_checkpoint.pth"
    after_one = torch.load(checkpoint, weights_only=True)["model"]
    # Frozen: backbone weights and BatchNorm statistics untouched; the rest trained.
    assert all(torch.equal(after_one[key], initial[key]) for key in initial if key.startswith("backbone."))
    assert not torch.equal(after_one["neck.conv_final.1.conv.weight"], initial["neck.conv_final.1.conv.weight"])
    phases = []
    for until in (2, 3, None):
        trainer = Trainer(parse("--resume", str(checkpoint)))
        phases.append(trainer.phase)
        trainer.fit(until_epoch=until)
    assert phases == [Phase(True, 4), Phase(False, 2), Phase(False, 2)]
    assert trainer.train_sampler.global_batch == 2 and all(p.requires_grad for p in trainer.model.parameters())
    names = sorted(path.name for path in straight.glob("ep*.pth"))
    assert len(names) == 4 and names == sorted(path.name for path in chained.glob("ep*.pth"))
    for name in names:
        assert_same_state(weights(straight / name), weights(chained / name))
    final = {name: torch.load(folder / "last_checkpoint.pth", weights_only=True) for name, folder in
             (("straight", straight), ("chained", chained))}
    assert_same_state(final["straight"]["model"], final["chained"]["model"])
    assert not torch.equal(final["chained"]["model"]["backbone.backbone.stem.conv.conv.weight"],
                           initial["backbone.backbone.stem.conv.conv.weight"])  # unfrozen: the backbone trained
    # The learning rate follows one schedule, rescaled for the batch of each phase (both scaled rates differ here).
    frozen_lrs, unfrozen_lrs = scaled_lrs(0.01, 1e-4, 4), scaled_lrs(0.01, 1e-4, 2)
    assert frozen_lrs != unfrozen_lrs
    expected = [lr_at_epoch(epoch, 4, *(frozen_lrs if epoch < 2 else unfrozen_lrs)) for epoch in range(4)]
    assert [row["lr"] for row in final["chained"]["rows"]] == pytest.approx(expected, rel=1e-12)
    assert (chained / "results.csv").read_text() == (straight / "results.csv").read_text()


def test_step_lr_decay_sets_the_epoch_rate(tiny_data, tmp_path):
    trainer = Trainer(parse("--data-root", str(tiny_data), "--epochs", "10", "--save-dir", str(tmp_path / "r"), *TINY,
                            "--eval-period", "0", "--lr-decay", "step"))
    trainer.fit(until_epoch=1)
    rows = torch.load(tmp_path / "r" / "last_checkpoint.pth", weights_only=True)["rows"]
    assert rows[0]["lr"] == pytest.approx(trainer.lr)  # no warm-up: the full rate from the first epoch (cos: 0.1·lr)
    assert lr_at_epoch(1, 10, trainer.lr, trainer.min_lr, "step") < trainer.lr


@pytest.mark.parametrize("argv,message", [
    (["--lr-decay", "step", "--epochs", "9"], "--lr-decay step: needs --epochs of at least 10"),
    (["--freeze-epochs", "5", "--epochs", "4"], "--freeze-epochs 5"),
    (["--freeze-epochs", "-1"], "--freeze-epochs -1"),
    (["--freeze-epochs", "1", "--freeze-batch-size", "0"], "--freeze-batch-size 0"),
    (["--select-by", "mAP50", "--eval-period", "0"], "--select-by mAP50: needs --eval-period > 0"),
    (["--l1-loss-epochs", "5", "--epochs", "4"], "--l1-loss-epochs 5"),
])
def test_bad_freeze_and_schedule_flags(argv, message):
    with pytest.raises(SSTNetError, match=message):
        parse(*argv)


def test_run_folder_contents(tiny_data, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(parse("--data-root", str(tiny_data), "--epochs", "2", "--save-dir", str(run),
                            "--save-period", "1", *TINY))
    best = trainer.fit()
    names = {path.name for path in run.iterdir()}
    assert {"results.csv", "loss.png", "map.png", "args.json", "last_epoch_weights.pth", "best_epoch_weights.pth",
            "last_checkpoint.pth", "last_checkpoint.prev.pth", "tensorboard"} <= names
    assert sum(name.startswith("ep00") and name.endswith(".pth") for name in names) == 2
    assert not [name for name in names if ".tmp" in name]
    assert best.criterion == "mAP50" and best.epoch in (1, 2)
    # The saved weights are plain state dicts the released model loads strictly (the authors' code does).
    from nets import Network
    Network(1, 5, "nano", lstm_hidden=8).load_state_dict(weights(run / "best_epoch_weights.pth"), strict=True)
    assert list(weights(run / "last_epoch_weights.pth")) == list(trainer.ema.ema.state_dict())
    assert os.stat(run / "results.csv").st_mode & 0o044  # readable by others, as normal files are
    with pytest.raises(SSTNetError, match="already holds a run"):
        Trainer(parse("--data-root", str(tiny_data), "--save-dir", str(run), *TINY))


def test_best_follows_val_loss_without_evaluation(tiny_data, tmp_path):
    trainer = Trainer(parse("--data-root", str(tiny_data), "--epochs", "1", "--save-dir", str(tmp_path / "r"),
                            *TINY, "--eval-period", "0"))
    best = trainer.fit()
    assert best.criterion == "val_loss" and best.epoch == 1 and math.isfinite(best.value)
    assert (tmp_path / "r" / "best_epoch_weights.pth").exists() and not (tmp_path / "r" / "map.png").exists()


def test_select_by_last_keeps_the_final_epoch_and_val_loss_its_lowest(tiny_data, tmp_path):
    """``--select-by last`` makes best_epoch_weights.pth the final epoch's, whatever the losses did; the val_loss
    rule keeps the epoch with the lowest val loss in results.csv."""
    run_args = ["--data-root", str(tiny_data), "--epochs", "3", *TINY, "--eval-period", "0", "--save-period", "1"]
    last = Trainer(parse(*run_args, "--select-by", "last", "--save-dir", str(tmp_path / "last"))).fit()
    assert (last.criterion, last.epoch) == ("last", 3) and last.describe() == "the last epoch"
    assert_same_state(weights(tmp_path / "last" / "best_epoch_weights.pth"),
                      weights(tmp_path / "last" / "last_epoch_weights.pth"))
    by_loss = Trainer(parse(*run_args, "--select-by", "val_loss", "--save-dir", str(tmp_path / "loss"))).fit()
    rows = (tmp_path / "loss" / "results.csv").read_text().splitlines()[1:]
    val_losses = [float(row.split(",")[4]) for row in rows]
    assert by_loss.epoch == 1 + val_losses.index(min(val_losses))
    kept = next((tmp_path / "loss").glob(f"ep{by_loss.epoch:03d}-*.pth"))
    assert_same_state(weights(tmp_path / "loss" / "best_epoch_weights.pth"), weights(kept))


def test_ema_flags_set_how_far_the_saved_weights_lag_the_model(tiny_data, tmp_path):
    def saved_and_trained(run, *ema):
        Trainer(parse("--data-root", str(tiny_data), "--epochs", "1", "--save-dir", str(tmp_path / run),
                      *TINY, "--eval-period", "0", *ema)).fit()
        saved = weights(tmp_path / run / "last_epoch_weights.pth")
        trained = torch.load(tmp_path / run / "last_checkpoint.pth", weights_only=True)["model"]
        return {key: (saved[key], trained[key]) for key in saved if saved[key].dtype.is_floating_point}

    # Decay 0 keeps nothing of the average: the saved weights are the trained ones.
    for key, (saved, trained) in saved_and_trained("copy", "--ema-decay", "0").items():
        assert torch.equal(saved, trained), key
    # The release's ramp (tau 2000) barely averages a few steps; a short tau averages them strongly.
    def lag(run, *ema):
        return sum((saved - trained).abs().sum().item() for saved, trained in saved_and_trained(run, *ema).values())

    assert lag("short-tau", "--ema-decay", "0.9", "--ema-tau", "0.01") > 2 * lag("release-tau", "--ema-decay", "0.9")


@pytest.mark.parametrize("where", ["loss", "outputs"])
def test_divergence_stops_with_epoch_and_step_and_keeps_best(tiny_data, tmp_path, where):
    run = tmp_path / "run"
    trainer = Trainer(parse("--data-root", str(tiny_data), "--epochs", "3", "--save-dir", str(run), *TINY))
    trainer.fit(until_epoch=1)
    best_before = (run / "best_epoch_weights.pth").read_bytes()
    resumed = Trainer(parse("--resume", str(run / "last_checkpoint.pth")))
    calls = []
    if where == "loss":
        real_loss = resumed.loss_fn.forward

        def exploding(outputs, targets):
            calls.append(1)
            value = real_loss(outputs, targets)
            return value * float("nan") if len(calls) == 3 else value

        resumed.loss_fn.forward = exploding
    else:
        real_forward = resumed.train_model.forward

        def exploding(images):
            calls.append(1)
            (output,), motion_loss = real_forward(images)
            return [output * float("inf") if len(calls) == 3 else output], motion_loss

        resumed.train_model.forward = exploding
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 3"):
        resumed.fit()
    assert (run / "best_epoch_weights.pth").read_bytes() == best_before
    assert torch.load(run / "last_checkpoint.pth", weights_only=True)["epoch"] == 1


def run_script(*argv, **kwargs):
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=REPO, **kwargs)


def start_training_and_wait_for_a_checkpoint(tiny_data, run, *extra):
    command = [sys.executable, "train_daub.py", "--data-root", tiny_data, "--epochs", "4", "--save-dir", run, *TINY,
               *extra]
    # A session of its own, so that signalling its process group is what Ctrl-C in a terminal does.
    process = subprocess.Popen(list(map(str, command)), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (run / "last_checkpoint.pth").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert (run / "last_checkpoint.pth").exists(), process.communicate()[1]
    return process


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_a_resumable_run(tiny_data, tmp_path, signum):
    run = tmp_path / "run"
    checkpoint = run / "last_checkpoint.pth"
    process = start_training_and_wait_for_a_checkpoint(tiny_data, run)
    process.send_signal(signum)  # right after a save: the next epoch's progress bar is being built
    stdout, stderr = process.communicate(timeout=120)
    # The shell's convention, as every other script: 128 + the signal's number.
    expected = (130, "interrupted") if signum == signal.SIGINT else (143, "terminated")
    assert process.returncode == expected[0], stderr
    assert stderr.rstrip().endswith(expected[1]) and "Traceback" not in stderr
    assert f"continue with --resume {checkpoint}" in stdout
    assert not [path for path in run.iterdir() if ".tmp" in path.name]
    done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= done < 4
    result = run_script("train_daub.py", "--resume", checkpoint)
    assert result.returncode == 0, result.stderr
    assert len((run / "results.csv").read_text().splitlines()) == 5


def test_ctrl_c_in_a_terminal_stops_workers_and_main_cleanly(tiny_data, tmp_path):
    """The whole process group gets SIGINT: the DataLoader workers ignore it and the main process stops cleanly."""
    process = start_training_and_wait_for_a_checkpoint(tiny_data, tmp_path / "run", "--workers", "2")
    time.sleep(1.0)  # into the next epoch, workers running
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.rstrip().endswith("interrupted") and "Traceback" not in stderr and "unexpectedly" not in stderr
    # Workers are forked with the main process's handler: without their own (ignore) they would announce it too.
    assert (stdout + stderr).count("SIGINT: stopping after this step") == 1, stdout + stderr


def test_second_signal_stops_at_once(tiny_data, tmp_path):
    process = start_training_and_wait_for_a_checkpoint(tiny_data, tmp_path / "run")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.rstrip().endswith("terminated")
    assert torch.load(tmp_path / "run" / "last_checkpoint.pth", weights_only=True)["epoch"] >= 1


def test_corrupt_resume_checkpoint_points_to_the_previous_one(tiny_data, tmp_path):
    run = tmp_path / "run"
    Trainer(parse("--data-root", str(tiny_data), "--epochs", "2", "--save-dir", str(run), *TINY)).fit()
    (run / "last_checkpoint.pth").write_bytes(b"\x00" * 100)
    result = run_script("train_daub.py", "--resume", run / "last_checkpoint.pth")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not a readable checkpoint" in result.stderr and "last_checkpoint.prev.pth" in result.stderr
    result = run_script("train_daub.py", "--resume", run / "last_checkpoint.prev.pth", "--epochs", "2")
    assert result.returncode == 0, result.stderr


def test_same_seed_gives_identical_weights(tiny_data, tmp_path):
    for name in ("a", "b"):
        Trainer(parse("--data-root", str(tiny_data), "--epochs", "1", "--save-dir", str(tmp_path / name),
                      "--augment", *TINY)).fit()
    assert_same_state(weights(tmp_path / "a" / "last_epoch_weights.pth"),
                      weights(tmp_path / "b" / "last_epoch_weights.pth"))


def test_ddp_on_cpu_with_two_processes(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    result = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_daub.py",
                        "--data-root", tiny_data, "--epochs", "1", "--save-dir", run, *TINY, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((run / "results.csv").read_text().splitlines()) == 2
    assert len(list((run / "tensorboard").iterdir())) == 1  # rank 0 alone logs
    args = json.loads((run / "args.json").read_text())
    assert args["batch_size"] == 2
    from nets import Network
    Network(1, 5, "nano", lstm_hidden=8).load_state_dict(weights(run / "last_epoch_weights.pth"), strict=True)


def test_ddp_freeze_training_crosses_the_switch(tiny_data, tmp_path):
    """Under DDP the backbone is frozen after the wrapper is built, so unfreezing it later trains it on every rank."""
    run = tmp_path / "ddp"
    result = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_daub.py",
                        "--data-root", tiny_data, "--epochs", "2", "--save-dir", run, *TINY, "--eval-period", "0",
                        "--freeze-epochs", "1", "--freeze-batch-size", "4", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backbone frozen for 1 epoch at batch 4" in result.stdout
    assert "epoch 2: backbone unfrozen; batch 2" in result.stdout
    assert len((run / "results.csv").read_text().splitlines()) == 3


def test_sync_bn_without_cuda_is_refused_in_one_line(tiny_data, tmp_path):
    result = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train_daub.py",
                        "--data-root", tiny_data, "--epochs", "1", "--save-dir", tmp_path / "s", *TINY, "--sync-bn",
                        timeout=300)
    assert result.returncode != 0
    # Each worker prints one line and no traceback; the rest of stderr is torchrun's own warnings and report.
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 2, result.stderr
    assert all(line.startswith("error: --sync-bn: SyncBatchNorm needs CUDA devices") for line in error_lines)
    assert "trainer.py" not in result.stderr


def test_bf16_autocast_on_cpu(tiny_data, tmp_path):
    best = Trainer(parse("--data-root", str(tiny_data), "--epochs", "1", "--save-dir", str(tmp_path / "r"), *TINY,
                         "--amp", "bf16")).fit()
    assert best.epoch == 1
    state = weights(tmp_path / "r" / "last_epoch_weights.pth")
    assert all(value.dtype in (torch.float32, torch.int64) for value in state.values())  # saved in full precision
    assert all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def test_l1_box_term_joins_the_loss_for_the_last_epochs(tiny_data, tmp_path, capsys):
    trainer = Trainer(parse("--data-root", str(tiny_data), "--epochs", "3", "--save-dir", str(tmp_path / "r"), *TINY,
                            "--eval-period", "0", "--l1-loss-epochs", "1"))
    trainer.fit()
    assert trainer.loss_fn.use_l1
    l1_lines = [line for line in capsys.readouterr().out.splitlines() if "L1" in line]
    assert l1_lines == ["epoch 3: L1 box term added to the loss"]
    args = json.loads((tmp_path / "r" / "args.json").read_text())
    assert args["l1_loss_epochs"] == 1


def test_cli_help_and_bad_arguments(tiny_data):
    result = run_script("train_daub.py", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--data-root", "--train-ann", "--val-ann", "--train-txt", "--input-size", "--num-frame", "--phi",
                 "--epochs", "--batch-size", "--lr", "--min-lr-ratio", "--optimizer", "--epoch-fraction",
                 "--workers", "--device", "--amp", "--channels-last", "--pretrained", "--resume", "--save-dir",
                 "--save-period", "--eval-period", "--seed", "--augment"):
        assert flag in text
    assert "(default: 512)" in text and "(default: 2023)" in text and "(default: 100)" in text
    for argv, message in ((["--input-size", "100"], "--input-size"), (["--num-frame", "1"], "--num-frame 1"),
                          (["--device", "cuda"], "CUDA is not available"), (["--amp", "fp16", "--device", "cpu"],
                                                                            "fp16 needs a CUDA device")):
        result = run_script("train_daub.py", "--data-root", tiny_data, *argv)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, argv
    result = run_script("train_irdst.py", "--help")
    assert result.returncode == 0 and "IRDST" in result.stdout
