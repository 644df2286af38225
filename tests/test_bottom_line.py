"""The report's bottom line: a box right under the title that answers, with n and intervals, what the clean error
is, how well the detectors find oblivious attacks, at which ε they fall to adaptive ones (interpolated), which
claims hold, whether RCE helps and whether the detector survives an attacker who knows it; and the sanity checks
as a count. Hand-built results, the tiny run's report, and (with Chromium) the box within the first screen."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from test_report import fake_results

from rcedetect import report
from rcedetect.report.adaptive import adaptive_blocks
from rcedetect.report.bottom_line import ADAPTIVE_CLAIM, BOX_ID, TITLE, adaptive_claim, bottom_line_blocks
from rcedetect.report.bottom_line_numbers import Share, eps_reaching, worst_case_curve
from rcedetect.report.render import to_html, to_markdown
from rcedetect.report.verdicts import verdict_of

INTERVAL = re.compile(r"\[\d+(\.\d+)?, \d+(\.\d+)?\]")


def _worst(model: str, metric: str, eps: float, k: int, n: int = 100) -> dict:
    from rcedetect.stats.metrics import wilson_interval

    lo, hi = wilson_interval(k, n)
    return {"model": model, "objective": model, "metric": metric, "norm": "linf", "eps": eps, "n_fooled": k,
            "n_clean_correct": n, "attack_success_rate": k / n, "interval": [lo, hi], "attacks": ["pgd_detector"]}


def with_adaptive(ce_kd=(10, 60, 95), rce_kd=(0, 20, 70), eps=(0.01, 0.03, 0.05), failed: int = 0) -> dict:
    """fake_results plus an adaptive section: K-density and non-ME worst cases on an ε grid, passed checks."""
    results = fake_results()
    rows = []
    for model, kd in (("ce", ce_kd), ("rce", rce_kd)):
        rows += [_worst(model, "kd", e, k) for e, k in zip(eps, kd)]
        rows += [_worst(model, "non_me", e, 100) for e in eps]
    sanity = {m: [{"check": "large_eps", "passed": True, "detail": f"{m} fine {i}", "metric": "kd"} for i in range(3)]
              for m in ("ce", "rce")}
    for i in range(failed):
        sanity["rce"][i].update(passed=False, detail="at ε = 1 pgd_detector fools 20 % (expected ≥ 90 %)")
    records = [{**{k: w[k] for k in ("model", "objective", "metric", "norm", "eps")}, "attack": "pgd_detector",
                "operating_point": {"attack_success_rate": w["attack_success_rate"],
                                    "robust_accuracy_with_rejection": 1 - w["attack_success_rate"]}} for w in rows]
    results["adaptive"] = {"fpr": 0.05, "records": records, "worst_case": rows, "sanity": sanity}
    return results


def _text(blocks: list[tuple]) -> str:
    parts = []
    for b in blocks:
        if b[0] in ("p", "ul"):
            parts.append(b[1] if isinstance(b[1], str) else " ".join(b[1]))
        elif b[0] == "table":
            parts.append(" ".join(" ".join(r) for r in b[2]))
    return "\n".join(parts)


def test_the_eps_where_a_curve_reaches_a_level_is_interpolated_between_grid_points():
    curve = [(0.01, Share(0.1, 0, 0.2, 100)), (0.03, Share(0.6, 0.5, 0.7, 100)), (0.05, Share(0.95, 0.9, 1, 100))]
    half, most = eps_reaching(curve, 0.5), eps_reaching(curve, 0.9)
    assert half.eps == pytest.approx(0.01 + 0.4 / 0.5 * 0.02) and half.text() == "0.026"
    assert most.eps == pytest.approx(0.03 + 0.3 / 0.35 * 0.02)
    assert eps_reaching(curve, 0.05).text() == "≤ 0.01"  # reached at the smallest ε: only a bound
    assert eps_reaching(curve, 0.99).text() == "not reached up to 0.05"
    assert eps_reaching(curve, 0.99).phrase(0.99) == "stays below 99 % up to ε 0.05"
    assert eps_reaching([], 0.5) is None


def test_the_box_opens_the_report_right_after_the_title_paragraph_with_n_and_intervals():
    results = with_adaptive()
    blocks = report.build_blocks(results, [("bottom_line", "figures/b.png", "the figure, n = 100.")])
    assert blocks[0][0] == "h" and blocks[1][0] == "p" and blocks[2] == ("div", BOX_ID)
    end = blocks.index(("end_div",))
    box = blocks[3:end]
    assert box[0] == ("h", 2, TITLE) and any(b[0] == "img" and b[1] == "bottom_line" for b in box)
    text = _text(box)
    assert "clean test error" in text and "1.50 [0.91, 2.46], n = 1000" in text  # 15 of 1000, Wilson
    assert "K-density AUC, lowest over the oblivious attacks" in text and "40 pairs" in text
    assert "Does RCE help?" in text and "Does the detector survive an attacker who knows it?" in text
    # CE + K-density: 10 % at 0.01, 60 % at 0.03 -> 50 % at 0.01 + 0.8 * 0.02 = 0.026; RCE: 20 % at 0.03,
    # 70 % at 0.05 -> 0.03 + 0.6 * 0.02 = 0.042; 90 %: CE at 0.03 + 0.3/0.35 * 0.02 = 0.0471, RCE not reached
    kd_row = next(r for b in box if b[0] == "table" for r in b[2] if r[0] == "K-density")
    assert kd_row[1:5] == ["0.026", "0.042", "0.0471", "not reached up to 0.05"]
    assert "70 [60, 78] at ε 0.05, n = 100" in kd_row[6]
    assert "stays below" not in text.split("Does the detector survive")[1].split(".")[0]  # RCE + K-density fell
    assert "half of the attacked images at ε 0.042" in text


def test_the_adaptive_claim_follows_the_intervals():
    holds = adaptive_claim(with_adaptive(ce_kd=(10, 60, 95), rce_kd=(0, 20, 70)))
    assert holds.startswith(ADAPTIVE_CLAIM + ": holds") and verdict_of(holds) is True
    assert "ε 0.03: RCE 20.0" in holds and "n = 100 / 100" in holds
    worse = adaptive_claim(with_adaptive(ce_kd=(0, 20, 70), rce_kd=(10, 60, 95)))
    assert verdict_of(worse) is False and "does not hold" in worse
    mixed = adaptive_claim(with_adaptive(ce_kd=(40, 20, 95), rce_kd=(5, 60, 95)))
    assert verdict_of(mixed) is None and "mixed" in mixed
    close = adaptive_claim(with_adaptive(ce_kd=(10, 30, 50), rce_kd=(8, 28, 49)))
    assert verdict_of(close) is None and "overlap at every ε" in close
    assert adaptive_claim(fake_results()) is None  # no adaptive evaluation: not judged


def test_claims_are_grouped_by_verdict_with_the_adaptive_claim_among_them():
    text = _text(bottom_line_blocks(with_adaptive(), {}))
    hold = next(line for line in text.splitlines() if line.startswith("Hold ("))
    assert "RCE ≥ CE for K-density on every attack (Table 2)" in hold and ADAPTIVE_CLAIM in hold
    synthetic = with_adaptive()
    synthetic["dataset"] = "synthetic"
    assert "The paper gives no numbers for this dataset" in _text(bottom_line_blocks(synthetic, {}))


def test_without_an_adaptive_evaluation_the_box_says_so():
    text = _text(bottom_line_blocks(fake_results(), {}))
    assert "Does the detector survive an attacker who knows it? Not measured" in text
    assert "sanity checks" not in text


def test_replicated_runs_use_the_across_seed_means_and_say_over_how_many_seeds():
    results = with_adaptive()
    across = [{"model": m, "objective": m, "metric": "kd", "norm": "linf", "eps": e, "statistic":
               "attack_success_rate", "mean": v, "low": max(0.0, v - 0.05), "high": min(1.0, v + 0.05),
               "per_seed": [v, v], "n": [100, 100]}
              for m, vals in (("ce", (0.3, 0.7, 1.0)), ("rce", (0.0, 0.1, 0.2))) for e, v in zip((0.01, 0.03, 0.05), vals)]
    table1 = [{"model": m, "objective": m, "statistic": "test_error", "mean": 0.021, "low": 0.015, "high": 0.027,
               "per_seed": [0.02, 0.022], "n": [1000, 1000]} for m in ("ce", "rce")]
    results["replication"] = {"seeds": 3, "per_seed": [], "across": {"table1": table1, "table2": [],
                                                                      "adaptive": across, "transfer": []}}
    curve = worst_case_curve(results, "ce", "kd")
    assert [s.value for _, s in curve] == [0.3, 0.7, 1.0]  # the across-seed means, not the run's own 10/60/95
    text = _text(bottom_line_blocks(results, {}))
    assert "Over 3 seeds" in text and "over 3 seeds" in text and "2.10 [1.50, 2.70], n = 1000" in text
    assert "RCE's interval lies below CE's at ε 0.01, 0.03, 0.05" in text


def test_sanity_checks_collapse_to_a_count_with_failures_spelled_out():
    passing = with_adaptive()
    text = _text(adaptive_blocks(passing, {})) + _text(bottom_line_blocks(passing, {}))
    assert "6 of 6 sanity checks passed." in text and "6 of 6 sanity checks of the adaptive attacks passed." in text
    assert "ce fine 0" not in text and "Passed:" not in text  # no bullet per passed check
    failing = with_adaptive(failed=2)
    ad = _text(adaptive_blocks(failing, {}))
    assert "4 of 6 sanity checks passed." in ad and ad.count("expected ≥ 90 %") == 2 and "fine 2" not in ad
    box = _text(bottom_line_blocks(failing, {}))
    assert "4 of 6 sanity checks of the adaptive attacks passed; FAILED: rce, K-density: large_eps" in box


def test_the_box_renders_as_a_div_before_the_contents_and_as_a_ruled_block_in_markdown():
    blocks = report.build_blocks(with_adaptive(), [])
    page = to_html(blocks, "t")
    box, toc = page.index(f'<div class="box" id="{BOX_ID}">'), page.index('class="toc"')
    assert box < toc and page.index("<table>", box) < page.index("</div>", box)  # tables parsed inside the box
    assert "markdown=" not in page and "| clean test error" not in page
    md = to_markdown(blocks)
    assert md.index(TITLE) < md.index("\n---\n") < md.index("Table 1") and "<div" not in md


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory):
    """The tiny run's report.md / report.html, rendered from its results alone (as `rce report` does)."""
    out = tmp_path_factory.mktemp("tiny-report")
    report.render(out, tiny_run[1])
    return out


