"""The documentation site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict`` (a broken link or anchor, a
missing page or an unresolved docstring reference fails), the guides' Python examples run, the figures are small
PNGs, and in headless Chromium the start page and a results page show their figures.

A guide's ```python block runs unless the line before it is ``<!-- docs-test: skip (the reason) -->``; the blocks of
one page run in order in one namespace, in a temporary folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = DOCS / "assets" / "figures"
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b")
BLOCK = re.compile(r"(?:^|\n)((?:<!--[^\n]*-->\n)?)```python\n(.*?)```", flags=re.DOTALL)
#: the pages whose Python examples are executed: the start page and the guides
PAGES = ["index.md", *(f"guides/{p.name}" for p in sorted((DOCS / "guides").glob("*.md")))]


def python_blocks(page: str) -> list[tuple[str, bool]]:
    """(code, skipped) of each ```python block of ``page``, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [(code, bool(SKIP.search(before))) for before, code in BLOCK.findall(text)]


def test_the_site_has_its_pages_and_config():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "font: false" in config, "the site loads no web fonts (offline build and view)"
    for page in re.findall(r":\s*([\w/.-]+\.md)", config):
        assert (DOCS / page).is_file() or page.startswith("protocol/"), f"mkdocs.yml names a missing page {page}"
    assert (DOCS / "protocol.md").is_file() and (DOCS / "design.md").is_file()
    assert "docs/results/demo.md" in (ROOT / "REPRODUCE.md").read_text(encoding="utf-8")


def test_the_figures_are_small_pngs():
    files = sorted(FIGURES.rglob("*"))
    pngs = [f for f in files if f.is_file()]
    assert pngs, "docs/assets/figures holds the figures the pages show (docs/collect_figures.py)"
    for f in pngs:
        assert f.suffix == ".png" and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{f} is not a PNG"
        assert f.stat().st_size <= 200 * 1024, f"{f} is {f.stat().st_size} bytes (at most 200 KB)"
    assert sum(f.stat().st_size for f in pngs) <= 5 * 1024 * 1024, "the figures take more than 5 MB in all"


def test_every_figure_a_page_shows_exists():
    for page in DOCS.rglob("*.md"):
        for src in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", page.read_text(encoding="utf-8")):
            assert (page.parent / src).resolve().is_file(), f"{page.relative_to(DOCS)} shows a missing figure {src}"


def test_the_protocol_is_split_at_its_sections():
    sys.path.insert(0, str(DOCS))
    try:
        pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    sections = hooks.split_protocol(text)
    n_sections = len(re.findall(r"^## ", re.sub(r"```.*?```", "", text, flags=re.DOTALL), flags=re.MULTILINE))
    assert len(sections) == 1 + n_sections and sections[0].src_uri == "protocol/index.md"
    assert len({s.src_uri for s in sections}) == len(sections)
    assert any(s.src_uri == "protocol/section-14.md" for s in sections)
    # nothing of the file is lost: every non-heading line is on exactly one page
    body = [line for s in sections for line in s.lines if not line.startswith("#")]
    assert sorted(body) == sorted(line for line in text.splitlines() if not line.startswith("#"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once with ``mkdocs build --strict`` into a temporary folder."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]' or '.[dev]')")
    pytest.importorskip("material", reason="Material for MkDocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site") / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out


def test_the_site_builds_strict(site):
    for page in ("index.html", "guides/adaptive.html", "results/demo.html", "protocol/index.html",
                 "protocol/section-14.html", "design.html", "api/classifier.html", "changelog.html"):
        assert (site / page).is_file(), f"the site has no {page}"
    api = (site / "api" / "detectors.html").read_text(encoding="utf-8")
    assert "rcedetect.detectors.threshold.Detector" in api and "calibrate" in api, "the API page documents Detector"
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html, f"{page} loads web fonts"
        assert not re.search(r"<script[^>]+src=\"https?://", html), f"{page} loads a script from the network"


def test_some_guides_have_examples_that_run():
    assert len([p for p in PAGES if any(not skipped for _, skipped in python_blocks(p))]) >= 3


@pytest.mark.parametrize("page", [p for p in PAGES if any(not skipped for _, skipped in python_blocks(p))])
def test_the_guides_examples_run(page, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few kernel points per class, sanity checks of cut attacks
        for i, (code, skipped) in enumerate(blocks):
            if not skipped:
                exec(compile(code, f"docs/{page} (python block {i + 1})", "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out, f"the examples of {page} print what they show"


def _chromium() -> str | None:
    for c in filter(None, [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"]):
        found = shutil.which(c)
        if found:
            return found
    return None


def test_the_built_pages_show_their_figures(site):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium binary found (set $CHROMIUM or install chromium)")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--allow-file-access-from-files"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=args)
        try:
            for name, least in (("index.html", 2), ("results/demo.html", 5)):
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto((site / name).as_uri())
                page.wait_for_load_state("load")
                images = page.eval_on_selector_all(
                    "article img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
                assert len(images) >= least, f"{name} shows {len(images)} figures, expected at least {least}"
                broken = [src for src, complete, width in images if not complete or width == 0]
                assert not broken, f"{name}: figures that did not load: {broken}"
                assert not errors, f"{name}: script errors {errors}"
                page.close()
        finally:
            browser.close()
