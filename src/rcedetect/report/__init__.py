"""The report: tables and figures from ``results.json`` alone (never loads a model).

Every table cell shows our value beside the paper's and the difference, ``ours (paper, Δ)``, wherever the paper
has a value (``paper_numbers.json``); an empty cell carries a footnote saying why. One list of blocks
(:mod:`.format`) is rendered twice by :mod:`.render`, as ``report.md`` and ``report.html``, whose figures are PNG
files in ``figures/`` (drawn by the ``figures*`` modules), numbered in order of appearance. Here: the order of the
sections and the paper's Tables 1, 3, 4 and 5; every other section has its own module. The ``results.json``
schema is written by :mod:`rcedetect.reproduce.results` and documented in REPRODUCE.md.

Layer: above :mod:`rcedetect.reproduce`; it imports only ``core``, ``stats``, ``detectors`` and
``evaluation.paper_ref``, never a model, an attack run or the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import CheckpointError
from ..core.io import atomic_write_bytes, read_json
from ..evaluation import paper_ref
from .adaptive import adaptive_blocks, operating_blocks
from .bottom_line import bottom_line_blocks
from .claims import claims_blocks
from .compare import compare_blocks
from .format import (
    DASH,
    NOT_RECORDED,
    Notes,
    arch_label,
    auc_of,
    cell,
    images,
    main_models,
    missing,
    num,
    paper_column,
    pct,
    record,
    seconds,
    table2_record,
    transfer_records,
    why_missing,
)
from .render import to_html, to_markdown
from .replication import agreement_text, claims_across_seeds, replication_blocks
from .robust import model_label, robust_blocks
from .table2 import disagreements, table2

RESULTS = "results.json"
#: Table 3's columns (ratio f2 > 0, distortion) and why a cell of each is empty
WB_EMPTY = {"ratio_f2_positive": "no attacked image reached its target, so there is no ratio",
            "mean_distortion": "no image fooled both classifier and detector, so there is no distortion"}


def load(out_dir: str | Path) -> dict[str, Any]:
    results = read_json(Path(out_dir) / RESULTS, "results file")
    if not isinstance(results, dict) or results.get("format") != "rcedetect-results":
        raise CheckpointError(f"{Path(out_dir) / RESULTS} is not an rcedetect results file")
    return results


def _time_text(t: dict) -> str:
    """The run's cost: every stage's measured seconds (some from earlier invocations of a resumed run) and this
    invocation's wall time."""
    total, now = t.get("stage_seconds_total"), t.get("total_seconds")
    if total is None or t.get("stages_measured_now") == len(t.get("stage_seconds") or {}):
        return f"Total time {num(now, 0)} s."
    return (f"The stages took {num(total, 0)} s in all ({t.get('stages_measured_now')} of "
            f"{len(t.get('stage_seconds') or {})} run by this invocation, which took {num(now, 0)} s).")


def dataset_label(results: dict) -> str:
    """The dataset's name, and for a ``--data-file`` run the file's name beside "npz"."""
    name = str(results.get("dataset"))
    models = (results.get("config") or {}).get("models") or {}
    files = {Path(str(m.get("train", {}).get("data_file"))).name for m in models.values() if isinstance(m, dict)
             and m.get("train", {}).get("data_file")}
    return f"{name} ({', '.join(sorted(files))})" if name == "npz" and files else name


