"""The live page's static files (``arkor_trio/server/static/``), served from memory.

Only the files listed in :data:`FILES` are served: no directory walking, no path from the
request ever touches the file system. They are read once, at first use. Every page response
carries a strict Content-Security-Policy (own scripts and styles only, no framing) and no
referrer outside this origin, so the one-time login token in ``/login?token=`` never leaks (a
referrer to the same origin keeps Chromium sending the real ``Origin`` on the login form).
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["FILES", "PAGE_HEADERS", "page_file"]

STATIC_DIR = Path(__file__).with_name("static")

#: URL path -> (file name, content type).
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/login.html": ("login.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/chart.js": ("chart.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
]


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def page_file(path: str) -> tuple[bytes, str] | None:
    """``(body, content_type)`` of a page path, or None when it is not one of :data:`FILES`."""
    found = FILES.get(path)
    if found is None:
        return None
    name, content_type = found
    return _read(name), content_type
