"""Build dist/smsgw.pyz: `make zipapp` runs this (`python tools/build_zipapp.py [--output X]`).

The same sources give the same bytes wherever they are checked out (`--reproducible` in
full), and the build prints one line unless it fails:

- the project is copied to a scratch directory (never built in place: a stale `build/lib`
  of setuptools would ship modules deleted since) and installed there by `pip --target`;
- what records where it was built goes: pip's `direct_url.json` (the source path), the
  console scripts in `bin/` (their `#!` names the building Python); file modes are set to
  0644 and 0755, not whatever the checkout's umask made;
- shiv packs that directory with `--reproducible` (fixed timestamps; its build id is the
  hash of the contents, which now hold no path);
- `__main__.py` becomes smsgw/zipapp.py: the Python version check and the choice of where to
  unpack (README, The zipapp), both before shiv's bootstrap.

Dependencies are resolved by pip at build time, so two builds match when the index offered
the same versions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "smsgw")
ENTRY_POINT = "smsgw.cli:main"
INTERPRETER = "/usr/bin/env python3"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / "smsgw.pyz")
    args = parser.parse_args()
    output: Path = args.output.resolve()
    with tempfile.TemporaryDirectory(prefix="smsgw-zipapp-") as scratch:
        try:
            build(Path(scratch), output)
        except subprocess.CalledProcessError as exc:
            # Quiet on success only: a failure shows everything the tool said.
            sys.stderr.write(exc.stdout or "")
            print(f"build_zipapp: {' '.join(map(str, exc.cmd[:4]))} … failed", file=sys.stderr)
            return 1
    print(f"built {os.path.relpath(output)} ({output.stat().st_size:,} bytes)")
    return 0


def build(scratch: Path, output: Path) -> None:
    source = scratch / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    site_packages = scratch / "site-packages"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile"]
    # psycopg (pure Python) rides along for SMSGW_DB=postgresql://, which then needs libpq.
    run([*pip, "--target", str(site_packages), f"{source}[postgres]"])
    scrub(site_packages)
    packed = scratch / "shiv.pyz"
    shiv = [sys.executable, "-m", "shiv", "--site-packages", str(site_packages)]
    options = ["--entry-point", ENTRY_POINT, "--python", INTERPRETER, "--output-file"]
    run([*shiv, *options, str(packed), "--compressed", "--reproducible"])
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    replace_main(packed, partial, (ROOT / "smsgw" / "zipapp.py").read_bytes())
    partial.chmod(0o755)
    partial.replace(output)


def run(command: list[str]) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(
        command, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def scrub(site_packages: Path) -> None:
    """Take out of an installed tree what depends on where and by what it was built."""
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    for record in site_packages.glob("*.dist-info/RECORD"):
        (record.parent / "direct_url.json").unlink(missing_ok=True)
        kept = [
            line
            for line in record.read_text().splitlines(keepends=True)
            if not line.startswith("../../bin/") and "/direct_url.json," not in line
        ]
        record.write_text("".join(kept))
    for path in site_packages.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
        elif not path.is_symlink():
            path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)


def replace_main(packed: Path, target: Path, main: bytes) -> None:
    """Copy shiv's zipapp with `main` as its `__main__.py`, entry by entry (same order, names
    and timestamps), after the same `#!` line."""
    data = packed.read_bytes()
    with zipfile.ZipFile(packed) as archive:
        entries = archive.infolist()
        start = entries[0].header_offset if entries else 0
        with target.open("wb") as out:
            out.write(data[:start])  # the `#!` line
            with zipfile.ZipFile(out, "w") as copy:
                for entry in entries:
                    body = main if entry.filename == "__main__.py" else archive.read(entry)
                    copy.writestr(entry, body, compress_type=entry.compress_type)


if __name__ == "__main__":
    raise SystemExit(main())
