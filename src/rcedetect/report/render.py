"""The two renderings of one list of blocks: ``report.md`` (plain markdown) and ``report.html`` (the same markdown
through Python-Markdown, with a table of contents and a small style sheet).

Block kinds are listed in :mod:`.format`; ``("div", id)`` … ``("end_div",)`` enclose a box (an HTML
``<div class="box">``, a rule after it in markdown). Figures are numbered 1, 2, … in the order they appear
(:func:`number_figures`); a text refers to one as ``{fig:KEY}``.
"""

from __future__ import annotations

import html
import re

import markdown

FIG_REF = re.compile(r"\{fig:(\w+)\}")
NUMERIC = re.compile(r"^[-+−–—\d.\[(]")
MAX_PAGE_PX = 1120  # figures are drawn no wider than this (rcedetect.report.figure_style.MAX_WIDTH_PX), so never scaled down

STYLE = f"""
body {{ font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; color: #1d1d1f;
  max-width: {MAX_PAGE_PX}px; margin: 2em auto; padding: 0 1.2em; }}
h1 {{ font-size: 1.7em; margin-bottom: .3em; }}
h2 {{ font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }}
h3 {{ font-size: 1.1em; margin-top: 1.6em; }}
table {{ border-collapse: collapse; margin: .8em 0 .4em; font-size: 13.5px; font-variant-numeric: tabular-nums;
  display: block; overflow-x: auto; max-width: 100%; }}
th, td {{ border: 1px solid #d0d7de; padding: 3px 9px; vertical-align: top; }}
td[style*="right"] {{ white-space: nowrap; }}
th {{ background: #f3f4f6; font-weight: 600; vertical-align: bottom; }}
tbody tr:nth-child(even) {{ background: #f9fafb; }}
tbody tr:hover {{ background: #eef4ff; }}
p.notes {{ font-size: 13px; color: #555; margin: .15em 0; }}
img.figure {{ display: block; max-width: 100%; margin: 1.2em 0 .3em; }}
p.caption {{ font-size: 14px; color: #333; margin-top: .2em; }}
div.toc {{ background: #f6f8fa; border: 1px solid #d0d7de; padding: .3em 1.2em; font-size: 14px; }}
div.toc ul {{ margin: .2em 0; }}
code {{ background: #f3f4f6; padding: 0 .25em; border-radius: 3px; }}
div.box {{ border: 2px solid #1f6feb; border-radius: 6px; background: #f5f9ff; padding: 0 1.1em .6em; margin: 1em 0; }}
div.box h2 {{ margin-top: .6em; border-bottom: none; }}
div.box p {{ margin: .45em 0; }}
"""


def esc(text: str, table: bool = False) -> str:
    """Plain text as markdown that renders back to the same text (``x*`` stays ``x*``, ``non_me`` stays)."""
    text = text.replace("\\", "\\\\").replace("`", "\\`").replace("*", "\\*")
    text = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    return text.replace("|", "\\|") if table else text


def number_figures(blocks: list[tuple]) -> list[tuple]:
    """Number the figures in order of appearance: ("img", key, file, caption) -> ("img", key, file, caption, n);
    ``{fig:KEY}`` in a text becomes "Figure n"."""
    numbers: dict[str, int] = {}
    for b in blocks:
        if b[0] == "img":
            numbers.setdefault(b[1], len(numbers) + 1)

    def sub(text: str) -> str:
        return FIG_REF.sub(lambda m: f"Figure {numbers[m.group(1)]}" if m.group(1) in numbers
                           else "a figure this run did not draw", text)

    return [(*b[:4], numbers[b[1]]) if b[0] == "img" else ("p", sub(b[1])) if b[0] == "p"
            else (b[0], [sub(i) for i in b[1]]) if b[0] in ("ul", "notes") else b for b in blocks]


def _table(head: list[str], rows: list[list[str]]) -> str:
    def align(j: int) -> str:
        cells = [r[j] for r in rows if j < len(r) and r[j]]
        return "---:|" if cells and all(NUMERIC.match(c) for c in cells) else ":---|"

    lines = ["| " + " | ".join(esc(h, True) for h in head) + " |", "|" + "".join(align(j) for j in range(len(head)))]
    lines += ["| " + " | ".join(esc(c, True) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(blocks: list[tuple], for_html: bool = False) -> str:
    """The blocks as markdown; ``for_html`` adds the table of contents and the classes the style sheet uses."""
    out: list[str] = []
    numbered = number_figures(blocks)
    # the contents go after the first paragraph (the run's identity), or after the box that follows it
    toc = next((k for k, b in enumerate(numbered) if b[0] == "p"), None) if for_html else None
    if toc is not None and toc + 1 < len(numbered) and numbered[toc + 1][0] == "div":
        toc = next((k for k in range(toc, len(numbered)) if numbered[k][0] == "end_div"), None)
    kinds = {"h": lambda b: ["#" * b[1] + " " + esc(b[2])],
             # a box (the bottom line): an HTML div whose inside is markdown; nothing in report.md
             "div": lambda b: [f'<div class="box" id="{b[1]}" markdown="1">'] if for_html else [],
             "end_div": lambda b: ["</div>" if for_html else "---"],
             "p": lambda b: [esc(b[1])],
             "ul": lambda b: ["\n".join(f"- {esc(i)}" for i in b[1])],
             "notes": lambda b: [esc(i) + ("\n{: .notes }" if for_html else "") for i in b[1]],
             "table": lambda b: [_table(b[1], b[2])],
             "img": lambda b: [f"![Figure {b[4]}]({b[2]})" + ("{: .figure }" if for_html else ""),
                               f"**Figure {b[4]}:** {esc(b[3])}" + ("\n{: .caption }" if for_html else "")]}
    for k, blk in enumerate(numbered):
        out += kinds.get(blk[0], lambda b: [])(blk)
        if k == toc:
            out.append("[TOC]")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    body = markdown.markdown(to_markdown(blocks, for_html=True),
                             extensions=["tables", "attr_list", "toc", "md_in_html"],
                             extension_configs={"toc": {"toc_depth": "2-2", "title": "Contents"}},
                             output_format="html")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
