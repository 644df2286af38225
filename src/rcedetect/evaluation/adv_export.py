"""Portable adversarial examples: one ``.npz`` of plain arrays that NumPy reads without pickle.

:func:`export_attack` writes it (``rce attack ... --export FILE.npz``) from an ``rce attack`` folder or an
:class:`~rcedetect.attacks.AttackResult`; :func:`load_adversarial` reads it back, and reads an ``rce attack``
folder the same way (``rce detect --input``, ``rce serve --examples``).

The arrays of a file (format ``rcedetect-adversarial``, version 1), N images:

========================  =========================================================================================
``x_adv``                 float32 (N, C, H, W) in [0, 1]
``y``                     int64 (N,): the true labels
``indices``               int64 (N,): the test-set indices of the attacked images (-1 where unknown)
``success``               bool (N,): the attack's own verdict (float32 images)
``success_8bit``          bool (N,): a success that survives 8-bit rounding: ``round(x_adv · 255) / 255``, fed to
                          the model again, is still not classified as ``y`` (what a PNG of the image would do)
``pred_8bit``             int64 (N,): the model's label of the rounded images
``target``                int64 (N,): targeted attacks only, the label aimed at
``attack``, ``norm``      0-d str: the attack's registered name; the norm its ``eps`` is measured in (``"linf"`` on
                          the [0, 1] pixel scale, ``"l2"``, or ``""`` for an attack without ``eps``)
``eps``                   0-d float64: the budget, NaN for an attack without one
``meta_json``             0-d str: a JSON object with the above and the attack's settings, seed, dataset,
                          architecture, objective and weights digest where known
``format``, ``version``   0-d str ``"rcedetect-adversarial"``, 0-d int64 ``1``
========================  =========================================================================================

Read it without rcedetect: ``f = numpy.load(path); x = f["x_adv"]; attack = f["attack"].item()``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import CheckpointError, ConfigError, InputError

FORMAT = "rcedetect-adversarial"
VERSION = 1
#: the arrays every export holds (``target`` only for targeted attacks)
ARRAYS = ("x_adv", "y", "indices", "success", "success_8bit", "pred_8bit")
#: what a corrupted or foreign ``.npz`` raises inside ``numpy.load``
_CORRUPT = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError)
#: the fields of an ``rce attack`` summary carried into an export's metadata
_SUMMARY_FIELDS = ("seed", "n", "order", "dataset", "arch", "objective", "weights_sha256", "hash", "success_rate")


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """``round(x · 255) / 255``: the image an 8-bit file (PNG, uint8 array) of ``x`` holds, back in [0, 1]."""
    return torch.round(x.float() * 255.0) / 255.0


def success_8bit(classifier, x_adv: torch.Tensor, y: torch.Tensor, success: torch.Tensor,
                 batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(success_8bit, pred_8bit): which successes survive rounding ``x_adv`` to 8 bits (the model's label of
    :func:`quantize_8bit` of the image is still not ``y``), and those labels; both on the CPU."""
    pred = classifier.predict_batched(quantize_8bit(x_adv), batch_size=batch_size).cpu().long()
    return success.cpu().bool() & (pred != y.cpu().long()), pred


def norm_of(attack: str | None, settings: dict[str, Any]) -> str:
    """The norm ``eps`` of ``attack`` is measured in: its ``norm`` setting where it has one, else ``"linf"``
    (pixel units on the [0, 1] scale); ``""`` when the attack takes no ``eps``."""
    if isinstance(settings.get("norm"), str):
        return settings["norm"]
    from .. import attacks

    try:
        spec = attacks.spec(attack) if attack else None
    except ConfigError:
        spec = None
    if spec is None:
        return "linf" if "eps" in settings else ""
    if not spec.takes_eps:
        return ""
    preset = dict(spec.defaults)
    if "norm" in preset:
        return str(preset["norm"])
    field = spec.fields.get("norm")
    return str(field.default) if field is not None and isinstance(field.default, str) else "linf"


def _eps_of(settings: dict[str, Any]) -> float | None:
    eps = settings.get("eps")
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


