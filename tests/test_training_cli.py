"""``caex train`` end to end on tiny data, and its error handling."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from caex.cli.main import main
from caex.model import CAE
from caex.training import TrainConfig


@pytest.fixture
def npz_data(tmp_path):
    """A MedMNIST-style .npz of 16x16 grayscale images in 2 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    images = rng.integers(0, 256, size=(24, 16, 16), dtype=np.uint8)
    labels = (np.arange(24) % 2).astype(np.int64)
    np.savez(path, train_images=images, train_labels=labels, test_images=images[:6], test_labels=labels[:6])
    return path


def test_cli_tiny_run_writes_bundle_log_and_samples(tmp_path, npz_data, capsys) -> None:
    run = tmp_path / "run"
    code = main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "4",
                 "--batch-size", "2", "--sample-every", "2", "--ckpt-every", "2", "--device", "cpu"])
    assert code == 0
    assert "4 iterations in" in capsys.readouterr().out  # the result on stdout, as every command's
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["iters"], summary["iters_asked"], summary["processes"]) == (4, 4, 1)
    for name in ("config.json", "model.safetensors", "codes.safetensors", "train_config.json", "log.jsonl",
                 "log.csv", "checkpoint.safetensors", "samples/iter_0000004.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "train_config.json").read_text())["batch_size"] == 2
    assert CAE.load(run).train_codes.shape == (24, 8)
    assert CAE.load(run).config.class_pool == "avg"
    # Resume to more iterations continues the same run.
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "6",
                 "--batch-size", "2", "--resume", "--device", "cpu"]) == 0
    assert json.loads((run / "summary.json").read_text())["iters"] == 6


def test_a_time_limit_stop_says_so_and_how_to_continue(tmp_path, npz_data, capsys) -> None:
    """It read exactly like a finished run ("22 iterations in 3.2 s ..."), so `train && manifold` went on with a
    half-trained CAE unawares."""
    run = tmp_path / "run"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "2000", "--batch-size",
                 "2", "--time-limit", "0.000001", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("caex train: stopped by --time-limit after 1 of 2,000 iterations "
                                              "(rerun with --resume to continue): 1 iteration in")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["iters"], summary["iters_asked"]) == (1, 2000)


@pytest.mark.parametrize("extra, message", [
    (["--iters", "0"], "argument --iters: must be at least 1, got 0"),
    (["--dc", "classifier"], "dc='classifier' (--dc classifier) needs the target classifier"),
    (["--labels", "predicted"], "labels='predicted' (--labels predicted) needs the target classifier"),
    (["--critic-noise", "1.5"], "argument --critic-noise: must be in [0, 1), got 1.5"),
    (["--critic-noise", "0.1"], "it needs dc='classifier' (--dc classifier, with --classifier CLF"),
    (["--max-shift", "-1"], "argument --max-shift: must be at least 0, got -1"),
    (["--lr", "inf"], "argument --lr: must be a positive finite number, got inf"),
    (["--arch", "resnet18"], "--arch resnet18 describes the weights file given as --classifier, and none is given"),
    (["--model", "pad_type=foo"], "pad_type='foo': must be one of reflect, zeros, replicate"),
    (["--model", "colour=red"], "--model 'colour=red': expected KEY=VALUE with KEY one of code_dim, width"),
    (["--model", "n_res"], "--model 'n_res': expected KEY=VALUE"),
    (["--model", "image_size=32"], "--model 'image_size=32': expected KEY=VALUE"),  # the data decides it
    (["--model", "n_res=two"], "--model 'n_res=two': n_res must be an integer"),
    (["--model", "class_pool=median"], "class_pool='median': must be 'avg' or 'max'"),
    (["--loss", "gan=1"], "--loss 'gan=1': expected KEY=VALUE with KEY one of recon_image, recon_class"),
    (["--loss", "adversarial=strong"], "--loss 'adversarial=strong': adversarial must be a number"),
    (["--loss", "cycle=-1"], "--loss cycle=-1: must be a finite number >= 0"),
    (["--ema", "1"], "argument --ema: must be in [0, 1) (0 keeps no average), got 1"),
])
def test_cli_errors_are_one_line(tmp_path, npz_data, capsys, extra, message) -> None:
    code = main(["train", str(npz_data), "--out", str(tmp_path / "run"), "--preset", "tiny", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("caex train: error:") and message in err and "\n" not in err


def test_cli_refuses_non_empty_run(tmp_path, npz_data, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    assert main(["train", str(npz_data), "--out", str(tmp_path / "run"), "--preset", "tiny"]) == 2
    assert "folder is not empty but holds no checkpoint to continue" in capsys.readouterr().err


def test_cli_missing_data(tmp_path, capsys) -> None:
    assert main(["train", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("caex train: error:")


def test_a_given_classifier_becomes_the_class_critic_by_default(tmp_path, npz_data) -> None:
    from caex.classifier import build_classifier_network, save_bundle

    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16)
    save_bundle(net, tmp_path / "clf", class_names=["0", "1"], image_size=16, test_accuracy=0.5,
                data_spec=str(npz_data))
    run = tmp_path / "run"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "2",
                 "--classifier", str(tmp_path / "clf"), "--critic-noise", "0.1", "--device", "cpu"]) == 0
    recorded = json.loads((run / "train_config.json").read_text())
    assert (recorded["dc"], recorded["critic_noise"]) == ("classifier", 0.1)
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "2", "--force",
                 "--classifier", str(tmp_path / "clf"), "--dc", "discriminator", "--device", "cpu"]) == 0
    assert json.loads((run / "train_config.json").read_text())["dc"] == "discriminator"


