"""pipeline.outputs is the one home of the stage folders' file names and columns: the reference page
documents exactly those, the tables are written with exactly those columns, and meta.json has one reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.outputs import (
    FOLDERS,
    CovarianceFolder,
    JacobianFolder,
    TrajectoriesFolder,
    UnreadableMetaError,
    read_meta,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "outputs-and-columns.md"


def _section(text: str, heading: str) -> str:
    """The text of the markdown section whose heading contains ``heading`` (up to the next heading)."""
    m = re.search(rf"^#+ [^\n]*{re.escape(heading)}[^\n]*\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert m, f"docs/outputs-and-columns.md has no section on {heading}"
    return m.group(1)


@pytest.mark.parametrize("name", JacobianFolder.TABLES)
def test_every_jacobian_column_is_documented_in_its_files_section(name):
    text = DOC.read_text()
    section = _section(text, name) if name in ("global.csv", "patches.csv", "blocks.csv") else text
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))
    missing = [c for c in JacobianFolder.COLUMNS[name] if c not in documented]
    assert not missing, f"{name}: columns missing from docs/outputs-and-columns.md: {missing}"


def test_covariance_columns_and_every_stage_file_are_documented():
    text = DOC.read_text()
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_.<>-]*)`", text))
    assert set(CovarianceFolder.PATCH_COLUMNS) <= documented
    files = [
        CovarianceFolder.PATCH_STATS,
        CovarianceFolder.PATCHES,
        CovarianceFolder.GAUSSIAN_FIT,
        CovarianceFolder.FIT_DIGEST,
        CovarianceFolder.LAMBDA_FIGURE,
        TrajectoriesFolder.SEED_PATTERN,
        TrajectoriesFolder.SAMPLES,
        *JacobianFolder.TABLES,
    ]
    assert [f for f in files if f not in documented] == []
    assert set(FOLDERS) == {"covariance", "trajectories", "jacobian", "analysis"}


def test_a_table_is_written_with_exactly_its_schema(tmp_path):
    out = JacobianFolder(tmp_path)
    row = {c: 1 for c in JacobianFolder.BLOCK_COLUMNS}
    path = out.write_table(out.BLOCKS, [row])
    assert path.read_text().splitlines()[0] == ",".join(JacobianFolder.BLOCK_COLUMNS)
    with pytest.raises(ValueError, match="not_a_column"):
        out.write_table(out.BLOCKS, [{**row, "not_a_column": 2}])


def test_trajectory_files_are_found_by_seed_and_nothing_else(tmp_path):
    folder = TrajectoriesFolder(tmp_path)
    for name in ("seed-10.npz", "seed-2.npz", "seed-x.npz", "seed-3.npz.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [s for s, _ in folder.seed_files()] == [2, 10]
    assert folder.seed_file(7) == tmp_path / "seed-7.npz"
    assert folder.missing_seeds([2, 7, 10]) == [7]


def test_meta_json_has_one_meaning_absent_is_none_broken_is_an_error(tmp_path):
    assert read_meta(tmp_path) is None
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(UnreadableMetaError, match="meta.json is unreadable") as err:
        read_meta(tmp_path)
    assert isinstance(err.value, PipelineError)
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(UnreadableMetaError, match="not a JSON object"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text('{"stage": "jacobian"}')
    assert read_meta(tmp_path) == {"stage": "jacobian"}
