"""Safe, atomic file I/O: weights in safetensors, metadata in JSON, never a pickle.

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed over the target,
so a killed process never leaves a half-written file that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # the user's normal permissions, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create the folder ``path`` if needed and prove a file can be written there, before any work is done.

    Raises :class:`ConfigError` with one line when ``path`` is a file, lies under a file, or cannot be written.
    """
    from .errors import ConfigError

    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                where = "is a file" if folder == path else f"lies under {folder}, which is a file"
                raise ConfigError(f"the {what} {path} {where}; choose another")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".rce-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write in the {what} {path} ({e.strerror or e}); choose another") from e
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(obj, indent=1, sort_keys=False, default=_json_default, allow_nan=True)
    return atomic_write_bytes(path, (text + "\n").encode())


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    from .textfiles import loads_json

    return loads_json(path.read_bytes(), f"{what} {path}", CheckpointError)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, data)


def load_tensors(path: str | Path, what: str = "tensor file") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{what} {path} is not a valid safetensors file (truncated or corrupted?): {e}") from e


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(obj: Any, length: int = 10) -> str:
    """A short stable hash of a JSON-able config, used to name cached artifacts."""
    text = json.dumps(obj, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a safetensors file's header (the one reader of it in the package)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from e


def package_version() -> str:
    """rcedetect's installed version, from the package metadata (pyproject.toml is the one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rcedetect")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "0+unknown"


def versions() -> dict[str, str]:
    import platform

    import numpy

    return {"rcedetect": package_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}
