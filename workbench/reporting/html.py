"""report.html: one self-contained page that opens offline from file://.

- plotly.js is inlined ONCE, gzip-compressed and base64-encoded (4.8 MB -> about 2 MB),
  and unpacked by the browser's own `DecompressionStream` (Chrome 80+, Firefox 113+,
  Safari 16.4+); each figure is a `<script type="application/json" class="wb-fig">` spec
  without the default template, which is carried once (`wb-template`). A figure is drawn
  with `Plotly.newPlot` when it comes near the screen, so the page opens at once whatever
  the number of figures; the others then draw one at a time while the browser is idle
  (`<body data-figures="drawn">` once all are). Inlining plotly.js per figure, as
  `fig.to_html()` does, would cost 4.8 MB each. The template carries the per-trace-type
  defaults of the trace types the report uses only.
- A figure that is only a table becomes an HTML table (never cut to a plotly table's
  height); scatters over 2,000 points are decimated for display (workbench/reporting/figures.py).
- No external URL is referenced: no CDN, no fonts, no images; a Content-Security-Policy
  meta tag forbids the page from fetching anything (`default-src 'none'`).
- Every user-supplied string is passed through `html.escape`; figure JSON has `<`, `>`
  and `&` written as \\u escapes so nothing in a label can close the script element.
- Figures come from each suite's `figures(result_dict, run_dir)`; a suite that cannot be
  imported or fails to draw gives a visible note instead of breaking the page.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from workbench.records import RunRecord
from workbench.reporting.markdown import (
    arrow,
    distinguishing_tags,
    fmt_ci,
    fmt_p,
    fmt_value,
    headline_rows,
    provenance_fields,
    status_counts,
    tags_text,
)

REPORT_FILE = "report.html"
FOLD_ROWS = 40  # metric tables longer than this start folded

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'")

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg2:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700}
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--fg);
 margin:0 auto;max-width:1200px;padding:1.5rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.3rem;border-bottom:1px solid var(--line);padding-bottom:.3rem;
 margin-top:2rem}h3{font-size:1.1rem;margin:1.5rem 0 .5rem}
.sub,.muted{color:var(--muted)}
table{border-collapse:collapse;margin:.5rem 0;font-size:13px}
th,td{border:1px solid var(--line);padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:var(--bg2)}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;border-radius:1em;padding:0 .6em;font-size:12px;font-weight:600;color:#fff}
.pass,.ok{background:var(--ok)}.fail,.error{background:var(--bad)}.skipped,.gerror{background:var(--warn)}
.note{border-left:4px solid var(--warn);background:#fff8c5;padding:.4rem .8rem;margin:.5rem 0}
.toc ol{margin:.2rem 0}.fig{height:450px;width:100%;margin:.5rem 0 1rem}
.fig:not([data-drawn]){background:var(--bg2)}
pre{background:var(--bg2);padding:.6rem;overflow:auto;max-height:30rem;font-size:12px}
details>summary{cursor:pointer;color:var(--muted)}
section.result{border-top:1px dashed var(--line);padding-top:.3rem}
"""

