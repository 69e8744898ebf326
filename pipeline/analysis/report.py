"""The report: one self-contained HTML page (inline CSS, base64 images) and the same content as Markdown,
rendered from Jinja2 templates (pipeline/analysis/templates/, HTML autoescaped). Verdicts come first: a
summary block with each claim and table beside the paper and every run, then the detail, then run info."""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import jinja2

from pipeline.analysis import paper_values as pv
from pipeline.analysis import presentation as pr
from pipeline.analysis import summary as sm
from pipeline.analysis.companions import GEOMETRY_COLUMNS, Companion
from pipeline.analysis.evidence import Comparison
from pipeline.analysis.geometry_check import GeometryCheck
from pipeline.analysis.oracle import OracleCheck
from pipeline.analysis.plotting import FigureResult
from pipeline.analysis.tables import TABLE_FIGURES, TableResult
from pipeline.analysis.verdicts import Verdict

# kept for callers that format one value the report's way
fmt = pr.fmt


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
    setting: pr.RunSetting = field(default_factory=pr.RunSetting)
    geometry: GeometryCheck | None = None


COMPANION_INTRO = (
    "Another model measured by the same four stages on its own chain (dvc.yaml's <stage>@dvc_learned stages); its "
    "full report is linked. 1 − κ̂^diag − δ̂^cross is the (PC) margin per seed (Theorem 15, eq. 19); "
    "mean ± standard error over seeds."
)
ORACLE_COLUMNS = [
    "quantity",
    "closed_form",
    "measured",
    "kind",
    "n",
    "n_decidable",
    "n_over",
    "max_abs_error",
    "max_rel_error",
    "tolerance",
    "status",
    "diagnostic",
]
COMPARISON_COLUMNS = ["quantity", "paper", "ours", "difference", "kind", "tolerance", "status", "note"]
VERDICT_COLUMNS = ["key", "status", "claim", "rule"]
COMPANION_VERDICT_COLUMNS = ["key", "status", "claim", "evidence"]
PART_COLUMNS = ["key", "part", "outcome", "test", "n", "effect", "correction", "why"]
GEOMETRY_CHECK_COLUMNS = ["quantity", "paper", "ours", "reproduced"]


# ------------------------------------------------------------------------------------------ Jinja2
def _mdcell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _resource(name: str) -> str:
    return resources.files("pipeline.analysis").joinpath("templates", name).read_text(encoding="utf-8")


@lru_cache(maxsize=2)
def _env(markdown: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.analysis", "templates"),
        autoescape=not markdown,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["mdcell"] = _mdcell
    return env


def css() -> str:
    return _resource("report.css")


# --------------------------------------------------------------------------------------- view data
def _cmp_rows(rows: list[Comparison]) -> list[dict]:
    return [c.as_row() for c in rows]


def _figure(f: FigureResult, path: str = "") -> dict:
    return {
        "name": f.name,
        "title": f.title,
        "caption": f.caption,
        "b64": base64.b64encode(f.png).decode("ascii"),
        "pixels": f.name == "samples",
        "path": path,
    }


def _is_nested(v) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and len(json.dumps(v, default=str)) > 200)


def _run_sources(c: ReportContent) -> list[tuple[str, dict | None]]:
    return [("analysis", c.run_info)] + list(c.metas.items())


def _run_info_rows(c: ReportContent) -> list[dict]:
    """Scalar entries of each stage's record (run key, digests, record hash; how each run executed is in
    run.json beside its meta.json, outside the report, so the report's bytes depend on its inputs only)."""
    rows = []
    for stage, meta in _run_sources(c):
        if not meta:
            rows.append({"stage": stage, "key": "(no meta.json)", "value": ""})
            continue
        for k in sorted(meta):
            v = meta[k]
            if _is_nested(v):
                continue  # shown as a collapsible JSON block
            rows.append(
                {
                    "stage": stage,
                    "key": k,
                    "value": json.dumps(v, default=str) if isinstance(v, list) else fmt(v),
                }
            )
    return rows


def _run_info_blocks(c: ReportContent) -> list[tuple[str, str]]:
    """(label, pretty JSON) for every nested record entry: configs, input and output hashes, upstream records."""
    out = []
    for stage, meta in _run_sources(c):
        for k in sorted(meta or {}):
            if _is_nested(meta[k]):
                out.append((f"{stage}: {k}", json.dumps(meta[k], indent=2, sort_keys=True, default=str)))
    return out


