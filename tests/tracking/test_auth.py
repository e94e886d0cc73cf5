"""A tracking server that lets in only its users (`make server` off the loopback address, or --auth):
its start refuses to run without an admin password, anonymous and wrong logins are refused in one line
before anything is logged, a user writes only where allowed, and a multirun with credentials logs."""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, RESOURCE_DOES_NOT_EXIST, UNAUTHENTICATED
from mlflow.tracking import MlflowClient
from servers import free_port, stop_group, tracking_server

from conftest import REPO, assert_every_metric
from ssimctr.errors import UserError
from ssimctr.report.cli import main as report_main
from ssimctr.serving.cli import predict_main
from ssimctr.tracking import PARENT_RUN_ENV
from ssimctr.tracking.mlflow_tracker import MlflowTracker
from ssimctr.tracking.server import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    admin_password,
    build_parser,
    is_loopback,
    prepare,
)
from ssimctr.tracking.store import refused

ADMIN, ADMIN_PASSWORD = "admin", "an admin's %pass phrase"  # `%` and a space: the ini must keep them
USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}
TINY = ["dataset.rows=2000", "dataset.users=300", "dataset.items=100", "trainer=debug", "trainer.epochs=1"]
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


# --- the server's start: which addresses ask for users, the admin's password, the ini it writes ---


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True)]
    + [("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("gpu-node-3", False)],
)
def test_only_loopback_addresses_may_stay_open(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_admin_password_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    assert admin_password({PASSWORD_ENV: ADMIN_PASSWORD}) == ADMIN_PASSWORD
    secret = tmp_path / "admin-password"
    secret.write_text(ADMIN_PASSWORD + "\n")
    secret.chmod(0o600)
    assert admin_password({PASSWORD_FILE_ENV: str(secret)}) == ADMIN_PASSWORD
    secret.chmod(0o640)
    with pytest.raises(UserError, match=f"can be read by other users: chmod 600 {secret}"):
        admin_password({PASSWORD_FILE_ENV: str(secret)})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, f"set {PASSWORD_ENV}, or {PASSWORD_FILE_ENV}"),
        ({PASSWORD_ENV: "short-pass"}, f"{PASSWORD_ENV}: the admin's password needs at least 12 characters, not 10"),
        ({PASSWORD_ENV: "password1234"}, "the default older MLflow versions shipped"),
        ({PASSWORD_ENV: " padded password "}, "must not start or end with spaces"),
        ({PASSWORD_ENV: ADMIN_PASSWORD, PASSWORD_FILE_ENV: "/x"}, "unset one of them"),
        ({PASSWORD_FILE_ENV: "/no/such/file"}, f"{PASSWORD_FILE_ENV}=/no/such/file: cannot read it"),
    ],
)
def test_a_missing_or_weak_admin_password_is_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        admin_password(environ)


def _options(tmp_path: Path, *extra: str) -> list[str]:
    return ["--state", str(tmp_path / "server"), "--artifacts", str(tmp_path / "server" / "artifacts")] + [
        "--db", f"sqlite:///{tmp_path}/server/mlflow.db", "--auth-db", f"sqlite:///{tmp_path}/server/users.db", *extra
    ]  # fmt: skip


def test_off_loopback_the_server_runs_basic_auth_from_a_private_ini(tmp_path: Path) -> None:
    """The ini holds MLflow's keys (read back as MLflow reads it, `%` interpolation included) and only
    its owner can read it; the password is neither on the command line nor in the server's environment."""
    args = build_parser().parse_args(_options(tmp_path, "--host", "0.0.0.0", "--default-permission", "NO_PERMISSIONS"))
    environ = {PASSWORD_ENV: ADMIN_PASSWORD, "MLFLOW_AUTH_ADMIN_PASSWORD": "would-override-the-ini", "HOME": "/h"}
    command, env, line = prepare(args, environ)
    assert command[command.index("--app-name") + 1] == "basic-auth" and "basic authentication" in line
    ini = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert ini == (tmp_path / "server" / "basic_auth.ini").resolve()
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "server" / "users.db").stat().st_mode) == 0o600
    config = configparser.ConfigParser()  # MLflow's reader: configparser with `%` interpolation
    config.read(ini)
    assert dict(config["mlflow"]) == {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": f"sqlite:///{tmp_path}/server/users.db",
        "admin_username": "admin",
        "admin_password": ADMIN_PASSWORD,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "60",
    }
    assert not any(ADMIN_PASSWORD in part for part in command)
    assert PASSWORD_ENV not in env and "MLFLOW_AUTH_ADMIN_PASSWORD" not in env
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] and env["HOME"] == "/h"


