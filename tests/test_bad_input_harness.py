"""The bad-input harness (benchmarks/bad_inputs): its catalogue covers every category, its classifier
tells the outcomes apart on known stderr and file changes, and (slow) the whole harness on the current
code: nothing silently wrong, no data lost, no hang, and every expected failure exactly one line."""

from __future__ import annotations

import io
import os

import pytest

from benchmarks.bad_inputs import spec
from benchmarks.bad_inputs.catalogue import all_cases
from benchmarks.bad_inputs.runner import lost_files, message_kind
from benchmarks.bad_inputs.spec import Case


def test_the_catalogue_has_120_cases_in_every_category():
    cases = all_cases()
    assert len(cases) >= 120
    assert {c.category for c in cases} == set(spec.CATEGORIES)
    assert {c.owner for c in cases} <= set(spec.OWNERS)
    # a silently-wrong result can only be seen with an oracle: every case that may exit 0 has one
    assert all(c.wrong or c.lost for c in cases if c.expect != spec.LINE and c.stage), [
        c.id for c in cases if c.expect != spec.LINE and c.stage and c.wrong is None and c.lost is None
    ]


CASE = Case("x", "values", ("jacobian", "measure.frob_probes=0"), names=("measure.frob_probes",))
TRACEBACK = """Traceback (most recent call last):
  File "x.py", line 1, in <module>
    raise ValueError("measure.frob_probes must be at least 1")
ValueError: measure.frob_probes must be at least 1
"""


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("error: measure.frob_probes=0 — set it to at least 1\n", spec.ONE_LINE),
        (TRACEBACK, spec.AFTER_LINES),
        ("[W] a library warning\nerror: measure.frob_probes=0 — set it to at least 1\n", spec.AFTER_LINES),
        (
            "error: measure.frob_probes=0 must be positive\n",
            spec.AFTER_LINES,
        ),  # no fix: not the one-line form
        ("Traceback (most recent call last):\nRuntimeError: vmap: chunk_size should be > 0\n", spec.RAW),
        ("error: measure.steps=[7] is not a step of the chain — pick t from ...\n", spec.RAW),  # wrong key
        ("", spec.RAW),
    ],
)
def test_message_classes(stderr, kind):
    assert message_kind(CASE, stderr)[0] == kind


def test_data_loss_is_seen_in_the_hashes():
    case = Case("y", "ownership", ("covariance", "force=true"), names=("notes.txt",))
    before = {
        "outputs/covariance/a/notes.txt": "n",
        "outputs/covariance/a/patches.csv": "p",
        "outputs/trajectories/b/seed-0.npz": "s",
        "mlflow.db": "m",
    }
    foreign = {"outputs/covariance/a/notes.txt"}
    # the run's own stage may rewrite its outputs; the tracking store may change
    same = {**before, "outputs/covariance/a/patches.csv": "p2", "mlflow.db": "m2"}
    assert lost_files(case, before, same, foreign) is None
    # the user's file deleted
    gone = {k: v for k, v in same.items() if k != "outputs/covariance/a/notes.txt"}
    assert "deleted" in lost_files(case, before, gone, foreign)
    # moved aside with its bytes intact is not lost
    moved = {**gone, "outputs/covariance/.kept/notes.txt": "n"}
    assert lost_files(case, before, moved, foreign) is None
    # another stage's output touched
    touched = {**same, "outputs/trajectories/b/seed-0.npz": "s2"}
    assert "another stage" in lost_files(case, before, touched, foreign)


@pytest.mark.slow
def test_the_harness_finds_no_wrong_result_no_loss_no_hang_and_one_line_failures(tmp_path):
    from benchmarks.bad_inputs.tally import line, run_all

    out = io.StringIO()
    report = run_all(all_cases(), jobs=int(os.environ.get("PIFS_HARNESS_JOBS", "2")), work=tmp_path, out=out)
    print(out.getvalue())  # the whole report, for the CI log
    counts = report.counts()
    failing = [o for o in report.outcomes if not o.passed]
    by_owner = {owner: [line(o) for o in failing if o.case.owner == owner] for owner in spec.OWNERS}
    text = "\n".join(f"{owner}:\n  " + "\n  ".join(lines) for owner, lines in by_owner.items() if lines)
    assert counts[spec.SETUP] == 0, text
    assert (counts[spec.WRONG], counts[spec.LOST], counts[spec.HANG]) == (0, 0, 0), text
    assert not report.debris(), report.debris()
    assert not failing, text
