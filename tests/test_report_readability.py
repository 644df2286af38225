"""The report reads at a glance: real HTML tables, numbered figures with captions, paper values beside ours, every
empty cell explained, AUCs below 50 explained with measured numbers, and figures whose text is never under 9 pt."""

from __future__ import annotations

import html
import math
import re

import matplotlib.image
import pytest
from test_report import fake_results

from rcedetect import report
from rcedetect.evaluation import paper_ref
from rcedetect.report import figure_style, figures
from rcedetect.report.format import NO_PAIRS
from rcedetect.report.render import esc, to_html, to_markdown
from rcedetect.report.table2 import LOW_AUC_TITLE


def _find(results: dict, model: str, attack: str, eps: float | None) -> dict:
    return next(r for r in results["attacks"] if r["model"] == model and r["attack"] == attack and r["eps"] == eps)


def _fake_figures(results: dict) -> list[tuple[str, str, str]]:
    """What figures.make_all would return, without drawing anything."""
    keys = ("auc_vs_eps", "roc", "fig2a", "fig2b", "fig3", "tsne", "noise", "kd_hist", "adaptive")
    return [(k, f"figures/{k}.png", f"the {k} figure, n = 10.") for k in keys]


def _markdown(results: dict) -> str:
    return to_markdown(report.build_blocks(results, _fake_figures(results)))