# ----------------------------------------------------------------------------------------------- blocks
def build_blocks(results: dict, figures: list[tuple[str, str, str]]) -> list[tuple]:
    """The report as blocks (:mod:`.format`). ``figures`` = [(key, file, caption)]."""
    col = paper_column(results)
    figs = {k: (f, c) for k, f, c in figures}
    v = results.get("versions", {})
    b = [("h", 1, f"rcedetect reproduction: preset {results.get('preset')!r} on {dataset_label(results)}"),
         ("p", (f"Config hash {results.get('config_hash')}, seed {results.get('seed')}, device "
                f"{results.get('device')}, rcedetect {v.get('rcedetect')}, torch {v.get('torch')}. "
                f"{_time_text(results.get('timings') or {})} Where the paper has a value, a cell "
                f"reads ours (paper, Δ = ours − paper); the paper column is "
                f"{col or 'none (no paper value for this dataset)'}. An empty cell ({DASH}) carries a footnote "
                "saying why.")), *bottom_line_blocks(results, figs)]
    if results.get("cuts"):
        b += [("h", 2, "What was cut relative to the paper"), ("ul", list(results["cuts"]))]
    b += replication_blocks(results) + _table1(results, col) + table2(results, col, figs) + operating_blocks(results, figs)
    b += _figures(figs, "Robustness with the detector disabled (the paper's Fig. 2)", "fig2a", "fig2b")
    b += _table3(results, col, figs) + _table4(results, col) + _table5(results)
    b += _figures(figs, "t-SNE of the final hidden features (the paper's Fig. 1b/c)", "tsne") + _noise(results, figs)
    b += adaptive_blocks(results, figs) + robust_blocks(results, images(figs, "robust")) + compare_blocks(results)
    b += claims_blocks(results, col, {label: agreement_text(a) for label, a in claims_across_seeds(results, col)})
    b += disagreements(results, col)
    return b


def _table1(results: dict, col: str | None) -> list[tuple]:
    rows, notes = [], Notes()
    for m in results.get("models", {}).values():
        err = m.get("test_error_percent")
        paper, ref = paper_ref.test_error_nearest(m["arch"], m["objective"], col, m.get("role", "main"))
        paper = None if m.get("training") else paper  # the paper trains no adversarially trained model
        if paper is None:
            p_cell = delta = notes.empty("the paper reports no test error for this dataset" if col is None
                                         else "the paper reports no test error for this model")
        else:
            p_cell = num(paper, 2)
            if ref != m["arch"]:
                p_cell += f" ({arch_label(ref)})" + notes.mark(
                    f"the paper trains no {arch_label(m['arch'])}: this is its {arch_label(ref)}, the model ours "
                    "stands in for (see the cuts), so Δ mixes architecture, training budget and data")
            delta = notes.empty(NOT_RECORDED) if missing(err) else f"{err - paper:+.2f}"
        rows.append([model_label(m), m.get("role", ""), str(m.get("steps", "")),
                     str(m.get("n_test", "")), notes.value(err, NOT_RECORDED, 2), p_cell, delta])
    return [("h", 2, "Table 1: test error rate (%)"),
            ("table", ["model", "role", "training steps", "test images", "ours (%)", "paper (%)", "Δ (points)"], rows),
            *notes.blocks()]


def _figures(figs: dict, title: str, *keys: str) -> list[tuple]:
    """A section of figures alone: its title over those of ``keys`` that were drawn ([] where none was)."""
    imgs = images(figs, *keys)
    return [("h", 2, title), *imgs] if imgs else []


def _table3(results: dict, col: str | None, figs: dict) -> list[tuple]:
    rows, notes = [], Notes()
    for model, obj in main_models(results).items():
        rec = record(results, model, paper_ref.WHITEBOX_ATTACK)
        if rec is None or rec.wb is None:
            continue
        wb = rec.wb
        cells = [notes.empty(why) + cell(None, paper, 2)[1:] if missing(wb.get(key)) else cell(wb.get(key), paper, 2)
                 for (key, why), paper in zip(WB_EMPTY.items(), paper_ref.cw_wb(obj, col))]
        rows.append([obj.upper(), *cells, str(wb.get("n_reached", "")), str(wb.get("n_efficient", ""))])
    if not rows:
        return []
    return [("h", 2, "Table 3: C&W-wb (white-box attack on the K-density detector)"),
            ("p", ("Ratio of f2(x*) > 0 among attacked images whose clean version is correct and whose x* reaches "
                  "the target; distortion = ‖x − x*‖₂/√d on the [0, 255] scale over the images that fooled both "
                  "classifier and detector.")),
            ("table", ["objective", "ratio f2 > 0 (paper, Δ)", "distortion (paper, Δ)", "reached target",
                       "fooled both"], rows), *notes.blocks(), *images(figs, "fig3")]


