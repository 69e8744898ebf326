"""The report's first screen: what this run is and is not (and the command that runs the paper's own
models), the verdicts-first block — the schedule geometry against the paper's printed values, the oracle's
count of independent checks, P1–P5 per run, each table's independent evidence — and a legend of the symbols."""

from __future__ import annotations

from pipeline.analysis import paper_values as pv
from pipeline.analysis import presentation as pr
from pipeline.analysis.definitions import QUANTITIES
from pipeline.analysis.evidence import Kind
from pipeline.analysis.geometry_check import GeometryCheck
from pipeline.analysis.tables import SPECS, TABLE_ITEMS, TableResult

PAPER_COMMANDS = (
    "python -m stages.<stage> experiment=cifar10_paper",
    "dvc exp run -S experiment=cifar10_paper",
)


def scope(setting: pr.RunSetting, companions: list[str]) -> dict[str, object]:
    """What this run is and is not, in two sentences and the commands that run the paper's models."""
    if setting.is_oracle:
        this = f"This run: {setting.title}, the exact ε* of the data's Gaussian fit: every quantity has a closed form"
    else:
        this = f"This run: {setting.title} ({setting.model_path or setting.model_name})"
    if companions:
        this += "; beside it " + ", ".join(companions)
    if setting.is_paper_model:
        not_this = "This is one of the paper's models: its comparisons with the paper's numbers are tests."
    else:
        not_this = (
            "Not run here: the paper's models (google/ddpm-cifar10-32, §7.1–7.6; google/ddpm-celebahq-256, §7.7) "
            "need the Hugging Face hub and their datasets, so every paper number below is reference only."
        )
    return {
        "this": this + ".",
        "not_this": not_this,
        "commands": [] if setting.is_paper_model else list(PAPER_COMMANDS),
    }


def legend() -> list[tuple[str, str]]:
    return [(q.symbol, f"{q.name}: {q.definition}") for q in QUANTITIES]


def short_legend() -> str:
    """The symbols by name in one line (the definitions are one click below and in the docs)."""
    return " · ".join(f"{q.symbol} {q.name}" for q in QUANTITIES if q.symbol != "t")


def geometry_line(g: GeometryCheck) -> str:
    """The schedule-geometry verdict in one line with the paper's printed values beside ours."""
    pick = [r for r in g.rows if "Linear" in r["quantity"] and "mean" in r["quantity"]] + [
        r for r in g.rows if r["quantity"].startswith("§7.4")
    ]
    shown = "; ".join(f"{r['quantity']} {r['paper']} (paper) vs {r['ours']}" for r in pick)
    return f"Schedule geometry (no model): {g.text}, e.g. {shown}."


def table_status(c_tables: dict[str, TableResult], setting: pr.RunSetting) -> dict[str, dict]:
    """Per table: title, comparison statuses and kinds, and whether they are reference only (summary.json keeps
    it, so a report that embeds this run as a companion can count them)."""
    return {
        key: {
            "title": t.title,
            "statuses": [r.status for r in t.comparison],
            "kinds": [r.kind.value for r in t.comparison],
            "reference": pr.is_reference(setting, t),
        }
        for key, t in c_tables.items()
    }


def paper_ref(key: str) -> str:
    """'§7.3, Table 3' for table_3 (also when this run did not build it); release times: eq. (36)."""
    if key == "release_times":
        cite = pv.RELEASE_SPREAD["citation"]
    elif (paper := pv.paper_table(key)) is not None:
        cite = paper.citation
    else:
        return ""
    return cite.replace(f"{pv.PAPER}, ", "")


def _short(status: str) -> str:
    return status[len("oracle: ") :] if status.startswith("oracle: ") else status