def _visible_text(page: str) -> str:
    body = re.sub(r"<style>.*?</style>", "", page, flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report.render(out, fake_results())
    return out, (out / "report.md").read_text(), (out / "report.html").read_text()


def test_html_is_rendered_markdown_with_real_tables_and_no_literal_markup(rendered):
    _, md, page = rendered
    assert page.count("<table>") == md.count("\n|---") + md.count("\n|:---")
    assert "<th" in page and "text-align: right" in page and '<div class="toc">' in page
    text = _visible_text(page)
    assert "`" not in text and "**" not in text and "|---" not in text and "\\*" not in text
    assert "f2(x*) > 0" in text  # an asterisk in the prose is text, not emphasis


def test_escaping_keeps_plain_text_as_it_is():
    blocks = [("h", 1, "t"), ("p", "x* and y* with non_me, _lead, a|b, <b>, `code`"),
              ("table", ["a|b", "c"], [["x*", "1.0"]])]
    text = _visible_text(to_html(blocks, "t"))
    assert "x* and y* with non_me, _lead, a|b, <b>, `code`" in text and "x*" in text and "a|b" in text
    assert esc("non_me") == "non_me" and esc("x*") == "x\\*"


def test_every_figure_has_a_unique_consecutive_number_and_a_caption(rendered):
    out, md, page = rendered
    images = re.findall(r"!\[Figure (\d+)\]\((figures/[^)]+)\)", md)
    captions = [int(n) for n in re.findall(r"^\*\*Figure (\d+):\*\* \S", md, flags=re.MULTILINE)]
    assert [int(n) for n, _ in images] == captions == list(range(1, len(images) + 1))
    assert len(images) == 7 and len({f for _, f in images}) == 7
    assert all((out / f).is_file() for _, f in images)
    assert not re.search(r"\bFigure \d", re.sub(r"\*\*Figure \d+:\*\*|!\[Figure \d+\]|\(Figure \d+ shows", "", md))
    assert len(re.findall(r'<p class="caption"><strong>Figure \d+:</strong>', page)) == 7
    for caption in re.findall(r"^\*\*Figure \d+:\*\* (.*)$", md, flags=re.MULTILINE):
        assert re.search(r"\b(n|pairs|images)\b", caption) and re.search(r"\d", caption), caption  # says its n


def test_figure_text_is_never_under_9_points_and_never_scaled_down(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    sizes: dict[str, float] = {}
    save = Figure.savefig

    def checked(fig, fname, *a, **kw):
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        sizes[str(len(sizes))] = min(t.get_fontsize() for t in texts)
        return save(fig, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", checked)
    made = figures.make_all(fake_results(), tmp_path)
    assert len(made) == len(sizes) == 7
    assert min(sizes.values()) >= figure_style.MIN_FONT_PT
    for _, file, _ in made:
        assert matplotlib.image.imread(tmp_path / file).shape[1] <= figure_style.MAX_WIDTH_PX


def test_table1_shows_the_paper_value_beside_ours():
    results = fake_results()  # resnet32 main models, a resnet56 target, on mnist5k
    md = _markdown(results)
    row = next(line for line in md.splitlines() if line.startswith("| ResNet-32 CE |"))
    paper = paper_ref.test_error("resnet32", "ce", "mnist")
    assert f"| 1.50 | {paper:.2f} | {1.5 - paper:+.2f} |" in row
    assert "| paper (%) | Δ (points) |" in md and "error % (paper, Δ)" not in md
    results["models"]["ce"]["arch"] = "resnet8"
    md = _markdown(results)
    assert f"| {paper:.2f} (ResNet-32)¹ |" in md and "¹ the paper trains no ResNet-8" in md
    results["dataset"] = "synthetic"
    md = _markdown(results)
    row = next(line for line in md.splitlines() if line.startswith("| ResNet-8 CE |"))
    assert row.endswith("| —¹ | —¹ |") and "¹ the paper reports no test error for this dataset" in md


def test_a_record_with_zero_pairs_is_explained_in_tables_and_figures(tmp_path):
    results = fake_results()
    rec = _find(results, "rce", "bim", 0.16)
    rec.update(n_pairs=0, log_kd_adv=[])
    for d in rec["detection"].values():
        d.update(auc_strict=math.nan, auc_half=math.nan, tpr_at_5fpr=None, n_pairs=0)
    _find(results, "rce", "bim", 0.04).update(n_pairs=0)
    md = _markdown(results)
    row = next(line for line in md.splitlines() if line.startswith("| BIM | RCE |"))
    assert row.count("—¹") == 4 and row.endswith("| 0 |")
    assert f"¹ {NO_PAIRS}" in md
    caps = {k: c for k, _, c in figures.make_all(results, tmp_path)}
    assert "No point for BIM RCE at ε 0.04; BIM RCE at ε 0.16: 0 pairs" in caps["auc_vs_eps"]
    assert "No histogram for BIM on RCE: 0 pairs" in caps["kd_hist"]
    assert NO_PAIRS not in _markdown(fake_results()) and "No point for" not in caps["fig2a"]


def _low_confidence(results: dict) -> dict:
    """CE FGSM at ε 0.16 with the confidence AUC of the demo (10.8) and its operating point."""
    rec = _find(results, "ce", "fgsm", 0.16)
    rec["detection"]["confidence"].update(auc_strict=0.108, auc_half=0.108, operating_points={"fpr_5": {
        "threshold": -0.840141, "fpr": 0.05, "tpr_success": 0.032787, "n_pairs": 40}})
    _find(results, "ce", "fgsm", 0.04)["detection"]["confidence"]["auc_strict"] = 0.62
    return results


def test_confidence_aucs_below_50_are_explained_with_measured_numbers():
    md = _markdown(_low_confidence(fake_results()))
    assert f"### {LOW_AUC_TITLE}" in md and "not a sign error" in md and "MORE confident" in md
    item = next(line for line in md.splitlines() if line.startswith("- FGSM on CE at ε 0.16 (40 pairs)"))
    assert "AUC 10.8" in item and "in 89 % of (clean, adversarial) comparisons" in item
    assert "confidence below 0.840" in item and "96.7 % are at least that confident" in item
    assert "falls below 50 between ε 0.04 (62.0) and ε 0.16 (10.8)" in item
    assert f"Below 50: see “{LOW_AUC_TITLE}”" in md
    assert LOW_AUC_TITLE not in _markdown(fake_results())


def test_a_score_summary_adds_the_mean_confidences():
    results = _low_confidence(fake_results())
    _find(results, "ce", "fgsm", 0.16)["detection"]["confidence"]["score_summary"] = {
        "clean": {"mean": -0.95, "median": -0.97}, "adversarial": {"mean": -0.99, "median": -1.0}}
    assert "Mean confidence: 0.990 on the adversarial examples, 0.950 on their clean images." in _markdown(results)


def test_time_cells_read_in_their_unit():
    assert [report.seconds(v) for v in (6.7e-4, 4.1e-3, 0.133, 29.0, 1300.0, None)] == [
        "670 µs", "4.1 ms", "133 ms", "29 s", "1300 s", "—"]
