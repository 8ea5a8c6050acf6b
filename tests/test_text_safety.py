"""geocore.data.text: the one rule for strings from outside (names, EXIF, results rows, calibration fields)."""

from __future__ import annotations

import os

import pytest

from geocore.data.text import WORD_JOINER, from_utf8_safe, markdown_text, readable, terminal_text, utf8_safe


def test_readable_shows_controls_bidi_and_bad_bytes_as_escapes():
    name = os.fsdecode(b"caf\xe9\x1b]0;pwned\x07") + "\u202eGPJ.exe\nx"
    shown = readable(name)
    assert shown == "caf\\xe9\\x1b]0;pwned\\x07\\u202eGPJ.exe\\x0ax"
    assert shown.isprintable()
    assert readable("Zürich 東京.jpg") == "Zürich 東京.jpg"  # ordinary text unchanged
    assert readable(None) == ""


def test_terminal_text_escapes_rich_markup():
    from rich.console import Console

    console = Console(file=open(os.devnull, "w"), record=True, width=200)
    console.print(terminal_text("m[/]bad[red].jpg\x1b[2J"))
    assert console.export_text().strip() == "m[/]bad[red].jpg\\x1b[2J"


@pytest.mark.parametrize("hostile", [
    "![a](https:attacker.example).jpg", "https://attacker.example/x", "www.attacker.example", "<img src=x>",
    ":red[alarm] :material/home: :smile:", "a@attacker.example", "$x^2$", "*bold* _it_ `code` ~~s~~",
])
def test_markdown_text_leaves_no_markdown_active(hostile):
    import markdown_it  # CommonMark reference parser (a dependency of rich); linkify on to catch autolinks

    md = markdown_it.MarkdownIt("commonmark").enable(["linkify"]) if _has_linkify() else markdown_it.MarkdownIt()
    html = md.render(markdown_text(hostile))
    assert "<a " not in html and "<img" not in html and "<em>" not in html and "<code>" not in html
    # every character comes back: the escapes are for the parser, not the reader
    assert html.strip().removeprefix("<p>").removesuffix("</p>").replace("&lt;", "<").replace("&gt;", ">") \
        .replace("&quot;", '"').replace("&amp;", "&").replace(WORD_JOINER, "") == hostile


def _has_linkify() -> bool:
    try:
        import linkify_it  # noqa: F401
    except ImportError:
        return False
    return True


def test_utf8_safe_round_trips_non_utf8_names():
    name = os.fsdecode(b"photo-\xff\xfe.jpg")
    safe = utf8_safe(name)
    safe.encode("utf-8")  # no UnicodeEncodeError
    assert safe == "photo-\\udcff\\udcfe.jpg"
    assert from_utf8_safe(safe) == name
    assert utf8_safe("plain.jpg") == "plain.jpg" and from_utf8_safe("plain.jpg") == "plain.jpg"
