"""Headline metrics and plot rows for DVC (pipeline/analysis/headline.py) on a hand-made global table."""

from __future__ import annotations

import math

import numpy as np

from pipeline.analysis.headline import by_t_rows, headline_metrics


def _table():
    # two seeds at t = 980, 500, 20; 500 is not a t that Tables 4-5 print
    t = np.array([980, 500, 20, 980, 500, 20], dtype=float)
    return {
        "seed": np.array([0, 0, 0, 1, 1, 1], dtype=float),
        "t": t,
        "kappa_pi": np.array([1.0, 1.1, 1.3, 1.2, 1.3, 1.5]),
        "kappa_diag": np.array([1.0, 1.0, 1.2, 1.0, 1.0, 1.2]),
        "delta_cross": np.array([0.0, 0.3, 0.1, 0.2, np.nan, 0.3]),
    }


def test_rows_are_seed_means_per_t_in_chain_order():
    rows = by_t_rows(_table())
    assert [r["t"] for r in rows] == [980, 500, 20]
    assert math.isclose(rows[0]["kappa"], 1.1) and math.isclose(rows[2]["kappa"], 1.4)
    assert math.isclose(rows[1]["delta_cross"], 0.3)  # the NaN seed is left out, not averaged as 0
    assert math.isclose(rows[2]["delta_cross"], 0.2)
    assert [r["num_seeds"] for r in rows] == [2, 2, 2]


def test_headline_at_the_papers_t_and_verdict_counts():
    rows = by_t_rows(_table())
    m = headline_metrics(rows, ["supported", "partly supported", "supported", "not testable"])
    assert set(m["kappa"]) == {"t980", "t20", "finest", "finest_t", "max"}  # no t500: not a Table 4 t
    assert math.isclose(m["kappa"]["t20"], 1.4) and m["kappa"]["finest_t"] == 20
    assert math.isclose(m["kappa"]["max"], 1.4)
    assert math.isclose(m["delta_cross"]["t980"], 0.1) and math.isclose(m["delta_cross"]["t20"], 0.2)
    assert math.isclose(m["delta_cross"]["max"], 0.3) and m["delta_cross"]["argmax_t"] == 500
    assert m["claims"] == {"not_testable": 1, "partly_supported": 1, "supported": 2}


def test_a_coupling_that_is_zero_throughout_has_no_peak():
    table = {**_table(), "delta_cross": np.zeros(6)}
    m = headline_metrics(by_t_rows(table), [])
    assert m["delta_cross"]["max"] == 0.0 and "argmax_t" not in m["delta_cross"]


def test_no_jacobian_table_gives_only_the_claims():
    assert by_t_rows(None) == []
    assert headline_metrics([], []) == {"claims": {}}