LOADER = """
(function(){
  var template = JSON.parse(document.getElementById('wb-template').textContent);
  function fail(div, e) {
    div.className += ' note';
    div.textContent = 'This figure could not be drawn: ' + e;
    console.error('workbench report: figure ' + div.id + ' failed: ' + e);
  }
  function draw(s) {
    var div = document.getElementById(s.getAttribute('data-target'));
    if (div.hasAttribute('data-drawn')) return;
    div.setAttribute('data-drawn', '1');
    try {
      var spec = JSON.parse(s.textContent), layout = spec.layout || {};
      if (s.hasAttribute('data-shared-template')) layout.template = template;
      if (layout.height) div.style.height = layout.height + 'px';
      Plotly.newPlot(div, spec.data || [], layout, {responsive: true, displaylogo: false});
    } catch (e) { fail(div, e); }
  }
  function start() {
    var specs = Array.prototype.slice.call(document.querySelectorAll('script.wb-fig'));
    var byId = {};
    specs.forEach(function (s) { byId[s.getAttribute('data-target')] = s; });
    function done() { document.body.setAttribute('data-figures', 'drawn'); }
    if (!('IntersectionObserver' in window)) { specs.forEach(draw); done(); return; }
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { io.unobserve(e.target); draw(byId[e.target.id]); }
      });
    }, {rootMargin: '600px 0px'});
    specs.forEach(function (s) { io.observe(document.getElementById(s.getAttribute('data-target'))); });
    window.addEventListener('beforeprint', function () { specs.forEach(draw); });
    // Figures near the screen draw first (above); the rest draw one at a time while the
    // browser is idle, so the whole report is drawn shortly after it opens and scrolling
    // never meets an empty placeholder.
    var pending = specs.slice();
    var later = window.requestIdleCallback
      ? function (f) { window.requestIdleCallback(f, {timeout: 50}); }
      : function (f) { setTimeout(f, 0); };
    function next() {
      var t0 = Date.now();
      while (pending.length && Date.now() - t0 < 80) {  // a few figures per idle period
        var s = pending.shift(), div = document.getElementById(s.getAttribute('data-target'));
        if (div.hasAttribute('data-drawn')) continue;
        io.unobserve(div);
        draw(s);
      }
      if (pending.length) later(next); else done();
    }
    later(next);
  }
  var packed = document.getElementById('wb-plotly');
  if (!('DecompressionStream' in window)) {
    document.querySelectorAll('div.fig').forEach(function (d) {
      fail(d, 'this browser cannot unpack the embedded plotly.js (needs DecompressionStream)'); });
    return;
  }
  var bin = atob(packed.textContent.trim()), bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'))).text().then(function (js) {
    var el = document.createElement('script');
    el.text = js;
    document.head.appendChild(el);
    document.body.setAttribute('data-plotly', 'ready');
    start();
  }).catch(function (e) {
    document.querySelectorAll('div.fig').forEach(function (d) { fail(d, 'plotly.js could not be unpacked: ' + e); });
  });
})();
"""


def used_template(template: Mapping[str, Any], trace_types: set[str]) -> dict[str, Any]:
    """The template with its per-trace-type defaults kept only for `trace_types`. A trace
    takes defaults only from its own type's entry, so the figures look exactly the same,
    and plotly.js no longer merges some 40 unused entries on every `newPlot` (a third of
    the quickstart report's drawing time)."""
    data = template.get("data") or {}
    return {**template, "data": {t: v for t, v in data.items() if t in trace_types}}


def pack_plotlyjs(js: str) -> str:
    """plotly.js gzip-compressed (deterministic: no file name or time in the header) and
    base64-encoded, for the `wb-plotly` element the loader unpacks."""
    import base64
    import gzip

    return base64.b64encode(gzip.compress(js.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def _e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def _script_json(text: str) -> str:
    """JSON that is safe inside a <script> element (no '<', '>' or '&' characters)."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _lookup_suite(suites: Any, name: str) -> Any:
    obj = suites.get(name)
    if obj is None:
        raise LookupError(f"suite {name!r} is not registered")
    return obj


def collect_figures(result: Mapping[str, Any], run_dir: str | Path, suites: Any = None
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """What one result shows, from its suite's `figures`: items {"kind": "figure", "title",
    "spec" (JSON text), "shared_template" (bool), "trace_types"} or {"kind": "table", "title", "header",
    "rows"} for a figure that is only a table; plus notes (plain text) for whatever could
    not be drawn. Never raises."""
    from workbench.reporting.figures import decimate, figure_spec, figure_table

    if suites is None:
        from workbench.registry import SUITES as suites
    name = result.get("suite")
    try:
        cls = _lookup_suite(suites, name)
        figs = list(cls.figures(dict(result), Path(run_dir)) or [])
    except Exception as exc:  # a broken plug-in must not take the report down
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        return [], [f"Figures of suite {name!r} could not be drawn: {type(exc).__name__}: {exc}{where}"]
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, item in enumerate(figs):
        try:
            title, fig = item
            table = figure_table(fig)
            if table is not None:
                out.append({"kind": "table", "title": str(title), "header": table[0], "rows": table[1]})
                continue
            spec, shared = figure_spec(decimate(fig))
            own_title = ((spec.get("layout") or {}).get("title") or {}).get("text")
            out.append({"kind": "figure", "title": str(title), "spec": json.dumps(spec, separators=(",", ":")),
                        "shared_template": shared, "own_title": bool(own_title),
                        "trace_types": sorted({str(t.get("type") or "scatter") for t in spec.get("data") or []})})
        except Exception as exc:
            notes.append(f"Figure {i + 1} of suite {name!r} could not be converted: {type(exc).__name__}: {exc}")
    return out, notes


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    """A suite's table figure as an HTML table (every row; numbers right-aligned)."""
    def cell(v: str) -> str:
        try:
            float(v.replace(",", "").replace("−", "-"))
            num = True
        except ValueError:
            num = False
        return f'<td class="num">{_e(v)}</td>' if num else f"<td>{_e(v)}</td>"

    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows) + "</tbody></table>")


