"""The report: one self-contained HTML page (inline CSS, base64 images) and the same content as Markdown."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.analysis import paper_values as pv
from pipeline.analysis.companions import GEOMETRY_COLUMNS, Companion
from pipeline.analysis.figures import FigureResult
from pipeline.analysis.oracle import OracleCheck
from pipeline.analysis.tables import ComparisonRow, TableResult
from pipeline.analysis.verdicts import Verdict

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;
color:#222;line-height:1.4}
h1{font-size:1.6em;border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.82em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}
td.txt,th.txt{text-align:left}
.scroll{overflow:auto;display:inline-block;max-width:100%}.scroll.long{max-height:420px}
nav a{margin-right:.8em;font-size:.85em}
.agrees,.supported,.oracle-ok{background:#dff0d8}.differs,.not-supported,.oracle-bad{background:#f2dede}
.partly-supported,.reference,.not-converged{background:#fcf8e3}.no-data,.not-testable{background:#eee}
figure{margin:1em 0;display:inline-block;max-width:100%}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555;max-width:900px}
.note{font-size:.85em;color:#555}.banner{padding:.6em 1em;border-left:5px solid #888;background:#f6f6f6}
pre{font-size:.75em;background:#f8f8f8;padding:.5em;overflow:auto;max-height:400px}
"""