def _reference_reason(c: ReportContent, t: TableResult) -> str:
    if not pr.is_reference(c.setting, t):
        return ""
    paper_model = pr.paper_model_of(t) or "the paper's model"
    if c.setting.is_oracle:
        return f"the paper measured {paper_model}; this run is the Gaussian oracle, tested by its closed form"
    return f"the paper measured {paper_model}; this run is {c.setting.model_name} on {c.setting.data}"


def _table_view(c: ReportContent, key: str, t: TableResult, fig_by_name: dict, path_of: dict) -> dict:
    reason = _reference_reason(c, t)
    notes = [pr.symbols(n) for n in list(t.notes) + (list(t.paper.notes) if t.paper else [])]
    return {
        "key": key,
        "title": pr.symbols(t.title),
        "paper": f"{t.paper.citation} — {t.paper.setting}" if t.paper is not None else "",
        "reads": pr.symbols(t.reads),
        "notes": notes,
        # long sentences of the summary are in the notes already
        "summary": "; ".join(
            f"{pr.header(k)} = {_summary_value(v)}"
            for k, v in t.summary_items().items()
            if not (isinstance(v, str) and len(v) > 60)
        ),
        "evidence": t.evidence.text() if t.comparison else "",
        "comparison": pr.table_view(COMPARISON_COLUMNS, _cmp_rows(t.comparison), "status", bool(reason))
        if t.comparison
        else None,
        "reference": reason,
        "ours": pr.table_view(t.columns, t.rows),
        "extra": [
            (name, pr.table_view(list(rows[0].keys()), rows)) for name, rows in t.extra.items() if rows
        ],
        "figures": [
            _figure(fig_by_name[n], path_of.get(n, ""))
            for n in TABLE_FIGURES.get(key, [])
            if n in fig_by_name
        ],
    }


def _summary_value(v) -> str:
    """A summary field as text: nested results (a fit, per-regime counts) as name = value pairs."""
    if dataclasses.is_dataclass(v):
        return "(" + ", ".join(f"{f.name} {fmt(getattr(v, f.name))}" for f in dataclasses.fields(v)) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
    return fmt(v)


table_status = sm.table_status
summary_block = sm.summary_block


def _companion_view(comp: Companion) -> dict:
    if not comp.found:
        return {"found": False, "reason": comp.reason}
    verdicts = [dict(v) for v in comp.verdicts]
    for v in verdicts:
        if comp.setting is not None:
            v["claim"] = pr.claim_for(str(v.get("key")), comp.setting)
        v["claim"] = pr.symbols(str(v.get("claim", "")))
        v["evidence"] = pr.symbols(str(v.get("evidence", "")))
    return {
        "found": True,
        "label": comp.label,
        "title": comp.setting.title if comp.setting else comp.label,
        "report_link": comp.report_link,
        "model": comp.model,
        "setting_text": comp.setting_text,
        "verdicts": pr.table_view(COMPANION_VERDICT_COLUMNS, verdicts, "status"),
        "geometry": pr.table_view(GEOMETRY_COLUMNS, comp.geometry) if comp.geometry else None,
        "samples": base64.b64encode(comp.samples_png).decode("ascii") if comp.samples_png else "",
        "samples_note": comp.samples_note,
    }


def _subtitle(c: ReportContent) -> str:
    s = c.setting
    parts = [f"Reproduction of {pv.PAPER}"]
    model = s.model_path or s.model_name or c.model_kind
    parts.append(f"model {model}" + (" (exact ε* of the data's Gaussian fit)" if s.is_oracle else ""))
    if s.patch:
        parts.append(
            f"data {s.data}, {s.patch}×{s.patch} patches"
            + (f" (M = {s.num_patches})" if s.num_patches else "")
        )
    if s.sampler:
        parts.append(f"{s.sampler}" + (f" ({s.num_steps} steps)" if s.num_steps else ""))
    if s.num_seeds:
        parts.append(f"{s.num_seeds} seeds")
    return "; ".join(parts) + ". All t are the paper's 1-based timesteps."


def _claims_view(c: ReportContent) -> tuple[list[dict], list[dict]]:
    """(one row per prediction, one row per tested part with its test, n, effect and correction)."""
    claims, parts = [], []
    for v in c.verdicts:
        claims.append(
            {
                "key": v.key,
                "status": v.status,
                "claim": pr.symbols(pr.claim_for(v.key, c.setting)),
                "rule": pr.symbols(v.rule) if v.parts else pr.symbols(v.evidence),
            }
        )
        for p in v.parts:
            parts.append(
                {
                    "key": v.key,
                    "part": p.name,
                    "outcome": p.outcome,
                    "test": pr.symbols(p.test),
                    "n": p.n,
                    "effect": pr.symbols(p.effect),
                    "correction": p.correction,
                    "why": pr.symbols(p.why),
                }
            )
    return claims, parts


