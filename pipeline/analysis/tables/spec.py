"""The shape every reproduced table has: a spec (how it is built, what it is called, what it needs), its figures
and a result (rows, a typed summary, comparison rows as data)."""

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
class FigureSpec:
    """A figure of one table (``table``), drawn from the built tables; None when its inputs are absent."""

    name: str
    draw: Callable
    table: str

    def __call__(self, tables: dict[str, TableResult], ctx: AnalysisContext, inp):
        return self.draw(tables, ctx, inp)

    @staticmethod
    def of_table(key: str, name: str) -> Callable[[Callable], FigureSpec]:
        """Figure ``name`` drawn from table ``key`` alone: ``draw(table, ctx, inp)``; None when it was not built."""

        def wrap(draw: Callable) -> FigureSpec:
            @functools.wraps(draw)
            def figure(tables: dict[str, TableResult], ctx: AnalysisContext, inp):
                table = tables.get(key)
                return None if table is None else draw(table, ctx, inp)

            return FigureSpec(name, figure, key)

        return wrap

    @staticmethod
    def of_tables(key: str, name: str) -> Callable[[Callable], FigureSpec]:
        """Figure ``name`` of table ``key`` that reads several built tables: ``draw(tables, ctx, inp)``."""
        return lambda draw: FigureSpec(name, draw, key)


@dataclass(frozen=True)
class TableSpec:
    """A reproduced table: its builder (whose name is the table's key), what the summary block calls it (with
    the paper's symbols) and the input it is built from (the report says this when it is missing)."""

    build: Callable
    item: str
    needs: str

    @property
    def key(self) -> str:
        return self.build.__name__

    @property
    def paper(self) -> pv.PaperTable | None:
        """The printed table of the same number (none for the release-time table)."""
        return pv.paper_table(self.key)

    @property
    def label(self) -> str:
        return self.key.replace("table_", "Table ").replace("release_times", "Release times")


def paper_scalar(
    paper: pv.PaperTable,
    key: str,
    ours: object,
    tolerance: Tolerance,
    derived_from: str = "",
    *,
    quantity: str = "",
    note: str = "",
) -> Comparison:
    """One scalar the paper prints beside its table (``paper.scalars[key]``) against ours: re-derived when it
    is computed from rows already compared (``derived_from``), else independent. ``quantity`` defaults to
    the key."""
    kind = Kind.REDERIVED if derived_from else Kind.INDEPENDENT
    quantity = quantity or key.replace("_", " ")
    table = f"Table {paper.number}"
    return Comparison(table, quantity, paper.scalars[key], ours, kind, tolerance, derived_from, note)


def paper_rows(
    paper: pv.PaperTable,
    column: str,
    rows: list[dict],
    ours: str | None = None,
    *,
    tolerance: Callable[[dict], Tolerance],
    label: str | None = None,
    kind: Kind = Kind.INDEPENDENT,
    derived_from: str = "",
    note: str = "",
) -> list[Comparison]:
    """One comparison per paper row at its t: our row nearest that t (within T_MATCH_TOL), column ``ours``
    (by default the paper's ``column``)."""
    ours = ours or column
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
