"""The shape every reproduced table has: a spec (what it needs, how it is built, its figures, its headline
numbers, the predictions it feeds) and a result (rows, a typed summary, comparison rows as data)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis import paper_values as pv
from pipeline.analysis.context import AnalysisContext, nearest
from pipeline.analysis.evidence import Comparison, EvidenceCount, Kind, Tolerance, count_evidence, score


@dataclass
class TableResult:
    """One reproduced table: rows for table_<N>.csv, a typed summary, notes and comparison rows."""

    key: str
    title: str
    reads: str
    columns: list[str]
    rows: list[dict]
    summary: object = None
    notes: list[str] = field(default_factory=list)
    comparison: list[Comparison] = field(default_factory=list)
    extra: dict[str, list[dict]] = field(default_factory=dict)
    paper: pv.PaperTable | None = None

    @classmethod
    def of_rows(cls, key: str, title: str, reads: str, rows: list[dict], summary: object = None, **kw):
        """A table whose columns are every key of its rows in first-seen order (a row may leave some out)."""
        return cls(key, title, reads, list(dict.fromkeys(c for r in rows for c in r)), rows, summary, **kw)

    def summary_items(self) -> dict[str, object]:
        """The typed summary as name -> value (None and empty fields left out)."""
        if self.summary is None:
            return {}
        out = {}
        for f in dataclasses.fields(self.summary):
            v = getattr(self.summary, f.name)
            if v is None or (isinstance(v, (list, tuple, str)) and not v and not isinstance(v, bool)):
                continue
            out[f.name] = v
        return out

    @property
    def evidence(self) -> EvidenceCount:
        return count_evidence(self.comparison)


@dataclass(frozen=True)
class Headline:
    """A headline number of a table: its sweep-table column and the summary field it reads."""

    column: str
    field: str


@dataclass(frozen=True)
class FigureSpec:
    """A figure drawn from the built tables (None when its inputs are absent)."""

    name: str
    draw: Callable

    @staticmethod
    def of_table(key: str) -> Callable[[Callable], Callable]:
        """A figure drawn from one built table: ``draw(table, ctx, inp)``; None when that table was not built."""

        def wrap(draw: Callable) -> Callable:
            @functools.wraps(draw)
            def figure(tables: dict[str, TableResult], ctx: AnalysisContext, inp):
                table = tables.get(key)
                return None if table is None else draw(table, ctx, inp)

            return figure

        return wrap


@dataclass(frozen=True)
class TableSpec:
    """Everything the analysis knows about one reproduced table, in one place."""

    key: str
    item: str  # what the summary block calls it, with the paper's symbols
    needs: str  # the input it is built from (the report says this when it is missing)
    build: Callable
    figures: tuple[FigureSpec, ...] = ()
    headlines: tuple[Headline, ...] = ()
    feeds: tuple[str, ...] = ()  # the predictions P1-P5 whose verdict reads this table
    paper: pv.PaperTable | None = None

    @property
    def label(self) -> str:
        return self.key.replace("table_", "Table ").replace("release_times", "Release times")


def paper_rows(
    paper: pv.PaperTable,
    column: str,
    rows: list[dict],
    ours: str,
    *,
    tolerance: Callable[[dict], Tolerance],
    label: str | None = None,
    kind: Kind = Kind.INDEPENDENT,
    derived_from: str = "",
    note: str = "",
) -> list[Comparison]:
    """One comparison per paper row at its t: our row nearest that t (within T_MATCH_TOL), column ``ours``."""
    table = f"Table {paper.number}"

    t_arr = np.array([r["t"] for r in rows], dtype=float)
    out = []
    for prow in paper.records():
        i = nearest(t_arr, prow["t"])
        where = f" at t={prow['t']}" + (f" (ours t={rows[i]['t']})" if i is not None else "")
        out.append(
            Comparison(
                table,
                (label or ours) + where,
                prow[column],
                rows[i].get(ours, math.nan) if i is not None else math.nan,
                kind,
                tolerance(prow),
                derived_from,
                note,
            )
        )
    return out


def scored(rows: list[Comparison], ctx: AnalysisContext) -> list[Comparison]:
    """Status and difference of every row (on the oracle: reference only)."""
    return [score(c, ctx.reference_only) for c in rows]