def _oracle_view(c: ReportContent) -> dict | None:
    if c.oracle is None:
        return None
    return {
        "all_agree": c.oracle.all_agree,
        "statement": pr.symbols(c.oracle.statement),
        "findings": [pr.symbols(f) for f in c.oracle.findings()],
        "view": pr.table_view(ORACLE_COLUMNS, [r.as_row() for r in c.oracle.rows], "status"),
    }


def _context(c: ReportContent, figure_paths: dict[str, str] | None = None) -> dict:
    paths = figure_paths or {}
    fig_by_name = {f.name: f for f in c.figures}
    na, missing, _ = sm.split_missing(c)
    tables = [_table_view(c, k, t, fig_by_name, paths) for k, t in c.tables.items()]
    used = {f["name"] for t in tables for f in t["figures"]}
    claims, parts = _claims_view(c)
    any_reference = any(t["reference"] for t in tables)
    nav = (
        [("summary", "Summary")]
        + ([("oracle", "Oracle check")] if c.oracle is not None else [])
        + [("claims", "P1–P5 evidence")]
        + ([("companions", "Learned model")] if c.companions else [])
        + [("tables", "Tables")]
        + ([("sweep", "Sweep")] if c.sweep else [])
        + [("run", "Run info")]
    )
    return {
        "title": c.title,
        "subtitle": _subtitle(c),
        "css": css(),
        "script": _resource("check.js"),
        "summary": summary_block(c),
        "reference_note": (
            "Reference only: this run is not the model the paper measured, so paper-vs-run differences "
            "describe the two models, not a failed reproduction; those comparisons are collapsed below."
            if any_reference
            else ""
        ),
        "nav": nav,
        "oracle": _oracle_view(c),
        "oracle_note": (
            "This run uses the Gaussian oracle: P1–P2 are checked against their closed-form signature "
            "(S = 0 exactly); P3–P5 are claims about learned models, tested on the companion below."
            if c.setting.is_oracle or c.model_kind == "gaussian_oracle"
            else ""
        ),
        "claims": pr.table_view(VERDICT_COLUMNS, claims, "status"),
        "parts": pr.table_view(PART_COLUMNS, parts, "outcome"),
        "scope": sm.scope(c.setting, [comp.label for comp in c.companions if comp.found]),
        "geometry": None
        if c.geometry is None
        else {
            "text": c.geometry.text,
            "line": pr.symbols(sm.geometry_line(c.geometry)),
            "note": pr.symbols(c.geometry.note),
            "view": pr.table_view(GEOMETRY_CHECK_COLUMNS, c.geometry.rows, verbatim=("paper", "ours")),
        },
        "legend": sm.legend(),
        "short_legend": sm.short_legend(),
        "companion_intro": COMPANION_INTRO,
        "companions": [_companion_view(x) for x in c.companions],
        "not_applicable": na,
        "missing": missing,
        "tables": tables,
        "extra_tables": [(name, pr.table_view(cols, rows)) for name, (cols, rows) in c.extra_tables.items()],
        "sweep": None
        if not c.sweep
        else {"intro": c.sweep[2], "view": pr.table_view(c.sweep[0], c.sweep[1])},
        "more_figures": [_figure(f) for f in c.figures if f.name not in used],
        "figures": [_figure(f, paths.get(f.name, "")) for f in c.figures],
        "run_info": pr.table_view(["stage", "key", "value"], _run_info_rows(c)),
        "run_blocks": _run_info_blocks(c),
    }


def render_html(content: ReportContent) -> str:
    return _env(False).get_template("report.html.j2").render(_context(content))


def render_markdown(content: ReportContent, figure_paths: dict[str, str]) -> str:
    return _env(True).get_template("report.md.j2").render(_context(content, figure_paths))


def render_table_page(title: str, intro: str, columns: list[str], rows: list[dict]) -> str:
    """A one-table HTML page (the sweep comparison) in the report's style."""
    return (
        _env(False)
        .get_template("table_page.html.j2")
        .render(title=title, intro=intro, css=css(), view=pr.table_view(columns, rows))
    )


def markdown_table(columns: list[str], rows: list[dict]) -> str:
    """A Markdown table with the report's headers and number formatting."""
    view = pr.table_view(columns, rows)
    out = ["| " + " | ".join(_mdcell(h) for _, h, _ in view.columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_mdcell(c.text) for c in r) + " |" for r in view.rows]
    return "\n".join(out) + "\n"
