"""``rce reproduce``: the paper end to end as a cached, resumable run of stages (see :mod:`.recipe`).

- :mod:`.config`  presets → the expanded config dict → a typed, checked :class:`~.config.Plan`
- :mod:`.layout`  every artifact's path and the config hash that names it
- :mod:`.inputs`  the dataset, classifiers, image pool, feature banks and detectors, loaded once
- :mod:`.steps`   what each stage does (train, attack and score, transfer, t-SNE)
- :mod:`.recipe`  the stage list, top to bottom, and :func:`run`
- :mod:`.runner`  the run loop: cached stages skipped, time-left estimates from measured stage rates
- :mod:`.lock`    the output folder: checked writable, locked for one run at a time
- :mod:`.results` ``results.json``

Layer: above :mod:`rcedetect.training`; imports ``core``, ``stats``, ``data``, ``models``, ``detectors``,
``attacks``, ``evaluation`` and ``training``, never the report, the server or the commands (``rce reproduce``
renders the report after the run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import plan, resolve_config
from .lock import check_writable, output_lock
from .recipe import run


def preset_config(preset: str, overrides: list[str] | None = None, device: str | None = None,
                  data_dir: str | None = None, data_file: str | None = None) -> dict:
    """The resolved config of ``preset`` with ``overrides``, every setting checked (ConfigError before any work)."""
    cfg = resolve_config(preset, overrides, device, data_dir, data_file)
    cfg["experiment"]["name"] = cfg["experiment"]["name"] or Path(preset).stem  # a string: still as planned
    return cfg


def reproduce(preset: str, out: str | Path, overrides: list[str] | None = None, *, device: str | None = None,
              data_dir: str | None = None, data_file: str | None = None, force: bool = False, progress: bool = True,
              hook: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the whole pipeline of ``preset`` in ``out``; returns the results dict. Another run into
    the same ``out`` waits for this one to finish (:mod:`.lock`)."""
    cfg = preset_config(preset, overrides, device, data_dir, data_file)
    return run(cfg, out, force=force, progress=progress, hook=hook, echo=echo)


__all__ = ["check_writable", "output_lock", "plan", "preset_config", "reproduce", "resolve_config", "run"]
