"""``rce reproduce``: the paper end to end as a cached, resumable run of stages (see :mod:`.recipe`).

- :mod:`.config`  presets → the expanded config dict → a typed, checked :class:`~.config.Plan`
- :mod:`.layout`  every artifact's path and the config hash that names it
- :mod:`.inputs`  the dataset, classifiers, image pool, feature banks and detectors, loaded once
- :mod:`.steps`   what each stage does (train, attack and score, transfer, t-SNE)
- :mod:`.recipe`  the stage list, top to bottom, and :func:`run`
- :mod:`.runner`  the run loop: cached stages skipped, time-left estimates
- :mod:`.results` ``results.json``
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import plan, resolve_config
from .recipe import run


def reproduce(preset: str, out: str | Path, overrides: list[str] | None = None, *, device: str | None = None,
              data_dir: str | None = None, force: bool = False, progress: bool = True,
              hook: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the whole pipeline of ``preset`` in ``out``; returns the results dict."""
    cfg = resolve_config(preset, overrides, device, data_dir)
    cfg["experiment"]["name"] = cfg["experiment"]["name"] or Path(preset).stem
    return run(cfg, out, force=force, progress=progress, hook=hook, echo=echo)


__all__ = ["plan", "reproduce", "resolve_config", "run"]