# Runs when the page has loaded: counts what rendered so a headless browser can verify the page.
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure[data-figure] img'));
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).length;
  var b = document.body;
  b.setAttribute('data-images', String(imgs.length));
  b.setAttribute('data-broken-images', String(broken));
  b.setAttribute('data-tables-rendered', String(document.querySelectorAll('section[data-table] table.ours').length));
  b.setAttribute('data-checked', 'yes');
});
"""


@dataclass
class ReportContent:
    title: str
    model_kind: str
    tables: dict[str, TableResult]
    skipped: dict[str, str]
    figures: list[FigureResult]
    verdicts: list[Verdict]
    oracle: OracleCheck | None
    missing: list[str]
    run_info: dict
    metas: dict[str, dict | None]
    extra_tables: dict[str, tuple[list[str], list[dict]]] = field(default_factory=dict)
    sweep: tuple[list[str], list[dict], str] | None = None
    companions: list[Companion] = field(default_factory=list)


COMPANION_INTRO = (
    "Another model measured by the same four stages on its own chain (dvc.yaml's *_learned stages); its "
    "full report is linked. pc_margin = 1 − κ̂^diag − δ̂^cross per seed (Theorem 15, eq. 19); "
    "mean ± standard error over seeds."
)


def _companions_html(comps: list[Companion]) -> list[str]:
    parts = [
        "<h2 id='companions'>Companion runs: the learned model beside this one</h2>",
        f"<p class='note'>{html.escape(COMPANION_INTRO)}</p>",
    ]
    for c in comps:
        if not c.found:
            parts.append(f"<p class='note' data-companion='missing'>{html.escape(c.reason)}</p>")
            continue
        parts.append(
            f"<div data-companion='{html.escape(c.label)}'><h3>{html.escape(c.label)} "
            f"(<a href='{html.escape(c.report_link)}'>its report</a>)</h3>"
            f"<p class='note'>{html.escape(c.model)}; {html.escape(c.setting)}.</p>"
        )
        parts.append(_html_table(["key", "status", "claim", "evidence"], c.verdicts, "companion", "status"))
        if c.geometry:
            parts.append(_html_table(GEOMETRY_COLUMNS, c.geometry, "companion"))
        if c.samples_png:
            b64 = base64.b64encode(c.samples_png).decode("ascii")
            parts.append(
                f"<figure data-figure='companion-samples'><img alt='samples of {html.escape(c.label)}' "
                f"src='data:image/png;base64,{b64}'><figcaption>{html.escape(c.samples_note)}</figcaption>"
                "</figure>"
            )
        parts.append("</div>")
    return parts


def _companions_md(comps: list[Companion]) -> list[str]:
    out = ["## Companion runs: the learned model beside this one\n", COMPANION_INTRO + "\n"]
    for c in comps:
        if not c.found:
            out.append(f"- {c.reason}\n")
            continue
        out += [
            f"### {c.label} ([its report]({c.report_link}))\n",
            f"{c.model}; {c.setting}.\n",
            _md_table(["key", "status", "claim", "evidence"], c.verdicts),
        ]
        if c.geometry:
            out.append(_md_table(GEOMETRY_COLUMNS, c.geometry))
        if c.samples_png:
            out.append(f"Samples: {c.samples_note}.\n")
    return out


def fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—" if math.isnan(v) else ("∞" if v > 0 else "−∞")
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def _cls(status: str) -> str:
    s = status.lower()
    if s.startswith("oracle:"):
        return "oracle-bad" if "not" in s else "oracle-ok"
    if s.startswith("reference"):
        return "reference"
    return s.replace(" ", "-").replace("(", "").replace(")", "")


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------- HTML
def _html_table(columns: Sequence[str], rows: Sequence[dict], cls: str, status_col: str | None = None) -> str:
    first = rows[0] if rows else {}
    head = "".join(
        f'<th class="{"" if _is_num(first.get(c)) else "txt"}">{html.escape(c)}</th>' for c in columns
    )
    body = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            klass = "" if _is_num(v) else "txt"
            if c == status_col and v is not None:
                klass += " " + _cls(str(v))
            cells.append(f'<td class="{klass.strip()}">{html.escape(fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    long = " long" if len(rows) > 20 else ""
    return (
        f'<div class="scroll{long}"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


ORACLE_COLUMNS = ["quantity", "closed_form", "measured", "max_abs_error", "tolerance", "status", "diagnostic"]
COMPARISON_COLUMNS = ["quantity", "paper", "ours", "difference", "tolerance", "status", "note"]


def _cmp_rows(rows: list[ComparisonRow]) -> list[dict]:
    return [
        {
            "quantity": c.quantity,
            "paper": c.paper,
            "ours": c.ours,
            "difference": c.difference,
            "tolerance": c.tolerance,
            "status": c.status,
            "note": c.note,
        }
        for c in rows
    ]


def _img(f: FigureResult) -> str:
    b64 = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure data-figure="{html.escape(f.name)}"><img alt="{html.escape(f.title)}" '
        f'src="data:image/png;base64,{b64}"><figcaption><b>{html.escape(f.title)}.</b> '
        f"{html.escape(f.caption)}</figcaption></figure>"
    )


TABLE_FIGURES = {
    "table_4": ["kappa_t"],
    "table_5": ["block_decomposition"],
    "table_3": ["suppression_heatmap", "rho_vs_t"],
    "table_8": ["pc_slack_heatmap"],
    "table_10": ["proxy_loglog"],
    "release_times": ["release_times"],
}


def _run_sources(content: ReportContent) -> list[tuple[str, dict | None]]:
    return [("analysis", content.run_info)] + list(content.metas.items())


def _run_info_rows(content: ReportContent) -> list[dict]:
    """Scalar entries of each stage's meta (MLflow run id, machine, wall time, git revision, ...)."""
    rows = []
    for stage, meta in _run_sources(content):
        if not meta:
            rows.append({"stage": stage, "key": "(no meta.json)", "value": ""})
            continue
        for k in sorted(meta):
            v = meta[k]
            if isinstance(v, dict) or (isinstance(v, list) and len(json.dumps(v, default=str)) > 200):
                continue  # nested: shown as a collapsible JSON block
            rows.append(
                {
                    "stage": stage,
                    "key": k,
                    "value": json.dumps(v, default=str) if isinstance(v, list) else fmt(v),
                }
            )
    return rows


def _run_info_blocks(content: ReportContent) -> list[tuple[str, str]]:
    """(label, pretty JSON) for every nested meta entry: resolved configs, versions, upstream metas."""
    out = []
    for stage, meta in _run_sources(content):
        for k in sorted(meta or {}):
            v = meta[k]
            if isinstance(v, dict) or (isinstance(v, list) and len(json.dumps(v, default=str)) > 200):
                out.append((f"{stage}: {k}", json.dumps(v, indent=2, sort_keys=True, default=str)))
    return out


