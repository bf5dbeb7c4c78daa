"""The pieces every HTML page of the outputs is built from: an evaluation's
``report.html`` (:mod:`chestattn_jax.reporting.html_report`), ``compare``'s and the
experiment report's (:mod:`chestattn_jax.reporting.html_pages`).

:func:`page` wraps sections in the one page layout: one file that opens from disk, whose
Content-Security-Policy forbids it any request (every image a ``data:`` URI:
:func:`file_uri`), whose script only sorts tables (and filters a gallery), so that
without it everything shows. :func:`table` writes a sortable table from cells as
``(html, sort key)``: :func:`num`, :func:`signed`, :func:`cell`, :func:`text_cell`.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os

import numpy as np
from etils import epath

from chestattn_jax.reporting.text_tables import MISSING, number


def page(
    heading: str,
    subtitle: str,
    sections,
    *,
    key: str = "",
    footer: str = "",
    extra_css: str = "",
) -> str:
    """A whole page: ``heading`` and ``subtitle`` (text), ``key`` (HTML: the headline
    numbers), a menu of ``sections`` (``(id, title, html)``, each a ``<section>``) and
    ``footer`` (text)."""
    nav = "".join(f'<a href="#{key_}">{escape(title)}</a>' for key_, title, _ in sections)
    body = "".join(
        f'<section id="{key_}"><h2>{escape(title)}</h2>{content}</section>'
        for key_, title, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<link rel="icon" href="data:,"><title>{escape(f"{heading}: {subtitle}")}</title>'
        f"<style>{_CSS}{extra_css}</style></head>\n"
        f'<body><header><div class="inner"><h1>{escape(heading)}</h1>'
        f'<p class="sub">{escape(subtitle)}</p>{key}'
        f"<nav>{nav}</nav></div></header><main>{body}</main>"
        f"<footer>{escape(footer)}</footer>"
        f"<script>{_JS}</script></body></html>\n"
    )


def file_uri(path) -> str:
    """An image file as a ``data:`` URI (its type from its name; PNG if unknown)."""
    kind = mimetypes.guess_type(os.fspath(path))[0] or "image/png"
    data = epath.Path(path).read_bytes()
    return f"data:{kind};base64," + base64.b64encode(data).decode("ascii")


def facts(pairs) -> str:
    """A list of ``(name, value)`` as a two-column definition list (texts; a pair whose
    value is ``None`` or empty is left out)."""
    dl = "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs if v is not None and v != ""
    )
    return f"<dl class=facts>{dl}</dl>"


def escape(value) -> str:
    """``value`` as HTML text (escaped, quotes too)."""
    return html.escape(str(value), quote=True)


def not_available(why: str) -> str:
    return f'<p class="na"><strong>Not available:</strong> {escape(why)}</p>'


def figure(images: dict, name: str, caption: str, why_missing: str) -> str:
    src = images.get(name)
    if not src:
        return not_available(why_missing)
    return (
        f'<figure class="plot"><img src="{escape(src)}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def num(value, digits: int = 3, ci=None) -> tuple[str, str]:
    """A number cell's HTML and sort key: ``0.812`` with its interval ``[0.790, 0.833]``
    in smaller type; ``n/a`` and an empty key for ``None``."""
    if value is None:
        return f'<span class="missing">{MISSING}</span>', ""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return escape(value), ""
    text = str(value) if isinstance(value, int | np.integer) else number(float(value), digits)
    if ci is not None and ci[0] is not None and ci[1] is not None:
        low, high = number(float(ci[0]), digits), number(float(ci[1]), digits)
        text += f' <span class="ci">[{low}, {high}]</span>'
    return text, repr(float(value))


def signed(value, digits: int, ci=None) -> tuple[str, str]:
    """A difference cell: ``+0.04 [-0.01, +0.09]`` (a rounded zero unsigned: ``0.00``)."""
    if value is None:
        return num(None)

    def signed_text(v):
        v = round(float(v), digits) + 0.0  # -0.0 -> 0.0
        return f"{v:+.{digits}f}" if v else f"{0:.{digits}f}"

    out = signed_text(value)
    if ci is not None and ci[0] is not None and ci[1] is not None:
        out += f' <span class="ci">[{signed_text(ci[0])}, {signed_text(ci[1])}]</span>'
    return out, repr(float(value))


def cell(value, digits: int = 3) -> tuple[str, str | None]:
    """A generic section's cell (:mod:`module docstring <chestattn_jax.reporting.html_report>`):
    its HTML and sort key (``None``: sorted as text)."""
    if isinstance(value, dict):
        return num(value.get("value"), digits, value.get("ci"))
    if value is None:
        return "", ""
    if isinstance(value, str) and value.strip().lower() in _MISSING_TEXTS:
        return escape(value), ""  # a missing number: sorts last, aligns with the numbers
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(value), None
    return num(value, digits)


_MISSING_TEXTS = {"", MISSING, "na", "-", "\u2013", "\u2014", "nan", "none"}


def table(headers, rows, foot=None, caption: str = "", numeric=None) -> str:
    """A sortable table. ``rows`` (and ``foot``, a row kept below them): cells as
    ``(html, sort key)``, a key of ``None`` sorting as text; ``numeric``: which columns
    are right-aligned (default: those whose cells all have keys)."""
    if numeric is None:  # every cell a number or missing, and at least one a number
        numeric = [
            all(r[j][1] is not None for r in rows) and any(r[j][1] for r in rows)
            for j in range(len(headers))
        ]

    def line(cells, tag="td"):
        out = []
        for j, (text, key) in enumerate(cells):
            cls = ' class="num"' if numeric[j] else ""
            sort = f' data-sort="{escape(key)}"' if key is not None and tag == "td" else ""
            out.append(f"<{tag}{cls}{sort}>{text}</{tag}>")
        return "<tr>" + "".join(out) + "</tr>"

    head = line([(escape(h), None) for h in headers], "th")
    html_rows = "".join(line(r) for r in rows)
    tfoot = f"<tfoot>{line(foot)}</tfoot>" if foot else ""
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (
        f'<div class="wrap"><table class="sortable">{cap}<thead>{head}</thead>'
        f"<tbody>{html_rows}</tbody>{tfoot}</table></div>"
    )


def text_cell(value) -> tuple[str, None]:
    return escape(value), None


# ----------------------------------------------------------------------- style, script

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
:root{--fg:#1c2430;--muted:#5d6675;--line:#e2e6eb;--accent:#1f5fae;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}
html{font-size:15px}
body{margin:0;color:var(--fg);background:var(--bg);line-height:1.5;
 font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{border-bottom:1px solid var(--line);background:var(--soft)}
header .inner{max-width:1180px;margin:0 auto;padding:1.1rem 2rem .5rem}
.key{margin:.2rem 0 .7rem;font-size:1.02rem}
.key .sep{color:#a0a8b3;margin:0 .4rem}
.key .ci{font-size:.85em;font-weight:400}
.muted{color:var(--muted)}
.no{color:#9c5d00;font-weight:600}
h1{font-size:1.5rem;margin:0}
.sub{margin:.1rem 0 .6rem;color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:.2rem 1.1rem;font-size:.92rem}
nav a,a{color:var(--accent);text-decoration:none}
nav a:hover,a:hover{text-decoration:underline}
main{max-width:1180px;margin:0 auto;padding:0 2rem 2rem}
section{padding-top:1.2rem;border-bottom:1px solid var(--line);padding-bottom:1rem}
h2{font-size:1.2rem;margin:.2rem 0 .6rem}
h3{font-size:1rem;margin:1rem 0 .4rem}
h4{font-size:.95rem;margin:.9rem 0 .3rem}
p{margin:.4rem 0 .7rem;max-width:75em}
.note{color:var(--muted);font-size:.88rem}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1.2rem;margin:0 0 .8rem}
.facts dt{color:var(--muted)}
.facts dd{margin:0;overflow-wrap:anywhere}
td:first-child{white-space:nowrap}
details{margin:.4rem 0}
summary{cursor:pointer;color:var(--accent)}
.wrap{overflow-x:auto;margin:.5rem 0 .8rem}
table{border-collapse:collapse;font-size:.88rem}
caption{text-align:left;font-weight:600;padding:.2rem 0 .4rem;color:var(--fg)}
th,td{padding:.32rem .65rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #c9d0d8;font-weight:600;white-space:nowrap;background:var(--soft)}
tfoot td{border-top:2px solid #c9d0d8;font-weight:600}
tbody tr:hover{background:#f8fafc}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:var(--muted);font-size:.86em}
.missing{color:var(--muted)}
th button{all:unset;cursor:pointer}
th button:focus-visible{outline:2px solid var(--accent)}
.js th button::after{content:" \\2195";color:#a0a8b3;font-size:.85em}
th[aria-sort=ascending] button::after{content:" \\25B2";color:var(--accent)}
th[aria-sort=descending] button::after{content:" \\25BC";color:var(--accent)}
.na{background:#fff8e6;border-left:3px solid #e8a317;padding:.45rem .8rem;margin:.4rem 0;
 max-width:none}
.ok{color:#17693b;font-weight:600}
td .na{margin:0;padding:.15rem .5rem}
figure.plot{margin:.6rem 0}
figure.plot img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{font-size:.85rem;color:var(--muted)}
.filters{display:flex;gap:1.2rem;align-items:center;margin:.4rem 0 .8rem;font-size:.92rem}
.filters select{margin-left:.35rem;font:inherit;padding:.1rem .3rem}
#filter-count{color:var(--muted)}
.gallery{display:flex;flex-wrap:wrap;gap:.8rem}
.example{flex:1 1 100%;border:1px solid var(--line);border-radius:6px;padding:.5rem .7rem .7rem}
.gallery.one-class .example{flex:0 1 auto}
.gallery.one-class .tiles{display:flex}
.gallery.one-class .tile{width:118px}
.example h3{margin:.1rem 0 .5rem;font-size:.95rem}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(118px,1fr));gap:.6rem}
.tile{margin:0}
.stack{position:relative;aspect-ratio:1;background-size:100% 100%;background-color:#000;
 border-radius:3px;overflow:hidden;print-color-adjust:exact;-webkit-print-color-adjust:exact}
.stack img{position:absolute;inset:0;width:100%;height:100%}
.stack img.truth{image-rendering:pixelated}
.tile.tp .stack{box-shadow:0 0 0 3px #2e9d5b}
.tile.fn .stack{box-shadow:0 0 0 3px #d1453b}
.tile.fp .stack{box-shadow:0 0 0 3px #e8a317}
.tile.tn .stack{box-shadow:0 0 0 3px #b9c1cb}
.tile figcaption{display:flex;flex-wrap:wrap;gap:0 .35rem;align-items:baseline;margin-top:.3rem;
 font-size:.78rem;line-height:1.3}
.tile .cls{font-weight:600;color:var(--fg);flex-basis:100%;overflow:hidden;text-overflow:ellipsis;
 white-space:nowrap}
.badge{display:inline-block;border-radius:3px;padding:0 .3rem;font-size:.72rem;font-weight:700}
.badge.tp{background:#dcf3e5;color:#17693b}.badge.fn{background:#fbe1df;color:#9c2a22}
.badge.fp{background:#fdf0d3;color:#8a5a00}.badge.tn{background:#eceff2;color:#4c5563}
.badge.unscored{background:#eceff2;color:#4c5563}
.legend{font-size:.85rem;color:var(--muted)}
[hidden]{display:none!important}
footer{max-width:1180px;margin:0 auto;padding:1rem 2rem 2rem;color:var(--muted);font-size:.85rem}
@media (max-width:700px){main,header .inner,footer{padding-left:1rem;padding-right:1rem}}
"""

