"""The command line (helpers/__main__.py): one flag per settings field, and the commands end to end."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.__main__ import build_parser, main
from helpers.core import settings as config
from helpers.core.settings import apply_flags as _apply
from helpers.data.io import load_mask
from tests import POSITIVES, REPORT
from tests.test_structure import ROOT

EXPOSED = [("pretrain", config.PretrainConfig), ("finetune", config.FinetuneConfig),
           ("ablate", config.FinetuneConfig), ("ablate", config.AblationConfig)]


def _commands():
    parser = build_parser()
    return next(a for a in parser._actions if a.choices and "pretrain" in a.choices).choices


@pytest.mark.parametrize("command,cls", EXPOSED, ids=[f"{c}-{k.__name__}" for c, k in EXPOSED])
def test_every_setting_has_a_flag(command, cls):
    flags = _commands()[command]._option_string_actions
    missing = [f.name for f in dataclasses.fields(cls) if "--" + f.name.replace("_", "-") not in flags]
    assert missing == [], f"python -m helpers {command} has no flag for {missing}"


@pytest.mark.parametrize("cls", [config.DemoDataConfig, config.SplitConfig, config.PretrainConfig,
                                 config.FinetuneConfig, config.AblationConfig])
def test_every_setting_has_help(cls):
    assert [name for name, text in config.setting_help(cls).items() if not text.strip()] == [], \
        "declare each field with config.setting(default, help)"


def test_flags_parse_by_type_and_leave_the_rest_to_the_preset():
    args = build_parser().parse_args([
        "ablate", "--fusion", "concat", "--epochs", "3", "--lr", "0.01", "--no-augment",
        "--pretrained-encoder", "none", "--num-workers", "2", "--seeds", "0", "1",
        "--negative-rates", "0.25", "--text-modes", "--no-with-init", "--progress"])
    base = config.preset("smoke")
    finetune = _apply(base.finetune, args, "finetune")
    assert (finetune.fusion, finetune.epochs, finetune.lr, finetune.augment) == ("concat", 3, 0.01, False)
    assert finetune.pretrained_encoder is None and finetune.num_workers == 2
    assert finetune.image_size == base.finetune.image_size  # not given: the preset's
    ablation = _apply(base.ablation, args, "ablation")
    assert (ablation.seeds, ablation.negative_rates, ablation.text_modes) == ((0, 1), (0.25,), ())
    assert ablation.with_init is False and ablation.bootstrap == base.ablation.bootstrap
    assert args.progress is True


def test_help_shows_the_field_help_and_each_presets_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "share of training items given another case's text" in out
    assert "default real 256, demo 96, smoke 64" in out


# Flags of the other tools the texts show: pip's, torchrun's, git's.
OTHER_FLAGS = {"--no-deps", "--quiet", "--nproc_per_node", "--nnodes", "--rdzv_backend", "--rdzv_endpoint",
               "--ff-only"}
FLAG = r"(?<![\w-])--[a-z][a-z0-9_-]*"


def _command_spans(text: str) -> list[str]:
    """The code in a Markdown text: each line of a fenced block (continued lines joined) and each
    inline `span` outside the blocks."""
    spans, prose = [], []
    for i, part in enumerate(re.split(r"^```.*$", text, flags=re.MULTILINE)):
        if i % 2:
            spans += part.replace("\\\n", " ").splitlines()
        else:
            prose.append(part)
    return spans + re.findall(r"`([^`\n]+)`", "\n".join(prose))


def test_the_commands_and_flags_the_texts_use_exist():
    """Every `python -m helpers <command>` in the README, data/README.md and docs/ names a command,
    the flags that follow it are that command's, and every other flag there or in the Makefile's
    studies is some command's."""
    from tests.test_structure import texts

    commands = _commands()
    known = {s for sub in commands.values() for s in sub._option_string_actions if s.startswith("--")}
    used, wrong = set(), []
    for path in texts():
        text = path.read_text()
        used |= set(re.findall(FLAG, text))
        for span in _command_spans(text):
            for match in re.finditer(r"-m helpers(?: ([a-z][\w-]*))?", span):
                name, where = match.group(1), path.relative_to(ROOT)
                if name is None:  # `python -m helpers --help`, `python -m helpers <command>`
                    continue
                if name not in commands:
                    wrong.append(f"{where}: {span!r} names no command")
                    continue
                flags = set(re.findall(FLAG, span[match.end():].split(" #")[0]))
                wrong += [f"{where}: {name} has no {f}" for f in flags
                          if f not in commands[name]._option_string_actions]
    makefile = (ROOT / "Makefile").read_text()
    used |= set(re.findall(FLAG, makefile.split("STUDY =", 1)[1]))
    assert wrong == []
    assert used - known - OTHER_FLAGS == set()


