"""The report: tables and figures from ``results.json`` alone (never loads a model).

Every table cell shows our value beside the paper's and the difference, ``ours (paper, Δ)``, wherever the paper
has a value (``paper_numbers.json``). One list of blocks (headings, paragraphs, tables, images) is rendered
twice: ``report.md`` and a self-contained ``report.html`` whose figures are PNG files in ``figures/``.

The ``results.json`` schema is written by :mod:`rcedetect.reproduce.results` and documented in REPRODUCE.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import detectors, paper_ref
from .errors import CheckpointError
from .io import atomic_write_bytes, read_json
from .operating_point import MIN_PAIRS
from .report_adaptive import adaptive_blocks, operating_blocks
from .report_compare import compare_blocks
from .report_format import (
    auc_cell,
    auc_of,
    cell,
    enough_pairs,
    main_models,
    num,
    pct,
    record,
    seconds,
    table2_record,
    to_html,
    to_markdown,
)

RESULTS = "results.json"
TABLE2_ATTACKS = paper_ref.TABLE2_ATTACKS
#: the detectors of the tables: every registered one, in registration order (rcedetect.detectors)
#: the paper's three detectors (the baselines of other papers have their own table, :mod:`.report_compare`)
METRICS = tuple(m for m in detectors.names() if detectors.REGISTRY[m].in_paper)
LABELS = tuple(detectors.REGISTRY[m].label for m in METRICS)
DISAGREE_AUC = 5.0  # AUC points (x100) beyond which a Table 2 cell is listed as a disagreement


def load(out_dir: str | Path) -> dict[str, Any]:
    results = read_json(Path(out_dir) / RESULTS, "results file")
    if not isinstance(results, dict) or results.get("format") != "rcedetect-results":
        raise CheckpointError(f"{Path(out_dir) / RESULTS} is not an rcedetect results file")
    return results


# ----------------------------------------------------------------------------------------------- blocks
def build_blocks(results: dict, figures: list[tuple[str, str, str]]) -> list[tuple]:
    """The report as blocks: ('h', level, text) / ('p', text) / ('ul', items) / ('table', head, rows) /
    ('img', file, caption). ``figures`` = [(key, file, caption)]."""
    col = paper_ref.column(results.get("dataset"))
    figs = {k: (f, c) for k, f, c in figures}
    b: list[tuple] = [("h", 1, f"rcedetect reproduction: preset {results.get('preset')!r} on {results.get('dataset')}")]
    b.append(("p", (f"Config hash {results.get('config_hash')}, seed {results.get('seed')}, device "
                   f"{results.get('device')}, rcedetect {results.get('versions', {}).get('rcedetect')}, torch "
                   f"{results.get('versions', {}).get('torch')}. Total time "
                   f"{num(results.get('timings', {}).get('total_seconds'), 0)} s. Cells read "
                   f"`ours (paper, difference)`; the paper column is "
                   f"{col or 'none (no paper value for this dataset)'}.")))
    if results.get("cuts"):
        b += [("h", 2, "What was cut relative to the paper"), ("ul", list(results["cuts"]))]
    b += _table1(results, col) + _table2(results, col, figs) + operating_blocks(results, figs) + _figure2(figs)
    b += _table3(results, col, figs) + _table4(results, col) + _table5(results) + _tsne(figs) + _noise(results, figs)
    b += adaptive_blocks(results, figs) + compare_blocks(results) + _disagreements(results, col)
    return b


def _table1(results: dict, col: str | None) -> list[tuple]:
    rows = []
    for m in results.get("models", {}).values():
        err = m.get("test_error_percent")
        rows.append([f"{m['arch']} ({m['objective'].upper()})", m.get("role", ""), str(m.get("steps", "")),
                     str(m.get("n_test", "")), cell(err, paper_ref.test_error(m["arch"], m["objective"], col), 2)])
    return [("h", 2, "Table 1: test error rate (%)"),
            ("table", ["model", "role", "steps", "test images", "error % (paper, Δ)"], rows)]


def _table2(results: dict, col: str | None, figs: dict) -> list[tuple]:
    eps = results.get("table2_eps")
    rows, half_rows = [], []
    for attack in TABLE2_ATTACKS:
        for model in main_models(results):
            obj = results["models"][model]["objective"]
            rec = table2_record(results, model, attack)
            if rec is None:
                continue
            cells = [auc_cell(rec, m, paper_ref.auc(attack, obj, m, col)) for m in METRICS]
            tpr = rec.get("detection", {}).get("kd", {}).get("tpr_at_5fpr")
            rows.append([paper_ref.label(attack), obj.upper(), *cells, num(pct(tpr)), str(rec["n_pairs"])])
            half_rows.append([paper_ref.label(attack), obj.upper(),
                              *[num(auc_of(rec, m, "auc_half")) for m in METRICS]])
    out = [("h", 2, "Table 2: detection AUC (×10⁻²) on the main models"),
           ("p", (f"FGSM, BIM, ILCM and JSMA at ε = {eps} (the released script's default; the paper does not "
                 "state it). Pairs: clean image correctly classified and its adversarial version misclassified. "
                 "AUC with ties counted as failures (as the original AUC.m); TPR of the K-density detector at "
                 "5 % FPR.")),
           ("table", ["attack", "objective", *LABELS, "TPR@5%FPR (KD)", "pairs"], rows),
           ("p", "The same AUCs with ties counted ½ (sklearn's convention):"),
           ("table", ["attack", "objective", *LABELS], half_rows)]
    if "auc_vs_eps" in figs:
        out.append(("img", *figs["auc_vs_eps"]))
    return out


def _figure2(figs: dict) -> list[tuple]:
    out = [("h", 2, "Figure 2: robustness with the detector disabled")]
    for key in ("fig2a", "fig2b"):
        if key in figs:
            out.append(("img", *figs[key]))
    return out if len(out) > 1 else []


def _table3(results: dict, col: str | None, figs: dict) -> list[tuple]:
    rows = []
    for model in main_models(results):
        rec = record(results, model, paper_ref.WHITEBOX_ATTACK)
        if rec is None or "wb" not in rec:
            continue
        obj = results["models"][model]["objective"]
        p_ratio, p_dist = paper_ref.cw_wb(obj, col)
        wb = rec["wb"]
        rows.append([obj.upper(), cell(wb.get("ratio_f2_positive"), p_ratio, 2), cell(wb.get("mean_distortion"),
                     p_dist, 2), str(wb.get("n_reached", "")), str(wb.get("n_efficient", ""))])
    if not rows:
        return []
    out = [("h", 2, "Table 3: C&W-wb (white-box attack on the K-density detector)"),
           ("p", ("Ratio of f2(x*) > 0 among attacked images whose clean version is correct and whose x* reaches "
                 "the target; distortion = ‖x − x*‖₂/√d on the [0, 255] scale over the images that fooled both "
                 "classifier and detector.")),
           ("table", ["objective", "ratio f2>0 (paper, Δ)", "distortion (paper, Δ)", "reached target",
                      "fooled both"], rows)]
    if "fig3" in figs:
        out.append(("img", *figs["fig3"]))
    return out


def _table4(results: dict, col: str | None) -> list[tuple]:
    rows = [[f"{t['target_arch']} ({t['target_objective'].upper()})",
             f"{t['substitute_arch']} ({t['substitute_objective'].upper()})",
             cell(auc_of(t, "kd"), paper_ref.transfer_auc(t["target_objective"], t["substitute_objective"], col)),
             num(pct(t.get("transfer_rate"))), str(t.get("n_pairs", ""))] for t in results.get("transfer", [])]
    if not rows:
        return []
    return [("h", 2, "Table 4: black-box transfer (C&W-wb crafted on the substitute, scored on the target)"),
            ("p", ("K-density AUC ×10⁻² of the target's detector. The paper prints CIFAR-10 only; on MNIST it "
                  "states all four AUCs exceed 95.")),
            ("table", ["target", "substitute", "K-density AUC (paper, Δ)", "transfer rate %", "pairs"], rows)]


def _table5(results: dict) -> list[tuple]:
    rows = []
    for model in main_models(results):
        obj = results["models"][model]["objective"]
        for attack in paper_ref.TABLE5_ATTACKS:
            rec = table2_record(results, model, attack)
            if rec is None:
                continue
            rows.append([paper_ref.label(attack), obj.upper(), seconds(rec.get("seconds_per_example")),
                         seconds(paper_ref.seconds_per_example(attack, obj)), str(rec.get("n_images", ""))])
    if not rows:
        return []
    return [("h", 2, "Table 5: seconds per adversarial example"),
            ("p", (f"Ours on {results.get('device')} with the budgets of this preset (see the cuts above), beside "
                  "the paper's P100 figures with the full budgets.")),
            ("table", ["attack", "objective", "ours (s)", "paper P100 (s)", "images"], rows)]


def _tsne(figs: dict) -> list[tuple]:
    return [("h", 2, "Figure 1b/c: t-SNE of the final hidden features"), ("img", *figs["tsne"])] if "tsne" in figs else []


def _noise(results: dict, figs: dict) -> list[tuple]:
    noise = results.get("noise") or {}
    if not noise:
        return []
    rows = [[results["models"][m]["objective"].upper(), str(v["eps"]), str(v["n"]), num(v["clean_error_percent"], 2),
             num(v["noisy_error_percent"], 2)] for m, v in noise.items()]
    out = [("h", 2, "Appendix B.3: random noise and K-density histograms"),
           ("p", "Error rates under uniform noise U(−ε, ε) (the paper shows these only as a figure: low for both)."),
           ("table", ["objective", "ε", "images", "clean error %", "noisy error %"], rows)]
    for key in ("noise", "kd_hist"):
        if key in figs:
            out.append(("img", *figs[key]))
    return out


def _disagreements(results: dict, col: str | None) -> list[tuple]:
    """Plain statements of where our numbers part from the paper's."""
    items = []
    for attack in TABLE2_ATTACKS:
        for model in main_models(results):
            obj = results["models"][model]["objective"]
            rec = table2_record(results, model, attack)
            if not enough_pairs(rec):
                continue  # too few pairs to disagree with anything
            for m in METRICS:
                ours, paper = auc_of(rec, m), paper_ref.auc(attack, obj, m, col)
                if ours is not None and paper is not None and abs(ours - paper) > DISAGREE_AUC:
                    items.append(f"Table 2 {paper_ref.label(attack)} {obj.upper()} {m}: ours {ours:.1f}, "
                                 f"paper {paper:.1f} ({ours - paper:+.1f}; {rec['n_pairs']} pairs).")
    # the paper's central claim: RCE + K-density beats CE + K-density
    objs = {results["models"][m]["objective"]: m for m in main_models(results)}
    if {"ce", "rce"} <= set(objs):
        for attack in TABLE2_ATTACKS:
            recs = [table2_record(results, objs[o], attack) for o in ("ce", "rce")]
            if not all(enough_pairs(r) for r in recs):
                continue
            ce, rce = (auc_of(r, "kd") for r in recs)
            if ce is not None and rce is not None and rce < ce:
                items.append(f"K-density AUC under {paper_ref.label(attack)} is lower for RCE ({rce:.1f}) "
                             f"than for CE ({ce:.1f}); the paper has RCE ≥ CE for every attack.")
    text = (f"Cells more than {DISAGREE_AUC:.0f} AUC points from the paper, and reversals of the paper's claims "
            f"(cells with fewer than {MIN_PAIRS} pairs are never counted):"
            if items else f"No Table 2 cell with at least {MIN_PAIRS} pairs is more than {DISAGREE_AUC:.0f} AUC points "
            "from the paper, and no claim is reversed.")
    if col is None:
        return []
    return [("h", 2, "Where ours disagrees with the paper"), ("p", text)] + ([("ul", items)] if items else [])