# -- an rce attack folder -----------------------------------------------------------------------------------
def is_attack_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a finished ``rce attack`` run (its ``summary.json``)."""
    return (Path(path) / "summary.json").is_file()


def _read_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors (x_adv, y, indices, success, target where stored) and metadata of an ``rce attack`` folder."""
    from ..core import schemas
    from ..core.io import read_json
    from .attack_store import load_parts

    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    if not is_attack_folder(folder):
        raise InputError(f"{folder} is a folder but not an rce attack folder (it has no summary.json); give the "
                         "folder rce attack wrote (RUN/attacks/NAME-HASH) or an exported .npz")
    where = folder / "summary.json"
    summary = schemas.check(read_json(where, "attack summary"), schemas.ATTACK_SUMMARY, where, "attack summary")
    res, _, stored = load_parts(folder, int(summary["n"]), int(summary["batch_size"]))
    if "y" not in stored:
        raise CheckpointError(f"the attack parts in {folder} hold no labels y; rerun rce attack with --force")
    n = len(res.x_adv)
    t = {"x_adv": res.x_adv.float(), "y": stored["y"].long(), "success": res.success.bool(),
         "indices": stored["indices"].long() if "indices" in stored else torch.full((n,), -1, dtype=torch.long)}
    if res.target is not None:
        t["target"] = res.target.long()
    settings = summary.get("settings") or {}
    meta = {"attack": summary["attack"], "eps": _eps_of(settings), "norm": norm_of(summary["attack"], settings),
            "settings": settings, **{k: summary[k] for k in _SUMMARY_FIELDS if k in summary}}
    return t, meta


# -- writing ------------------------------------------------------------------------------------------------
def check_export_path(path: str | Path, what: str = "--export") -> Path:
    """``path`` can take an export: it names a ``.npz`` file (not a folder) in a folder that can be written.
    ConfigError, one line, otherwise; called before any work."""
    from ..core.io import check_writable_dir

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; name a .npz file")
    if path.suffix.lower() != ".npz":
        raise ConfigError(f"{what} {path} must name a .npz file")
    check_writable_dir(path.parent, f"folder of {what} {path}")
    return path