def test_on_loopback_the_server_stays_open_unless_asked(tmp_path: Path) -> None:
    command, env, _ = prepare(build_parser().parse_args(_options(tmp_path)), {})
    assert "--app-name" not in command and "MLFLOW_AUTH_CONFIG_PATH" not in env
    assert not (tmp_path / "server" / "basic_auth.ini").exists()
    with pytest.raises(UserError, match=PASSWORD_ENV):
        prepare(build_parser().parse_args(_options(tmp_path, "--auth")), {})


def test_a_refused_start_writes_nothing(tmp_path: Path) -> None:
    for extra, environ in [(["--host", "0.0.0.0"], {}), (["--default-permission", "ALL"], {PASSWORD_ENV: "x" * 12})]:
        with pytest.raises(UserError):
            prepare(build_parser().parse_args(_options(tmp_path, *extra)), environ)
    assert not (tmp_path / "server").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_server_beyond_loopback_refuses_to_start_without_a_password() -> None:
    """`make server SERVER_HOST=0.0.0.0` with neither password variable: one line naming them, exit 2, and
    no server (a started one would still run when the timeout ends the wait)."""
    env = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, PASSWORD_FILE_ENV)}
    command = ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", "server", f"BIN={Path(sys.executable).parent}"]
    command += ["SERVER_HOST=0.0.0.0", f"SERVER_PORT={free_port()}"]
    make = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = make.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stop_group(make)
        pytest.fail("make server started a server without an admin password")
    lines = [line for line in (out + err).splitlines() if line.strip() and not line.startswith("make")]
    assert make.returncode == 2
    assert len(lines) == 1 and f"set {PASSWORD_ENV}, or {PASSWORD_FILE_ENV}" in lines[0], out + err


# --- what a client hears: the refusal's one line ---


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        (None, None, "lets in only its users: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (an"),
        ("alice", None, "needs the password of user 'alice': set MLFLOW_TRACKING_PASSWORD"),
        (None, "p", "lets in only its users: set MLFLOW_TRACKING_USERNAME (an"),
        ("alice", "wrong", "refused user 'alice': wrong MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_USERNAME)"),
    ],
)
def test_a_refused_login_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, user: str | None, password: str | None, message: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    for name, value in zip(CREDENTIALS, (user, password)):
        monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name, raising=False)
    line = str(refused(MlflowException("error code 401", error_code=UNAUTHENTICATED), "http://h:5000", "x"))
    assert line.startswith(f"the tracking server http://h:5000 {message}")
    denied = refused(MlflowException("error code 403", error_code=PERMISSION_DENIED), "http://h:5000", "write: ask")
    assert str(denied) == f"the tracking server http://h:5000 does not let user {user!r} write: ask"
    assert refused(MlflowException("error code 404", error_code=RESOURCE_DOES_NOT_EXIST), "http://h:5000", "x") is None