def render_html(content: ReportContent) -> str:
    c = content
    fig_by_name = {f.name: f for f in c.figures}
    used: set[str] = set()
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(c.title)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(c.title)}</h1>",
    ]
    ids = [m.get("mlflow_run_id") for m in c.metas.values() if m and m.get("mlflow_run_id")]
    parts.append(
        f"<p class='banner'>Model kind: <b>{html.escape(c.model_kind)}</b>. Tables built: "
        f"{len(c.tables)}; figures: {len(c.figures)}. MLflow run ids: {html.escape(', '.join(ids) or 'none')}. "
        f"Paper: {html.escape(pv.PAPER)}. All t are the paper's 1-based timesteps.</p>"
    )
    toc = (
        ([("oracle", "oracle check")] if c.oracle is not None else [])
        + [("verdicts", "P1–P5")]
        + ([("companions", "learned model")] if c.companions else [])
        + [(k, k) for k in c.tables]
        + ([("sweep", "sweep")] if c.sweep else [])
        + [("run", "run info")]
    )
    parts.append(
        "<nav>" + "".join(f"<a href='#{html.escape(a)}'>{html.escape(b)}</a>" for a, b in toc) + "</nav>"
    )
    if c.model_kind == "gaussian_oracle":
        parts.append(
            "<p class='banner'>This run uses the Gaussian oracle. The paper's numbers are for learned DDPMs "
            "and are shown for reference only (status 'reference'); the test of this run is the closed-form "
            "check below.</p>"
        )
    if c.oracle is not None:
        parts.append("<h2 id='oracle'>Gaussian oracle: closed form vs measured</h2>")
        parts.append(
            f"<p data-oracle-agree='{'yes' if c.oracle.all_agree else 'no'}'>{html.escape(c.oracle.statement)}</p>"
        )
        parts.append(_html_table(ORACLE_COLUMNS, [r.__dict__ for r in c.oracle.rows], "oracle", "status"))
    parts.append("<h2 id='verdicts'>Predictions P1–P5 (§7)</h2>")
    parts.append(
        _html_table(
            ["key", "status", "claim", "evidence"], [v.__dict__ for v in c.verdicts], "verdicts", "status"
        )
    )
    if c.companions:
        parts += _companions_html(c.companions)
    if c.missing or c.skipped:
        parts.append("<h2 id='missing'>Missing inputs</h2><ul>")
        parts += [f"<li>{html.escape(m)}</li>" for m in c.missing]
        parts += [f"<li>{html.escape(k)} not built: {html.escape(v)}</li>" for k, v in c.skipped.items()]
        parts.append("</ul>")
    for name, (cols, rows) in c.extra_tables.items():
        parts.append(f"<section data-table='{html.escape(name)}'><h2>{html.escape(name)}</h2>")
        parts.append(_html_table(cols, rows, "ours") + "</section>")
    for key, t in c.tables.items():
        parts.append(
            f"<section data-table='{html.escape(key)}'><h2 id='{html.escape(key)}'>{html.escape(key)}: "
            f"{html.escape(t.title)}</h2>"
        )
        if t.paper is not None:
            parts.append(
                f"<p class='note'>Paper: {html.escape(t.paper.citation)} — {html.escape(t.paper.setting)}.</p>"
            )
        parts.append(f"<p class='note'>Reads: {html.escape(t.reads)}.</p>")
        for n in t.notes + (list(t.paper.notes) if t.paper else []):
            parts.append(f"<p class='note'>{html.escape(n)}</p>")
        if t.summary:
            parts.append(
                "<p class='note'>"
                + "; ".join(f"{html.escape(k)} = {html.escape(fmt(v))}" for k, v in t.summary.items())
                + "</p>"
            )
        if t.comparison:
            parts.append("<h3>Paper vs ours</h3>")
            parts.append(_html_table(COMPARISON_COLUMNS, _cmp_rows(t.comparison), "comparison", "status"))
        parts.append("<h3>Ours</h3>" + _html_table(t.columns, t.rows, "ours"))
        for ename, erows in t.extra.items():
            if erows:
                parts.append(
                    f"<h3>{html.escape(ename)}</h3>" + _html_table(list(erows[0].keys()), erows, "extra")
                )
        for fname in TABLE_FIGURES.get(key, []):
            if fname in fig_by_name:
                parts.append(_img(fig_by_name[fname]))
                used.add(fname)
        parts.append("</section>")
    if c.sweep:
        cols, rows, intro = c.sweep
        parts.append(
            f"<section data-table='sweep'><h2 id='sweep'>Sweep comparison</h2><p>{html.escape(intro)}</p>"
            + _html_table(cols, rows, "ours")
            + "</section>"
        )
    rest = [f for f in c.figures if f.name not in used]
    if rest:
        parts.append("<h2 id='figures'>More figures</h2>" + "".join(_img(f) for f in rest))
    parts.append("<h2 id='run'>Run: config, MLflow ids, machine, wall times</h2>")
    parts.append(_html_table(["stage", "key", "value"], _run_info_rows(c), "runinfo"))
    for label, text in _run_info_blocks(c):
        parts.append(
            f"<details><summary>{html.escape(label)}</summary><pre>{html.escape(text)}</pre></details>"
        )
    parts.append(f"<script>{CHECK_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ Markdown
def _md_table(columns: Sequence[str], rows: Sequence[dict]) -> str:
    def cell(v) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(cell(r.get(col)) for col in columns) + " |" for r in rows]
    return "\n".join(out) + "\n"


