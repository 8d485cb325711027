"""Secrets stay off disk and out of argv (issue 26, row 6): a storage URL's password, in its
userinfo or a query parameter, is written nowhere in a sweep directory or a trial's run directory,
the recorded command line hides it and `--api-key`, and the workers a sweep starts get it through
the environment only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_experiment
from stancerun.cli.main import main
from stancerun.rundir.redact import STORAGE_URL_ENV, public_url, redact_argv, redact_url, with_password

SECRET = "S3CRETVALUE"
SWEEP = """
[evaluation]
bootstrap_resamples = 100
plots = false
baselines = []

[sweep]
"adapter.r" = [2, 4]
"""
# SQLite ignores query parameters it does not know, password= among them (SQLAlchemy warns).
pytestmark = pytest.mark.filterwarnings("ignore:Query string argument")
POSTGRES = os.environ.get("STANCERUN_TEST_POSTGRES_URL")
needs_postgres = pytest.mark.skipif(not POSTGRES and not os.environ.get("STANCERUN_REQUIRE_POSTGRES"),
                                    reason="no PostgreSQL server: .ci/run starts one and sets STANCERUN_TEST_POSTGRES_URL")


def files_holding(directory: Path, text: str) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.parametrize("key", ["password", "PASSWORD", "pass", "pwd", "passwd", "sslpassword", "secret", "token",
                                 "api_key", "client_secret", "auth_token"])
def test_each_secret_query_parameter_is_hidden(key):
    url = f"postgresql+psycopg2://u@h:5432/db?sslmode=require&{key}={SECRET}&application_name=x"
    assert redact_url(url) == f"postgresql+psycopg2://u@h:5432/db?sslmode=require&{key}=***&application_name=x"
    assert SECRET not in public_url(url) and "sslmode=require" in public_url(url) and key not in public_url(url)


def test_the_userinfo_password_and_the_command_line_forms_are_hidden():
    url = f"postgresql+psycopg2://sweeper:{SECRET}@db-host:5432/runs"
    assert redact_url(url) == "postgresql+psycopg2://sweeper:***@db-host:5432/runs"
    assert public_url(url) == "postgresql+psycopg2://sweeper@db-host:5432/runs"
    assert public_url(f"sqlite:////x/sw.db?password={SECRET}") == "sqlite:////x/sw.db"
    assert redact_url("sqlite:////x/sw.db") == "sqlite:////x/sw.db" and redact_url("a:b@c") == "a:b@c"  # no URL
    argv = ["run", "x.toml", "--storage", url, f"--storage={url}", "--api-key", SECRET, f"--api-key={SECRET}",
            "--set", f"data.url=https://me:{SECRET}@example.org/x.csv", "--workers", "2"]
    assert redact_argv(argv) == ["run", "x.toml", "--storage", "***", "--storage=***", "--api-key", "***",
                                 "--api-key=***", "--set", "data.url=https://me:***@example.org/x.csv", "--workers", "2"]


def test_a_password_free_url_takes_its_password_from_the_environment():
    full = f"postgresql+psycopg2://sweeper:{SECRET}@db-host:5432/runs"
    public = public_url(full)
    assert with_password(public, {STORAGE_URL_ENV: full}) == full
    assert with_password(public, {}) == public
    other = "postgresql+psycopg2://sweeper@other-host:5432/runs"
    assert with_password(other, {STORAGE_URL_ENV: full}) == other  # another database: not its password
    query = f"sqlite:////x/sw.db?password={SECRET}"
    assert with_password("sqlite:////x/sw.db", {STORAGE_URL_ENV: query}) == query


def test_the_workers_argv_holds_no_password(tmp_path):
    from stancerun.studies.sweep import Sweep
    from stancerun.studies.sweep_workers import worker_command

    full = f"postgresql+psycopg2://sweeper:{SECRET}@db-host:5432/runs?sslpassword={SECRET}"
    command, env = worker_command(Sweep(tmp_path, None, "s", full))
    assert not any(SECRET in arg for arg in command)
    assert command[-2:] == ["--storage", "postgresql+psycopg2://sweeper@db-host:5432/runs"]
    assert env == {STORAGE_URL_ENV: full}
    assert worker_command(Sweep(tmp_path, None, "s", None))[1] == {}  # a journal file: nothing secret


def test_a_sqlite_sweep_writes_its_password_nowhere(tmp_path, tiny_bert, stance_data, monkeypatch):
    url = f"sqlite:///{tmp_path / 'sw.db'}?password={SECRET}"
    path = tiny_experiment(tmp_path, tiny_bert, extra=SWEEP)
    out = tmp_path / "sweep"
    argv = ["run", str(path), "--output-dir", str(out), "--storage", url, "--set", "training.num_train_epochs=1"]
    monkeypatch.setattr(sys, "argv", ["stancerun", *argv])  # what each trial's environment.json records
    assert main(argv) == 0
    assert (out / "trial-001" / "environment.json").is_file() and (out / "report.md").is_file()
    assert files_holding(out, SECRET) == []
    assert "--storage" in (out / "trial-000" / "environment.json").read_text()


def test_a_join_by_the_password_free_url_opens_the_storage_with_the_password(tmp_path, tiny_bert, stance_data,
                                                                              monkeypatch):
    from stancerun.config.experiment import load_experiment
    from stancerun.studies.sweep import create, open_sweep

    url = f"sqlite:///{tmp_path / 'sw.db'}?password={SECRET}"
    sweep = create(load_experiment(tiny_experiment(tmp_path, tiny_bert, extra=SWEEP)), str(tmp_path / "sweep"), url)
    monkeypatch.setenv(STORAGE_URL_ENV, url)
    # as `sweep join` opens it, by the sweep directory or by the URL the workers get in argv
    assert open_sweep(str(sweep.directory)).url == url
    assert open_sweep(public_url(url), study_name=sweep.study_name).url == url
    assert open_sweep(str(sweep.directory), storage=public_url(url)).url == url
    assert files_holding(sweep.directory, SECRET) == []


@needs_postgres
def test_workers_join_by_the_password_free_url(tmp_path, tiny_bert, stance_data):
    # The CI server trusts loopback connections, so any password opens it: enough to see where it goes.
    assert POSTGRES, "STANCERUN_REQUIRE_POSTGRES is set but STANCERUN_TEST_POSTGRES_URL is not"
    url = POSTGRES.replace("://stancerun@", f"://stancerun:{SECRET}@") + f"?sslpassword={SECRET}"
    assert url.count(SECRET) == 2
    path = tiny_experiment(tmp_path, tiny_bert, extra=SWEEP)
    out = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(STORAGE_URL_ENV, None)
    ran = subprocess.run([sys.executable, "-m", "stancerun", "run", str(path), "--output-dir", str(out), "--storage", url,
                          "--workers", "2", "--set", "training.num_train_epochs=1"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "2 workers started" in ran.stdout and SECRET not in ran.stdout
    assert (out / "trial-000" / "results.json").is_file() and (out / "trial-001" / "results.json").is_file()
    assert files_holding(out, SECRET) == []


def test_serve_help_suggests_the_environment_variable_for_the_key(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "STANCERUN_API_KEY" in " ".join(capsys.readouterr().out.split())
