"""The report: one self-contained HTML page (inline CSS, base64 images) and the same content as Markdown,
rendered from Jinja2 templates (pipeline/analysis/templates/, HTML autoescaped). Verdicts come first: a
summary block with each claim and table beside the paper and every run, then the detail, then run info."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import jinja2

from pipeline.analysis import paper_values as pv
from pipeline.analysis import presentation as pr
from pipeline.analysis.companions import GEOMETRY_COLUMNS, Companion
from pipeline.analysis.figures import FigureResult
from pipeline.analysis.oracle import OracleCheck
from pipeline.analysis.tables import ComparisonRow, TableResult
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


COMPANION_INTRO = (
    "Another model measured by the same four stages on its own chain (dvc.yaml's <stage>@dvc_learned stages); its "
    "full report is linked. 1 − κ̂^diag − δ̂^cross is the (PC) margin per seed (Theorem 15, eq. 19); "
    "mean ± standard error over seeds."
)
ORACLE_COLUMNS = ["quantity", "closed_form", "measured", "max_abs_error", "tolerance", "status", "diagnostic"]
COMPARISON_COLUMNS = ["quantity", "paper", "ours", "difference", "tolerance", "status", "note"]
VERDICT_COLUMNS = ["key", "status", "claim", "evidence"]
TABLE_FIGURES = {
    "table_4": ["kappa_t"],
    "table_5": ["block_decomposition"],
    "table_3": ["suppression_heatmap", "rho_vs_t"],
    "table_8": ["pc_slack_heatmap"],
    "table_10": ["proxy_loglog"],
    "release_times": ["release_times"],
}
# what each table row of the summary block is called, with the paper's symbols
TABLE_ITEMS = {
    "table_3": "S_k,t vs λ_k (Spearman ρ per t)",
    "table_4": "global κ̂_t per step",
    "table_5": "κ̂^diag and δ̂^cross",
    "table_6": "attention entropy vs δ̂^cross",
    "table_7": "coupling by patch distance",
    "table_8": "(PC) violation by regime",
    "table_9": "ρ(λ_k, κ̂^diag) sign flip",
    "release_times": "release time vs λ_k",
    "table_10": "score-deviation proxy slope",
    "table_11": "suppression-corrected Lyapunov Λ",
}


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


def _cannot_produce(c: ReportContent) -> dict[str, str]:
    return pr.CANNOT_PRODUCE.get(c.model_kind, {})


def _split_missing(c: ReportContent) -> tuple[list[str], list[str], dict[str, str]]:
    """(not applicable lines, missing lines, table key -> 'not applicable: why') for this run kind."""
    na: list[str] = []
    missing: list[str] = []
    na_tables: dict[str, str] = {}
    cannot = _cannot_produce(c)
    for m in c.missing:
        hit = next((f for f in cannot if f in m), None)
        if hit is None:
            missing.append(m)
        elif cannot[hit] not in na:
            na.append(cannot[hit])
    for key, why in c.skipped.items():
        hit = next((f for f in cannot if f in why), None)
        if hit is not None:
            na_tables[key] = f"not applicable: {cannot[hit]}"
        else:
            missing.append(f"{key} not built: {why}")
    return na, missing, na_tables


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
        "summary": "; ".join(f"{pr.header(k)} = {fmt(v)}" for k, v in t.summary.items()),
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


def table_status(c_tables: dict[str, TableResult], setting: pr.RunSetting) -> dict[str, dict]:
    """Per table: title, comparison statuses and whether they are reference only (summary.json keeps it,
    so a report that embeds this run as a companion can count them)."""
    return {
        key: {
            "title": t.title,
            "statuses": [r.status for r in t.comparison],
            "reference": pr.is_reference(setting, t),
        }
        for key, t in c_tables.items()
    }


def _paper_ref(key: str) -> str:
    """'§7.3, Table 3' for table_3 (also when this run did not build it); release times: eq. (36)."""
    if key == "release_times":
        cite = pv.RELEASE_SPREAD["citation"]
    elif key.startswith("table_") and key[6:].isdigit() and int(key[6:]) in pv.PAPER_TABLES:
        cite = pv.PAPER_TABLES[int(key[6:])].citation
    else:
        return ""
    return cite.replace(f"{pv.PAPER}, ", "")


def _short(status: str) -> str:
    return status[len("oracle: ") :] if status.startswith("oracle: ") else status


def summary_block(c: ReportContent) -> pr.SummaryBlock:
    """The verdicts-first block: P1–P5 and each reproduced table, the paper, this run, every companion."""
    _, _, na_tables = _split_missing(c)
    runs = [
        {
            "label": f"{c.setting.label} (this run)",
            "verdicts": {v.key: v.status for v in c.verdicts},
            "tables": table_status(c.tables, c.setting),
            "skipped": {**{k: f"not built: {v}" for k, v in c.skipped.items()}, **na_tables},
        }
    ]
    for comp in c.companions:
        if comp.found:
            runs.append(
                {
                    "label": f"{comp.setting.label if comp.setting else comp.label} (companion)",
                    "verdicts": {v.get("key"): v.get("status") for v in comp.verdicts},
                    "tables": comp.table_status,
                    "skipped": {k: f"not built: {v}" for k, v in comp.skipped.items()},
                }
            )
    rows: list[pr.SummaryRow] = []
    if c.oracle is not None:
        judged = [r.status for r in c.oracle.rows if r.status != "no data"]
        agree, slow = judged.count("agrees"), judged.count("not converged")
        wrong = len(judged) - agree - slow
        text = f"{agree} of {len(judged)} quantities agree" + (f"; {slow} not converged" if slow else "")
        if wrong:
            verdict = pr.Cell(f"NOT reproduced: {wrong} differ", "oracle-bad")
        elif slow:
            # an iterative estimate on the right side of the closed form, short of tolerance: more iterations
            verdict = pr.Cell(f"reproduced; {slow} estimate not converged", "partly-supported")
        else:
            verdict = pr.Cell("reproduced", "oracle-ok")
        rows.append(
            pr.SummaryRow(
                "oracle",
                "closed form",
                "Thm. 17: ‖[JΦ_t]_kk‖ = f_t(λ_k)",
                [pr.Cell(text, verdict.cls)] + [pr.Cell("—") for _ in runs[1:]],
                verdict,
                "oracle",
            )
        )
    for key in ("P1", "P2", "P3", "P4", "P5"):
        cells, pairs = [], []
        for run in runs:
            s = run["verdicts"].get(key)
            if s is None:
                cells.append(pr.Cell("—", "no-data"))
                continue
            cells.append(pr.Cell(_short(s), pr.status_class(s)))
            pairs.append((run["label"].split(" (")[0], s))
        rows.append(
            pr.SummaryRow(
                key, pr.SHORT_CLAIMS[key], pr.PAPER_SAYS[key], cells, pr.claim_verdict(pairs), "claims"
            )
        )
    keys = list(dict.fromkeys([k for run in runs for k in list(run["tables"]) + list(run["skipped"])]))
    order = list(TABLE_ITEMS)
    keys.sort(key=lambda k: order.index(k) if k in order else len(order))
    for key in keys:
        t = c.tables.get(key)
        paper = _paper_ref(key)
        cells, decisive = [], None
        for run in runs:
            st = run["tables"].get(key)
            if st is None:
                why = run["skipped"].get(key, "not built")
                cells.append(pr.Cell(why.split(":")[0], pr.status_class(why), why))
                continue
            text, cls = pr.comparison_counts(list(st["statuses"]), bool(st["reference"]))
            cells.append(pr.Cell(text, cls))
            if decisive is None and not st["reference"] and st["statuses"]:
                decisive = pr.Cell(text, cls)
        verdict = decisive or pr.Cell(
            "reference only", "reference", "no run of the paper's model: not a test"
        )
        label = key.replace("_", " ").replace("table", "Table").replace("release times", "Release times")
        rows.append(
            pr.SummaryRow(key, TABLE_ITEMS.get(key, t.title if t else key), paper, cells, verdict, key, label)
        )
    counts = []
    for run in runs:
        statuses = [_short(s) for s in run["verdicts"].values() if s]
        counts.append(f"{run['label']}: P1–P5 {pr.count_phrase(statuses) or 'no verdicts'}.")
    built = [k for k in keys if k in runs[0]["tables"]]
    counts.append(
        f"This run built {len(built)} of {len(keys)} tables"
        + (f"; {len(na_tables)} not applicable to this run kind" if na_tables else "")
        + f"; {len(c.figures)} figures."
    )
    return pr.SummaryBlock([r["label"] for r in runs], rows, counts)


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
        "verdicts": pr.table_view(VERDICT_COLUMNS, verdicts, "status"),
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


def _context(c: ReportContent, figure_paths: dict[str, str] | None = None) -> dict:
    paths = figure_paths or {}
    fig_by_name = {f.name: f for f in c.figures}
    na, missing, _ = _split_missing(c)
    tables = [_table_view(c, k, t, fig_by_name, paths) for k, t in c.tables.items()]
    used = {f["name"] for t in tables for f in t["figures"]}
    claims = [
        {
            "key": v.key,
            "status": v.status,
            "claim": pr.symbols(pr.claim_for(v.key, c.setting)),
            "evidence": pr.symbols(v.evidence),
        }
        for v in c.verdicts
    ]
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
        "oracle": None
        if c.oracle is None
        else {
            "all_agree": c.oracle.all_agree,
            "statement": pr.symbols(c.oracle.statement),
            "view": pr.table_view(ORACLE_COLUMNS, [r.__dict__ for r in c.oracle.rows], "status"),
        },
        "oracle_note": (
            "This run uses the Gaussian oracle: P1–P2 are checked against their closed-form signature "
            "(S = 0 exactly); P3–P5 are claims about learned models, tested on the companion below."
            if c.setting.is_oracle or c.model_kind == "gaussian_oracle"
            else ""
        ),
        "claims": pr.table_view(VERDICT_COLUMNS, claims, "status"),
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
