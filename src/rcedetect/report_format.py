"""What the report's sections share: number formatting, record lookups in a results dict, and the two renderings
of one list of blocks (markdown and a self-contained HTML page).

Blocks: ``("h", level, text)``, ``("p", text)``, ``("ul", items)``, ``("table", head, rows)``,
``("img", file, caption)``.
"""

from __future__ import annotations

import html
import math

from .operating_point import too_few_pairs


def num(v: float | None, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def cell(ours: float | None, paper: float | None, digits: int = 1) -> str:
    """``ours (paper, Δ)``; just ``ours`` where the paper has no value."""
    if paper is None:
        return num(ours, digits)
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return f"– ({num(paper, digits)})"
    return f"{num(ours, digits)} ({num(paper, digits)}, {ours - paper:+.{digits}f})"


def seconds(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.2g}" if v >= 0.01 else f"{v:.1e}"


def pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


# ----------------------------------------------------------------------------------------------- lookups
def main_models(results: dict) -> list[str]:
    return [m for m, r in results.get("models", {}).items() if r.get("role") == "main"]


def record(results: dict, model: str, attack: str, eps: float | None = None) -> dict | None:
    for r in results.get("attacks", []):
        if r["model"] == model and r["attack"] == attack and (eps is None or _close(r.get("eps"), eps)):
            return r
    return None


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-9


def table2_record(results: dict, model: str, attack: str) -> dict | None:
    """The record of ``attack`` on ``model`` behind Table 2: its run at table2_eps when it has an ε grid."""
    has_grid = any(r["attack"] == attack and r.get("eps") is not None for r in results.get("attacks", []))
    return record(results, model, attack, results.get("table2_eps") if has_grid else None)


def enough_pairs(rec: dict | None) -> bool:
    """A cell is read as a result only with at least MIN_PAIRS pairs (else it is shown, but never compared)."""
    return rec is not None and not too_few_pairs(rec.get("n_pairs", 0))


def interval(rec: dict | None, metric: str, stat: str, fpr_key: str = "fpr_5") -> tuple | None:
    """The bootstrap 95 % interval (×100) of ``stat`` of ``metric`` in a record, if it has one."""
    op = ((rec or {}).get("detection", {}).get(metric, {}).get("operating_points") or {}).get(fpr_key) or {}
    lo, hi = (op.get("bootstrap") or {}).get(stat) or (None, None)
    return None if lo is None or hi is None else (100 * lo, 100 * hi)


def auc_cell(rec: dict, metric: str, paper: float | None) -> str:
    """``ours (paper, Δ)``, or ``too few pairs (n): ours [interval]`` below MIN_PAIRS pairs."""
    if enough_pairs(rec):
        return cell(auc_of(rec, metric), paper)
    ci = interval(rec, metric, "auc")
    return (f"too few pairs ({rec.get('n_pairs', 0)}): {num(auc_of(rec, metric))}"
            + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else ""))


def auc_of(rec: dict | None, metric: str, key: str = "auc_strict") -> float | None:
    if not rec:
        return None
    v = rec.get("detection", {}).get(metric, {}).get(key)
    return pct(v)



def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "ul":
            out.append("\n".join(f"- {i}" for i in blk[1]))
        elif kind == "table":
            head, rows = blk[1], blk[2]
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{blk[2]}]({blk[1]})\n\n*{blk[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    body = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            body.append(f"<h{blk[1]}>{e(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            body.append(f"<p>{e(blk[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in blk[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in blk[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            body.append(f'<figure><img src="{e(blk[1])}" alt="{e(blk[2])}"><figcaption>{e(blk[2])}</figcaption>'
                        "</figure>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%}figcaption{font-style:italic}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>{style}</style>"
            f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n")
