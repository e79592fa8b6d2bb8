"""The built HTML book, as a reader sees it: a real headless Chromium opens every page.

Needs `bash book/build.sh` first (tests/run.sh does it); marked `built`. Checks: math typeset
(no raw TeX left), every image loaded, kernel-free sliders change the figure, no console
errors, zero requests to any non-local host; and that re-executing each chapter printed the
same text as the build did.
"""

from __future__ import annotations

import functools
import http.server
import json
import pathlib
import re
import shutil
import threading
import urllib.parse

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.built

SITE = ROOT / "_build" / "html"
SKIP_PAGES = {"genindex.html", "search.html", "index.html"}  # index.html only redirects
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _pages() -> list[pathlib.Path]:
    if not SITE.exists():
        return []
    return sorted(
        p
        for p in SITE.rglob("*.html")
        if p.name not in SKIP_PAGES and not {"_static", "_sources", "reports"} & set(p.parts)
    )


@pytest.fixture(scope="module")
def site():
    if not (SITE / "index.html").exists():
        pytest.skip("no built book: run `bash book/build.sh` first")
    return SITE


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("Debian's chromium is not installed (tests/run.sh installs it)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_no_page_pulls_scripts_or_styles_from_the_network(site):
    bad = []
    for page in site.rglob("*.html"):
        html = page.read_text(errors="replace")
        for m in re.finditer(
            r"<(script|link|img|iframe)\b[^>]*\b(src|href)=[\"'](https?:)?//[^\"']+", html
        ):
            tag = m.group(0)
            if tag.startswith("<link") and not re.search(
                r"rel=[\"'](stylesheet|preload|modulepreload)", tag
            ):
                continue
            bad.append(f"{page.relative_to(site)}: {tag[:120]}")
    assert bad == [], "\n".join(bad[:20])


def _visit(browser, server, rel: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on(
        "console",
        lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "response",
        lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    page.goto(f"{server}/{rel}", wait_until="load")
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    # every image decoded and every font loaded; ("networkidle" waited a fixed 500 ms a page)
    page.wait_for_function(
        "() => [...document.images].every(i => i.complete) && document.fonts.status === 'loaded'"
    )
    return page, requests, errors


@pytest.mark.parametrize("rel", [p.relative_to(SITE).as_posix() for p in _pages()])
def test_page_renders_offline(browser, server, rel):
    page, requests, errors = _visit(browser, server, rel)
    try:
        foreign = [
            u
            for u in requests
            if urllib.parse.urlparse(u).scheme in ("http", "https", "ws", "wss")
            and urllib.parse.urlparse(u).hostname not in ("127.0.0.1", "localhost")
        ]
        assert foreign == [], f"requests to non-local hosts: {foreign}"
        assert errors == [], errors
        # math: MathJax replaced every TeX source with a rendered container, no raw TeX remains
        n_math = page.locator("div.math, span.math").count()
        n_typeset = page.locator("mjx-container").count()
        assert n_typeset >= n_math, f"{n_math} math elements but {n_typeset} typeset"
        errors_tex = page.locator("mjx-merror").all_inner_texts()
        assert errors_tex == [], f"MathJax could not typeset: {errors_tex[:5]}"
        # a display equation much wider than the text column needs sideways scrolling to read
        wide = page.evaluate("""() => [...document.querySelectorAll('mjx-container[display="true"]')]
            .filter(m => m.scrollWidth > 1.05 * m.closest('article').clientWidth)
            .map(m => `${m.scrollWidth}px: ${m.textContent.slice(0, 50)}`)""")
        assert wide == [], f"display equations wider than the page: {wide}"
        raw = raw_tex_outside_math(page)
        assert raw == [], f"raw TeX left in the text of the page: {raw[:5]}"
        broken = page.evaluate("""() => [...document.images]
            .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.src || '').slice(0, 80))""")
        assert broken == [], f"images that did not load: {broken}"
    finally:
        page.close()


# Text a reader sees outside math, code and cell outputs: a `$` or a `\command` there is TeX that
# Markdown cut apart (e.g. a line starting with `- \Theta` became a bullet) or MathJax missed.
_PROSE_JS = """() => {
    const art = document.querySelector('article') || document.body;
    const copy = art.cloneNode(true);
    copy.querySelectorAll('mjx-container, .math, pre, code, .cell_output, .output, script, style')
        .forEach(e => e.remove());
    return copy.textContent;
}"""


def raw_tex_outside_math(page) -> list[str]:
    """Each `$` or `\\command` left in the page's visible prose, with a little context."""
    text = page.evaluate(_PROSE_JS)
    return [
        text[max(0, m.start() - 30) : m.end() + 30] for m in re.finditer(r"\$|\\[A-Za-z]+", text)
    ]


FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(
    "fixture, broken",
    [("rope-2d-phases-before-fix.html", True), ("rope-2d-phases-after-fix.html", False)],
)
def test_raw_tex_check_catches_math_cut_apart_by_markdown(browser, fixture, broken):
    """The rope-2d "Phases" paragraph as Sphinx rendered it before and after the fix."""
    page = browser.new_page()
    try:
        page.set_content((FIXTURES / fixture).read_text())
        found = raw_tex_outside_math(page)
        assert bool(found) is broken, found
        if broken:
            assert any("\\Theta" in f for f in found) and any("$" in f for f in found), found
    finally:
        page.close()


def _animation_pages() -> list[str]:
    return [
        p.relative_to(SITE).as_posix()
        for p in _pages()
        if 'class="anim-slider"' in p.read_text(errors="replace")
    ]


@pytest.mark.parametrize("rel", _animation_pages())
def test_kernel_free_sliders_change_the_figure(browser, server, rel):
    page, _, errors = _visit(browser, server, rel)
    try:
        sliders = page.locator("input.anim-slider")
        assert sliders.count() >= 1
        for i in range(sliders.count()):
            slider = sliders.nth(i)
            img = page.locator("div.animation img").nth(i)
            slider.scroll_into_view_if_needed()
            before = img.get_attribute("src")
            top = int(slider.get_attribute("max"))
            assert top >= 1, "an animation with a single frame has no slider to move"
            slider.evaluate("(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }", top)
            after = img.get_attribute("src")
            assert after and after != before, f"slider {i} on {rel} did not change the figure"
        assert errors == [], errors
    finally:
        page.close()


def test_a_page_screenshot_for_people(browser, server, tmp_path_factory):
    """Leaves a screenshot of the first chapter under _build/screenshots for a human look."""
    pages = [p for p in _pages() if "geometry" in p.parts and p.name != "index.html"]
    if not pages:
        pytest.skip("no chapter pages yet")
    rel = pages[0].relative_to(SITE).as_posix()
    page, _, _ = _visit(browser, server, rel)
    out = ROOT / "_build" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / (pages[0].stem + ".png")), full_page=False)
    page.close()
    assert (out / (pages[0].stem + ".png")).stat().st_size > 10_000


# --------------------------------------------------------------------------- determinism


def _text_outputs(nb) -> list[str]:
    """Printed text and plain-text results per code cell (widgets and HTML carry random ids)."""
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream" and o["name"] == "stdout":
                parts.append("".join(o["text"]))
            elif o["output_type"] == "execute_result":
                data = o.get("data", {})
                if "application/vnd.jupyter.widget-view+json" in data or "text/html" in data:
                    continue
                parts.append("".join(data.get("text/plain", "")))
        out.append("".join(parts))
    return out


def test_re_executing_chapters_prints_the_same_numbers(request, site):
    """A second execution (tests/determinism.py picks which chapters) against the first, whose
    outputs the book shows (.kexue/executed, written by book/stage.py)."""
    other = request.config.getoption("--nb-executed-dir")
    if not other:
        pytest.skip("pass --nb-executed-dir with notebooks executed a second time")
    first_dir = ROOT / ".kexue" / "executed"
    again = sorted(pathlib.Path(other).rglob("*.ipynb"))
    if not again:
        pytest.skip(f"no chapter was chosen for a second execution (see {other})")
    printed = 0
    for mine in again:
        first = first_dir / mine.relative_to(other)
        assert first.exists(), f"{first}: the build did not execute this chapter"
        a = _text_outputs(json.loads(mine.read_text()))
        b = _text_outputs(json.loads(first.read_text()))
        assert len(a) == len(b), f"{mine.name}: the two executions have different cells"
        printed += sum(map(len, a))
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        assert diff == [], (
            f"{mine.name}: code cells {diff} printed different text on two runs:\n"
            f"{a[diff[0]][:300]!r}\nvs\n{b[diff[0]][:300]!r}"
        )
    assert printed > 100 * len(again), f"only {printed} characters printed: nothing compared"
