"""Text from the corpus or a model, shown as HTML: escape it in chapters, sanitise it in the book.

Chapters build HTML around text they do not control (corpus passages, tokens, model
completions). Every such string goes through `escape_text`, and every DataFrame of such text is
shown through `escape_table` (pandas' `DataFrame.style` does not escape cells by itself; a plain
`DataFrame` display does). The book build then passes every HTML output through `sanitize`, an
allow-list of the tags, attributes and URL schemes our chapters' outputs need, so a chapter that
forgets to escape shows text instead of running a script.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import nh3

if TYPE_CHECKING:
    import pandas as pd
    from pandas.io.formats.style import Styler

# What our outputs use: pandas tables (with their <style> blocks and Styler ids/classes),
# coloured spans and divs, simple prose markup, and images embedded as data: URLs.
TAGS = (nh3.ALLOWED_TAGS - {"map", "area"}) | {"style"}
ATTRIBUTES = {
    "*": {"class", "id", "style", "title", "align", "dir", "lang"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "table": {"border", "summary"},
    "style": {"type", "scoped"},
    "td": {"colspan", "rowspan", "headers"},
    "th": {"colspan", "rowspan", "headers", "scope"},
    "col": {"span"},
    "colgroup": {"span"},
    "ol": {"start"},
    "details": {"open"},
    "time": {"datetime"},
}
URL_SCHEMES = {"http", "https", "mailto", "data"}


def escape_text(text: object) -> str:
    """The text with &, <, >, " and ' escaped: safe inside an HTML element or attribute."""
    return html.escape(str(text), quote=True)


def escape_table(df: pd.DataFrame) -> Styler:
    """A Styler of df whose cells and labels are HTML-escaped; chain `.set_properties` etc.

    A later `.format(...)` replaces this formatter for its cells: pass `escape="html"` to it too.
    """
    return (
        df.style.format(escape="html")
        .format_index(escape="html", axis=0)
        .format_index(escape="html", axis=1)
    )


def _attribute(tag: str, name: str, value: str) -> str | None:
    """Only images embedded in the page: an <img src> elsewhere would fetch from the network."""
    if tag == "img" and name == "src" and not value.lower().startswith("data:image/"):
        return None
    if tag == "a" and name == "href" and value.lower().startswith("data:"):
        return None
    return value


def sanitize(fragment: str) -> str:
    """An HTML fragment with scripts, event handlers and unknown tags or URLs removed."""
    return nh3.clean(
        fragment,
        tags=TAGS,
        clean_content_tags={"script", "noscript", "iframe", "object", "embed", "template"},
        attributes=ATTRIBUTES,
        attribute_filter=_attribute,
        url_schemes=URL_SCHEMES,
        strip_comments=True,
    )
