"""The README's Python examples: every ``rcedetect.NAME`` they use exists, and both run (with small settings)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import rcedetect

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def block_with(*needles: str) -> str:
    found = [b for b in python_blocks() if all(n in b for n in needles)]
    assert len(found) == 1, f"one README python block with {needles}, found {len(found)}"
    return found[0]


def shrunk(code: str, replacements: dict[str, str]) -> str:
    """``code`` with each key replaced by its value; every key must occur (the test follows the README)."""
    for old, new in replacements.items():
        assert old in code, f"the README example no longer contains {old!r}; update tests/test_readme.py"
        code = code.replace(old, new)
    return code


def test_every_top_level_name_the_readme_uses_exists():
    names = set()
    for block in python_blocks():
        assert "from rcedetect." not in block, "the README examples use top-level names only"
        names |= set(re.findall(r"\brcedetect((?:\.\w+)+)", block))
    assert names, "the README shows rcedetect.NAME calls"
    for dotted in names:
        obj = rcedetect
        for part in dotted.strip(".").split("."):
            obj = getattr(obj, part)  # AttributeError names what is missing


def test_the_top_level_api():
    from rcedetect import Classifier, Detector, attacks, defend, wrap  # noqa: F401

    assert callable(defend) and callable(wrap) and "bim" in attacks.REGISTRY
    assert (Path(rcedetect.__file__).parent / "py.typed").is_file()
    for name in rcedetect.__all__:
        assert getattr(rcedetect, name) is not None
    with pytest.raises(AttributeError):
        rcedetect.no_such_name  # noqa: B018


def test_the_in_python_example_runs(tmp_path, monkeypatch, capsys):
    code = shrunk(block_with("rcedetect.train("), {
        '"runs/rce")': '"runs/rce", ["steps=6", "eval_every=6", "checkpoint_every=6", "lr_boundaries=[3, 5]"], '
                       'progress=False)',
        "ds.train_images(), ds.y_train": "ds.train_images()[:300], ds.y_train[:300]",
        "ds.test_images()[500:]": "ds.test_images()[900:]",
        "[:100]": "[:12]",
    })  # the white-box attack keeps the README's settings: it must fool at least one image
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer kernel points per class than the paper's 1000
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Detector(metric='kd'") and "% FPR on" in printed[0]
    assert re.match(r"clean: \d+ of 12 right, NOT SURE on \d+%$", printed[1])
    assert re.match(r"BIM: fools the classifier on \d+ of 12; NOT SURE on \d+%; wrong AND accepted: \d+$", printed[2])
    assert printed[3].startswith("AttackResult(8 images 1×28×28, ") and "tensor" not in printed[3]
    fooled = re.match(r"C&W-wb: fools classifier and detector on (\d) of 8; NOT SURE on \d of 8$", printed[4])
    assert fooled and int(fooled.group(1)) >= 1, printed[4]
    assert (tmp_path / "runs" / "rce" / "checkpoint.json").is_file() and (tmp_path / "bim.npz").is_file()


class _Tiny(nn.Module):
    """A small colour CNN whose last linear layer is ``fc``, as a torchvision ResNet's is."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x))


def test_the_own_model_example_runs(capsys):
    code = block_with("rcedetect.wrap(")
    g = torch.Generator().manual_seed(0)
    x_train, x_heldout, x = (torch.rand(n, 3, 32, 32, generator=g) for n in (60, 40, 5))
    names = {"model": _Tiny().eval(), "x_train": x_train, "y_train": torch.arange(60) % 3, "x_heldout": x_heldout,
             "x": x}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), names)  # noqa: S102
    assert capsys.readouterr().out.startswith("tensor(")
