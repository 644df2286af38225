"""The page of ``rce serve`` in headless Chromium (Playwright): upload an image and read the answer off the page,
pick an adversarial example, draw a digit; a screenshot is written to the test's tmp folder."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")


def chromium() -> str | None:
    """A Chromium or Chrome binary: $CHROMIUM, else the usual names on PATH."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"]
    for c in filter(None, candidates):
        found = shutil.which(c)
        if found:
            return found
    return None


BROWSER = chromium()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium binary found (set $CHROMIUM or install chromium)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ANSWERED = "#answer[data-state=accepted], #answer[data-state=not-sure]"


@pytest.fixture(scope="module")
def page_server(trained_runs, tmp_path_factory):
    from test_serve_bodies import ONLY_CHECKPOINT

    from rcedetect.cli import main
    from rcedetect.serve.spawn import ServerProcess

    run = tmp_path_factory.mktemp("page") / "run"
    shutil.copytree(trained_runs["rce"], run, ignore=ONLY_CHECKPOINT)
    assert main(["attack", str(run), "--attack", "fgsm", "--eps", "0.3", "--n", "20", "--quiet", "--device", "cpu"]) == 0
    with ServerProcess(run, "--per-class", "100", "--quiet", "--threads", "1", "--device", "cpu") as server:
        yield run, server


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=ARGS)
        yield b
        b.close()


def answer_text(label: int) -> str:
    return "NOT SURE" if label < 0 else str(label)


def test_upload_pick_and_draw(page_server, browser, synthetic, tmp_path):
    from PIL import Image

    from rcedetect.detectors import Detector
    from rcedetect.evaluation import attack_store
    from rcedetect.models import checkpoint

    run, server = page_server
    det = Detector.load(run / "detector-kd", checkpoint.load(run).classifier)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    assert "rce" in page.inner_text("#model-info").lower()

    # upload: the answer on the page is Detector.predict's on the same image
    for i in (0, 7):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(synthetic.x_test[i, 0].numpy()).save(path)
        page.click("[data-tab=upload]")
        page.set_input_files("#file", str(path))
        page.wait_for_selector(f"#detail:has-text('digit{i}.png')", timeout=20_000)
        page.wait_for_selector(ANSWERED)
        want = answer_text(int(det.predict(synthetic.test_images()[i : i + 1])[0]))
        assert page.inner_text("#answer").strip() == want
        assert page.locator("#scores tbody tr").count() == 3
    page.screenshot(path=str(tmp_path / "page-upload.png"), full_page=True)

    # an adversarial example the detector flags offline is NOT SURE on the page
    folder = next((run / "attacks").iterdir())
    res, _, _ = attack_store.load_parts(folder, 20, 200)
    flagged = [i for i, v in enumerate(det.predict(res.x_adv).tolist()) if v < 0]
    if flagged:
        page.click("[data-tab=adv]")
        page.select_option("#adv-source", f"attack:{folder.name}")
        page.fill("#adv-index", str(flagged[0]))
        page.click("#adv-go")
        page.wait_for_selector(f"#detail:has-text('#{flagged[0]}')", timeout=20_000)
        assert page.inner_text("#answer").strip() == "NOT SURE"

    # drawing gives some answer, and the image the model saw is drawn
    page.click("[data-tab=draw]")
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 150, box["y"] + 230, steps=8)
    page.mouse.up()
    page.wait_for_selector("#detail:has-text('drawn')", timeout=20_000)
    page.wait_for_selector(ANSWERED)
    seen = page.locator("#seen").screenshot()
    assert len(seen) > 100
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert np.asarray(Image.open(shot)).std() > 0  # not a blank page
    assert not errors, errors
    page.close()


def test_the_page_sends_the_token_from_the_fragment_or_the_form(trained_runs, browser, synthetic, tmp_path):
    from PIL import Image
    from test_serve_bodies import ONLY_CHECKPOINT

    from rcedetect.serve.spawn import ServerProcess

    run = tmp_path / "run"
    shutil.copytree(trained_runs["rce"], run, ignore=ONLY_CHECKPOINT)
    (tmp_path / "token").write_text("page-token-42\n")
    with ServerProcess(run, "--per-class", "100", "--quiet", "--threads", "1", "--device", "cpu",
                       "--token-file", str(tmp_path / "token")) as server:
        page = browser.new_page()
        page.goto(server.url + "/#token=page-token-42")
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        assert "#token" not in page.url  # taken out of the address
        path = tmp_path / "digit.png"
        Image.fromarray(synthetic.x_test[0, 0].numpy()).save(path)
        page.click("[data-tab=upload]")
        page.set_input_files("#file", str(path))
        page.wait_for_selector(ANSWERED, timeout=20_000)
        page.close()

        page = browser.new_page()  # a new tab: no token yet, so the page asks for it
        page.goto(server.url + "/")
        page.wait_for_selector("#token-form:not([hidden])", timeout=20_000)
        page.fill("#token-input", "wrong")
        page.click("#token-form button")
        page.wait_for_selector("#token-note:has-text('not this server')", timeout=20_000)
        page.fill("#token-input", "page-token-42")
        page.click("#token-form button")
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        page.close()
