"""The built zipapp (dist/smsgw.pyz) runs on its own: `make zipapp-test` builds and runs this."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_process import base_env, gateway_process, run_cli
from tests.http_client import http, samples

pytestmark = pytest.mark.zipapp


def test_the_zipapp_is_the_one_under_test() -> None:
    pyz = os.environ.get("SMSGW_TEST_PYZ", "")
    assert pyz.endswith(".pyz") and os.path.isfile(pyz), "run through `make zipapp-test`"


async def test_zipapp_serves_sends_and_stops(tmp_path: Path) -> None:
    version = await run_cli(["--version"], base_env(tmp_path, {}))
    assert version.returncode == 0 and version.stdout.startswith(b"smsgw ")
    async with gateway_process(tmp_path, {"SMSGW_METRICS": "127.0.0.1:0"}) as gw:
        metrics_port = await gw.metrics_port()
        assert (await http(metrics_port, "GET", "/healthz")).status == 200
        sent = await run_cli(
            [
                "send",
                "--server",
                gw.address,
                "--phone",
                "8613800138000",
                "--message",
                "zip",
                "--msgid",
                "z1",
            ],
            base_env(tmp_path, {}),
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "0"
        shown = await run_cli(["status", "z1"], base_env(tmp_path, {}))
        assert shown.returncode == 0 and b"8613800138000" in shown.stdout
        scraped = samples((await http(metrics_port, "GET", "/metrics")).body)
        assert scraped[("smsgw_messages_accepted_total", ())] == 1
    assert gw.process.returncode == 0


# --- runs anywhere (issue 10, items 1 to 3) ---


def pyz() -> Path:
    return Path(os.environ["SMSGW_TEST_PYZ"])


def as_user_prefix() -> tuple[list[str], int]:
    """How to run a command as an unprivileged user whose home cannot be written, and that
    user's uid. As root (CI): `nobody`, through util-linux's setpriv. Otherwise: this user,
    and the test points HOME at a directory it made read-only."""
    if os.geteuid() != 0:
        return [], os.getuid()
    nobody = pwd.getpwnam("nobody")
    ids = ["--reuid", str(nobody.pw_uid), "--regid", str(nobody.pw_gid), "--clear-groups"]
    return ["setpriv", *ids, "--"], nobody.pw_uid


def python_for(prefix: list[str]) -> str:
    """A Python 3.11+ that the user `prefix` runs as can execute (a root-only pyenv or venv
    interpreter is not one)."""
    candidates = [sys.executable, str(getattr(sys, "_base_executable", "")), "/usr/bin/python3"]
    candidates += [shutil.which(name) or "" for name in ("python3.13", "python3.12", "python3")]
    check = "import sys; assert sys.version_info >= (3, 11)"
    for candidate in filter(None, candidates):
        done = subprocess.run([*prefix, candidate, "-c", check], capture_output=True, check=False)
        if done.returncode == 0:
            return candidate
    raise AssertionError(f"no Python 3.11+ that {prefix or 'this user'} can run: {candidates}")


@pytest.fixture
def service_dirs() -> Iterator[Path]:
    """A world-readable directory outside pytest's root-only tmp_path, for another user."""
    base = Path(tempfile.mkdtemp(prefix="smsgw-service-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def user_dir(path: Path, uid: int, mode: int = 0o700) -> Path:
    path.mkdir()
    os.chown(path, uid, -1)
    path.chmod(mode)
    return path


async def test_a_service_user_whose_home_cannot_be_written_runs_the_zipapp(
    service_dirs: Path,
) -> None:
    prefix, uid = as_user_prefix()
    python = python_for(prefix)
    app = installed(service_dirs)
    home = service_dirs / "home"
    home.mkdir(mode=0o555)
    tmp = service_dirs / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    state = user_dir(service_dirs / "state", uid)
    # HOME exists read-only (a non-root run) or not at all (nobody's /nonexistent).
    service_home = str(home) if prefix == [] else "/nonexistent"
    settings = {"HOME": service_home, "TMPDIR": str(tmp), "SHIV_ROOT": ""}
    command = [*prefix, python, str(app)]
    async with gateway_process(state, settings, command=command) as gw:
        sent = await run_cli(
            ["send", "--server", gw.address, "--phone", "8613800138000", "--message", "hi"],
            base_env(state, {}),
        )
        assert sent.returncode == 0, sent.stderr
    assert gw.process.returncode == 0
    unpacked = tmp / f"smsgw-{uid}"
    info = unpacked.lstat()
    assert info.st_uid == uid and stat.S_IMODE(info.st_mode) == 0o700
    assert any(entry.name.startswith("smsgw.pyz_") for entry in unpacked.iterdir())
    assert not os.path.exists("/nonexistent") and not any(home.iterdir())


def installed(service_dirs: Path) -> Path:
    """The zipapp where another user can read it."""
    app = service_dirs / "smsgw.pyz"
    shutil.copyfile(pyz(), app)
    app.chmod(0o644)
    return app


def deploy_doc_block(heading: str, language: str) -> str:
    """The first ```language block after `heading` in docs/deploy.md."""
    text = (Path(__file__).resolve().parent.parent.parent / "docs" / "deploy.md").read_text()
    after = text[text.index(heading) :]
    start = after.index(f"```{language}\n") + len(language) + 4
    return after[start : after.index("```", start)]


async def test_the_deploy_guides_unit_and_environment_file_run_the_zipapp(
    service_dirs: Path,
) -> None:
    """docs/deploy.md's environment and apps files, run as its unit runs them: a user whose
    home is `/` (DynamicUser), systemd's CACHE_DIRECTORY and STATE_DIRECTORY, the apps file
    from the credentials directory. Only what cannot be had here is replaced: the port (0),
    the carrier (the simulator) and /var/lib/smsgw (a scratch directory)."""
    unit = deploy_doc_block("## 4.", "ini")
    for line in ("DynamicUser=yes", "StateDirectory=smsgw", "CacheDirectory=smsgw"):
        assert f"\n{line}\n" in unit
    assert "\nProtectSystem=strict\n" in unit and "\nEnvironment=SMSGW_APPS_FILE=%d/" in unit
    prefix, uid = as_user_prefix()
    python = python_for(prefix)
    app = installed(service_dirs)
    cache = user_dir(service_dirs / "cache", uid)
    state = user_dir(service_dirs / "state", uid)
    credentials = user_dir(service_dirs / "credentials", uid)
    (credentials / "apps.toml").write_text(deploy_doc_block("## 3.", "toml"))
    settings = {}
    for line in deploy_doc_block("## 2.", "sh").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            settings[name] = value.replace("/var/lib/smsgw", str(state))
    assert settings["SMSGW_DB"] == f"sqlite:///{state}/smsgw.db"
    settings |= {
        "SMSGW_LISTEN": "127.0.0.1:0",
        "SMSGW_METRICS": "127.0.0.1:0",
        "SMSGW_CARRIER": "sim://?fail=0",
        "SMSGW_APPS_FILE": str(credentials / "apps.toml"),
        "HOME": "/",
        "CACHE_DIRECTORY": str(cache),
        "STATE_DIRECTORY": str(state),
        "XDG_CACHE_HOME": "",
        "SHIV_ROOT": "",
    }
    async with gateway_process(state, settings, command=[*prefix, python, str(app)]) as gw:
        assert "app shop1: receipts to 10.0.0.5:9100, from 10.0.0.0/8" in (
            await gw.output_line("app shop1:")
        )
        assert (await http(await gw.metrics_port(), "GET", "/healthz")).status == 200
        shop1 = ["--appid", "shop1", "--secret", "Kq3-v9Zt.x"]
        message = ["--phone", "8613800138000", "--message", "hi"]
        sent = await run_cli(
            ["send", "--server", gw.address, *shop1, *message], base_env(state, {})
        )
        # The apps file was read: the right secret, from outside the app's networks.
        assert json.loads(sent.stdout)["status"] == "1006"
    assert gw.process.returncode == 0
    # The guide's `smsgw status` (as root, the same environment): read, not refused.
    as_root = {**settings, "HOME": os.environ.get("HOME", str(state)), "CACHE_DIRECTORY": ""}
    shown = await run_cli(["status", "ORDER-1"], base_env(state, as_root))
    assert shown.returncode == 1 and b"no message with msgid 'ORDER-1'" in shown.stderr
    assert (state / "smsgw.db").exists()
    assert any(entry.name.startswith("smsgw.pyz_") for entry in (cache / "shiv").iterdir())


def test_a_temporary_directory_someone_else_made_is_refused(service_dirs: Path) -> None:
    prefix, uid = as_user_prefix()
    python = python_for(prefix)
    app = installed(service_dirs)
    tmp = user_dir(service_dirs / "tmp", uid, 0o1777)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/", "TMPDIR": str(tmp)}
    planted = tmp / f"smsgw-{uid}"
    planted.mkdir()
    if os.geteuid() == 0:
        os.chown(planted, uid + 1, -1)
    else:  # a non-root test cannot give a directory away: one anyone may write, then
        planted.chmod(0o777)
    done = subprocess.run([*prefix, python, str(app), "--version"], env=env, **CAPTURE)
    assert done.returncode == 1
    (line,) = done.stderr.decode().splitlines()
    assert line.startswith(f"smsgw: cannot unpack: {planted} is not a directory of this user")
    assert line.endswith("set SHIV_ROOT to a directory this user can write")
    assert not any(planted.iterdir())


CAPTURE: dict[str, Any] = {"capture_output": True, "check": False, "timeout": 60}


def test_an_old_python_is_told_in_one_line_which_it_needs(tmp_path: Path) -> None:
    env = {**base_env(tmp_path, {}), "HOME": str(tmp_path)}
    # This Python made to report 3.10 before the zipapp's __main__ runs: the check comes
    # first, before anything is unpacked or imported.
    as_310 = "import runpy, sys; sys.version_info = (3, 10, 13, 'final', 0); "
    as_310 += "runpy.run_path(sys.argv[1], run_name='__main__')"
    runs = {sys.executable: [sys.executable, "-c", as_310, str(pyz())]}
    # And any real older Python this machine has (pyenv, deadsnakes, a distribution's).
    for old in older_pythons():
        runs[old] = [old, str(pyz()), "--version"]
    for executable, command in runs.items():
        done = subprocess.run(command, env=env, **CAPTURE)
        assert done.returncode == 1, (command, done.stderr)
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1, (command, lines)
        assert lines[0].startswith(f"smsgw needs Python 3.11 or newer; {executable} is Python 3.")
    assert not (tmp_path / ".shiv").exists()


def older_pythons() -> list[str]:
    found = [shutil.which(f"python3.{minor}") or "" for minor in range(7, 11)]
    found += glob.glob(os.path.expanduser("~/.pyenv/versions/3.[7-9]*/bin/python3"))
    found += glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3"))
    version = "import sys; print(sys.version_info < (3, 11) and sys.version_info >= (3, 7))"
    older = []
    for candidate in filter(None, found):
        # A pyenv shim for a version not selected exits non-zero: not a Python.
        probe = subprocess.run([candidate, "-c", version], **CAPTURE)
        if probe.returncode == 0 and probe.stdout.strip() == b"True":
            older.append(os.path.realpath(candidate))
    return sorted(set(older))


@pytest.mark.slow
def test_two_checkouts_of_one_tree_build_the_same_bytes_quietly(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent.parent
    built = []
    for checkout in (tmp_path / "a" / "smsgw", tmp_path / "elsewhere" / "clone-2"):
        checkout.mkdir(parents=True)
        for name in ("pyproject.toml", "README.md", "smsgw", "tools"):
            if (repo / name).is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(repo / name, checkout / name, ignore=ignore)
            else:
                shutil.copy(repo / name, checkout / name)
        command = [sys.executable, "tools/build_zipapp.py", "--output", "out.pyz"]
        done = subprocess.run(command, cwd=checkout, **{**CAPTURE, "timeout": 600})
        assert done.returncode == 0, done.stdout + done.stderr
        # One line, not pip's whole output.
        assert done.stderr == b"" and done.stdout.decode().splitlines() == [
            f"built out.pyz ({(checkout / 'out.pyz').stat().st_size:,} bytes)"
        ]
        built.append((checkout / "out.pyz").read_bytes())
    assert built[0] == built[1]
    assert built[0] == pyz().read_bytes()  # and the zipapp under test is that one


async def test_zipapp_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The zipapp carries psycopg (pure Python) and finds the system's libpq."""
    env = {"SMSGW_DB": pg_url}
    async with gateway_process(tmp_path, env) as gw:
        sent = await run_cli(
            ["send", "--server", gw.address, "--phone", "8613800138000", "--message", "pg"],
            base_env(tmp_path, env),
        )
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["status"] == "0"
        listed = await run_cli(["inbox"], base_env(tmp_path, env))
        assert listed.returncode == 0, listed.stderr
    assert gw.process.returncode == 0


async def test_zipapp_runs_two_workers(tmp_path: Path) -> None:
    # The workers are started from the supervisor's interpreter and module path: the
    # zipapp's unpacked site-packages, not an installed smsgw.
    env = {"SMSGW_METRICS": "127.0.0.1:0", "SMSGW_WORKERS": "2"}
    async with gateway_process(tmp_path, env) as gw:
        metrics_port = await gw.metrics_port()
        health = await http(metrics_port, "GET", "/healthz")
        assert health.status == 200
        assert json.loads(health.body)["checks"]["workers"] == "2/2 up"
    assert gw.process.returncode == 0