# --- against a real server with the auth app ---


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make server SERVER_AUTH=1` on a free loopback port with users alice and bob; its URL."""
    root = tmp_path_factory.mktemp("auth-server")
    env = {**os.environ, PASSWORD_ENV: ADMIN_PASSWORD}
    with tracking_server(root, f"sqlite:///{root}/mlflow.db", "--auth", env=env, workers=1) as url:
        from mlflow.server import get_app_client

        with logged_in(ADMIN, ADMIN_PASSWORD):
            users = get_app_client("basic-auth", tracking_uri=url)
            for user, password in USERS.items():
                users.create_user(user, password)
        yield url


@contextlib.contextmanager
def logged_in(user: str | None, password: str | None) -> Iterator[None]:
    """MLFLOW_TRACKING_USERNAME / _PASSWORD set to `user`, `password` (unset for None) inside the block."""
    saved = {name: os.environ.pop(name, None) for name in CREDENTIALS}
    os.environ.update({name: value for name, value in zip(CREDENTIALS, (user, password)) if value})
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def runs_of(url: str, experiment: str) -> list:
    """Every run of `experiment` as the admin sees it ([] when there is no such experiment)."""
    with logged_in(ADMIN, ADMIN_PASSWORD):
        client = MlflowClient(tracking_uri=url)
        found = client.get_experiment_by_name(experiment)
        return [] if found is None else client.search_runs([found.experiment_id])


def _get(url: str, credentials: str | None) -> int:
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if credentials:
        request.add_header("Authorization", f"Basic {b64encode(credentials.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_an_anonymous_or_wrong_login_is_refused(server: str) -> None:
    assert _get(server, None) == 401
    assert _get(server, "alice:not-her-password") == 401
    assert _get(server, f"alice:{USERS['alice']}") == 200
    with logged_in(None, None), pytest.raises(UserError, match="set MLFLOW_TRACKING_USERNAME and"):
        MlflowTracker(server, "anonymous")
    with logged_in("alice", "not-her-password"), pytest.raises(UserError, match="wrong MLFLOW_TRACKING_PASSWORD"):
        MlflowTracker(server, "wrong-password")
    assert runs_of(server, "anonymous") == [] and runs_of(server, "wrong-password") == []
    with logged_in(ADMIN, ADMIN_PASSWORD):
        names = {e.name for e in MlflowClient(tracking_uri=server).search_experiments()}
    assert not {"anonymous", "wrong-password"} & names


@pytest.mark.slow
def test_a_user_writes_only_into_experiments_she_may_write_to(server: str) -> None:
    """bob reads alice's experiment (READ, the default) but cannot start a run in it, and no run is left;
    once the admin grants him EDIT he can."""
    with logged_in("alice", USERS["alice"]):
        alice = MlflowTracker(server, "alice-only")
        alice.start("alice's run", {})
        alice.end()
    with logged_in("bob", USERS["bob"]):
        bob = MlflowTracker(server, "alice-only")  # reading is allowed
        with pytest.raises(UserError, match="does not let user 'bob' log runs into experiment 'alice-only': ask"):
            bob.start("bob's run", {})
    assert [run.info.run_name for run in runs_of(server, "alice-only")] == ["alice's run"]
    from mlflow.server import get_app_client

    with logged_in(ADMIN, ADMIN_PASSWORD):
        get_app_client("basic-auth", tracking_uri=server).grant_user_permission(
            "bob", "experiment", alice.experiment_id, "EDIT"
        )
    with logged_in("bob", USERS["bob"]):
        bob.start("bob's run", {})
        bob.end()
    assert sorted(run.info.run_name for run in runs_of(server, "alice-only")) == ["alice's run", "bob's run"]


def _ssimctr(server: str, user: str, password: str, experiment: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """A 2-job multirun of tiny jobs logging into `experiment` of `server` as `user`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": server, CREDENTIALS[0]: user, CREDENTIALS[1]: password}
    env.pop(PARENT_RUN_ENV, None)
    command = [sys.executable, "-m", "ssimctr", "-m", "seed=1,2", f"tracking.experiment={experiment}"]
    command += [f"paths.outputs={tmp_path}", "trainer.progress=false", *TINY]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_a_multirun_with_credentials_logs_its_parent_and_children(server: str, tmp_path: Path) -> None:
    result = _ssimctr(server, "alice", USERS["alice"], "alice-sweep", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_of(server, "alice-sweep")
    [parent] = [run for run in runs if run.data.tags.get("ssimctr.kind") == "sweep"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert all(run.info.status == "FINISHED" for run in runs)
    assert_every_metric(children)


@pytest.mark.slow
def test_a_wrong_password_is_one_line_and_logs_nothing(server: str, tmp_path: Path) -> None:
    """The multirun's parent-run callback meets the refusal first: one line, exit 2, no job, no experiment."""
    result = _ssimctr(server, "alice", "not-her-password", "never-created", tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert lines == [
        f"error: the tracking server {server} refused user 'alice': wrong MLFLOW_TRACKING_PASSWORD "
        "(or MLFLOW_TRACKING_USERNAME)"
    ]
    with logged_in(ADMIN, ADMIN_PASSWORD):
        assert MlflowClient(tracking_uri=server).get_experiment_by_name("never-created") is None
    assert not list(tmp_path.rglob("config.yaml"))  # no job ran


@pytest.mark.slow
def test_report_and_predict_name_the_missing_variable(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("user_id,item_id\n1,2\n")
    with logged_in(None, None):
        assert report_main(["--uri", server]) == 2
        report = capsys.readouterr().err.strip()
        assert predict_main(["--uri", server, "--model", "runs:/0123abcd/model", "--input", str(rows)] + [
            "--output", str(tmp_path / "scores.csv")
        ]) == 2  # fmt: skip
        predict = capsys.readouterr().err.strip()
    for line in (report, predict):
        assert line.splitlines() == [
            f"error: the tracking server {server} lets in only its users: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (an account its admin made)"
        ]
