"""One rule for every string that comes from outside: file names, EXIF, results rows, calibration fields, hints.

Such a string is data, never markup or a command. Each sink gets it through one function here:

- :func:`readable` — one line a person can read: control characters, bidirectional overrides (which reverse
  what follows them) and bytes that were not valid UTF-8 (kept by Python as lone surrogates, "surrogate
  escapes", when it decodes a file name) are shown as visible escapes (``\\x1b``, ``\\u202e``, ``\\xff``).
  Used by HTML (after ``html.escape``), messages and figures.
- :func:`terminal_text` — :func:`readable`, then rich's markup escaped, so ``m[/]bad.jpg`` prints as itself
  and no escape sequence reaches the terminal raw.
- :func:`markdown_text` — :func:`readable`, then every ASCII punctuation character backslash-escaped, which
  CommonMark allows for each of them, and a word joiner (U+2060) inside each autolink start (Streamlit links
  bare URLs after reading the escapes): no link, image, HTML, autolink, emoji shortcode or Streamlit colour
  directive can form. For Streamlit widgets that only take Markdown (headings, captions,
  notices, labels).
- :func:`utf8_safe` — a string that encodes as UTF-8 for CSV, JSON, GeoJSON and HTML files, reversibly:
  lone surrogates become ``\\udcff``-style escapes that :func:`from_utf8_safe` turns back.

Bounded inputs (number of digits, hint length, sizes of files read) live beside their readers; this module
only decides how text is shown.
"""

from __future__ import annotations

import re

# C0 controls (newline and tab included: every sink is one line), DEL, C1 controls, the bidirectional
# embeddings/overrides/isolates and marks, and lone surrogates (bytes that were not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_ASCII_PUNCT = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")
_ESCAPED_SURROGATE = re.compile(r"\\udc([89a-f][0-9a-f])")
# Streamlit links bare `http(s)://`, `www.` and e-mail addresses after the escapes are read (its Markdown
# renderer's own autolink pass), so escaping cannot stop it. A word joiner (U+2060: invisible, not a break)
# inside each start does; readers see the same text.
_AUTOLINK_START = re.compile(r"(?i)(?<=http)(?=s?\\:)|(?<=www)(?=\\\.)|(?<=\\@)")
WORD_JOINER = "\u2060"


def _visible(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def readable(text: object) -> str:
    """`text` on one line with every invisible or direction-changing character shown as an escape."""
    return _UNSAFE.sub(_visible, "" if text is None else str(text))


def terminal_text(text: object) -> str:
    """`text` safe to print through rich: readable, with rich markup escaped."""
    from rich.markup import escape

    return escape(readable(text))


def markdown_text(text: object) -> str:
    """`text` safe inside Markdown (Streamlit's included): readable, every ASCII punctuation escaped, and an
    invisible word joiner inside each place an autolink could start."""
    return _AUTOLINK_START.sub(WORD_JOINER, _ASCII_PUNCT.sub(r"\\\1", readable(text)))


def utf8_safe(text: str) -> str:
    """`text` that encodes as UTF-8: lone surrogates (non-UTF-8 bytes of a file name) written as ``\\udcXX``
    escapes, reversed by :func:`from_utf8_safe`. Backslashes already in the text are left alone, so the
    round trip is exact for names without the literal sequence ``\\udc``."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text
    return "".join(f"\\u{ord(ch):04x}" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def from_utf8_safe(text: str) -> str:
    """The inverse of :func:`utf8_safe` for surrogate escapes of non-UTF-8 bytes."""
    if "\\udc" not in text:
        return text
    return _ESCAPED_SURROGATE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