_JS = """
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  function key(cell) {
    var s = cell ? cell.getAttribute("data-sort") : "";
    if (s === null) return {num: false, v: cell.textContent.trim().toLowerCase()};
    if (s === "") return {num: true, v: null};
    return {num: true, v: parseFloat(s)};
  }
  function compare(a, b) {
    if (a.v === null || b.v === null) return 0;
    return a.num && b.num ? a.v - b.v : String(a.v).localeCompare(String(b.v));
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
    Array.prototype.forEach.call(heads, function (th, col) {
      var button = document.createElement("button");
      button.type = "button";
      while (th.firstChild) button.appendChild(th.firstChild);
      th.appendChild(button);
      button.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return {row: row, key: key(row.cells[col]), i: i};
        });
        rows.sort(function (a, b) {
          var missing = (a.key.v === null) - (b.key.v === null);
          if (missing) return missing;
          return (up ? 1 : -1) * compare(a.key, b.key) || a.i - b.i;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
  });
  var filters = document.querySelector(".filters");
  if (!filters) return;
  var byClass = document.getElementById("filter-class");
  var byOutcome = document.getElementById("filter-outcome");
  var count = document.getElementById("filter-count");
  var gallery = document.querySelector(".gallery");
  function apply() {
    var shown = 0, total = 0;
    Array.prototype.forEach.call(document.querySelectorAll(".example"), function (ex) {
      var any = false;
      Array.prototype.forEach.call(ex.querySelectorAll(".tile[data-class]"), function (t) {
        var ok = (!byClass.value || t.getAttribute("data-class") === byClass.value) &&
          (!byOutcome.value || t.getAttribute("data-outcome") === byOutcome.value);
        t.hidden = !ok;
        total += 1;
        if (ok) { shown += 1; any = true; }
      });
      ex.hidden = !any;
    });
    gallery.classList.toggle("one-class", byClass.value !== "");
    count.textContent = shown + " of " + total + " maps shown";
  }
  byClass.addEventListener("change", apply);
  byOutcome.addEventListener("change", apply);
  filters.hidden = false;
  apply();
})();
"""
