"""scripts/check_site_links.py, the check that every internal link of the built site resolves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_site_links",
                                                  REPO / "scripts" / "check_site_links.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


links = _load_checker()


def _write(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")


def test_links_to_pages_anchors_and_files_that_exist_pass(tmp_path: Path) -> None:
    _write(tmp_path / "index.html", '<a href="guide.html#setup">x</a><a href="#top">top</a>'
           '<span id="top"></span><img src="_images/diagram.svg"><a href="reference/">ref</a>')
    _write(tmp_path / "guide.html", '<section id="setup"><a href="index.html">back</a></section>')
    _write(tmp_path / "reference" / "index.html", '<a href="../guide.html#setup">guide</a>')
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "diagram.svg").write_text("<svg/>", encoding="utf-8")
    assert links.broken_links(tmp_path) == ([], 6)


def test_a_missing_page_file_or_anchor_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "index.html", '<a href="gone.html">a</a><a href="guide.html#nowhere">b</a>'
           '<object data="_images/missing.svg"></object><a href="#here">c</a>')
    _write(tmp_path / "guide.html", '<h1 id="somewhere">guide</h1>')
    problems, checked = links.broken_links(tmp_path)
    assert checked == 4
    assert problems == ["index.html: gone.html (no such file)",
                        "index.html: guide.html#nowhere (no such anchor)",
                        "index.html: _images/missing.svg (no such file)",
                        "index.html: #here (no such anchor)"]


def test_links_to_other_sites_are_not_followed(tmp_path: Path) -> None:
    _write(tmp_path / "index.html", '<a href="https://docs.ansible.com/x.html#y">a</a>'
           '<a href="mailto:someone@example.org">b</a><a href="//cdn.example.org/x.js">c</a>')
    assert links.broken_links(tmp_path) == ([], 0)