def _table4(results: dict, col: str | None) -> list[tuple]:
    notes = Notes()
    rows = [[f"{arch_label(t.target_arch)} {t.target_objective.upper()}",
             f"{arch_label(t.substitute_arch)} {t.substitute_objective.upper()}",
             cell(auc_of(t, "kd"), paper_ref.transfer_auc(t.target_objective, t.substitute_objective, col))
             if not missing(auc_of(t, "kd")) else notes.empty(why_missing(t, "kd")),
             notes.value(pct(t.transfer_rate), NOT_RECORDED), str(t.n_pairs if t.n_pairs is not None else "")]
            for t in transfer_records(results)]
    if not rows:
        return []
    return [("h", 2, "Table 4: black-box transfer (C&W-wb crafted on the substitute, scored on the target)"),
            ("p", ("K-density AUC ×10⁻² of the target's detector. The paper prints CIFAR-10 only; on MNIST it "
                  "states all four AUCs exceed 95.")),
            ("table", ["target", "substitute", "K-density AUC (paper, Δ)", "transfer rate %", "pairs"], rows),
            *notes.blocks()]


def _table5(results: dict) -> list[tuple]:
    rows, notes = [], Notes()
    for model, obj in main_models(results).items():
        for attack in paper_ref.TABLE5_ATTACKS:
            rec = table2_record(results, model, attack)
            if rec is None:
                continue
            paper = paper_ref.seconds_per_example(attack, obj)
            rows.append([paper_ref.label(attack), obj.upper(),
                         notes.empty(NOT_RECORDED) if missing(rec.seconds_per_example) else
                         seconds(rec.seconds_per_example),
                         seconds(paper) if paper is not None else notes.empty("the paper gives no time"),
                         str(rec.n_images if rec.n_images is not None else "")])
    if not rows:
        return []
    return [("h", 2, "Table 5: time per adversarial example"),
            ("p", (f"Ours on {results.get('device')} with the budgets of this preset (see the cuts above), beside "
                  "the paper's P100 figures with the full budgets.")),
            ("table", ["attack", "objective", "ours", "paper (P100)", "images"], rows), *notes.blocks()]


def _noise(results: dict, figs: dict) -> list[tuple]:
    noise = results.get("noise") or {}
    if not noise:
        return []
    rows = [[results["models"][m]["objective"].upper(), str(v["eps"]), str(v["n"]), num(v["clean_error_percent"], 2),
             num(v["noisy_error_percent"], 2)] for m, v in noise.items()]
    return [("h", 2, "Appendix B.3: random noise and K-density histograms"),
            ("p", "Error rates under uniform noise U(−ε, ε) (the paper shows these only as a figure: low for both)."),
            ("table", ["objective", "ε", "images", "clean error %", "noisy error %"], rows),
            *images(figs, "noise", "kd_hist")]


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
    col = paper_column(results)
    models = main_models(results)
    objs = list(models.values())
    errors = [f"{m} ({r['arch']} {r['objective'].upper()}) {cell(r.get('test_error_percent'), None, 2)}"
              for m, r in results.get("models", {}).items()]
    lines = ["test error %: " + ", ".join(errors)]
    lines.append(f"{'K-density AUC':<14}" + "".join(f"{o.upper():>22}" for o in objs))
    for attack in paper_ref.TABLE2_ATTACKS:
        recs = [table2_record(results, m, attack) for m in models]
        if not any(recs):
            continue
        cells = [cell(auc_of(r, "kd"), paper_ref.auc(attack, o, "kd", col)) for r, o in zip(recs, objs)]
        lines.append(f"{paper_ref.label(attack):<14}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)
