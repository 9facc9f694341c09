"""``GET /console``: the web console (static files shipped in the package, no CDN), and the
console's API endpoints (:mod:`.console_api`), in one router for ``app.include_router``.

The page holds no secret and needs no key: it asks for one, keeps it in the browser's
``sessionStorage`` (never in a URL or a cookie) and sends it as ``X-API-Key`` with every
call to the same HTTP API any client uses, so the roles apply as they do there. The files
are served by name from a fixed list, with a Content-Security-Policy that allows only the
page's own script, style and API (images as ``blob:`` URLs of fetched thumbnails).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Path as PathParam
from fastapi.responses import Response

from ..errors import ApiError
from . import console_api

__all__ = ["ASSETS", "CSP", "router", "console_page", "console_asset"]

#: the files of the console (``siamkit/service/console/``) and their content types
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(tags=["console"])
router.include_router(console_api.router)


@lru_cache(maxsize=None)
def _asset(name: str) -> bytes:
    return resources.files("siamkit.service").joinpath("console", name).read_bytes()


def _serve(name: str) -> Response:
    headers = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
    return Response(_asset(name), media_type=ASSETS[name], headers=headers)


@router.get("/console", response_class=Response, include_in_schema=False)
def console_page() -> Response:
    """The console's page (it asks for an API key)."""
    return _serve("index.html")


@router.get("/console/{name}", response_class=Response, include_in_schema=False)
def console_asset(name: str = PathParam(..., max_length=64)) -> Response:
    """One of the console's files (:data:`ASSETS`), 404 for any other name.
    \f
    Args:
        name: the file's name.

    Returns:
        The file.
    """
    if name not in ASSETS:
        raise ApiError(404, "not_found", "no such console file")
    return _serve(name)