def _metric_table(metrics: list[Mapping[str, Any]], fold: bool = True) -> str:
    rows = []
    for m in metrics:
        value = (f'<td class="num">{_e(fmt_value(m.get("value"), m.get("unit")))}</td>' if m.get("value") is not None
                 else '<td class="num">n/a</td>')
        hib = m.get("higher_is_better")
        title = {True: "higher is better", False: "lower is better"}.get(hib, "no preferred direction")
        rows.append(
            f"<tr><td>{_e(m.get('name'))}</td>{value}<td class=\"num\">{_e(fmt_ci(m.get('ci'), m.get('value'), m.get('unit')))}</td>"
            f"<td class=\"num\">{_e(m.get('n') if m.get('n') is not None else '')}</td>"
            f"<td title=\"{title}\">{arrow(hib)}</td><td>{_e(m.get('unit') or '')}</td>"
            f"<td>{_e(tags_text(m.get('tags')))}</td><td>{_e(m.get('reason') or '')}</td></tr>"
        )
    table = ("<table><thead><tr><th>metric</th><th>value</th><th>95% CI</th><th>n</th><th>dir</th><th>unit</th>"
             "<th>tags</th><th>reason (if no value)</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    if fold and len(metrics) > FOLD_ROWS:
        return f"<details><summary>All {len(metrics)} metrics</summary>{table}</details>"
    return table


def _gate_html(outcome: Mapping[str, Any]) -> str:
    rules = outcome.get("rules", [])
    status = outcome.get("status", "error")
    cls = {"pass": "pass", "fail": "fail"}.get(status, "gerror")
    c = {s: sum(r.get("status") == s for r in rules) for s in ("pass", "fail", "error")}
    base = outcome.get("baseline_run_id")
    head = (f'<p><span class="badge {cls}">{_e(str(status).upper())}</span> {len(rules)} rules: {c["pass"]} passed, '
            f'{c["fail"]} failed, {c["error"]} could not be evaluated (exit code {_e(outcome.get("exit_code"))})'
            + (f"; baseline run {_e(base)}" if base else "") + ".</p>")
    rows = []
    for r in rules:
        st = r.get("status")
        rows.append(
            f'<tr><td><span class="badge {"gerror" if st == "error" else _e(st)}">{_e(st)}</span></td>'
            f"<td><code>{_e(r.get('rule'))}</code></td>"
            f"<td class=\"num\">{_e(fmt_value(r.get('observed')) if r.get('observed') is not None else '')}</td>"
            f"<td class=\"num\">{_e(fmt_value(r.get('threshold')) if r.get('threshold') is not None else '')}</td>"
            f"<td class=\"num\">{_e(fmt_value(r.get('baseline')) if r.get('baseline') is not None else '')}</td>"
            f"<td class=\"num\">{_e(fmt_p(r.get('p_value')))}</td><td>{_e(r.get('message'))}</td></tr>"
        )
    return head + ("<table><thead><tr><th>status</th><th>rule</th><th>observed</th><th>limit</th><th>baseline</th>"
                   "<th>p</th><th>message</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def render_html(
    run: RunRecord | Mapping[str, Any],
    run_dir: str | Path,
    gate_outcome: Any = None,
    *,
    suites: Any = None,
    plotlyjs: str | None = None,
) -> str:
    """The whole report page as a string. `suites` maps suite name -> class with
    `figures` (default: the SUITES registry); `plotlyjs` overrides the inlined library
    (default `plotly.offline.get_plotlyjs()`)."""
    d = run.to_dict() if isinstance(run, RunRecord) else run
    outcome = gate_outcome.to_dict() if hasattr(gate_outcome, "to_dict") else gate_outcome
    prov = provenance_fields(d)
    pd = dict(prov)
    body: list[str] = []
    toc: list[str] = ['<li><a href="#provenance">Provenance</a></li>']

    body.append('<section id="provenance"><h2>Provenance</h2><table><tbody>'
                + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in prov) + "</tbody></table>")
    plan = (d.get("provenance") or {}).get("plan")
    if plan:
        body.append("<details><summary>Resolved plan</summary><pre>"
                    + _e(json.dumps(plan, indent=2, default=str, ensure_ascii=False)) + "</pre></details>")
    body.append("</section>")

    if outcome is not None:
        toc.append('<li><a href="#gate">Gate</a></li>')
        body.append(f'<section id="gate"><h2>Gate</h2>{_gate_html(outcome)}</section>')

    toc.append('<li><a href="#headline">Headline metrics</a></li>')
    hl = headline_rows(d, suites)
    if hl:
        rows = "".join(
            f"<tr><td>{_e(r['model'])}</td><td>{_e(r['metric'])}</td>"
            f"<td class=\"num\">{_e(fmt_value(r['value'], r['unit']) if r['value'] is not None else 'n/a')}</td>"
            f"<td class=\"num\">{_e(fmt_ci(r['ci'], r['value'], r['unit']))}</td>"
            f"<td class=\"num\">{_e(r['n'] if r['n'] is not None else '')}</td>"
            f"<td>{arrow(r['higher_is_better'])}</td><td>{_e(r['dataset'])}</td>"
            f"<td>{_e('; '.join(x for x in (tags_text(t), r['note'], r['reason'] or '') if x))}</td></tr>"
            for r, t in zip(hl, distinguishing_tags(hl)))
        body.append('<section id="headline"><h2>Headline metrics</h2><table><thead><tr><th>model</th><th>metric</th>'
                    "<th>value</th><th>95% CI</th><th>n</th><th>dir</th><th>dataset</th><th>tags / notes</th></tr>"
                    f"</thead><tbody>{rows}</tbody></table></section>")
    else:
        body.append('<section id="headline"><h2>Headline metrics</h2><p class="muted">No headline metrics.</p></section>')

    results = list(d.get("results", []))
    not_run = [r for r in results if r.get("status") != "ok"]
    if not_run:
        toc.append('<li><a href="#not-run">Suites that did not run</a></li>')
        body.append('<section id="not-run"><h2>Suites that did not run</h2><table><thead><tr><th>suite</th>'
                    "<th>model</th><th>dataset</th><th>status</th><th>reason</th></tr></thead><tbody>"
                    + "".join(f"<tr><td>{_e(r.get('suite'))}</td><td>{_e(r.get('model'))}</td>"
                              f"<td>{_e(r.get('dataset'))}</td><td><span class=\"badge {_e(r.get('status'))}\">"
                              f"{_e(r.get('status'))}</span></td><td>{_e(r.get('reason'))}</td></tr>" for r in not_run)
                    + "</tbody></table></section>")

    models: list[Any] = []
    for r in results:
        if r.get("status") == "ok" and r.get("model") not in models:
            models.append(r.get("model"))
    n_fig = 0
    fig_scripts: list[str] = []
    trace_types: set[str] = set()  # of the figures on the shared template: the template part they need
    res_toc: list[str] = []
    body.append('<section id="results"><h2>Results</h2>')
    for mi, model in enumerate(models):
        body.append(f'<h3 id="m-{mi}">Model {_e(model)}</h3>')
        sub = []
        for ri, r in enumerate(results):
            if r.get("status") != "ok" or r.get("model") != model:
                continue
            anchor = f"r-{ri}"
            sub.append(f'<li><a href="#{anchor}">{_e(r.get("suite"))}</a></li>')
            meta = f"dataset {_e(r.get('dataset'))}"
            if r.get("duration_s") is not None:
                meta += f" · {float(r['duration_s']):.2f} s"
            if r.get("seed") is not None:
                meta += f" · seed {_e(r.get('seed'))}"
            body.append(f'<section class="result" id="{anchor}"><h3>{_e(r.get("suite"))} · {_e(model)}</h3>'
                        f'<p class="muted">{meta}</p>')
            metrics = list(r.get("metrics", []))
            main = [m for m in metrics if "class" not in (m.get("tags") or {})]
            per_class = [m for m in metrics if "class" in (m.get("tags") or {})]
            if main:
                body.append(_metric_table(main))
            if per_class:
                body.append(f"<details><summary>Per-class metrics ({len(per_class)})</summary>"
                            f"{_metric_table(per_class, fold=False)}</details>")
            if not metrics:
                body.append('<p class="muted">No metrics.</p>')
            figs, notes = collect_figures(r, run_dir, suites)
            for note in notes:
                body.append(f'<div class="note">{_e(note)}</div>')
            for item in figs:
                if item["kind"] == "table":
                    body.append(f"<h4>{_e(item['title'])}</h4>" + _plain_table(item["header"], item["rows"]))
                    continue
                fid = f"fig-{n_fig}"
                n_fig += 1
                shared = " data-shared-template" if item["shared_template"] else ""
                if item["shared_template"]:
                    trace_types.update(item["trace_types"])
                # a figure with a title of its own is not headed twice
                head = "" if item.get("own_title") else f'<h4>{_e(item["title"])}</h4>'
                body.append(f'{head}<div class="fig" id="{fid}" aria-label="{_e(item["title"])}"></div>')
                fig_scripts.append(f'<script type="application/json" class="wb-fig" data-target="{fid}"{shared}>'
                                   f"{_script_json(item['spec'])}</script>")
            body.append("</section>")
        res_toc.append(f'<li><a href="#m-{mi}">{_e(model)}</a><ol>{"".join(sub)}</ol></li>')
    if not models:
        body.append('<p class="muted">No suite produced results.</p>')
    body.append("</section>")
    toc.append(f'<li><a href="#results">Results</a><ol>{"".join(res_toc)}</ol></li>')

    if plotlyjs is None and n_fig:
        from plotly.offline import get_plotlyjs

        plotlyjs = get_plotlyjs()
    counts = status_counts(d)
    subtitle = " · ".join(_e(x) for x in (pd.get("plan") and f"plan {pd['plan']}", pd.get("created"),
                                            f"{sum(counts.values())} results: {counts['ok']} ok, "
                                            f"{counts['skipped']} skipped, {counts['error']} errors") if x)
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Workbench report {_e(d.get('run_id'))}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Workbench report {_e(d.get('run_id'))}</h1><p class=\"sub\">{subtitle}</p></header>"
        f'<nav class="toc"><h2>Contents</h2><ol>{"".join(toc)}</ol></nav>'
    )
    scripts = ""
    if n_fig:
        from workbench.reporting.figures import default_template

        template = _script_json(json.dumps(used_template(default_template(), trace_types), separators=(",", ":")))
        scripts = (f'<script type="application/octet-stream" id="wb-plotly" data-encoding="gzip+base64">'
                   f"{pack_plotlyjs(plotlyjs or '')}</script>"
                   f'<script type="application/json" id="wb-template">{template}</script>'
                   + "".join(fig_scripts) + f"<script>{LOADER}</script>")
    return head + "".join(body) + scripts + "</body></html>\n"


def write_html(run: RunRecord | Mapping[str, Any], run_dir: str | Path, out_dir: str | Path | None = None,
               gate_outcome: Any = None, *, suites: Any = None) -> Path:
    """Write `report.html` into `out_dir` (default `run_dir`) and return its path."""
    out = Path(out_dir if out_dir is not None else run_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_FILE
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(render_html(run, run_dir, gate_outcome, suites=suites), encoding="utf-8")
    tmp.replace(path)
    return path
