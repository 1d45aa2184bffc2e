"""Build the documentation site into build/docs/ (``make docs``; ``--check`` for ``make test``).

The pages written by hand live in docs/. Everything generated goes under build/, never
into docs/: this script copies docs/ to build/docs-src/, adds the generated reference to
that copy, and runs Sphinx on it:

- reference/collection/: one page per module, filter plugin and role of the aios.platform
  collection, written by antsibull-docs from the plugins' DOCUMENTATION and the roles'
  meta/argument_specs.yml, read through build/collections/ where this checkout is the
  collection;
- reference/*.json: the OpenAPI documents of the policy runtime and the NuNet plugin,
  exported from the apps by scripts/export_openapi.py and rendered by the pages beside them.

Every build then checks that each module, role and HTTP route has its place in the site
(scripts/docs_coverage.py) and that every internal link of the built pages leads to a page
and anchor that exist (scripts/check_site_links.py). ``--check`` (``make docs-check``, part
of ``make test``) builds with warnings as errors, every warning reported before failing,
runs Sphinx's link checker with external links ignored (the web is not reached), and fails
when either check finds something; without it they are reported only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from check_site_links import broken_links
from docs_coverage import missing as undocumented

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
BIN = Path(sys.executable).parent
COLLECTION = ("aios", "platform")


def _run(*command: str | Path, env: dict[str, str] | None = None) -> None:
    printable = " ".join(str(part) for part in command)
    print(f"+ {printable}", flush=True)
    subprocess.run([str(part) for part in command], check=True, env=env)


def copy_sources(source: Path, dest: Path) -> None:
    """A fresh copy of the hand-written pages (copy2 keeps mtimes: Sphinx rebuilds less)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)


def collection_path() -> Path:
    """The collections path where this checkout is aios.platform (``make collection-link``)."""
    link = BUILD / "collections" / "ansible_collections" / COLLECTION[0] / COLLECTION[1]
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../../../.."))
    return BUILD / "collections"


def generate_collection_reference(collections_path: Path, dest: Path) -> None:
    # antsibull-docs insists on an output directory that only its owner can write to.
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    config = REPO / "docs" / "reference" / "antsibull-docs.cfg"
    # --fail-on-error: a plugin or role whose documentation does not parse fails the build
    # instead of becoming an error page.
    _run(BIN / "antsibull-docs", "--config-file", config, "collection", "--use-current",
         "--squash-hierarchy", "--fail-on-error", "--cleanup", "everything",
         "--dest-dir", dest, ".".join(COLLECTION), env=env)


def export_openapi(dest: Path) -> None:
    _run(sys.executable, REPO / "scripts" / "export_openapi.py", dest)


def sphinx(builder: str, source: Path, out: Path, strict: bool) -> None:
    command: list[str | Path] = [BIN / "sphinx-build", "-b", builder, "-q", "-j", "auto",
                                 "-d", BUILD / "docs-doctrees", source, out]
    if strict:
        command[1:1] = ["-W", "--keep-going"]
    _run(*command)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="warnings are errors, then check every internal link")
    parser.add_argument("--source", type=Path, default=REPO / "docs",
                        help="the hand-written pages (default: docs/)")
    parser.add_argument("--out", type=Path, default=BUILD / "docs",
                        help="where the HTML site goes (default: build/docs/)")
    args = parser.parse_args()
    started = time.monotonic()
    source = BUILD / "docs-src"
    copy_sources(args.source, source)
    collections = collection_path()
    generate_collection_reference(collections, source / "reference" / "collection")
    export_openapi(source / "reference")
    # A fresh site: a page left over from an earlier build would hide a missing one.
    shutil.rmtree(args.out, ignore_errors=True)
    try:
        sphinx("html", source, args.out, strict=args.check)
        if args.check:
            # Sphinx's link checker, for what it checks itself; the web is not reached.
            sphinx("linkcheck", source, BUILD / "docs-linkcheck", strict=True)
    except subprocess.CalledProcessError as failed:
        print(f"docs: sphinx-build failed (exit {failed.returncode}); the pages it read are "
              f"copies in {source.relative_to(REPO)}/ of those in docs/", file=sys.stderr)
        return 1
    problems = undocumented(args.out, source / "reference")
    links, checked = broken_links(args.out)
    for title, found in (("not documented", problems), ("broken internal links", links)):
        if found:
            print(f"docs: {title}:\n  " + "\n  ".join(found), file=sys.stderr)
    if args.check and (problems or links):
        return 1
    if not problems:
        print("docs: every module, role and HTTP route has its place in the site")
    if not links:
        print(f"docs: all {checked} internal links lead to a page and anchor that exist")
    print(f"docs: {args.out}/index.html built in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
