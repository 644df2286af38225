"""Attack runs on disk, shared by ``rce attack`` and ``rce reproduce``: which images, which seeds, which files.

- Images: the first ``n`` of a seeded random permutation of the test set (:func:`choose_images`; the original
  attacks a shuffled subset, protocol §5.1; with one seed every attack and every ε sees the *same* images, which
  removes the original's per-ε resampling, protocol §11.7).
- Seeds: a seeded attack gets ``seed · 1000 + b`` for batch ``b`` (:func:`~rcedetect.attacks.build.batch_seed`), so each batch is
  reproducible on its own and a resumed batch is the same batch.
- Files: one safetensors *part* per batch (:func:`run_parts`), written atomically and skipped when present, so a
  killed run resumes at the first missing batch; :func:`load_parts` reads them back as one
  :class:`~rcedetect.attacks.AttackResult`.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..attacks.base import AttackResult
from ..attacks.build import attack_factory, batch_seed, probe  # noqa: F401  (the attacks' side of a run, re-exported)
from ..core import distributed
from ..core.errors import CheckpointError
from ..core.io import load_tensors, read_metadata, save_tensors

PART_FORMAT = "rcedetect-attack-part"


def choose_images(n_test: int, n: int, seed: int, first: bool = False) -> torch.Tensor:
    """Indices of the attacked test images: the first ``n`` of a seeded permutation (or of file order)."""
    if first:
        return torch.arange(min(n, n_test))
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(int(seed)))[:n]


def finished_output(folder: Path, force: bool) -> bool:
    """True when ``folder`` already holds a finished run (its ``summary.json``) and ``force`` is off; with
    ``force`` the folder is deleted so that the run starts over."""
    if force:
        shutil.rmtree(folder, ignore_errors=True)
        return False
    return (Path(folder) / "summary.json").is_file()


def part_path(folder: Path, b: int) -> Path:
    return Path(folder) / f"part-{b:04d}.safetensors"


def run_parts(folder: Path, factory: Callable[[int], Any], classifier, x: torch.Tensor, y: torch.Tensor, batch: int,
              *, indices: torch.Tensor | None = None, on_part: Callable[[int], None] | None = None, bar=None) -> None:
    """Attack ``x`` in batches of ``batch``; each batch is one part file, skipped when it exists.

    A part holds x_adv, success, iterations, target (when the attack has one), the attack's per-example extras
    (``extra.<name>``), the labels ``y`` and, when given, the test-set ``indices`` of the images. Under torchrun
    the batches are dealt out over the ranks (:mod:`rcedetect.core.distributed`) and every rank returns once all parts
    exist.
    """
    device = classifier.device
    world = distributed.init(device)  # under torchrun: batch b is attacked by rank b mod N (a rank may idle)
    for b, start in enumerate(range(0, len(x), batch)):
        path = part_path(folder, b)
        stop = min(start + batch, len(x))
        if not world.owns(b):
            continue
        if path.is_file():
            if bar is not None:
                bar.update(stop - start)
            continue
        xb, yb = x[start:stop], y[start:stop]
        t0 = time.perf_counter()
        res = factory(b)(classifier, xb.to(device), yb.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        tensors = {"x_adv": res.x_adv, "success": res.success.to(torch.uint8), "y": yb.cpu().long(),
                   "iterations": res.iterations if res.iterations is not None else torch.zeros(len(xb))}
        if indices is not None:
            tensors["indices"] = indices[start:stop].cpu().long()
        if res.target is not None:
            tensors["target"] = res.target
        for k, v in res.extra.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 1 and len(v) == len(xb):
                tensors[f"extra.{k}"] = v.to(torch.uint8) if v.dtype == torch.bool else v
        save_tensors(path, tensors, metadata={"format": PART_FORMAT, "seconds": repr(seconds), "n": str(len(xb))})
        if bar is not None:
            bar.update(len(xb))
        if on_part is not None:
            on_part(b)
    distributed.barrier()  # every rank's parts exist before anyone reads them


def parts_done(folder: Path, n: int, batch: int) -> bool:
    return all(part_path(folder, b).is_file() for b in range(math.ceil(n / batch)))


def load_parts(folder: Path, n: int, batch: int, x: torch.Tensor | None = None
               ) -> tuple[AttackResult, float, dict[str, torch.Tensor]]:
    """(the concatenated result of the ``n`` images' parts, the total attack seconds, the stored ``y``/``indices``).

    ``x`` are the clean images the run attacked (the result's ``x``, for distortions; set it later if the caller
    must first read the stored indices). Raises CheckpointError when a part is missing, foreign, or does not fit.
    """
    parts, secs = [], 0.0
    for b in range(math.ceil(n / batch)):
        path = part_path(folder, b)
        t = load_tensors(path, "attack part")
        meta = read_metadata(path)
        if meta.get("format", PART_FORMAT) != PART_FORMAT or "x_adv" not in t or "success" not in t:
            raise CheckpointError(f"{path} is not an rcedetect attack part; delete the folder to recompute it")
        parts.append(t)
        secs += float(meta.get("seconds", "nan"))
    if not parts:
        raise CheckpointError(f"{folder} holds no attack parts")
    try:
        cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"the attack parts in {folder} do not fit together: {e}") from e
    if len(cat["x_adv"]) != n or (x is not None and cat["x_adv"].shape != x.shape):
        raise CheckpointError(f"the attack parts in {folder} hold {len(cat['x_adv'])} images of shape "
                              f"{tuple(cat['x_adv'].shape[1:])}, not the {n} expected; delete the folder to recompute")
    extra = {k[6:]: (v.bool() if k[6:] in ("target_reached",) else v) for k, v in cat.items() if k.startswith("extra.")}
    res = AttackResult(x_adv=cat["x_adv"], success=cat["success"].bool(), target=cat.get("target"),
                       iterations=cat["iterations"], extra=extra, x=x)
    return res, secs, {k: cat[k] for k in ("y", "indices") if k in cat}
