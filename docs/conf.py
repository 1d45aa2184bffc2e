# Sphinx configuration of the aios.platform documentation site.
#
# Build it with `make docs` (into build/docs/): scripts/build_docs.py copies these pages
# to build/docs-src/, adds the generated reference (the collection's plugin and role pages
# from antsibull-docs, the HTTP APIs' OpenAPI documents exported from the apps) and runs
# Sphinx there. `make test` builds it with warnings as errors and checks the links.
"""Sphinx settings: MyST Markdown guides, antsibull-docs reference, OpenAPI, Graphviz."""

from __future__ import annotations

project = "aios.platform"
author = "AIOS platform maintainers"
copyright = "AIOS platform maintainers, GPL-3.0-or-later"
html_title = "aios.platform documentation"
html_short_title = "aios.platform"

extensions = [
    "myst_parser",  # the guides are MyST Markdown
    "sphinx_antsibull_ext",  # the roles and directives of antsibull-docs' generated pages
    "sphinxcontrib.openapi",  # the HTTP API reference, from the exported OpenAPI documents
    "sphinx.ext.graphviz",  # the architecture diagram, drawn by `dot` at build time
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "reference/antsibull-docs.cfg"]

# MyST: `:::` fences for directives, definition lists, and anchors for headings up to
# level 3, so `[text](page.md#a-section)` links resolve (and are checked) like references.
myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

# Every reference must resolve: a missing page, heading, option or role is a warning,
# and `make test` turns warnings into errors.
nitpicky = True

# What antsibull-docs' generated pages expect (as its sphinx-init writes them).
pygments_style = "ansible"
highlight_language = "YAML+Jinja"
default_role = "any"

html_theme = "sphinx_ansible_theme"
html_show_sphinx = False
html_copy_source = False
html_use_index = False
html_static_path = ["_static"]
html_css_files = ["aios.css"]
html_theme_options = {
    "collapse_navigation": False,
    "navigation_depth": 3,
    # Not the Ansible project's own links (blog, forum) above and under the navigation.
    "topbar_links": {},
    "show_extranav": False,
    # The logo's link: "/" by default, which is nowhere when the site is opened from disk.
    "documentation_home_url": "https://github.com/aios-platform/aios.platform",
}

graphviz_output_format = "svg"

# The OpenAPI renderer writes an example response for every route; for a route that
# answers with plain text (e.g. /metrics) the example is not valid JSON, and Pygments then
# falls back to highlighting it loosely. That fallback is the right result, not a problem.
suppress_warnings = ["misc.highlighting_failure"]

# `make test` runs the link checker for the links inside this site only: the CI machine
# reaches no web site, so external links are listed in the output but never fetched.
linkcheck_ignore = [r"https?://.*", r"mailto:.*"]
linkcheck_anchors = True
