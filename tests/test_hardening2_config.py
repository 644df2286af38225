"""Hardening II, settings and text files: a typo in any table or key of a preset is refused with the closest valid
name; integers past 64 bits, JSON/TOML nested 100,000 deep, 5,000-digit integers and text that is not UTF-8 are
refused with one line, wherever they are read (``--set``, presets, JSON files, command-line options)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rcedetect.cli import main
from rcedetect.core.errors import CheckpointError, ConfigError, RceError
from rcedetect.core.io import read_json
from rcedetect.core.settings import check_keys, did_you_mean
from rcedetect.core.textfiles import MAX_DEPTH, loads_json, loads_toml
from rcedetect.evaluation import attack_store
from rcedetect.reproduce import resolve_config
from rcedetect.training.config import PRESET_DIR, TrainConfig, parse_value, train_config_from_preset

TINY = (PRESET_DIR / "tiny.toml").read_text()
TRAINING = (PRESET_DIR / "cpu-mnist5k-ce.toml").read_text()


def _after(header: str, line: str):
    return lambda text: text.replace(f"{header}\n", f"{header}\n{line}\n", 1)


#: a reproduce preset edited by a user: (edit of tiny.toml, the word of the error, the suggestion)
PRESET_TYPOS = {
    "[experiment] threds": (_after("[experiment]", "threds = 1"), "threds", "threads"),
    "[attacks.fgsm] imagse": (_after("[attacks.fgsm]", "imagse = 4"), "imagse", "images"),
    "a [detectr] table": (lambda t: t + "\n[detectr]\nseed = 1\n", "detectr", "detector"),
    "[adaptive] metircs": (_after("[adaptive]", 'metircs = ["kd"]'), "metircs", "metrics"),
    "[detector] per_clas": (_after("[detector]", "per_clas = 10"), "per_clas", "per_class"),
    "[models.ce] rol": (_after("[models.ce]", 'rol = "main"'), "rol", "role"),
    "[models.ce.train] stepz": (_after("[models.ce.train]", "stepz = 3"), "stepz", "steps"),
    "[cuts] note": (_after("[cuts]", "note = []"), "note", "notes"),
}


@pytest.mark.parametrize("case", sorted(PRESET_TYPOS))
def test_a_typo_in_a_reproduce_preset_is_refused_with_the_closest_name(tmp_path, case):
    edit, word, suggestion = PRESET_TYPOS[case]
    text = edit(TINY)
    assert text != TINY, "the edit must change the preset"
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=word) as e:
        resolve_config(str(tmp_path / "p.toml"))
    assert f"did you mean `{suggestion}`" in str(e.value)


def test_every_shipped_preset_passes_the_key_check():
    for path in sorted(PRESET_DIR.glob("*.toml")):
        text = path.read_text()
        if "[experiment]" in text:
            resolve_config(str(path))
        else:
            train_config_from_preset(str(path))


@pytest.mark.parametrize("edit, word", [
    (lambda t: t.replace("[train]\n", "[train]\nsteps_ = 3\n"), "did you mean `steps`"),
    (lambda t: t + "\n[trian]\nsteps = 3\n", "trian"),
])
def test_a_typo_in_a_training_preset_is_refused(tmp_path, edit, word):
    (tmp_path / "t.toml").write_text(edit(TRAINING))
    with pytest.raises(ConfigError, match=word):
        train_config_from_preset(str(tmp_path / "t.toml"))


def test_cuts_notes_must_be_strings_before_any_stage(tmp_path):
    (tmp_path / "p.toml").write_text(re.sub(r"\[cuts\]\nnotes = .*\n", "[cuts]\nnotes = 5\n", TINY))
    with pytest.raises(ConfigError, match="cuts.notes"):
        resolve_config(str(tmp_path / "p.toml"))
    with pytest.raises(ConfigError, match="cuts.notes"):
        resolve_config("tiny", ["cuts.notes=[1]"])


def test_did_you_mean_and_check_keys():
    assert did_you_mean("threds", ["threads", "seed"]) == "; did you mean `threads`?"
    assert did_you_mean("zzzz", ["threads"]) == ""
    assert check_keys({"a": 1}, ["a", "b"], "t") == {"a": 1}
    with pytest.raises(ConfigError, match=r"\[t\]"):
        check_keys([], ["a"], "t")


# -- integers past 64 bits --------------------------------------------------------------------------------
BIG = str(2**70)
INT_SETTINGS = {
    "--set seed (train)": (lambda: train_config_from_preset("cpu-mnist5k-ce", [f"seed={BIG}"]), "64 bits"),
    "seed 2**63 (train)": (lambda: TrainConfig(seed=2**63), "seed"),
    "experiment.threads": (lambda: resolve_config("tiny", ["experiment.threads=100000"]), "threads"),
    "experiment.seed": (lambda: resolve_config("tiny", [f"experiment.seed={2**63}"]), "64 bits"),
    "attack images": (lambda: resolve_config("tiny", [f"attacks.fgsm.images={2**62}"]), "images"),
    "train pad": (lambda: TrainConfig(pad=2**40), "pad"),
}


@pytest.mark.parametrize("case", sorted(INT_SETTINGS))
def test_integers_out_of_range_are_refused_in_settings(case):
    build, word = INT_SETTINGS[case]
    with pytest.raises(ConfigError, match=word):
        build()


CLI_NUMBERS = {
    "--seed 2**70": ["attack", "RUN", "--attack", "fgsm", "--eps", "0.1", "--seed", BIG],
    "--seed -1": ["detect", "RUN", "--input", "x.png", "--seed", "-1"],
    "--n 2**70": ["adaptive", "RUN", "--attack", "pgd_detector", "--metric", "kd", "--n", BIG],
    "--threads 2**70": ["serve", "RUN", "--threads", BIG],
    "--threads 0": ["serve", "RUN", "--threads", "0"],
    "--max-body-mb 1e308": ["serve", "RUN", "--max-body-mb", "1e308"],
    "--max-body-mb nan": ["serve", "RUN", "--max-body-mb", "nan"],
}


@pytest.mark.parametrize("case", sorted(CLI_NUMBERS))
def test_absurd_numbers_on_the_command_line_are_one_line_and_exit_2(case, capsys):
    with pytest.raises(SystemExit) as e:
        main(CLI_NUMBERS[case])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "must be" in err


def test_rce_adaptive_refuses_set_eps_beside_eps(capsys, tmp_path):
    code = main(["adaptive", str(tmp_path), "--attack", "pgd_detector", "--metric", "kd", "--eps", "0.1", "--set",
                 "eps=[-0.1]"])
    err = capsys.readouterr().err
    assert code == 2 and "--eps" in err and not list(tmp_path.iterdir())


def test_a_library_setting_of_the_wrong_type_is_refused_up_front():
    pytest.importorskip("torchattacks")
    with pytest.raises(ConfigError, match="steps"):
        attack_store.probe("torchattacks:PGD", {"steps": "ten", "on": "classifier"}, 0.1, 0)
    attack_store.probe("torchattacks:PGD", {"steps": 3, "on": "classifier"}, 0.1, 0)


# -- JSON and TOML text ------------------------------------------------------------------------------------
DEEP = 100_000
TEXTS = {
    "JSON nested 100,000 deep": (loads_json, "[" * DEEP + "]" * DEEP, "nested"),
    "JSON nested 65 deep": (loads_json, "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested"),
    "JSON 5,000-digit integer": (loads_json, '{"a": ' + "9" * 5000 + "}", "digits"),
    "JSON 2**64": (loads_json, str(2**64), "64 bits"),
    "JSON not UTF-8": (loads_json, b'{"a": "\xff"}', "UTF-8"),
    "TOML nested 100,000 deep": (loads_toml, "a = " + "[" * DEEP + "]" * DEEP, "nested"),
    "TOML 5,000-digit integer": (loads_toml, "a = " + "9" * 5000, "TOML"),
    "TOML 2**64": (loads_toml, f"a = {2**64}", "64 bits"),
    "TOML inline tables 70 deep": (loads_toml, "a = " + "{b = " * 70 + "1" + "}" * 70, "nested"),
    "TOML not UTF-8": (loads_toml, b"a = '\xfe'", "UTF-8"),
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_text_readers_refuse_what_would_crash_later(case):
    reader, text, word = TEXTS[case]
    with pytest.raises(ConfigError, match=word) as e:
        reader(text, "the file")
    assert "\n" not in str(e.value)


def test_text_readers_take_what_rcedetect_writes():
    assert loads_json('{"a": [1, 2.5, NaN, -9223372036854775807, null]}', "f")["a"][3] == -(2**63) + 1
    assert loads_toml("a = [[1, 2], [3]]\n[b]\nc = 'x'", "f") == {"a": [[1, 2], [3]], "b": {"c": "x"}}


FILES = {
    "results.json nested": ("results.json", "[" * DEEP + "]" * DEEP),
    "checkpoint.json with a 5,000-digit integer": ("checkpoint.json", '{"step": ' + "1" * 5000 + "}"),
    "a config that is not UTF-8": ("config.json", b'{"train": "\xc3\x28"}'),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_every_json_file_goes_through_the_limits(tmp_path, case):
    name, text = FILES[case]
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError):
        read_json(path)


def test_a_checkpoint_with_a_huge_integer_is_refused_by_rce_evaluate(trained_runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_runs["ce"], run)
    text = (run / "checkpoint.json").read_text()
    meta = json.loads(text)
    (run / "checkpoint.json").write_text(text.replace(f'"step": {meta["step"]}', '"step": ' + "7" * 5000))
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "digits" in err and len(err.strip().splitlines()) == 1


PRESET_FILES = {
    "not UTF-8": b"[train]\nsteps = 3\nname = '\xff'\n",
    "nested 100,000 deep": b"[train]\nlr_values = " + b"[" * DEEP + b"]" * DEEP,
    "a 5,000-digit integer": b"[train]\nsteps = " + b"9" * 5000,
}


@pytest.mark.parametrize("case", sorted(PRESET_FILES))
def test_a_preset_file_is_read_within_the_limits(tmp_path, case, capsys):
    (tmp_path / "p.toml").write_bytes(PRESET_FILES[case])
    with pytest.raises(ConfigError):
        train_config_from_preset(str(tmp_path / "p.toml"))
    assert main(["train", "--preset", str(tmp_path / "p.toml"), "--out", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("text", ["[" * DEEP, "1" * 5000, "{a = " * 100 + "1" + "}" * 100, str(2**64)])
def test_set_values_beyond_the_limits_are_refused_not_taken_as_strings(text):
    with pytest.raises(RceError):
        parse_value(text)
    assert parse_value("not toml at all") == "not toml at all"


def test_an_export_with_deep_metadata_is_refused(tmp_path):
    import numpy as np

    from rcedetect.core.errors import InputError
    from rcedetect.evaluation.adv_export import load_adversarial

    np.savez(tmp_path / "e.npz", x_adv=np.zeros((1, 1, 4, 4), np.float32), meta_json=np.array("[" * DEEP + "]" * DEEP))
    with pytest.raises(InputError, match="nested"):
        load_adversarial(Path(tmp_path / "e.npz"))
