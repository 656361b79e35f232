"""fastconv.compare: the table and plot that compare training runs."""

import json

import pytest
from PIL import Image

from fastconv import compare


def _run(folder, val_acc, val_loss, seconds=2.0):
    folder.mkdir(parents=True)
    history = [{"epoch": i + 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": loss, "val_acc": acc,
                "seconds": seconds + i, "lr": 1e-3} for i, (acc, loss) in enumerate(zip(val_acc, val_loss))]
    (folder / "history.json").write_text(json.dumps(history))
    return folder


def test_summary_picks_the_lowest_loss_epoch_not_the_highest_accuracy(tmp_path):
    run = _run(tmp_path / "a", val_acc=[0.6, 0.8, 0.7, 0.75], val_loss=[0.7, 0.5, 0.45, 0.6])
    s = compare.summarize(compare.load_history(run))
    assert (s["best_epoch"], s["best_val_acc"]) == (3, 0.7)
    assert (s["last_val_acc"], s["max_val_acc"], s["epochs"]) == (0.75, 0.8, 4)
    assert s["median_epoch_seconds"] == 3.5


def test_cli_writes_table_plot_and_json(tmp_path, capsys):
    a = _run(tmp_path / "full", [0.6, 0.9], [0.6, 0.3])
    b = _run(tmp_path / "no_bn", [0.55, 0.7], [0.7, 0.5])
    out, js = tmp_path / "cmp.png", tmp_path / "cmp.json"
    summaries = compare.main([str(a), str(b / "history.json"), "--label", "full recipe", "--label", "no BN",
                              "--out", str(out), "--json", str(js)])
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| full recipe | 2 | 0.900 (2) | 0.900 | 0.900 |")
    assert table[3].startswith("| no BN | 2 | 0.700 (2) |")
    assert [s["run"] for s in json.loads(js.read_text())] == ["full recipe", "no BN"] == [s["run"] for s in summaries]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_labels_default_to_directory_names_and_must_match_the_runs(tmp_path, capsys):
    a = _run(tmp_path / "alpha", [0.6], [0.6])
    assert compare.main([str(a)])[0]["run"] == "alpha"
    with pytest.raises(SystemExit):
        compare.main([str(a), "--label", "x", "--label", "y"])
    assert "2 --label for 1 runs" in capsys.readouterr().err


def test_missing_or_empty_history_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.json"):
        compare.load_history(tmp_path)
    (tmp_path / "history.json").write_text("[]")
    with pytest.raises(ValueError, match="no epochs"):
        compare.load_history(tmp_path)