def test_a_torchscript_file_alone_or_weights_with_arch_can_be_the_critic(tmp_path, npz_data) -> None:
    """A TorchScript file with no classifier.json beside it was refused ("cannot tell the input shape"), and as a
    critic crashed (ScriptModules refuse requires_grad_); train had no --arch for a bare weights file."""
    from caex.classifier import build_classifier_network, save_bundle

    save_bundle(build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16), tmp_path / "clf",
                class_names=["0", "1"], image_size=16)
    (tmp_path / "model.pt").write_bytes((tmp_path / "clf" / "classifier.torchscript.pt").read_bytes())
    (tmp_path / "w.safetensors").write_bytes((tmp_path / "clf" / "classifier.safetensors").read_bytes())
    for index, classifier in enumerate((["model.pt"], ["w.safetensors", "--arch", "smallcnn"])):
        run = tmp_path / f"run{index}"
        assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "1", "--device", "cpu",
                     "--classifier", str(tmp_path / classifier[0]), *classifier[1:]]) == 0
        assert json.loads((run / "train_config.json").read_text())["dc"] == "classifier"


def test_train_help_states_the_default_of_every_training_setting(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--iters", "--batch-size", "--lr", "--sample-every", "--ckpt-every", "--threads"):
        described = text.rsplit(f"{option} {option.lstrip('-').upper().replace('-', '_')} ", 1)[1]
        assert "default" in described.split(" --")[0], option


def test_cli_augmentation_averaging_and_precision_reach_the_training_config(tmp_path, npz_data) -> None:
    run = tmp_path / "run"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "2", "--hflip",
                 "--max-shift", "3", "--ema", "0.5", "--cpu-bf16", "--layout", "contiguous", "--device", "cpu"]) == 0
    recorded = json.loads((run / "train_config.json").read_text())
    assert (recorded["hflip"], recorded["max_shift"], recorded["ema"], recorded["cpu_bf16"], recorded["layout"]) == (
        True, 3, 0.5, True, "contiguous")


def test_cli_no_amp_trains_in_fp32_and_a_resume_must_agree(tmp_path, npz_data, capsys) -> None:
    run = tmp_path / "run"
    common = [str(npz_data), "--out", str(run), "--preset", "tiny", "--device", "cpu"]
    assert main(["train", *common, "--iters", "2", "--no-amp"]) == 0
    assert json.loads((run / "train_config.json").read_text())["amp"] is False
    capsys.readouterr()
    assert main(["train", *common, "--iters", "4", "--resume", "--amp"]) != 0
    assert "trained with amp=False (now amp=True)" in capsys.readouterr().err


