"""Images for the page to try: the run's test split, its stored adversarial examples, and those ``--examples``
names (exported ``.npz`` files or ``rce attack`` folders, read by :func:`rcedetect.evaluation.adv_export.load_adversarial`).

An adversarial example is served as the float array the attack wrote (not a re-quantised PNG), so that what the
page sends back is exactly the image the detector was evaluated on offline.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path

import torch

from ..core.errors import ConfigError, InputError, RceError
from ..core.io import load_tensors, read_json, read_metadata
from .limits import HttpError

TAG = re.compile(r"^(?P<name>.+?)(?:-e(?P<eps>[0-9.]+))?$")
CACHED_SOURCES = 8


def describe(source: str, folder: Path) -> dict:
    """What a source id means: its kind, the attack, ε and (adaptive) the detector attacked."""
    kind, _, folder_name = source.partition(":")
    m = TAG.match(folder_name.rsplit("-", 1)[0])
    name, eps = (m["name"], float(m["eps"])) if m and m["eps"] else (m["name"] if m else folder_name, None)
    try:  # rce attack's folders name the attack, not ε: its summary has both
        summary = read_json(folder / "summary.json", "attack summary")
    except RceError:  # none (a folder of rce reproduce) or unreadable
        summary = {}
    if isinstance(summary, dict) and isinstance(summary.get("attack"), str):
        name = summary["attack"]
        setting = (summary.get("settings") or {}).get("eps") if isinstance(summary.get("settings"), dict) else None
        eps = float(setting) if isinstance(setting, (int, float)) else eps
    against, _, attack = name.partition("-") if kind == "adaptive" else (None, "", name)
    return _entry(source, kind, attack, eps, against)


def _entry(source: str, kind: str, attack: str, eps: float | None, against: str | None = None,
           note: str = "") -> dict:
    """A source's line of the listing; its title names the attack, ε, the detector attacked and ``note``."""
    title = attack + (f" ε={eps:g}" if eps is not None else "") + (f" against {against}" if against else "")
    return {"id": source, "kind": kind, "attack": attack, "eps": eps, "against": against, "title": title + note}


class Examples:
    """``listing()`` for the page's menus, ``get(source, index)`` for one image (C, H, W) with what is known."""

    def __init__(self, sources: dict[str, Path], test: tuple[torch.Tensor, torch.Tensor] | None,
                 shape: tuple[int, int, int], given: dict[str, dict] | None = None):
        self.shape = tuple(shape)
        self.test = test  # (uint8 NCHW images, labels) of the test split, or None
        self.sources: dict[str, dict] = {}
        self._given: dict[str, dict[str, torch.Tensor]] = {}  # --examples, in memory: never evicted
        for source, g in (given or {}).items():
            x = g["tensors"]["x_adv"]
            if tuple(x.shape[1:]) != self.shape:
                raise InputError(f"--examples {g['path']} holds images of shape {tuple(x.shape[1:])}; the model "
                                 f"takes {self.shape}")
            self.sources[source] = {**g["entry"], "count": len(x), "parts": None}
            self._given[source] = g["tensors"]
        for source, folder in sources.items():
            parts = sorted(folder.glob("part-*.safetensors"))
            try:
                count = sum(int(read_metadata(p).get("n", "0")) for p in parts)
            except (RceError, ValueError):
                continue  # an unreadable folder is left out, the rest still served
            if count > 0:
                self.sources[source] = {**describe(source, folder), "count": count, "parts": parts}
        self._cached = functools.lru_cache(CACHED_SOURCES)(self._read)  # the last sources read from disk
        self._lock = threading.Lock()  # one source read at a time

    def listing(self) -> list[dict]:
        test = [] if self.test is None else [{"id": "test", "kind": "test", "title": "test images", "attack": None,
                                              "eps": None, "against": None, "count": len(self.test[0])}]
        order = sorted(self.sources.values(), key=lambda s: (s["kind"], s["against"] or "", s["attack"], s["eps"] or 0))
        return test + [{k: v for k, v in s.items() if k != "parts"} for s in order]

    def get(self, source: str, index: int) -> dict:
        if source == "test" and self.test is not None:
            t = {"x_adv": self.test[0], "y": self.test[1]}  # uint8 images
        elif source in self._given:
            t = self._given[source]
        elif source in self.sources:
            with self._lock:
                t = self._cached(source)
        else:
            raise HttpError(404, f"no example source {source!r}; GET /v1/examples lists them")
        n = len(t["x_adv"])
        if not 0 <= index < n:
            raise HttpError(404, f"{source} has images 0..{n - 1}, not {index}")
        image = t["x_adv"][index]
        y, idx, ok = (t[k][index] if k in t else None for k in ("y", "indices", "success"))
        if source == "test":
            idx = index
        return {"source": source, "index": index,
                "image": (image.float() / 255.0 if image.dtype == torch.uint8 else image.float()).tolist(),
                "true_label": None if y is None else int(y),
                "test_index": None if idx is None or int(idx) < 0 else int(idx),
                "attack_succeeded": None if ok is None else bool(ok)}

    def _read(self, source: str) -> dict[str, torch.Tensor]:
        try:
            parts = [load_tensors(p, "attack part") for p in self.sources[source]["parts"]]
            keys = [k for k in ("x_adv", "y", "indices", "success") if all(k in p for p in parts)]
            t = {k: torch.cat([p[k] for p in parts]) for k in keys}
        except (RceError, RuntimeError) as e:
            raise HttpError(404, f"the adversarial examples of {source} cannot be read: {e}") from e
        if "x_adv" not in t or tuple(t["x_adv"].shape[1:]) != self.shape:
            raise HttpError(404, f"{source} holds no images of the model's shape {self.shape}")
        return t


