"""nanolib.html: chapters escape corpus text and model output; the book sanitises HTML outputs
(the browser half of this is tests/test_browser.py's hostile book)."""

from __future__ import annotations

import pandas as pd

from nanolib.html import escape_table, escape_text, sanitize

SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'


def test_escape_text():
    assert escape_text(SCRIPT + IMG) == (
        "&lt;script&gt;window.__pwned = 1&lt;/script&gt;"
        "&lt;img src=x onerror=&quot;window.__pwned = 2&quot;&gt;"
    )
    assert escape_text("a & b 'c'") == "a &amp; b &#x27;c&#x27;"
    assert escape_text(42) == "42"


def test_escape_table_escapes_cells_and_labels():
    df = pd.DataFrame({"prompt": [SCRIPT], IMG: ["fine"]}, index=[IMG])
    html = escape_table(df).set_properties(**{"white-space": "pre-wrap"}).to_html()
    assert "<script" not in html and "<img" not in html
    assert html.count("&lt;script&gt;") == 1 and html.count("&lt;img") == 2
    assert "white-space: pre-wrap" in html  # styling still applies
    # the trap it replaces: a Styler does not escape by itself
    assert "<script>" in df.style.to_html()


def test_sanitize_removes_what_runs():
    dirty = (
        SCRIPT
        + IMG
        + '<b onclick="x()">bold</b><a href="javascript:alert(1)">js</a>'
        + '<a href="data:text/html,hi">data</a><img src="http://example.com/t.png">'
        + "<iframe src='x'></iframe><svg><script>y()</script></svg><object data='x'></object>"
        + "<style>td { color: red }</style><!-- a comment -->"
    )
    clean = sanitize(dirty)
    for bad in (
        "<script",
        "onerror",
        "onclick",
        "javascript:",
        "data:text",
        "http://",
        "<iframe",
        "<svg",
        "<object",
        "y()",
        "comment",
    ):
        assert bad not in clean, (bad, clean)
    assert "<b>bold</b>" in clean and "<style>td { color: red }</style>" in clean


def test_sanitize_keeps_what_our_outputs_use():
    df = pd.DataFrame({"a": [1.5, 2.0], "b": ["x", "y"]})
    for html in (
        df._repr_html_(),
        escape_table(df).set_properties(**{"text-align": "left"}).to_html(),
        '<div style="white-space:pre-wrap"><span style="background:#fde2e4">tok</span></div>',
        "<p><b style='color:#c0392b'>⟨bos⟩</b> text</p><hr>",
        "<details><summary>s</summary>d</details>",
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="a plot" width="10">',
    ):
        clean = sanitize(html)
        for kept in (
            "<table",
            "<style",
            "<thead",
            "<th",
            "<td",
            "class=",
            "id=",
            "style=",
            "<span",
            "<b",
            "<hr>",
            "<details>",
            "data:image/png",
            'alt="a plot"',
        ):
            if kept in html:
                assert kept in clean, (kept, clean)
    scoped = sanitize(df._repr_html_())
    assert ".dataframe tbody tr th" in scoped  # pandas' own <style scoped> block
