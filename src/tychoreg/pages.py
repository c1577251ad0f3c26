"""The web catalog's pages: plain static HTML made from the machine indexes.

``index.html`` at the registry's root lists every package (latest version, tags, when it last
changed) with a filter box; ``PKG/index.html`` lists every version, newest first, with its size,
SHA-256, who pushed it when, note, tags, yank, a download link and the command that pulls it.

What a page shows comes from the registry, which anyone who can write to it fills: every stored
string is escaped, every link is built from names that passed the name rules and is
percent-encoded, and each page carries a Content-Security-Policy that allows only its own inline
style and script (by hash), so even markup that slipped through could run nothing. The little
script only filters; without it (JS off, a text browser) the page is complete, minus the filter.
Pages are a function of their index alone (no clock), so a check can re-render and compare.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

#: Marks a page as ours: a page without it is never overwritten (a bucket may hold a site of its own).
GENERATOR = "tychoreg"
_STAMP = re.compile(rb'<meta name="tycho-catalog" content="([0-9a-f]{1,64}) ([0-9]{1,18})">')

_STYLE = """
:root{color-scheme:light dark;--fg:#1b1f24;--muted:#5b6570;--line:#d8dee4;--bg:#fff;--alt:#f6f8fa;--accent:#0b63c5;
--warn:#9a3412;--warnbg:#fff1e6}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9aa5b1;--line:#30363d;--bg:#0d1117;--alt:#161b22;
--accent:#58a6ff;--warn:#fdba74;--warnbg:#3b1d0a}}
*{box-sizing:border-box}[hidden]{display:none!important}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header,main,footer{max-width:72rem;margin:0 auto;padding:0 1rem}
header{padding-top:1.25rem}h1{font-size:1.6rem;margin:.2rem 0}.sub{color:var(--muted);margin:.2rem 0 1rem}
a{color:var(--accent)}code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.cmd{display:inline-block;user-select:all;background:var(--alt);border:1px solid var(--line);border-radius:4px;
padding:.1rem .35rem;word-break:break-all}
.filter{display:block;margin:0 0 .8rem}.filter input{width:100%;max-width:26rem;font:inherit;padding:.45rem .6rem;
border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}
table{width:100%;border-collapse:collapse}th,td{text-align:left;vertical-align:top;padding:.5rem .6rem;
border-bottom:1px solid var(--line)}th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
tbody tr:nth-child(even){background:var(--alt)}.sha code{word-break:break-all}.num{white-space:nowrap}
.tag{display:inline-block;font-size:.75rem;border:1px solid var(--line);border-radius:1rem;padding:0 .45rem;
margin:.1rem .2rem .1rem 0;white-space:nowrap}
.yanked{color:var(--warn);background:var(--warnbg);border-radius:4px;padding:0 .3rem}
tr.is-yanked .version{text-decoration:line-through}.note{white-space:pre-wrap;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.damaged{color:var(--warn)}footer{color:var(--muted);font-size:.85rem;padding-top:1rem;padding-bottom:2rem}
@media (max-width:700px){table,thead,tbody,tr,td{display:block}thead{display:none}tr{border:1px solid var(--line);
border-radius:8px;margin:0 0 .75rem;padding:.35rem 0}td{border:0;padding:.25rem .75rem}
td[data-label]::before{content:attr(data-label);display:block;font-size:.7rem;text-transform:uppercase;color:var(--muted)}}
""".strip()

_FILTER = """
(function(){var box=document.getElementById("filter-box"),input=document.getElementById("filter"),
rows=Array.prototype.slice.call(document.querySelectorAll("#packages tbody tr")),none=document.getElementById("none");
box.hidden=false;function run(){var q=input.value.trim().toLowerCase(),shown=0;rows.forEach(function(r){
var hit=!q||r.getAttribute("data-name").toLowerCase().indexOf(q)!==-1;r.hidden=!hit;if(hit){shown++}});
none.hidden=shown!==0||rows.length===0}input.addEventListener("input",run);run()})();
""".strip()


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_CSP = (
    f"default-src 'none'; style-src '{_hash(_STYLE)}'; script-src '{_hash(_FILTER)}'; "
    "base-uri 'none'; form-action 'none'"
)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def href(*segments: str) -> str:
    """A relative link to a path of registry names, each segment percent-encoded (``+`` too:
    some servers read it as a space)."""
    return "/".join(quote(s, safe="") for s in segments)


def stamp_of(page: bytes) -> tuple[str, int] | None:
    """The (epoch, serial) of the index a page of ours was made from; None if it is not ours."""
    if f'<meta name="generator" content="{GENERATOR}">'.encode() not in page[:4096]:
        return None
    found = _STAMP.search(page[:4096])
    return (found.group(1).decode(), int(found.group(2))) if found else None


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _time(iso: Any) -> str:
    if not isinstance(iso, str) or len(iso) < 16:
        return '<span class="muted">-</span>'
    shown = iso[:16].replace("T", " ") + (" UTC" if iso.endswith(("+00:00", "Z")) else "")
    return f'<time datetime="{esc(iso)}">{esc(shown)}</time>'


def _page(title: str, stamp: tuple[str, int], body: Iterable[str], script: bool) -> bytes:
    head = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">',
        '<meta name="referrer" content="no-referrer">',
        f'<meta name="generator" content="{GENERATOR}">',
        f'<meta name="tycho-catalog" content="{esc(stamp[0])} {int(stamp[1])}">',
        f"<title>{esc(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
    ]
    tail = [f"<script>{_FILTER}</script>"] if script else []
    return ("\n".join([*head, *body, *tail, "</body>", "</html>", ""])).encode()


def _tags(tags: Any, version: str | None = None) -> str:
    if not isinstance(tags, Mapping):
        return ""
    items = sorted((t, v) for t, v in tags.items() if isinstance(t, str) and isinstance(v, str))
    if version is not None:
        return "".join(f'<span class="tag">{esc(t)}</span>' for t, v in items if v == version)
    return "".join(f'<span class="tag">{esc(t)} &rarr; {esc(v)}</span>' for t, v in items)


def root_page(index: Mapping[str, Any], stamp: tuple[str, int]) -> bytes:
    """``index.html``: every package of the registry's machine index."""
    packages = index.get("packages")
    packages = packages if isinstance(packages, Mapping) else {}
    rows = []
    for name in sorted(p for p in packages if isinstance(p, str)):
        entry = packages[name] if isinstance(packages[name], Mapping) else {}
        latest = entry.get("latest")
        problem = entry.get("problem")
        versions = entry.get("versions")
        rows.append(
            f'<tr data-name="{esc(name)}">'
            f'<td data-label="Package"><a href="{href(name, "index.html")}">{esc(name)}</a>'
            + (f' <span class="damaged" title="{esc(problem)}">damaged</span>' if problem else "")
            + "</td>"
            f'<td data-label="Latest">{esc(latest) if isinstance(latest, str) else "<span class=muted>-</span>"}</td>'
            f'<td data-label="Tags">{_tags({t: v for t, v in (entry.get("tags") or {}).items() if t != "latest"})}</td>'
            f'<td data-label="Versions" class="num">{esc(versions) if isinstance(versions, int) else "-"}</td>'
            f'<td data-label="Updated" class="num">{_time(entry.get("updated"))}</td>'
            "</tr>"
        )
    count = len(rows)
    body = [
        "<header>",
        "<h1>Packages</h1>",
        f'<p class="sub">{count} package{"s" if count != 1 else ""} in this registry</p>',
        "</header>",
        "<main>",
        (
            '<label class="filter" id="filter-box" hidden>Filter packages '
            '<input id="filter" type="search" placeholder="Type part of a name" autocomplete="off" spellcheck="false">'
            "</label>"
        ),
        '<table id="packages">',
        "<thead><tr><th>Package</th><th>Latest</th><th>Tags</th><th>Versions</th><th>Updated</th></tr></thead>",
        "<tbody>",
        *rows,
        "</tbody>",
        "</table>",
        f'<p id="none"{" hidden" if rows else ""}>{"No package matches." if rows else "No packages yet."}</p>',
        "</main>",
        (
            "<footer>Pull one with <code>tychoreg pull PKG</code> (a config whose backend is "
            "<code>http</code> and whose <code>http.url</code> is this page&#39;s folder) &middot; "
            f'machine-readable: <a href="{href(".tycho-catalog.json")}">.tycho-catalog.json</a></footer>'
        ),
    ]
    return _page("Packages", stamp, body, script=True)


def package_page(index: Mapping[str, Any], stamp: tuple[str, int]) -> bytes:
    """``PKG/index.html``: every version of a package's machine index, newest first."""
    name = str(index.get("package", ""))
    localname = index.get("localname")
    versions = index.get("versions")
    versions = [v for v in versions if isinstance(v, Mapping)] if isinstance(versions, list) else []
    found_tags = index.get("tags")
    tags: Mapping[str, Any] = found_tags if isinstance(found_tags, Mapping) else {}
    rows = []
    for v in reversed(versions):  # the index is ascending by version precedence
        version = str(v.get("version", ""))
        yanked = v.get("yanked") is True
        reason = v.get("yank_reason")
        sha = v.get("sha256")
        problem = v.get("problem")
        by = v.get("pushed_by")
        download = f'<a href="{href("tycho_" + version + ".pkg")}"' + (
            f' download="{esc(localname)}"' if isinstance(localname, str) else ""
        )
        rows.append(
            f'<tr id="v-{esc(version)}" data-version="{esc(version)}"{" class=is-yanked" if yanked else ""}>'
            f'<td data-label="Version"><span class="version">{esc(version)}</span> {_tags(tags, version)}'
            + (
                f' <span class="yanked">yanked{": " + esc(reason) if isinstance(reason, str) and reason else ""}</span>'
                if yanked
                else ""
            )
            + "</td>"
            f'<td data-label="Size" class="num" title="{esc(v.get("size"))} bytes">{_size(v.get("size"))}</td>'
            f'<td data-label="SHA-256" class="sha">'
            + (
                f'<code class="sha256">{esc(sha)}</code>'
                if isinstance(sha, str)
                else f'<span class="damaged">{esc(problem)}</span>'
                if problem
                else '<span class="muted">none recorded (pushed by tycho-station 0.4.0 or another tool)</span>'
            )
            + "</td>"
            f'<td data-label="Pushed">{_time(v.get("pushed_at"))}'
            + (f'<br><span class="muted">by</span> <span class="by">{esc(by)}</span>' if isinstance(by, str) else "")
            + "</td>"
            f'<td data-label="Note" class="note">{esc(v.get("note"))}</td>'
            f'<td data-label="Get it">{download}>download</a><br>'
            f'<code class="cmd">tychoreg pull {esc(name)} --version {esc(version)}</code></td>'
            "</tr>"
        )
    latest = tags.get("latest")
    facts = [f"{len(rows)} version{'s' if len(rows) != 1 else ''}"]
    if isinstance(latest, str):
        facts.append(f"latest {esc(latest)}")
    if isinstance(localname, str):
        facts.append(f"pulled as <code>{esc(localname)}</code>")
    problem = index.get("problem")
    body = [
        "<header>",
        '<p><a href="../index.html">&larr; all packages</a></p>',
        f"<h1>{esc(name)}</h1>",
        f'<p class="sub">{" &middot; ".join(facts)}</p>',
        *([f'<p class="damaged">{esc(problem)}</p>'] if problem else []),
        *(
            [f'<p>Pull the latest: <code class="cmd">tychoreg pull {esc(name)}</code></p>']
            if isinstance(latest, str)
            else []
        ),
        "</header>",
        "<main>",
        '<table id="versions">',
        "<thead><tr><th>Version</th><th>Size</th><th>SHA-256</th><th>Pushed</th><th>Note</th><th>Get</th></tr></thead>",
        "<tbody>",
        *rows,
        "</tbody>",
        "</table>",
        *([] if rows else ["<p>No versions yet.</p>"]),
        "</main>",
        f'<footer>Machine-readable: <a href="{href(".tycho", "catalog.json")}">.tycho/catalog.json</a></footer>',
    ]
    return _page(name, stamp, body, script=False)