def render_markdown(content: ReportContent, figure_paths: dict[str, str]) -> str:
    c = content
    out = [
        f"# {c.title}\n",
        f"Model kind: **{c.model_kind}**. Paper: {pv.PAPER}. All t are the paper's 1-based timesteps.\n",
    ]
    if c.model_kind == "gaussian_oracle":
        out.append(
            "> Gaussian oracle run: the paper's (learned-model) numbers are shown for reference only.\n"
        )
    if c.oracle is not None:
        out += [
            "## Gaussian oracle: closed form vs measured\n",
            c.oracle.statement + "\n",
            _md_table(ORACLE_COLUMNS, [r.__dict__ for r in c.oracle.rows]),
        ]
    out += [
        "## Predictions P1–P5 (§7)\n",
        _md_table(["key", "status", "claim", "evidence"], [v.__dict__ for v in c.verdicts]),
    ]
    if c.companions:
        out += _companions_md(c.companions)
    if c.missing or c.skipped:
        out.append("## Missing inputs\n")
        out += [f"- {m}" for m in c.missing] + [f"- {k} not built: {v}" for k, v in c.skipped.items()]
        out.append("")
    for name, (cols, rows) in c.extra_tables.items():
        out += [f"## {name}\n", _md_table(cols, rows)]
    for key, t in c.tables.items():
        out.append(f"## {key}: {t.title}\n")
        if t.paper is not None:
            out.append(f"Paper: {t.paper.citation} — {t.paper.setting}.\n")
        out.append(f"Reads: {t.reads}. CSV: `{key}.csv`.\n")
        out += [f"- {n}" for n in t.notes + (list(t.paper.notes) if t.paper else [])]
        if t.summary:
            out.append("\n" + "; ".join(f"{k} = {fmt(v)}" for k, v in t.summary.items()) + "\n")
        if t.comparison:
            out += ["### Paper vs ours\n", _md_table(COMPARISON_COLUMNS, _cmp_rows(t.comparison))]
        out += ["### Ours\n", _md_table(t.columns, t.rows)]
        for ename, erows in t.extra.items():
            if erows:
                out += [f"### {ename}\n", _md_table(list(erows[0].keys()), erows)]
    if c.sweep:
        cols, rows, intro = c.sweep
        out += ["## Sweep comparison\n", intro + "\n", _md_table(cols, rows)]
    out.append("## Figures\n")
    for f in c.figures:
        out.append(f"![{f.title}]({figure_paths[f.name]})\n\n*{f.title}.* {f.caption}\n")
    out += [
        "## Run: config, MLflow ids, machine, wall times\n",
        _md_table(["stage", "key", "value"], _run_info_rows(c)),
    ]
    for label, text in _run_info_blocks(c):
        out += [f"<details><summary>{label}</summary>\n\n```json\n{text}\n```\n</details>\n"]
    return "\n".join(out) + "\n"