# -- --examples: exported .npz files and rce attack folders ------------------------------------------------
def load_given(paths, offered=()) -> dict[str, dict]:
    """{source id ``given:<name>``: {"entry": what the listing shows, "tensors": x_adv (float NCHW in [0, 1]) and,
    where known, y, indices, success, "path"}} of the ``--examples`` paths, read by
    :func:`rcedetect.evaluation.adv_export.load_adversarial`; folders among ``offered`` (the run's own) are not repeated."""
    from ..evaluation.adv_export import load_adversarial

    for path in paths:
        if not Path(path).exists():
            raise ConfigError(f"--examples {path} does not exist")
    known = {Path(p).resolve() for p in offered}
    out: dict[str, dict] = {}
    for path in map(Path, paths):
        if path.resolve() in known:
            continue  # already offered as one of the run's attacks
        known.add(path.resolve())
        x, y, meta = load_adversarial(path)
        base = f"given:{path.resolve().name}"
        source, k = base, 2
        while source in out:
            source, k = f"{base}-{k}", k + 1
        attack = meta["attack"] if isinstance(meta.get("attack"), str) and meta["attack"] else path.stem
        eps = meta.get("eps")  # load_adversarial's: from the file's arrays or its settings
        eps = float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None
        out[source] = {"entry": _entry(source, "given", attack, eps, note=f" ({path.resolve().name})"),
                       "tensors": _given_tensors(path, x, y, meta), "path": path}
    return out


def _given_tensors(path: Path, x: torch.Tensor, y, meta: dict) -> dict[str, torch.Tensor]:
    from ..core.validation import check_images

    if x.dim() != 4 or len(x) == 0:
        raise InputError(f"--examples {path} holds no batch of images (shape {tuple(x.shape)})")
    t = {"x_adv": check_images(x.float(), name=f"the images of --examples {path}").contiguous()}
    for key, value in (("y", y), ("indices", meta.get("indices")), ("success", meta.get("success"))):
        v = None if value is None else torch.as_tensor(value).reshape(-1)
        if v is not None and len(v) == len(x):
            t[key] = v.bool() if key == "success" else v.long()
    return t


def check_given(given: dict[str, dict], classifier) -> None:
    """Every ``--examples`` file holds images of the model's channels and size (once the model is loaded)."""
    shape = getattr(classifier, "input_shape", None)
    for g in given.values():
        got = tuple(g["tensors"]["x_adv"].shape[1:])
        if got[0] != classifier.in_channels or (shape is not None and got != tuple(shape)):
            want = tuple(shape) if shape is not None else f"{classifier.in_channels} channel(s)"
            raise InputError(f"--examples {g['path']} holds images of shape {got}; the model takes {want}")
