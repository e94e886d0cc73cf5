"""`make server`: one MLflow tracking server for parallel jobs and other machines.

On a loopback address (127.0.0.1, localhost, ::1) it is open to the processes of this machine, as a
local store is. On any other address it runs MLflow's basic authentication (`mlflow server --app-name
basic-auth`): a user database beside the store, an admin whose password comes from the environment
(SSIMCTR_SERVER_ADMIN_PASSWORD, or a file only its owner can read named by
SSIMCTR_SERVER_ADMIN_PASSWORD_FILE), never from the command line; it refuses to start without one.
`--auth` turns the authentication on for a loopback address too. Clients log in with MLflow's
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (docs/tracking-server.md).

python -m ssimctr.tracking.server --host 0.0.0.0 --allowed-hosts "$(hostname):5000"

mlflow is not imported here: a refused start is one line, at once.
"""

from __future__ import annotations

import argparse
import configparser
import io
import ipaddress
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ssimctr.errors import UserError
from ssimctr.tracking.store import sqlite_file

PASSWORD_ENV = "SSIMCTR_SERVER_ADMIN_PASSWORD"
PASSWORD_FILE_ENV = "SSIMCTR_SERVER_ADMIN_PASSWORD_FILE"
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # signs the UI's CSRF tokens: one per start unless given
CONFIG_PATH_ENV = "MLFLOW_AUTH_CONFIG_PATH"
# MLflow's own overrides of the ini's admin settings: dropped from the server's environment, so that the
# password checked here is the one the server gets
OVERRIDING_ENV = ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", PASSWORD_ENV)
PERMISSIONS = ("NO_PERMISSIONS", "READ", "EDIT", "MANAGE")  # of a user on the experiments others created
MIN_PASSWORD = 12  # MLflow's minimum length for a user's password
LEGACY_PASSWORD = "password1234"  # the admin password older MLflow versions shipped in basic_auth.ini
AUTH_CONFIG = "basic_auth.ini"
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine: localhost or a loopback IP (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: its address may be any interface's
        return False


def admin_password(environ: Mapping[str, str]) -> str:
    """The admin's password, from SSIMCTR_SERVER_ADMIN_PASSWORD or the file SSIMCTR_SERVER_ADMIN_PASSWORD_FILE
    names (its one line; readable by its owner only), checked against MLflow's rules; UserError otherwise."""
    value, path = environ.get(PASSWORD_ENV), environ.get(PASSWORD_FILE_ENV)
    if value and path:
        raise UserError(f"both {PASSWORD_ENV} and {PASSWORD_FILE_ENV} are set: unset one of them")
    if path:
        value, origin = _password_file(Path(path)), f"{PASSWORD_FILE_ENV}={path}"
    elif value:
        origin = PASSWORD_ENV
    else:
        raise UserError(
            f"a server reachable from other machines needs its admin's password: set {PASSWORD_ENV}, or "
            f"{PASSWORD_FILE_ENV} to a file only you can read (never on the command line)"
        )
    if len(value) < MIN_PASSWORD:
        raise UserError(f"{origin}: the admin's password needs at least {MIN_PASSWORD} characters, not {len(value)}")
    if value == LEGACY_PASSWORD:
        raise UserError(f"{origin}: {LEGACY_PASSWORD!r} is the default older MLflow versions shipped; choose another")
    if value != value.strip() or not value.isprintable():
        raise UserError(f"{origin}: the admin's password must not start or end with spaces or hold control characters")
    return value


def _password_file(path: Path) -> str:
    """The password in `path` (its first line, without the line end); UserError when missing or readable by others."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as error:
        raise UserError(f"{PASSWORD_FILE_ENV}={path}: cannot read it ({error.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"{PASSWORD_FILE_ENV}={path} can be read by other users: chmod 600 {path}")
    lines = text.splitlines()
    if len(lines) != 1:
        raise UserError(f"{PASSWORD_FILE_ENV}={path}: write the password alone on one line (it has {len(lines)})")
    return lines[0]


def auth_config_text(database_uri: str, admin: str, password: str, default_permission: str, cache_seconds: int) -> str:
    """MLflow's basic-auth ini (the keys of mlflow/server/auth/basic_auth.ini), `%` escaped for its reader.
    `cache_seconds`: how long a worker trusts a login it checked (MLflow hashes the password with scrypt
    at every request otherwise, a quarter of a second of CPU; versions before the cache ignore the key)."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        key: value.replace("%", "%%")  # MLflow reads the file with configparser's `%` interpolation
        for key, value in {
            "default_permission": default_permission,
            "database_uri": database_uri,
            "admin_username": admin,
            "admin_password": password,
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
            "auth_cache_ttl_seconds": str(cache_seconds),
        }.items()
    }
    text = io.StringIO()
    config.write(text)
    return text.getvalue()


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path`, readable and writable by its owner only (mode 600 from the start), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 600
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise
    return path


def server_command(args: argparse.Namespace, auth: bool) -> list[str]:
    """The `mlflow server` command line (no secret in it: the password travels in the ini)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.db]
    command += ["--artifacts-destination", str(args.artifacts), "--serve-artifacts"]
    command += ["--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    if args.allowed_hosts:
        command += ["--allowed-hosts", args.allowed_hosts]
    if auth:
        command += ["--app-name", "basic-auth"]
    return command


def prepare(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str], str]:
    """The command, its environment and a line saying what will listen; UserError for a bad option or password
    (before anything is written). Makes the server's folders; with authentication, writes the basic-auth ini
    (mode 600) into `args.state`."""
    if args.default_permission not in PERMISSIONS:
        raise UserError(f"--default-permission {args.default_permission}: use one of {', '.join(PERMISSIONS)}")
    if args.auth_cache_seconds < 0:
        raise UserError(
            f"--auth-cache-seconds must be >= 0 (0: check the password at every request), got {args.auth_cache_seconds}"
        )
    if not args.admin or not args.admin.isprintable() or args.admin != args.admin.strip():
        raise UserError(f"--admin {args.admin!r}: give the admin's user name (printable, no spaces at the ends)")
    auth = args.auth or not is_loopback(args.host)
    url = f"http://{args.host}:{args.port}"
    env = dict(environ)
    if not auth:
        _make_folders(args, users=None)
        line = f"MLflow tracking server {url}: open to this machine's processes (--auth asks for users)"
        return server_command(args, auth), env, line
    password = admin_password(environ)
    _make_folders(args, users=sqlite_file(args.auth_db))
    text = auth_config_text(args.auth_db, args.admin, password, args.default_permission, args.auth_cache_seconds)
    config = write_private(args.state / AUTH_CONFIG, text)
    for name in OVERRIDING_ENV:
        env.pop(name, None)
    env[CONFIG_PATH_ENV] = str(config.resolve())
    env.setdefault(SECRET_KEY_ENV, secrets.token_urlsafe(32))
    line = (
        f"MLflow tracking server {url} with basic authentication: admin {args.admin!r}, users in {args.auth_db}, "
        f"{args.default_permission} on others' experiments; clients set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD"
    )
    return server_command(args, auth), env, line


def _make_folders(args: argparse.Namespace, users: Path | None) -> None:
    """The server's folder, its artifact folder, the store's folder when it is SQLite, and the SQLite user
    database `users` created empty with mode 600 (the users' password hashes) for MLflow to fill; UserError
    when the disk refuses."""
    folders = [args.state, Path(args.artifacts), *(file.parent for file in (sqlite_file(args.db), users) if file)]
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        if users is not None and not users.exists():
            os.close(os.open(users, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as error:
        raise UserError(f"cannot write {error.filename}: {error.strerror}; choose a writable folder") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ssimctr.tracking.server",
        description="MLflow tracking server for ssimctr jobs (make server); MLflow's basic authentication "
        f"beyond the loopback address, its admin's password from ${PASSWORD_ENV} or ${PASSWORD_FILE_ENV}.",
    )
    parser.add_argument("--db", default="sqlite:///outputs/server/mlflow.db", help="backend store URI")
    parser.add_argument("--artifacts", default="outputs/server/artifacts", help="where the server keeps artifacts")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--allowed-hosts", default="", help="Host headers accepted, e.g. myhost:5000")
    parser.add_argument("--auth", action="store_true", help="basic authentication on a loopback address too")
    parser.add_argument("--admin", default="admin", help="the admin's user name (default: %(default)s)")
    parser.add_argument(
        "--default-permission",
        default="READ",
        help=f"a user's permission on experiments other users created: {', '.join(PERMISSIONS)} (default: "
        "%(default)s); a user manages the experiments they create",
    )
    parser.add_argument("--auth-db", default="sqlite:///outputs/server/basic_auth.db", help="the user database's URI")
    parser.add_argument(
        "--auth-cache-seconds",
        type=int,
        default=60,
        help="how long a worker trusts a checked login; a changed password or deleted user reaches the other "
        "workers after it (default: %(default)s; 0: check every request)",
    )
    parser.add_argument("--state", type=Path, default=Path("outputs/server"), help="where the basic-auth ini goes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Check the options and the admin's password, then become `mlflow server` (exec); 2 for a refused start."""
    args = build_parser().parse_args(argv)
    try:
        command, env, line = prepare(args, os.environ)
    except UserError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return 2
    print(line, flush=True)
    os.execve(sys.executable, command, env)  # this process becomes `mlflow server`: no return


if __name__ == "__main__":
    sys.exit(main())
