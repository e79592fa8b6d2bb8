"""Small Sphinx fixes for the book, loaded through ``sphinx.local_extensions`` in _config.yml.

sphinx-thebe registers its inline configuration script once per reading pass, so a page can
carry it twice and the browser reports "Identifier 'THEBE_JS_URL' has already been declared".
Thebe is off in this book (no live-code button), but Jupyter Book always loads the extension;
this drops duplicate script entries from every page.
"""

from __future__ import annotations


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # inline scripts come with filename None or "" depending on who added them
        filename = getattr(script, "filename", script) or ""
        key = (str(filename), repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=999)  # after everyone else
    return {"parallel_read_safe": True, "parallel_write_safe": True}
