"""The `pifs` command line: subcommands, pass-through to the stages and tools, readable geometry table,
the report path, and each stage's short --help (Hydra's hydra/help config, not the whole config)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.geometry.table import COLUMNS, default_geometry_rows
from stages import cli

ROOT = Path(__file__).resolve().parent.parent


def _py(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_pifs_is_the_console_script_and_lists_every_command(capsys):
    text = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+; the project supports 3.10
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'pifs = "stages.cli:main"' in scripts.splitlines()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in [*cli.STAGES, *cli.OTHER]:
        assert f"    {name}" in out


def test_an_unknown_command_is_refused_with_the_list(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bogus"])
    assert exc.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_a_usage_error_is_one_line_naming_the_help(capsys):
    for argv in (
        ["--nope"],
        ["report", "--zz"],
        ["geometry", "--nope"],
        ["params", "--x"],
        ["sweeps", "--x"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(lines) == 1, (argv, lines)
        assert lines[0].startswith("error: ") and " — see `pifs" in lines[0] and "--help`" in lines[0]


@pytest.mark.parametrize("name", list(cli.OTHER))
def test_every_tool_subcommand_help_exits_0(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0 and err == ""
    assert out.startswith(f"usage: pifs {name}"), out


@pytest.mark.parametrize("name", list(cli.STAGES))
def test_every_stage_subcommand_help_exits_0_without_a_traceback(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith(f"usage: python -m stages.{name}"), (out[:200], err)


@pytest.fixture(scope="module")
def rows():
    return default_geometry_rows()


def test_geometry_prints_an_aligned_table_with_6_significant_digits(capsys, rows):
    assert cli.main(["geometry"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rows) + 2  # header, rule, one line per chain
    header = lines[0]
    end = header.index("λ**") + len("λ**")
    for line, row in zip(lines[2:], rows, strict=True):
        assert line.startswith(str(row["schedule"]))
        assert line[end - 1].isdigit() and line[end] == " "  # numbers end under the end of their header
        cell = line[:end].split()[-1]
        assert cell == f"{row['lambda_starstar']:#.6g}"
        assert float(cell) == pytest.approx(row["lambda_starstar"], rel=5e-6)


def test_geometry_csv_keeps_full_precision(capsys, rows):
    assert cli.main(["geometry", "--csv"]) == 0
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(parsed[0]) == list(COLUMNS)
    assert [float(r["min_lambda_star"]) for r in parsed] == [r["min_lambda_star"] for r in rows]


def test_python_m_pipeline_geometry_prints_the_readable_table_too():
    proc = _py(["-m", "pipeline.geometry"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[:2] == ["schedule", "chain"]
    assert "1.04968" in proc.stdout  # §7.4's λ** = 1.049681 for the 49-step cosine chain, to 6 digits


def test_report_prints_the_path_or_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no report at outputs/analysis/dvc/report.html — ") and err.count("\n") == 1
    report = tmp_path / "outputs" / "analysis" / "dvc" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html></html>")
    opened = []
    monkeypatch.setattr(cli.webbrowser, "open", lambda uri: opened.append(uri) or True)
    assert cli.main(["report", "--open"]) == 0
    assert capsys.readouterr().out.strip() == str(report.resolve())
    assert opened == [report.resolve().as_uri()]


def test_pair_passes_through(tmp_path, capsys):
    head = "seed,step,t,kappa_diag,delta_cross\n"
    for name, cross in (("a", (0.1, 0.3)), ("b", (0.2, 0.4))):
        (tmp_path / name).mkdir()
        body = "".join(f"{s},1,20,1.0,{c}\n" for s, c in enumerate(cross))
        (tmp_path / name / "global.csv").write_text(head + body)
    assert cli.main(["pair", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 20 ")]
    assert row and "+0.1000" in row[0]  # δ̂^cross B − A = 0.3 − 0.2


def test_a_stage_help_is_one_paragraph_and_the_main_keys():
    proc = _py(["-m", "stages.cli", "covariance", "--help", "experiment=smoke"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: python -m stages.covariance [key=value ...]")
    assert "Per-patch covariance of the dataset" in out
    assert "patch.size=4" in out and "sampler.num_steps=10" in out  # values under the overrides
    assert "== Config ==" not in out and "chunk_size" not in out  # not Hydra's default dump
    assert len(out.splitlines()) < 40
    assert _py(["-m", "stages.covariance", "--help", "experiment=smoke"]).stdout == out


def test_stage_overrides_pass_through_unchanged():
    proc = _py(["-m", "stages.cli", "jacobian", "experiment=smoke", "patch.size=2", "--cfg", "job"])
    assert proc.returncode == 0, proc.stderr
    assert "size: 2" in proc.stdout and "num_steps: 10" in proc.stdout


def test_sweeps_lists_the_jobs_of_a_sweep_folder(tmp_path, capsys):
    (tmp_path / "sweep.json").write_text('{"sweep_id": "s1"}')
    for num, seed in ((0, 0), (1, 1)):
        (tmp_path / str(num)).mkdir()
        (tmp_path / str(num) / "pifs_job.json").write_text(
            f'{{"stage": "trajectories", "status": "COMPLETED", "job_num": {num}, "overrides": ["seed={seed}"],'
            f' "run_key": "k{num}"}}'
        )
    assert cli.main(["sweeps", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:3] == ["job_num", "stage", "status"]
    assert [line.split("\t")[-1] for line in lines[1:]] == ["seed=0", "seed=1"]