def test_the_tiny_runs_report_opens_with_the_box_and_its_figure(tiny_report):
    out = tiny_report
    md = (out / "report.md").read_text()
    head = md[: md.index("\n---\n")]
    assert TITLE in head and "bottom_line_sr_vs_eps.png" in head and INTERVAL.search(head) and "n = " in head
    assert "Does the detector survive an attacker who knows it?" in head
    assert (out / "figures" / "bottom_line_sr_vs_eps.png").is_file()


# ----------------------------------------------------------------------------------------------- in a browser
def _chromium() -> str | None:
    for c in filter(None, [os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"]):
        if shutil.which(c):
            return shutil.which(c)
    return None


def test_the_box_is_within_the_first_screen_of_report_html(tiny_report):
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium binary found (set $CHROMIUM or install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the playwright package")
    out = tiny_report
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto((out / "report.html").as_uri())
            box = page.locator(f"#{BOX_ID}")
            top, numbers = box.bounding_box(), box.locator("table").first
            where, text = numbers.bounding_box(), numbers.inner_text()
            answers = box.locator("p", has_text="Does RCE help?").bounding_box()
            page.screenshot(path=str(out / "bottom_line_screen.png"))
        finally:
            browser.close()
    assert top is not None and top["y"] < 400 and top["width"] > 600
    # the table of clean errors and AUCs, with its n and intervals, is wholly on the first 1280 x 1000 screen
    assert where["y"] + where["height"] <= 1000 and answers["y"] + answers["height"] <= 1000
    assert "clean test error" in text and "n = " in text and INTERVAL.search(text), text