def render(out_dir: str | Path, results: dict | None = None) -> tuple[Path, Path]:
    """Write figures/*.png, report.md and report.html into ``out_dir`` from ``results`` (default: results.json)."""
    from . import figures

    out_dir = Path(out_dir)
    results = results if results is not None else load(out_dir)
    figs = figures.make_all(results, out_dir)
    blocks = build_blocks(results, figs)
    md = atomic_write_bytes(out_dir / "report.md", to_markdown(blocks).encode())
    title = f"rcedetect report: {results.get('preset')}"
    page = atomic_write_bytes(out_dir / "report.html", to_html(blocks, title).encode())
    return md, page


def summary(results: dict) -> str:
    """A short terminal table: test error and the K-density AUC per attack, CE vs RCE, paper in brackets."""
    col = paper_ref.column(results.get("dataset"))
    models = main_models(results)
    objs = [results["models"][m]["objective"] for m in models]
    errors = [f"{m} ({r['arch']} {r['objective'].upper()}) {cell(r.get('test_error_percent'), None, 2)}"
              for m, r in results.get("models", {}).items()]
    lines = ["test error %: " + ", ".join(errors)]
    lines.append(f"{'K-density AUC':<14}" + "".join(f"{o.upper():>22}" for o in objs))
    for attack in TABLE2_ATTACKS:
        recs = [table2_record(results, m, attack) for m in models]
        if not any(recs):
            continue
        cells = [cell(auc_of(r, "kd"), paper_ref.auc(attack, o, "kd", col)) for r, o in zip(recs, objs)]
        lines.append(f"{paper_ref.label(attack):<14}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
