"""Copy the figures of a finished run into the documentation site, downsized.

    python docs/collect_figures.py RUN_DIR NAME      # e.g. runs/demo demo

reads ``RUN_DIR/figures/*.png`` (the report's figures: roc, auc_vs_eps, adaptive_sr_vs_eps, fig1_tsne,
figB3_kd_hist, ...; ``src/rcedetect/report/figures*.py`` names them) and writes each into
``docs/assets/figures/NAME/`` at most ``--max-width`` pixels wide (900 by default), as an optimised PNG
(palette-quantised when that keeps it under the size limit), then prints every file's size. Each file must end up at
most 200 KB and the whole ``docs/assets/figures`` folder at most 5 MB (``tests/test_docs_site.py`` checks both); the
script says so and exits with status 1 when a limit is passed. Old figures of NAME that the run no longer has are
removed.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent / "assets" / "figures"
MAX_FILE = 200 * 1024
MAX_TOTAL = 5 * 1024 * 1024


def shrink(src: Path, max_width: int) -> bytes:
    """The PNG bytes of ``src`` at most ``max_width`` wide: optimised RGB(A), or quantised to 256 colours where that
    is needed to stay under the per-file limit."""
    with Image.open(src) as im:
        im.load()
        img = im.convert("RGBA") if "A" in im.getbands() else im.convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.Resampling.LANCZOS)
    if img.mode == "RGBA" and img.getchannel("A").getextrema() == (255, 255):
        img = img.convert("RGB")
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    if out.tell() > MAX_FILE // 2:
        quantised = io.BytesIO()
        img.quantize(colors=256, method=Image.Quantize.FASTOCTREE if img.mode == "RGBA" else Image.Quantize.MEDIANCUT,
                     dither=Image.Dither.NONE).save(quantised, format="PNG", optimize=True)
        if quantised.tell() < out.tell():
            out = quantised
    return out.getvalue()


def collect(run_dir: Path, name: str, max_width: int = 900, root: Path = ROOT) -> list[tuple[str, int]]:
    """Write the downsized figures of ``run_dir`` into ``root/name``; (file name, bytes) of each."""
    figures = sorted((run_dir / "figures").glob("*.png"))
    if not figures:
        raise SystemExit(f"no figures in {run_dir / 'figures'}: is {run_dir} a finished rce reproduce run?")
    dest = root / name
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in figures:
        data = shrink(src, max_width)
        (dest / src.name).write_bytes(data)
        written.append((src.name, len(data)))
    keep = {n for n, _ in written}
    for old in dest.glob("*.png"):
        if old.name not in keep:
            old.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished rce reproduce output folder (with figures/)")
    p.add_argument("name", help="the folder under docs/assets/figures/, e.g. demo")
    p.add_argument("--max-width", type=int, default=900, help="largest width in pixels (default 900)")
    a = p.parse_args(argv)
    written = collect(a.run_dir, a.name, a.max_width)
    ok = True
    for n, size in written:
        flag = "" if size <= MAX_FILE else "  OVER 200 KB"
        ok &= not flag
        print(f"{size / 1024:7.1f} KB  docs/assets/figures/{a.name}/{n}{flag}")
    total = sum(f.stat().st_size for f in ROOT.rglob("*.png"))
    print(f"{sum(s for _, s in written) / 1024:7.1f} KB  this run; {total / 1024:.1f} KB in docs/assets/figures "
          f"(limit {MAX_TOTAL // 1024} KB)")
    if total > MAX_TOTAL:
        print("the figures pass the 5 MB limit", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
