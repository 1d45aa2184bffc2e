"""Check that the built documentation site documents every module, role and HTTP route.

antsibull-docs skips what it cannot find (a role without meta/argument_specs.yml, a module
the collection does not load) and the OpenAPI renderer skips what it cannot render, both
without a warning: this check compares the built HTML with the sources and lists every
page or route that is missing.

    python scripts/docs_coverage.py [SITE_DIR] [OPENAPI_DIR]

(defaults: build/docs and build/docs-src/reference, as scripts/build_docs.py writes them).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLLECTION_PAGES = Path("reference") / "collection"

# The OpenAPI document each API reference page renders.
API_PAGES = {
    "policy-runtime.json": Path("reference") / "policy-runtime-api.html",
    "nunet-plugin.json": Path("reference") / "nunet-plugin-api.html",
}
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# How sphinxcontrib-httpdomain writes a route's signature: method, then path.
_ROUTE_SIGNATURE = re.compile(
    r'<span class="pre">([A-Z]+)</span> </span><span class="sig-name descname">'
    r'<span class="pre">([^<]+)</span>')


def modules(repo: Path = REPO) -> list[str]:
    return sorted(p.stem for p in (repo / "plugins" / "modules").glob("*.py")
                  if not p.stem.startswith("_"))


def roles(repo: Path = REPO) -> list[str]:
    return sorted(p.name for p in (repo / "roles").iterdir() if (p / "tasks").is_dir())


def routes(openapi: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in openapi.get("paths", {}).items()
            for method in item if method in _HTTP_METHODS}


def rendered_routes(page: str) -> set[tuple[str, str]]:
    return {(method, html.unescape(path)) for method, path in _ROUTE_SIGNATURE.findall(page)}


def missing(site: Path, openapi_dir: Path, repo: Path = REPO) -> list[str]:
    """Every module, role or route without its place in the site, one line each."""
    problems = []
    pages = site / COLLECTION_PAGES
    for name in modules(repo):
        if not (pages / f"{name}_module.html").is_file():
            problems.append(f"module {name}: no page {COLLECTION_PAGES}/{name}_module.html")
    for name in roles(repo):
        if not (pages / f"{name}_role.html").is_file():
            problems.append(f"role {name}: no page {COLLECTION_PAGES}/{name}_role.html "
                            "(does it have meta/argument_specs.yml?)")
    for document, page in API_PAGES.items():
        spec_file, page_file = openapi_dir / document, site / page
        if not spec_file.is_file() or not page_file.is_file():
            problems.append(f"{page}: missing, or its OpenAPI document {document} is")
            continue
        expected = routes(json.loads(spec_file.read_text(encoding="utf-8")))
        shown = rendered_routes(page_file.read_text(encoding="utf-8"))
        problems += [f"route {method} {path}: not on {page}"
                     for method, path in sorted(expected - shown)]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", type=Path, nargs="?", default=REPO / "build" / "docs")
    parser.add_argument("openapi", type=Path, nargs="?",
                        default=REPO / "build" / "docs-src" / "reference")
    args = parser.parse_args()
    problems = missing(args.site, args.openapi)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} modules, roles or routes are not documented",
              file=sys.stderr)
        return 1
    print(f"docs: every module ({len(modules())}), role ({len(roles())}) and HTTP route "
          "has its page")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