def _labels(v, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(v).cpu()
    if t.dim() != 1 or len(t) != n or t.is_floating_point() or t.dtype == torch.bool:
        raise InputError(f"{name} must hold {n} integer labels, got shape {tuple(t.shape)} and dtype {t.dtype}")
    return t.long()


def export_attack(source, path: str | Path, classifier, *, y: torch.Tensor | None = None,
                  indices: torch.Tensor | None = None, attack: str | None = None,
                  settings: dict[str, Any] | None = None, batch_size: int = 500) -> Path:
    """Write the adversarial examples of ``source`` to the ``.npz`` file ``path`` (atomically) and return it.

    ``source`` is an ``rce attack`` output folder (its labels, indices, settings come from its files) or an
    :class:`~rcedetect.attacks.AttackResult`, with the true labels ``y`` (required) and optionally the
    test-set ``indices`` (else -1), the ``attack`` name and its ``settings``. ``classifier`` is the attacked model:
    it re-classifies the 8-bit rounded images for ``success_8bit``. Raises ConfigError (a path that cannot take
    the file), InputError (images or labels that do not fit the model) or CheckpointError (broken parts).
    """
    from .. import attacks
    from ..core.io import atomic_write_bytes, package_version
    from ..core.validation import check_model_input

    path = check_export_path(path, "export")
    if isinstance(source, attacks.AttackResult):
        if y is None:
            raise InputError("export_attack of an AttackResult needs y, the true labels of the attacked images")
        n = len(source.x_adv)
        settings = dict(settings or {})
        t = {"x_adv": source.x_adv.detach().float().cpu(), "y": _labels(y, n, "y"),
             "success": source.success.detach().bool().cpu(),
             "indices": (_labels(indices, n, "indices") if indices is not None
                         else torch.full((n,), -1, dtype=torch.long))}
        if source.target is not None:
            t["target"] = source.target.detach().long().cpu()
        meta = {"attack": attack, "eps": _eps_of(settings), "norm": norm_of(attack, settings), "settings": settings}
    else:
        t, meta = _read_folder(Path(source))
    check_model_input(classifier, t["x_adv"], name="x_adv")
    t["success_8bit"], t["pred_8bit"] = success_8bit(classifier, t["x_adv"], t["y"], t["success"], batch_size)
    meta = {"format": FORMAT, "version": VERSION, **meta, "rcedetect": package_version()}
    arrays = {k: v.numpy() for k, v in t.items()}
    arrays.update(attack=np.array(meta["attack"] or ""), norm=np.array(meta["norm"]),
                  eps=np.array(meta["eps"] if meta["eps"] is not None else math.nan, dtype=np.float64),
                  meta_json=np.array(json.dumps(meta, default=str)), format=np.array(FORMAT),
                  version=np.array(VERSION, dtype=np.int64))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


# -- reading ------------------------------------------------------------------------------------------------
def is_export(path: str | Path) -> bool:
    """True when ``path`` is a readable ``.npz`` holding ``x_adv`` and no ``x`` (an export, not an image batch)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return "x_adv" in f.files and "x" not in f.files
    except _CORRUPT:
        return False


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except _CORRUPT as e:
        raise InputError(f"{path} is not a readable .npz file of plain arrays: {e}") from e
    if "x_adv" not in arrays:
        raise InputError(f"{path} has no array 'x_adv' (it has {', '.join(arrays) or 'none'}); it is not an "
                         "export of rce attack")
    meta: dict[str, Any] = {}
    if "meta_json" in arrays:
        from ..core.textfiles import loads_json

        try:
            text = str(arrays["meta_json"].item())
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}: its meta_json is not a JSON object: {e}") from e
        meta = loads_json(text, f"{path}: its meta_json", InputError)
        if not isinstance(meta, dict):
            raise InputError(f"{path}: its meta_json is not a JSON object")
    for key in ("attack", "norm"):
        if key not in meta and key in arrays and arrays[key].ndim == 0 and arrays[key].dtype.kind == "U":
            meta[key] = str(arrays[key].item()) or None
    if "eps" not in meta and "eps" in arrays and arrays["eps"].ndim == 0 and arrays["eps"].dtype.kind == "f":
        eps = float(arrays["eps"])
        meta["eps"] = None if math.isnan(eps) else eps
    return arrays, meta


def _images(a: np.ndarray, where: str) -> torch.Tensor:
    from ..core.validation import check_images

    if a.dtype == np.uint8 and a.ndim == 4:
        return torch.from_numpy(np.array(a, dtype=np.float32)) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{where}: x_adv must be float NCHW in [0, 1] (or uint8 NCHW), got dtype {a.dtype}")
    return check_images(torch.from_numpy(np.array(a, dtype=np.float32)), name=where)


def load_adversarial(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """``load_adversarial(path) -> (x_adv, y, meta)``: the adversarial examples of an export or an attack folder.

    ``path`` is a ``.npz`` written by :func:`export_attack` (``rce attack --export``) or an output folder of
    ``rce attack`` (``RUN/attacks/NAME-HASH``, read from its part files and ``summary.json``).

    - ``x_adv``: float32 (N, C, H, W) in [0, 1], on the CPU;
    - ``y``: int64 (N,) true labels, or None when the file holds none;
    - ``meta``: a dict with ``attack`` (str or None), ``eps`` (float or None), ``norm`` (``"linf"``, ``"l2"`` or
      ``""``), ``settings`` (dict), where known ``seed``, ``dataset``, ``arch``, ``objective``, ``weights_sha256``;
      the per-image tensors ``indices`` (int64 test-set indices, None when unknown), ``success`` (bool),
      ``success_8bit`` (bool; None for a folder: it needs the model, see :func:`success_8bit`), ``pred_8bit``,
      ``target`` (each None when absent); ``source`` (``"npz"`` or ``"attack folder"``) and ``path``.

    Raises InputError (a missing path, a folder that is not an attack folder, a file that is not an export,
    arrays of the wrong shape or range) or CheckpointError (broken part files). Nothing is unpickled.
    """
    path = Path(path)
    if path.is_dir():
        t, meta = _read_folder(path)
        meta = {**meta, "success_8bit": None, "pred_8bit": None, "source": "attack folder"}
    elif path.is_file():
        arrays, meta = _read_npz(path)
        x = _images(arrays["x_adv"], f"x_adv of {path}")
        n = len(x)
        t = {"x_adv": x}
        for key in ("y", "indices", "pred_8bit", "target"):
            if key in arrays:
                t[key] = _labels(arrays[key], n, f"{key} of {path}")
        if "y" in t and n and int(t["y"].min()) < 0:
            raise InputError(f"y of {path} holds the label {int(t['y'].min())}; true labels are class indices >= 0")
        for key in ("success", "success_8bit"):
            if key in arrays:
                a = arrays[key]
                if a.shape != (n,) or a.dtype.kind not in "bui":
                    raise InputError(f"{key} of {path} must hold {n} booleans, got shape {a.shape}")
                t[key] = torch.from_numpy(np.array(a != 0))
        meta = {**meta, "source": "npz"}
    else:
        raise InputError(f"{path} does not exist")
    if "indices" in t and bool((t["indices"] < 0).all()):
        del t["indices"]  # unknown
    for key, default in (("settings", {}), ("attack", None), ("eps", None), ("norm", "")):
        meta.setdefault(key, default)
    for key in ("indices", "success", "success_8bit", "pred_8bit", "target"):
        meta[key] = t.get(key, meta.get(key))
    meta["path"] = str(path)
    return t["x_adv"], t.get("y"), meta
