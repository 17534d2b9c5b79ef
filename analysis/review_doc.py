"""A report as a small document (sections of paragraphs, warning lists, tables and figures), rendered
once to a self-contained HTML page (figures embedded as base64 PNG, inline CSS, no external asset)
and once to markdown for pasting into reviews. Predicted and extrapolated values carry a CSS class
and a text label, so neither renderer can show them as measurements."""
from __future__ import annotations

import base64
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]
    kind: str = "plain"  # "warning" renders highlighted


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    row_classes: list[str] = field(default_factory=list)  # e.g. "extrapolated", "best", "below"
    key_value: bool = False  # a two-column what/value table: text left-aligned


@dataclass
class Figure:
    path: Path
    caption: str


Block = Paragraph | Bullets | Table | Figure


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e0;font-size:13px}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid #dde1e7;font-size:13px}
nav a{margin-right:14px;color:#2456a6;text-decoration:none}
main{padding:8px 32px 40px;max-width:1280px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:18px 0;padding:8px 20px 16px}
h2{font-size:18px;border-bottom:1px solid #eef0f3;padding-bottom:6px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0 4px;display:block;overflow-x:auto}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#eef2f8}td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;text-align:left;font-size:12px;color:#5b6475;padding-top:4px}
table.kv td{text-align:left;white-space:normal}
tr.extrapolated td{color:#7a4b00;background:#fff8e6}tr.fitted td{background:#f3f8ff}
tr.best td{background:#e4f6e8;font-weight:600}tr.below td{color:#a12a2a}
ul.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:8px 12px 8px 28px;font-size:13.5px}
figure{display:inline-block;margin:8px 16px 8px 0;vertical-align:top}
figure img{max-width:620px;border:1px solid #dde1e7}figcaption{font-size:12px;color:#5b6475;max-width:620px}
p{font-size:14px;line-height:1.45}.label{font-size:11px;padding:1px 5px;border-radius:3px;background:#fff0c2}
"""

# After load, the page records how many of its figures decoded: a headless browser's DOM dump shows it.
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', ok + '/' + imgs.length);
});
"""


def _cell(v: str) -> str:
    return html.escape(v)


def to_html(doc: Document) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>",
           f"<script>{CHECK_SCRIPT}</script></head><body>",
           f"<header><h1>{html.escape(doc.title)}</h1><p>{html.escape(doc.subtitle)}</p></header>", "<nav>"]
    out += [f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in doc.sections]
    out += ["</nav>", "<main>"]
    for s in doc.sections:
        out.append(f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Paragraph):
                out.append(f"<p>{html.escape(b.text)}</p>")
            elif isinstance(b, Bullets):
                cls = ' class="warning"' if b.kind == "warning" else ""
                out.append(f"<ul{cls}>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
            elif isinstance(b, Table):
                rows = []
                for i, r in enumerate(b.rows):
                    cls = b.row_classes[i] if i < len(b.row_classes) and b.row_classes[i] else ""
                    rows.append(f'<tr class="{cls}">' + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>"
                                if cls else "<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>")
                cap = f"<caption>{html.escape(b.caption)}</caption>" if b.caption else ""
                kv = ' class="kv"' if b.key_value else ""
                out.append(f"<table{kv}>{cap}<thead><tr>" + "".join(f"<th>{_cell(h)}</th>" for h in b.header)
                           + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
            elif isinstance(b, Figure):
                data = base64.b64encode(Path(b.path).read_bytes()).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        out.append("</section>")
    out += ["</main>", "</body></html>"]
    return "\n".join(out)


def _md_cell(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, image_dir: Path, image_prefix: str) -> str:
    """Markdown with the figures copied into image_dir and linked as image_prefix/NAME."""
    lines = [f"# {doc.title}", "", doc.subtitle, ""]
    used: set[str] = set()
    for s in doc.sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                lines += [b.text, ""]
            elif isinstance(b, Bullets):
                prefix = "- **warning:** " if b.kind == "warning" else "- "
                lines += [prefix + i for i in b.items] + [""]
            elif isinstance(b, Table):
                lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
                lines.append("|" + "|".join(":---" if i == 0 else "---:" for i in range(len(b.header))) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
                lines += (["", f"*{b.caption}*"] if b.caption else []) + [""]
            elif isinstance(b, Figure):
                name = Path(b.path).name
                if name in used:
                    name = f"{s.id}-{name}"
                used.add(name)
                image_dir.mkdir(parents=True, exist_ok=True)
                if Path(b.path).resolve() != (image_dir / name).resolve():
                    shutil.copyfile(b.path, image_dir / name)
                lines += [f"![{b.caption}]({image_prefix}{name})", ""]
    return "\n".join(lines)