def _oracle_row(oracle, n_runs: int) -> pr.SummaryRow:
    c = oracle.count
    bad = len(oracle.broken)
    slow = c.not_converged + c.undecidable
    if bad:
        verdict = pr.Cell(f"NOT reproduced: {bad} differ", "oracle-bad")
    elif c.independent and slow:
        verdict = pr.Cell(f"reproduced; {slow} estimate(s) short of tolerance", "partly-supported")
    elif c.independent:
        verdict = pr.Cell("reproduced", "oracle-ok")
    else:
        verdict = pr.Cell("no independent check", "no-data")
    findings = "; ".join(r.quantity + ": " + r.status for r in c.paper_protocol)
    short = c.text().split("; not counted")[0]  # the rest (kinds, paper-protocol findings) in the tooltip
    return pr.SummaryRow(
        "oracle",
        "closed form",
        "Thm. 17: ‖[JΦ_t]_kk‖ = f_t(λ_k)",
        [pr.Cell(short, verdict.cls, c.text() + (f"; paper protocol: {findings}" if findings else ""))]
        + [pr.Cell("—") for _ in range(n_runs - 1)],
        verdict,
        "oracle",
    )


def _geometry_row(g: GeometryCheck, n_runs: int) -> pr.SummaryRow:
    ok = g.n_reproduced == g.n
    cell = pr.Cell(g.text, "agrees" if ok else "partly-supported", g.note)
    return pr.SummaryRow(
        "geometry",
        "schedule geometry, no model (L*_t, λ**)",
        "§6.1 Table 1, §7.4",
        [cell] + [pr.Cell("same (model-free)") for _ in range(n_runs - 1)],
        pr.Cell("reproduced" if ok else "partly reproduced", cell.cls),
        "geometry",
        "Geometry",
    )


def _claim_rows(runs: list[dict]) -> list[pr.SummaryRow]:
    rows = []
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
    return rows


def _table_rows(runs: list[dict], tables: dict) -> list[pr.SummaryRow]:
    keys = list(dict.fromkeys([k for run in runs for k in list(run["tables"]) + list(run["skipped"])]))
    order = list(TABLE_ITEMS)
    keys.sort(key=lambda k: order.index(k) if k in order else len(order))
    rows = []
    for key in keys:
        t = tables.get(key)
        cells, decisive = [], None
        for run in runs:
            st = run["tables"].get(key)
            if st is None:
                why = run["skipped"].get(key, "not built")
                cells.append(pr.Cell(why.split(":")[0], pr.status_class(why), why))
                continue
            kinds = st.get("kinds") or [Kind.INDEPENDENT.value] * len(st["statuses"])
            text, cls = pr.comparison_counts(list(st["statuses"]), bool(st["reference"]), kinds)
            cells.append(pr.Cell(text, cls))
            if decisive is None and not st["reference"] and st["statuses"]:
                decisive = pr.Cell(text, cls)
        verdict = decisive or pr.Cell(
            "reference only", "reference", "no run of the paper's model: not a test"
        )
        label = SPECS[key].label if key in SPECS else key
        rows.append(
            pr.SummaryRow(
                key, TABLE_ITEMS.get(key, t.title if t else key), paper_ref(key), cells, verdict, key, label
            )
        )
    return rows


def _cannot_produce(c) -> dict[str, str]:
    return pr.CANNOT_PRODUCE.get(c.model_kind, {})


def split_missing(c) -> tuple[list[str], list[str], dict[str, str]]:
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


def summary_block(c) -> pr.SummaryBlock:
    """The verdicts-first block: geometry, the oracle, P1–P5 and each table — the paper, this run, every companion."""
    _, _, na_tables = split_missing(c)
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
    if c.geometry is not None:
        rows.append(_geometry_row(c.geometry, len(runs)))
    if c.oracle is not None:
        rows.append(_oracle_row(c.oracle, len(runs)))
    rows += _claim_rows(runs) + _table_rows(runs, c.tables)
    counts = []
    for run in runs:
        statuses = [_short(s) for s in run["verdicts"].values() if s]
        counts.append(f"{run['label']}: P1–P5 {pr.count_phrase(statuses) or 'no verdicts'}.")
    built = [r.key for r in rows if r.key in runs[0]["tables"]]
    n_tables = sum(r.key in TABLE_ITEMS or r.key.startswith("table_") for r in rows)
    counts.append(
        f"This run built {len(built)} of {n_tables} tables"
        + (f"; {len(na_tables)} not applicable to this run kind" if na_tables else "")
        + f"; {len(c.figures)} figures. Cells count independent comparisons; the rest are named, never scored."
    )
    return pr.SummaryBlock([r["label"] for r in runs], rows, counts)
