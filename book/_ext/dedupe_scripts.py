"""A Sphinx extension of the book: each page's scripts once.

Jupyter Book 1.x lets sphinx-thebe register its inline configuration script twice, and two
inline ``const THEBE_JS_URL = ...`` on one page throw "Identifier 'THEBE_JS_URL' has already
been declared" in every browser (the browser check reads the console). On each page, a script
whose file, body and attributes equal an earlier one's is dropped.
"""
from __future__ import annotations


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # an inline script's filename is None or "" depending on who added it: the same script
    return (getattr(script, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", dedupe, priority=900)   # after the theme and extensions add theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