def test_override_names_unknown_settings():
    with pytest.raises(ValueError, match="has no setting fusionx; its settings: image_size"):
        config.override(config.FinetuneConfig(), {"fusionx": "concat"})
    cfg = config.override(config.FinetuneConfig(), {"pretrained_encoder": None}, epochs=None, lr=0.5)
    assert (cfg.lr, cfg.epochs, cfg.pretrained_encoder) == (0.5, config.FinetuneConfig().epochs, None)


def test_cli_predict_per_sentence_writes_overlay_masks_and_json(checkpoint, catalog, tmp_path, capsys):
    image = catalog.cases["image_path"].iloc[0]
    out = tmp_path / "o" / "report.png"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text", REPORT,
                 "--out", str(out), "--per-sentence", "--json"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout holds the JSON alone
    rows = [r for r in payload["sentences"] if r["index"]]
    assert [r["text"] for r in rows] == POSITIVES and payload["describes_finding"]
    size = Image.open(image).size
    for row in rows:
        assert Image.open(row["mask_file"]).size == size
        assert set(np.unique(load_mask(row["mask_file"]))) <= {0, 1}
    assert out.is_file() and "dropped: negated" in captured.err
    table = tmp_path / "t.json"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text", REPORT,
                 "--out", str(out), "--per-sentence", "--json", str(table)]) == 0
    assert json.loads(table.read_text())["sentences"] == payload["sentences"]
    assert "1. Nodule in the right upper lobe." in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text", REPORT,
                 "--out", str(out), "--json"]) == 1
    assert "add --per-sentence" in capsys.readouterr().err


def test_cli_evaluate_per_sentence(checkpoint, demo_root, tmp_path, capsys):
    out = tmp_path / "eval" / "test.csv"
    assert main(["evaluate", "--data", str(demo_root), "--mode", "smoke", "--checkpoint", str(checkpoint),
                 "--split", "train", "--out-dir", str(tmp_path / "run"), "--per-sentence", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"): printed.rindex("}") + 1])["per_sentence"]
    table = pd.read_csv(out.with_suffix(".sentences.csv"))
    assert summary["n_sentences"] == len(table) > 0 and set(table["n_lesions"]) == {3}
    assert summary["on_own_share"] == pytest.approx(table["on_own"].mean())
    assert summary["on_own_share_lo"] <= summary["on_own_share"] <= summary["on_own_share_hi"]


def test_cli_predict_writes_overlay_and_mask(checkpoint, catalog, tmp_path, capsys):
    image = catalog.cases["image_path"].iloc[0]
    out, mask_out = tmp_path / "o" / "overlay.png", tmp_path / "m" / "mask.png"
    assert main(["predict", "--checkpoint", str(checkpoint), "--image", image, "--text",
                 "Opacity at the left lung base.", "--out", str(out), "--mask-out", str(mask_out)]) == 0
    size = Image.open(image).size
    assert Image.open(out).size == size and Image.open(mask_out).size == size
    assert set(np.unique(load_mask(mask_out))) <= {0, 1}
    assert "tiny offline CLIP" in capsys.readouterr().out


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pth"), "--image", "x.png",
                 "--text", "t", "--out", str(tmp_path / "o.png")]) == 1
    assert "none.pth" in capsys.readouterr().err


def test_cli_prepare_prints_summary_and_split(demo_root, tmp_path, capsys):
    assert main(["prepare", "--data", str(demo_root), "--mode", "smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"labeled_cases": 12' in out and (tmp_path / "splits.csv").exists()