def test_cli_loss_overrides_change_only_the_named_weights(tmp_path, npz_data) -> None:
    run = tmp_path / "run"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "small", "--iters", "1",
                 "--model", "width=2", "--model", "mlp_dim=4", "--model", "disc_width=2",
                 "--loss", "adversarial=0.25", "--loss", "recon-class=3", "--device", "cpu"]) == 0
    recorded = json.loads((run / "train_config.json").read_text())["weights"]
    expected = {**TrainConfig.preset("small").weights.as_dict(), "adversarial": 0.25, "recon_class": 3.0}
    assert recorded == expected and recorded["recon_pyramid"] == 20.0  # the preset's other weights stay


def test_cli_model_overrides_reach_the_saved_network(tmp_path, npz_data) -> None:
    run = tmp_path / "run"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "2", "--batch-size", "2",
                 "--model", "class_pool=max", "--model", "n-res=2", "--model", "disc_dropout=0.1",
                 "--device", "cpu"]) == 0
    config = CAE.load(run).config
    assert (config.class_pool, config.n_res, config.disc_dropout) == ("max", 2, 0.1)


@pytest.mark.parametrize("extra, expected", [
    (["--size", "32"], "takes 16px images but data"),  # trained silently against a critic of the wrong size
    (["--channels", "3"], "takes 1-channel images but data"),  # failed mid-run as an unexpected error
])
def test_a_classifier_that_does_not_fit_the_data_is_refused_before_training(tmp_path, npz_data, capsys, extra,
                                                                           expected) -> None:
    from caex.classifier import build_classifier_network, save_bundle

    net = build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16)
    save_bundle(net, tmp_path / "clf", class_names=["0", "1"], image_size=16)
    code = main(["train", str(npz_data), "--out", str(tmp_path / "run"), "--preset", "tiny", "--iters", "2",
                 "--classifier", str(tmp_path / "clf"), "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("caex train: error:") and expected in err[-1]
    assert not (tmp_path / "run").exists()


def test_cli_resume_continues_with_the_runs_own_settings(tmp_path, npz_data, capsys) -> None:
    run = tmp_path / "run"
    first = ["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--batch-size", "2", "--device", "cpu"]
    assert main([*first, "--iters", "4", "--loss", "adversarial=0.5", "--max-shift", "1", "--seed", "3"]) == 0
    # No training flag repeated: the run's own settings, not the preset's, carry on.
    assert main(["train", str(npz_data), "--out", str(run), "--iters", "6", "--resume", "--device", "cpu"]) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["iters"], saved["seed"], saved["max_shift"], saved["batch_size"]) == (6, 3, 1, 2)
    assert saved["weights"]["adversarial"] == 0.5 and saved["weights"]["cycle"] == TrainConfig().weights.cycle
    assert json.loads((run / "summary.json").read_text())["iters"] == 6
    capsys.readouterr()
    # A flag that would change the run is refused, naming the setting.
    assert main(["train", str(npz_data), "--out", str(run), "--iters", "8", "--resume", "--seed", "4",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("caex train: error:") and "seed=3" in err and "seed=4" in err and "\n" not in err
    # A resume that asks for no more iterations than the run has says so instead of reporting a training.
    assert main(["train", str(npz_data), "--out", str(run), "--iters", "5", "--resume", "--device", "cpu"]) == 0
    assert "the run is already at 6 iterations, nothing was trained" in capsys.readouterr().out


def test_cli_resume_of_a_checkpoint_copied_alone_takes_its_settings_and_says_what_it_trained(
        tmp_path, npz_data, capsys) -> None:
    """Without train_config.json the run was compared with the small preset and refused ("trained with
    lr_halvings=0, ...; resume with the run's settings"), and a resume reported the run's total iterations
    as trained in this call's time."""
    import shutil

    run, copy = tmp_path / "run", tmp_path / "copy"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--batch-size", "2", "--device",
                 "cpu", "--iters", "4", "--max-shift", "1", "--seed", "3"]) == 0
    copy.mkdir()
    shutil.copy(run / "checkpoint.safetensors", copy)
    capsys.readouterr()
    assert main(["train", str(npz_data), "--out", str(copy), "--iters", "6", "--resume", "--device", "cpu"]) == 0
    assert "caex train: 2 iterations (6 in all) in" in capsys.readouterr().out
    saved = json.loads((copy / "train_config.json").read_text())
    assert (saved["iters"], saved["seed"], saved["max_shift"], saved["batch_size"]) == (6, 3, 1, 2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.safetensors").write_bytes(b"")  # its own fault named once, not wrapped in another's
    for model in ([], ["--model", "n_res=2"]):  # read for the settings, then (with train_config.json) for networks
        assert main(["train", str(npz_data), "--out", str(broken), "--resume", "--device", "cpu", *model]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"caex train: error: {broken / 'checkpoint.safetensors'}: unreadable checkpoint (")
        assert "training settings" not in err and "networks config" not in err
        shutil.copy(copy / "train_config.json", broken)


def test_cli_resume_keeps_the_runs_networks_and_refuses_other_ones(tmp_path, npz_data, capsys) -> None:
    run = tmp_path / "run"
    first = ["train", str(npz_data), "--out", str(run), "--batch-size", "2", "--device", "cpu"]
    assert main([*first, "--preset", "tiny", "--model", "n_res=2", "--iters", "2"]) == 0
    tiny = CAE.load(run).config
    # The same command again with --resume, and one without network flags, continue the tiny networks.
    assert main([*first, "--preset", "tiny", "--model", "n_res=2", "--iters", "3", "--resume"]) == 0
    assert main(["train", str(npz_data), "--out", str(run), "--iters", "4", "--resume", "--device", "cpu"]) == 0
    assert CAE.load(run).config == tiny
    capsys.readouterr()
    # Other networks are refused in one line (before, --preset and --model were silently ignored).
    assert main([*first, "--preset", "tiny", "--model", "n_res=3", "--iters", "5", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("caex train: error:") and "n_res=2 (asked for n_res=3)" in err and "\n" not in err
    # --model alone applies to the run's networks, not the small preset's (whose every difference was listed)
    assert main([*first, "--model", "n_res=3", "--iters", "5", "--resume"]) == 2
    assert "the run's networks have n_res=2 (asked for n_res=3); resume" in capsys.readouterr().err
    assert main([*first, "--model", "n_res=2", "--iters", "5", "--resume"]) == 0


def test_cli_split_seed_draws_the_split_and_a_resume_must_keep_it(tmp_path, monkeypatch, capsys) -> None:
    """Without a test split in the data, --split-seed draws it, not the training --seed (so another --seed never
    moves test images into training); the CAE records it, and a resume on another split is refused."""
    import caex.data

    rng = np.random.default_rng(0)
    path = tmp_path / "no_test.npz"
    np.savez(path, train_images=rng.integers(0, 256, size=(24, 16, 16), dtype=np.uint8),
             train_labels=(np.arange(24) % 2).astype(np.int64))
    seeds = []
    load = caex.data.load_dataset
    monkeypatch.setattr(caex.data, "load_dataset", lambda *a, **k: seeds.append(k["seed"]) or load(*a, **k))
    run = tmp_path / "run"
    tiny = ["--preset", "tiny", "--batch-size", "2", "--device", "cpu"]
    assert main(["train", str(path), "--out", str(run), "--iters", "2", "--seed", "5", "--split-seed", "3",
                 *tiny]) == 0
    assert main(["train", str(path), "--out", str(run), "--iters", "4", "--resume", "--split-seed", "3",
                 "--device", "cpu"]) == 0
    assert main(["train", str(path), "--out", str(tmp_path / "fresh"), "--iters", "1", "--seed", "5", *tiny]) == 0
    assert seeds == [3, 3, 0]
    assert json.loads((run / "config.json").read_text())["data_seed"] == 3
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(run), "--iters", "6", "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other training images" in err and "split seed 3; now" in err and "split seed 0)" in err
    assert "\n" not in err


@pytest.mark.parametrize("settings", ['{"iters": 4, "colour": "red"}', '{"weights": [1]}', '{"betas": "ab"}'])
def test_cli_resume_with_unreadable_settings_is_one_line(tmp_path, npz_data, capsys, settings: str) -> None:
    """Mistyped weights and betas ended in "unexpected error: TypeError" (replace() / '<=' not supported)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(settings)
    assert main(["train", str(npz_data), "--out", str(run), "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"caex train: error: {run / 'train_config.json'}: unreadable training settings")
    assert "\n" not in err


def test_ctrl_c_says_how_to_continue_once_there_is_a_checkpoint(tmp_path, npz_data, capsys, monkeypatch) -> None:
    """Before the first checkpoint it promised a resume that then failed with 'no checkpoint to resume from'."""
    import caex.training

    run = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(caex.training, "train_cae", interrupted)
    argv = ["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--device", "cpu"]
    assert main(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "caex train: interrupted"
    run.mkdir()  # as a run leaves it: its settings from the start, then a checkpoint
    (run / "train_config.json").write_text(json.dumps(TrainConfig.preset("tiny").to_dict()))
    (run / "checkpoint.safetensors").write_bytes(b"")
    assert main([*argv, "--resume"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "caex train: interrupted (finished checkpoints are kept; rerun with --resume to continue)")


def test_sigterm_outside_training_ends_with_one_line_and_143(tmp_path, capsys, monkeypatch) -> None:
    """evaluate, explain, manifold, report and train-classifier died silently with -15."""
    import os
    import signal

    import caex.data

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(caex.data, "save_preview", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["data", "show", "synthetic:per_class=4,size=32", "--out", str(tmp_path / "grid.png")]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == "caex data show: stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # put back for whatever runs next


def test_sigterm_stops_with_the_checkpoint_saved_and_says_how_to_continue(tmp_path, npz_data, capsys,
                                                                           monkeypatch) -> None:
    import signal

    from caex.training.trainer import BBCFETrainer

    step = BBCFETrainer.step

    def step_then_sigterm(self, iteration: int):
        terms = step(self, iteration)
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return terms

    monkeypatch.setattr(BBCFETrainer, "step", step_then_sigterm)
    run = tmp_path / "run"
    assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--device", "cpu"]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == (
        "caex train: stopped by SIGTERM after iteration 3, checkpoint saved (rerun with --resume to continue)")
    monkeypatch.setattr(BBCFETrainer, "step", step)
    assert main(["train", str(npz_data), "--out", str(run), "--resume", "--device", "cpu"]) == 0
    assert json.loads((run / "summary.json").read_text())["trained_iters"] == 17


def test_a_black_box_classifier_leaves_the_discriminator_as_critic_and_says_so(tmp_path, npz_data, capsys) -> None:
    from caex.classifier import build_classifier_network, save_bundle

    save_bundle(build_classifier_network("smallcnn", channels=1, num_classes=2, image_size=16), tmp_path / "clf",
                class_names=["0", "1"], image_size=16, onnx=True)
    run = tmp_path / "run"
    onnx = tmp_path / "clf" / "classifier.onnx"
    with pytest.warns(UserWarning, match=r"the classifier \(OnnxClassifier\) is a black box \(no gradients\), so "
                                         r"the discriminator's class head is the class critic"):
        assert main(["train", str(npz_data), "--out", str(run), "--preset", "tiny", "--iters", "1", "--device",
                     "cpu", "--classifier", str(onnx)]) == 0
    assert json.loads((run / "train_config.json").read_text())["dc"] == "discriminator"
