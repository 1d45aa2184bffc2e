"""Check that every internal link of the built documentation site leads to a file and anchor.

Sphinx resolves the references it knows (pages, headings, labels) and warns about the
others, but the generated pages also carry plain links (antsibull-docs' option anchors,
the HTTP API's route anchors, the theme's navigation). This check reads every HTML page of
the built site and follows each link, image and embedded object that stays inside the
site. Links to other sites are not fetched.

    python scripts/check_site_links.py [SITE_DIR]     (default: build/docs)
"""

from __future__ import annotations

import argparse
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]
# Which attribute of which element points at another file or anchor.
_LINK_ATTRIBUTES = {"a": "href", "img": "src", "object": "data", "link": "href",
                    "script": "src", "iframe": "src"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if values.get(name):
                self.anchors.add(values[name])
        target = values.get(_LINK_ATTRIBUTES.get(tag, ""))
        if target:
            self.links.append(target)


def _read(page: Path) -> _Page:
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parsed


def broken_links(site: Path) -> tuple[list[str], int]:
    """(every internal link whose file or anchor is missing, as 'page: link'; links checked)."""
    pages = {page.resolve(): _read(page) for page in sorted(site.rglob("*.html"))}
    problems, checked = [], 0
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("javascript:"):
                continue  # another site (or a script): not fetched
            checked += 1
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site.resolve())}: {link}"
            if not target.exists():
                problems.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                anchors = pages[target].anchors if target in pages else _read(target).anchors
                if unquote(parts.fragment) not in anchors:
                    problems.append(f"{where} (no such anchor)")
    return problems, checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", type=Path, nargs="?", default=REPO / "build" / "docs")
    args = parser.parse_args()
    problems, checked = broken_links(args.site)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} broken internal links", file=sys.stderr)
        return 1
    print(f"docs: all {checked} internal links of {args.site} lead somewhere")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
