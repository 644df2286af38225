"""Images for the page to try: the run's test split and its stored adversarial examples.

An adversarial example is served as the float array the attack wrote (not a re-quantised PNG), so that what the
page sends back is exactly the image the detector was evaluated on offline.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import RceError
from ..io import load_tensors, read_json, read_metadata
from .limits import HttpError

TAG = re.compile(r"^(?P<name>.+?)(?:-e(?P<eps>[0-9.]+))?$")
CACHED_SOURCES = 8


def describe(source: str, folder: Path) -> dict:
    """What a source id means: its kind, the attack, ε and (adaptive) the detector attacked."""
    kind, _, folder_name = source.partition(":")
    m = TAG.match(folder_name.rsplit("-", 1)[0])
    name, eps = (m["name"], float(m["eps"])) if m and m["eps"] else (m["name"] if m else folder_name, None)
    summary = _summary(folder)  # rce attack's folders name the attack, not ε: its summary has both
    if isinstance(summary.get("attack"), str):
        name = summary["attack"]
        setting = (summary.get("settings") or {}).get("eps") if isinstance(summary.get("settings"), dict) else None
        eps = float(setting) if isinstance(setting, (int, float)) else eps
    entry = {"id": source, "kind": kind, "attack": name, "eps": eps, "against": None}
    if kind == "adaptive":
        entry["against"], _, entry["attack"] = name.partition("-")
    title = entry["attack"] + (f" ε={eps:g}" if eps is not None else "")
    entry["title"] = title + (f" against {entry['against']}" if entry["against"] else "")
    return entry


def _summary(folder: Path) -> dict:
    try:
        summary = read_json(folder / "summary.json", "attack summary") if (folder / "summary.json").is_file() else {}
    except RceError:
        return {}
    return summary if isinstance(summary, dict) else {}


class Examples:
    """``listing()`` for the page's menus, ``get(source, index)`` for one image (C, H, W) with what is known."""

    def __init__(self, sources: dict[str, Path], test: tuple[torch.Tensor, torch.Tensor] | None,
                 shape: tuple[int, int, int]):
        self.shape = tuple(shape)
        self.test = test  # (uint8 NCHW images, labels) of the test split, or None
        self.sources: dict[str, dict] = {}
        for source, folder in sources.items():
            parts = sorted(folder.glob("part-*.safetensors"))
            try:
                count = sum(int(read_metadata(p).get("n", "0")) for p in parts)
            except (RceError, ValueError):
                continue  # an unreadable folder is left out, the rest still served
            if count > 0:
                self.sources[source] = {**describe(source, folder), "count": count, "parts": parts}
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def listing(self) -> list[dict]:
        out = []
        if self.test is not None:
            out.append({"id": "test", "kind": "test", "title": "test images", "attack": None, "eps": None,
                        "against": None, "count": len(self.test[0])})
        order = sorted(self.sources.values(), key=lambda s: (s["kind"], s["against"] or "", s["attack"], s["eps"] or 0))
        return out + [{k: v for k, v in s.items() if k != "parts"} for s in order]

    def get(self, source: str, index: int) -> dict:
        if source == "test" and self.test is not None:
            x, y = self.test
            self._check_index(source, index, len(x))
            image = x[index].float() / 255.0
            return {"source": source, "index": index, "image": image.tolist(), "true_label": int(y[index]),
                    "test_index": index, "attack_succeeded": None}
        if source not in self.sources:
            raise HttpError(404, f"no example source {source!r}; GET /v1/examples lists them")
        t = self._load(source)
        self._check_index(source, index, len(t["x_adv"]))
        y, idx, ok = (t[k][index] if k in t else None for k in ("y", "indices", "success"))
        return {"source": source, "index": index, "image": t["x_adv"][index].float().tolist(),
                "true_label": None if y is None else int(y), "test_index": None if idx is None else int(idx),
                "attack_succeeded": None if ok is None else bool(ok)}

    @staticmethod
    def _check_index(source: str, index: int, n: int) -> None:
        if not 0 <= index < n:
            raise HttpError(404, f"{source} has images 0..{n - 1}, not {index}")

    def _load(self, source: str) -> dict[str, torch.Tensor]:
        with self._lock:
            if source in self._cache:
                self._cache.move_to_end(source)
                return self._cache[source]
            try:
                parts = [load_tensors(p, "attack part") for p in self.sources[source]["parts"]]
                keys = [k for k in ("x_adv", "y", "indices", "success") if all(k in p for p in parts)]
                t = {k: torch.cat([p[k] for p in parts]) for k in keys}
            except (RceError, RuntimeError) as e:
                raise HttpError(404, f"the adversarial examples of {source} cannot be read: {e}") from e
            if "x_adv" not in t or tuple(t["x_adv"].shape[1:]) != self.shape:
                raise HttpError(404, f"{source} holds no images of the model's shape {self.shape}")
            self._cache[source] = t
            if len(self._cache) > CACHED_SOURCES:
                self._cache.popitem(last=False)
            return t
