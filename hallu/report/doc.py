"""A tiny document model (headings, paragraphs, tables, figures, preformatted text) rendered to
both a self-contained HTML page (figures embedded as base64 PNG) and markdown."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hallu.analysis import verdicts
from hallu.analysis.noise_flags import INSIDE, UNKNOWN


def fmt(x: float | None, digits: int = 3, missing: str = "n/a") -> str:
    """A number for a table or caption; `missing` for None or a non-finite value."""
    return missing if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


@dataclass
class Doc:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    n_figures: int = 0

    def h(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, rows)))

    def figure(self, png: bytes, caption: str) -> None:
        self.n_figures += 1
        self.blocks.append(("fig", (png, caption)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, v in self.blocks:
            out += _MARKDOWN[kind](v)
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        body += [_HTML[kind](v) for kind, v in self.blocks]
        return PAGE.format(
            title=html.escape(self.title), body="\n".join(body), n_figures=self.n_figures
        )


def _md_table(v: tuple[list[str], list[list[Any]]]) -> list[str]:
    headers, rows = v
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return out + [""]


_MARKDOWN: dict[str, Callable[[Any], list[str]]] = {
    "h2": lambda v: [f"## {v}", ""],
    "p": lambda v: [v, ""],
    "table": _md_table,
    "fig": lambda v: [f"*{v[1]}* (figure in report.html)", ""],
    "pre": lambda v: ["```", v.rstrip(), "```", ""],
}


def _html_table(v: tuple[list[str], list[list[Any]]]) -> str:
    headers, rows = v
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{trs}</table>"


def _html_figure(v: tuple[bytes, str]) -> str:
    data = base64.b64encode(v[0]).decode()
    return (
        f'<figure><img alt="{html.escape(v[1])}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(v[1])}</figcaption></figure>"
    )


_HTML: dict[str, Callable[[Any], str]] = {
    "h2": lambda v: f"<h2>{html.escape(v)}</h2>",
    "p": lambda v: f"<p>{html.escape(v)}</p>",
    "table": _html_table,
    "fig": _html_figure,
    "pre": lambda v: f"<pre>{html.escape(v)}</pre>",
}


def _td(cell: Any) -> str:
    """A table cell, coloured by the verdict or noise flag it starts with."""
    text = str(cell)
    cls = ""
    if text.startswith(verdicts.SUPPORTS):
        cls = ' class="ok"'
    elif text.startswith((verdicts.CONTRADICTS, INSIDE)):
        cls = ' class="bad"'
    elif text.startswith((verdicts.INCONCLUSIVE, verdicts.NOT_RUN, verdicts.EQUIVALENT, UNKNOWN)):
        cls = ' class="meh"'
    return f"<td{cls}>{html.escape(text)}</td>"


# The script checks that every embedded figure decoded; a headless browser reads the title.
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; text-align: left; }}
th {{ background: #f3f3f3; }}
td.ok {{ background: #e3f4e1; }} td.bad {{ background: #f8dede; }} td.meh {{ background: #f7f2d8; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} figcaption {{ font-size: 0.85em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {{ return !i.complete || i.naturalWidth === 0; }});
  document.title = broken.length === 0 && imgs.length === {n_figures}
    ? "hallu report ok: " + imgs.length + " figures"
    : "hallu report BROKEN: " + broken.length + " of " + imgs.length + " figures";
}});
</script>
</body></html>
"""
