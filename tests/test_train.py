"""The trainer, evaluation and prediction CLIs, data layouts and distributed training."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import CATS_AND_DOGS
from fastconv import data as fdata
from fastconv import checkpoint, evaluate, predict, train
from fastconv.data import SyntheticStripes

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--image-size", "48", "--batch-size", "16", "--workers", "0", "--model", "convnet4"]


def _write_images(folder: Path, names, size=40, corrupt=()):
    folder.mkdir(parents=True, exist_ok=True)
    shapes = SyntheticStripes(len(names), size, seed=3)
    for i, name in enumerate(names):
        label = 0 if name.startswith("cat") else 1
        image, _ = shapes[2 * (i // 2) + label]
        mode = "L" if i % 5 == 4 else "RGB"  # some greyscale files, as in the real set
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype("uint8")).convert(mode).save(folder / name)
    for name in corrupt:
        (folder / name).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


@pytest.fixture
def flat_folder(tmp_path):
    names = [f"{c}.{i}.jpg" for i in range(12) for c in ("cat", "dog")]
    _write_images(tmp_path / "flat", names, corrupt=["cat.999.jpg"])
    return tmp_path / "flat"


def test_synthetic_demo_run_writes_everything(tmp_path):
    out = tmp_path / "run"
    result = train.main(["--epochs", "2", "--limit", "192", "--out", str(out), *QUICK])
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and result["history"] == history
    assert history[-1]["val_acc"] >= 0.9  # the demo set is learnable in moments: the pipeline works
    assert set(history[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"}
    for name in ("curves.png", "best.pt", "last.pt"):
        assert (out / name).stat().st_size > 0
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["meta"]["model"] == "convnet4" and ckpt["meta"]["image_size"] == 48


def test_resume_continues_exactly(tmp_path):
    straight = train.main(["--epochs", "2", "--limit", "32", "--out", str(tmp_path / "straight"), *QUICK])
    out = tmp_path / "run"
    train.main(["--epochs", "1", "--limit", "32", "--out", str(out), *QUICK])
    resumed = train.main(["--epochs", "2", "--limit", "32", "--out", str(out), "--resume", str(out / "last.pt"), *QUICK])
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    for a, b in zip(straight["history"], resumed["history"]):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    weights = [torch.load(d / "last.pt", weights_only=False)["state_dict"] for d in (tmp_path / "straight", out)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


RECIPES = {
    "default": [],
    # BatchNorm, a one-cycle schedule and label smoothing: the schedule must resume where it was.
    "bn-onecycle-smoothing": ["--model", "convnet4_bn", "--schedule", "onecycle", "--label-smoothing", "0.1"],
    "cosine-warmup": ["--schedule", "cosine", "--warmup-epochs", "0.5", "--optimizer", "sgd"],
}


class _Requested:
    requested = True  # a stop request (Ctrl-C) already pending: run_epoch stops after one batch


@pytest.mark.parametrize("where", ["before-epoch-2", "in-epoch-2"])
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_resume_after_an_interruption_continues_exactly(tmp_path, monkeypatch, recipe, where):
    """A run stopped (as by Ctrl-C) as epoch 2 begins, then resumed, matches one that ran
    straight through: weights, losses and the learning-rate schedule. Stopped after epoch 2's
    first batch, the resumed run keeps that batch's weights (so losses differ) but runs epoch 2
    again in full on the same schedule."""
    extra = ["--epochs", "2", "--limit", "32", *QUICK, *RECIPES[recipe]]
    straight = train.main([*extra, "--out", str(tmp_path / "straight")])
    real_run_epoch, training_calls = train.run_epoch, []

    def stopped_in_epoch_two(model, loader, device, ranks, optimizer=None, *args, **kwargs):
        if optimizer is not None:
            training_calls.append(1)
            if len(training_calls) == 2:
                if where == "before-epoch-2":
                    return 0.0, 0.0, False  # the stop request came before the first batch
                desc, amp, _, *rest = args
                return real_run_epoch(model, loader, device, ranks, optimizer, desc, amp, _Requested(), *rest)
        return real_run_epoch(model, loader, device, ranks, optimizer, *args, **kwargs)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train, "run_epoch", stopped_in_epoch_two)
        stopped = train.main([*extra, "--out", str(out)])
    assert [h["epoch"] for h in stopped["history"]] == [1]
    resumed = train.main([*extra, "--out", str(out), "--resume", str(out / "last.pt")])
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert [h["lr"] for h in straight["history"]] == [h["lr"] for h in resumed["history"]]
    if where == "in-epoch-2":
        return
    for a, b in zip(straight["history"], resumed["history"]):
        assert (a["train_loss"], a["val_loss"]) == (b["train_loss"], b["val_loss"])
    weights = [torch.load(d / "last.pt", weights_only=False)["state_dict"] for d in (tmp_path / "straight", out)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_caching_photos_leaves_the_random_state_alone(flat_folder):
    samples = [s for s in fdata.discover(flat_folder, val_fraction=0.0).train if s[0].name != "cat.999.jpg"]
    torch.manual_seed(5)
    fdata.DecodedImages(samples, 24, augment=True, workers=0, progress=False)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))


def test_learning_rate_schedules(tmp_path):
    """Cosine warms up linearly, then decays to 0 at the last batch; one-cycle ends near 0."""
    args = train.parse_args(["--epochs", "4", "--lr", "0.1", "--schedule", "cosine", "--warmup-epochs", "1"])
    model = torch.nn.Linear(2, 1)
    optimizer = train.make_optimizer(args, model.parameters())
    schedule = train.make_schedule(args, optimizer, steps_per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.1) and rates[-1] < 0.001
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert train.make_schedule(train.parse_args([]), optimizer, 10) is None


def test_label_smoothing_moves_the_targets():
    logits, labels = torch.tensor([[2.0], [-1.0]]), torch.tensor([1, 0])
    loss, correct = train.loss_and_correct(logits, labels, smoothing=0.2)
    # A one-logit head z is the two-class head (0, z): softmax([0, z])[1] = sigmoid(z), so torch's
    # smoothed cross-entropy on (0, z) is the smoothed binary loss.
    two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)
    expected = torch.nn.functional.cross_entropy(two_class, labels, reduction="sum", label_smoothing=0.2)
    assert loss.item() == pytest.approx(expected.item()) and correct.item() == 2
    two = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    loss, _ = train.loss_and_correct(two, labels, smoothing=0.2)
    expected = torch.nn.functional.cross_entropy(two, labels, reduction="sum", label_smoothing=0.2)
    assert loss.item() == pytest.approx(expected.item())
    with pytest.raises(SystemExit):
        train.parse_args(["--label-smoothing", "1.0"])


@pytest.mark.parametrize("argv", [["--warmup-epochs", "1"],  # only with cosine
                                  ["--schedule", "cosine", "--epochs", "3", "--warmup-epochs", "3"],
                                  ["--schedule", "cosine", "--warmup-epochs", "-1"]])
def test_bad_warmup_is_refused(argv):
    with pytest.raises(SystemExit):
        train.parse_args(argv)


def test_onecycle_leaves_rmsprop_without_momentum():
    args = train.parse_args(["--optimizer", "rmsprop", "--schedule", "onecycle", "--epochs", "2"])
    optimizer = train.make_optimizer(args, torch.nn.Linear(2, 1).parameters())
    train.make_schedule(args, optimizer, steps_per_epoch=5)
    assert optimizer.param_groups[0]["momentum"] == 0


def test_resume_refuses_a_changed_schedule(tmp_path):
    extra = ["--limit", "32", *QUICK, "--schedule", "onecycle"]
    out = tmp_path / "run"
    train.main(["--epochs", "1", "--out", str(out), *extra])
    with pytest.raises(ValueError, match="--epochs 1 -> 2"):
        train.main(["--epochs", "2", "--out", str(out), "--resume", str(out / "last.pt"), *extra])


def test_ctrl_c_ends_the_epoch_and_saves(tmp_path):
    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "fastconv.train", "--epochs", "50", "--limit", "256", "--out", str(out), *QUICK]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:  # interrupt once the first epoch has been reported
        if line.startswith("epoch 1/50:"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    assert "interrupted" in rest and "saved" in rest
    # The signal came after epoch 1 was reported: epoch 2, cut short if it started, is not counted.
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1


def test_layouts_are_discovered(tmp_path, flat_folder):
    for split in ("train", "validation"):
        for cls in ("cats", "dogs"):
            _write_images(tmp_path / "split" / split / cls, [f"{cls[:-1]}.{i}.png" for i in range(3)])
    split = fdata.discover(tmp_path / "split")
    assert split.layout == "split" and split.classes == ["cats", "dogs"] and len(split.train) == 6
    flat = fdata.discover(flat_folder, val_fraction=0.25)
    assert flat.layout == "flat" and flat.classes == ["cats", "dogs"]
    assert len(flat.train) + len(flat.val) == 25 and len(flat.val) == 6
    again = fdata.discover(flat_folder, val_fraction=0.25)
    assert again.val == flat.val  # the split is seeded
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no labelled images"):
        fdata.discover(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        fdata.discover(tmp_path / "missing")


@pytest.mark.parametrize("augment", [False, True])
def test_decoded_images_match_the_files(flat_folder, augment):
    """The in-memory set gives the same items as decoding every file each time, augmentation
    included under the same random state."""
    samples = [s for s in fdata.discover(flat_folder, val_fraction=0.0).train if s[0].name != "cat.999.jpg"]
    files = fdata.ImageFiles(samples, fdata.train_transform(36, augment))
    decoded = fdata.DecodedImages(samples, 36, augment, workers=0)
    assert len(decoded) == len(files) == 24
    for i in (0, 5, 23):
        torch.manual_seed(i)
        a, label_a = files[i]
        torch.manual_seed(i)
        b, label_b = decoded[i]
        assert label_a == label_b and a.shape == (3, 36, 36)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unreadable_images_are_skipped_with_one_warning(flat_folder):
    samples = fdata.discover(flat_folder, val_fraction=0.0).train
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        kept = fdata.drop_unreadable(samples)
    assert len(kept) == len(samples) - 1


def test_train_evaluate_predict_on_a_folder(tmp_path, flat_folder, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="unreadable"):
        train.main(["--data", str(flat_folder), "--epochs", "1", "--out", str(out), "--no-augment", *QUICK])
    capsys.readouterr()
    result = evaluate.main(["--checkpoint", str(out / "best.pt"), "--data", str(flat_folder), "--json", "--workers", "0"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["n"] == 24 and printed == result
    confusion = result["confusion_matrix"]
    assert sum(map(sum, confusion)) == 24
    assert result["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(len(confusion))) / 24)
    images = [str(flat_folder / "cat.0.jpg"), str(flat_folder / "dog.1.jpg")]
    preds = predict.main(["--checkpoint", str(out / "best.pt"), *images])
    # Each prediction is the model's most probable class for that image, with that probability.
    model, meta, _ = checkpoint.load(str(out / "best.pt"))
    batch = torch.stack([fdata.eval_transform(meta["image_size"])(fdata.load_rgb(p)) for p in images])
    with torch.no_grad():
        probs = checkpoint.predict_proba(model, batch)
    for (path, name, prob), row, image in zip(preds, probs, images):
        assert path == image and name == meta["classes"][row.argmax().item()]
        assert prob == pytest.approx(row.max().item())


def test_pretrained_and_flip_options(tmp_path, flat_folder, monkeypatch, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="unreadable"):
        train.main(["--data", str(flat_folder), "--epochs", "1", "--out", str(out), "--no-augment", *QUICK])
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "weights")
    checkpoint.export_weights(out / "best.pt", tmp_path / "weights" / checkpoint.PRETRAINED["cats-vs-dogs"],
                              half=False)
    common = ["--data", str(flat_folder), "--json", "--workers", "0"]
    plain = evaluate.main(["--checkpoint", str(out / "best.pt"), *common])
    shipped = evaluate.main(["--pretrained", "cats-vs-dogs", *common])
    assert shipped == plain
    flipped = evaluate.main(["--pretrained", "cats-vs-dogs", "--flip", *common])
    assert flipped["flip"] and flipped["n"] == plain["n"]
    with pytest.raises(SystemExit):  # one model source, not two
        evaluate.main(["--pretrained", "cats-vs-dogs", "--checkpoint", str(out / "best.pt"), *common])
    image = str(flat_folder / "cat.0.jpg")
    (_, _, p_plain), = predict.main(["--pretrained", "cats-vs-dogs", image])
    (_, name, p_flip), = predict.main(["--pretrained", "cats-vs-dogs", "--flip", image])
    model, meta, _ = checkpoint.load(str(out / "best.pt"))
    x = fdata.eval_transform(meta["image_size"])(fdata.load_rgb(image))[None]
    with torch.no_grad():
        expected = (checkpoint.predict_proba(model, x) + checkpoint.predict_proba(model, x.flip(3))) / 2
    assert name == meta["classes"][expected.argmax().item()] and p_flip == pytest.approx(expected.max().item())
    assert p_plain == pytest.approx(checkpoint.predict_proba(model, x).max().item())


def test_distributed_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "fastconv.train", "--epochs", "1", "--limit", "32", "--out", str(out), *QUICK]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and (out / "last.pt").exists()
    assert proc.stdout.count("epoch 1/1:") == 1  # only rank 0 reports


@pytest.mark.data
@pytest.mark.skipif(not CATS_AND_DOGS.is_dir(), reason="cats-vs-dogs photos not present")
def test_real_photos_loss_falls_and_accuracy_beats_chance(tmp_path):
    # 160 photos at 48x48 for 15 short epochs: enough for the network to leave the
    # predict-the-majority plateau and start fitting, in about 25 s on 2 cores.
    result = train.main(["--data", str(CATS_AND_DOGS), "--limit", "160", "--epochs", "15", "--image-size", "48",
                         "--batch-size", "16", "--workers", "0", "--no-augment", "--model", "convnet3",
                         "--out", str(tmp_path / "real")])
    history = result["history"]
    assert min(h["train_loss"] for h in history[-3:]) < history[0]["train_loss"] - 0.02
    # Majority-class guessing scores at most ~0.58 on this sample; chance is 0.5.
    assert max(h["train_acc"] for h in history[-3:]) > 0.62
