"""MkDocs hook of the documentation site (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

``docs/protocol.md`` stays one file in the repository; at build time it is split at its ``## `` headings into one
page per section (``protocol/index.md`` for the text before the first section and the list of sections,
``protocol/section-N.md`` for "## N. ...", ``protocol/<slug>.md`` for an unnumbered section) and the "Protocol" entry
of the navigation lists them. A link to ``protocol.md#anchor`` from any page is pointed at the section page that
holds the anchor, so the sources link to the single file (which also works on a repository browser) and the site to
the split pages. ``docs/design.md`` is shown whole, with a line saying so.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from markdown.extensions.toc import slugify
from mkdocs.structure.files import File

SOURCE = "protocol.md"
FOLDER = "protocol"
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6}) (.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(((?:\.\./|\./)*protocol\.md)(#[^)\s]*)?\)")


@dataclass
class Section:
    title: str
    src_uri: str
    lines: list[str] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)


def _headings(lines: list[str]):
    """(index, level, text) of every Markdown heading outside code fences."""
    fenced = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            yield i, len(m.group(1)), m.group(2)


def split_protocol(text: str) -> list[Section]:
    """The overview (title and text before the first ``## ``) and one section per ``## `` heading, each heading one
    level up (``## 4. K-density`` is its page's title)."""
    lines = text.splitlines()
    starts = [(i, t) for i, level, t in _headings(lines) if level == 2]
    first = starts[0][0] if starts else len(lines)
    overview = Section("Overview", f"{FOLDER}/index.md", lines[:first])
    sections = [overview]
    used: set[str] = set()
    for n, (i, title) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        number = re.match(r"(\d+)\.\s", title)
        stem = f"section-{number.group(1)}" if number else (slugify(title, "-") or f"part-{n}")
        while stem in used:
            stem += "-2"
        used.add(stem)
        body = lines[i:end]
        promoted = list(body)
        for j, level, t in _headings(body):
            promoted[j] = "#" * (level - 1) + " " + t
        sections.append(Section(title, f"{FOLDER}/{stem}.md", promoted))
    for s in sections:
        s.anchors = {slugify(t, "-") for _, _, t in _headings(s.lines)}
    return sections


def _overview_text(sections: list[Section]) -> str:
    head = sections[0].lines
    out = list(head) + [
        "",
        '!!! note "How these pages are made"',
        ("    The protocol is one file in the repository, `docs/protocol.md`; the site splits it at its `## ` headings "
         "into one page per section when it is built (`docs/hooks.py`). Edit `docs/protocol.md`, not these pages."),
        "",
        "## Sections",
        "",
    ]
    out += [f"- [{s.title}]({posixpath.basename(s.src_uri)})" for s in sections[1:]]
    return "\n".join(out) + "\n"


_state: dict[str, list[Section]] = {}


def _sections(config) -> list[Section]:
    path = Path(config["docs_dir"]) / SOURCE
    if "sections" not in _state or _state.get("mtime") != [path.stat().st_mtime_ns]:
        _state["sections"] = split_protocol(path.read_text(encoding="utf-8"))
        _state["mtime"] = [path.stat().st_mtime_ns]
    return _state["sections"]


def on_config(config):
    """The "Protocol" entry of the navigation: the overview, then one page per section of docs/protocol.md."""
    sections = _sections(config)
    entries = [{s.title: s.src_uri} for s in sections]
    for item in config["nav"] or []:
        if isinstance(item, dict) and "Protocol" in item:
            item["Protocol"] = entries
    return config


def on_files(files, config):
    """docs/protocol.md replaced by its section pages (generated, never written into docs/)."""
    sections = _sections(config)
    source = files.get_file_from_path(SOURCE)
    if source is not None:
        files.remove(source)
    for s in sections:
        content = _overview_text(sections) if s.src_uri.endswith("index.md") else "\n".join(s.lines) + "\n"
        files.append(File.generated(config, s.src_uri, content=content))
    return files


def _target(anchor: str, sections: list[Section]) -> str:
    name = anchor.lstrip("#")
    for s in sections[1:]:
        if name in s.anchors:
            return s.src_uri
    return sections[0].src_uri


def on_page_markdown(markdown, page, config, files):
    """Links to protocol.md(#anchor) pointed at the section page holding the anchor; links inside the protocol's
    own pages (#anchor) likewise; design.md says it is shown whole."""
    sections = _sections(config)
    here = posixpath.dirname(page.file.src_uri)

    def rewrite(m: re.Match) -> str:
        anchor = m.group(2) or ""
        target = _target(anchor, sections) if anchor else sections[0].src_uri
        return f"]({posixpath.relpath(target, here or '.')}{anchor})"

    markdown = LINK.sub(rewrite, markdown)
    if page.file.src_uri.startswith(FOLDER + "/"):

        def local(m: re.Match) -> str:
            target = _target(m.group(1), sections)
            if target == page.file.src_uri:
                return m.group(0)
            return f"]({posixpath.relpath(target, here)}{m.group(1)})"

        markdown = re.sub(r"\]\((#[^)\s]+)\)", local, markdown)
    if page.file.src_uri == "design.md":
        lines = markdown.split("\n", 1)
        note = ("\n\n!!! note \"How this page is made\"\n    This page is `docs/design.md` shown whole; its sections "
                "are in the table of contents beside it.\n")
        markdown = lines[0] + note + (lines[1] if len(lines) > 1 else "")
    return markdown
