"""scripts/docs_coverage.py, the check that the built site documents every module, role and route.

`make docs-check` builds the real site and runs this check on it; these tests make sure the
check itself notices what is missing, on small sites written here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _load_checker():
    spec = importlib.util.spec_from_file_location("docs_coverage",
                                                  REPO / "scripts" / "docs_coverage.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


coverage = _load_checker()

# A route as sphinxcontrib-httpdomain writes it into the page (copied from a built page).
ROUTE_HTML = ('<dt class="sig sig-object http" id="{anchor}">\n<span class="sig-name descname">'
              '<span class="pre">{method}</span> </span><span class="sig-name descname">'
              '<span class="pre">{path}</span></span><a class="headerlink" href="#{anchor}" '
              'title="Link to this definition"></a></dt>')

SPECS = {
    "policy-runtime.json": {"openapi": "3.1.0", "paths": {
        "/policies": {"get": {}, "post": {}},
        "/policies/{uri}": {"get": {}, "delete": {}, "parameters": []},
        "/healthz": {"get": {}},
    }},
    "nunet-plugin.json": {"openapi": "3.1.0", "paths": {"/create": {"post": {}}}},
}


def _route_html(method: str, path: str) -> str:
    return ROUTE_HTML.format(anchor=f"{method.lower()}-{path}", method=method, path=path)


def _site(tmp_path: Path, *, leave_out: set[str] = frozenset(),
          hide_route: tuple[str, str] | None = None) -> tuple[Path, Path]:
    """A built site with a page for every module and role and every route, but what is left out."""
    site, openapi = tmp_path / "site", tmp_path / "openapi"
    pages = site / coverage.COLLECTION_PAGES
    pages.mkdir(parents=True)
    openapi.mkdir()
    for name in coverage.modules():
        if f"module {name}" not in leave_out:
            (pages / f"{name}_module.html").write_text("<html></html>")
    for name in coverage.roles():
        if f"role {name}" not in leave_out:
            (pages / f"{name}_role.html").write_text("<html></html>")
    for document, page in coverage.API_PAGES.items():
        (openapi / document).write_text(json.dumps(SPECS[document]))
        shown = sorted(coverage.routes(SPECS[document]) - {hide_route})
        (site / page).write_text("\n".join(_route_html(m, p) for m, p in shown))
    return site, openapi


def test_the_sources_list_every_module_and_role_of_the_collection() -> None:
    assert "gpu_facts" in coverage.modules() and "cluster_onboard" in coverage.modules()
    assert len(coverage.modules()) == len(list((REPO / "plugins" / "modules").glob("*.py")))
    assert "preflight" in coverage.roles() and "interlink" in coverage.roles()
    assert len(coverage.roles()) == len([p for p in (REPO / "roles").iterdir() if p.is_dir()])


def test_operations_are_read_from_the_openapi_paths_without_their_other_keys() -> None:
    assert coverage.routes(SPECS["policy-runtime.json"]) == {
        ("GET", "/policies"), ("POST", "/policies"), ("GET", "/policies/{uri}"),
        ("DELETE", "/policies/{uri}"), ("GET", "/healthz")}


def test_a_complete_site_has_nothing_missing(tmp_path: Path) -> None:
    assert coverage.missing(*_site(tmp_path)) == []


@pytest.mark.parametrize("left_out", ["module gpu_facts", "role preflight"])
def test_a_module_or_role_without_its_page_is_reported(tmp_path: Path, left_out: str) -> None:
    problems = coverage.missing(*_site(tmp_path, leave_out={left_out}))
    assert len(problems) == 1 and problems[0].startswith(f"{left_out}: no page")


def test_a_route_the_api_page_does_not_show_is_reported(tmp_path: Path) -> None:
    problems = coverage.missing(*_site(tmp_path, hide_route=("DELETE", "/policies/{uri}")))
    assert problems == ["route DELETE /policies/{uri}: not on reference/policy-runtime-api.html"]


def test_an_api_page_that_was_not_built_is_reported(tmp_path: Path) -> None:
    site, openapi = _site(tmp_path)
    (site / coverage.API_PAGES["nunet-plugin.json"]).unlink()
    assert coverage.missing(site, openapi) == [
        "reference/nunet-plugin-api.html: missing, or its OpenAPI document nunet-plugin.json is"]
