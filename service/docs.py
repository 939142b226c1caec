"""The API's reference in a browser, at /api/docs: Swagger UI rendering /api/openapi.json. Its assets
are the dist files of Swagger UI that the pinned `flask-swagger-ui` package ships (its version is
Swagger UI's), served by the API itself: the page loads nothing from elsewhere, and runs no inline
script, so a strict Content-Security-Policy holds."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from aiohttp import web

from service.auth import public

DOCS_PATH = "/api/docs"
ASSETS_PATH = DOCS_PATH + "/{asset}"
DOCUMENT_PATH = "/api/openapi.json"

# Nothing but this origin's own files; Swagger UI's styles set element styles from script (CSSOM),
# which style-src allows, and its icons are data: images.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

_PAGE = f"""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Commons Users API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{DOCS_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_PATH}/swagger-ui-bundle.js"></script>
<script src="{DOCS_PATH}/index.js"></script>
</body>
</html>
"""

# What the page runs once Swagger UI is loaded: the document of this API, nothing online (no
# validator badge), the requests of "Try it out" with the browser's session cookie (same origin).
_INITIALIZER = f"""\
window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{DOCUMENT_PATH}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  }});
}});
"""

# The files the page loads, from Swagger UI's dist folder, and their media types.
_DIST_FILES = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}


def _dist_folder() -> Path:
    """Where the package keeps Swagger UI's dist files; found without importing it (it is a Flask
    blueprint, and Flask is never loaded here)."""
    spec = find_spec("flask_swagger_ui")
    assert spec is not None and spec.submodule_search_locations, "flask-swagger-ui is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


_DIST = _dist_folder()


@public
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(
        text=_PAGE, content_type="text/html", charset="utf-8", headers={**_NO_CACHE, "Content-Security-Policy": _POLICY}
    )


@public
async def docs_asset(request: web.Request) -> web.StreamResponse:
    """One of the page's files, by name from a fixed list: never a path into the file system."""
    name = request.match_info["asset"]
    if name == "index.js":
        return web.Response(text=_INITIALIZER, content_type="text/javascript", charset="utf-8", headers=_NO_CACHE)
    media_type = _DIST_FILES.get(name)
    if media_type is None:
        raise web.HTTPNotFound()
    # Revalidated on every load (ETag, Last-Modified): a new version of the package is seen at once.
    return web.FileResponse(_DIST / name, headers={**_NO_CACHE, "Content-Type": f"{media_type}; charset=utf-8"})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(DOCS_PATH, docs_page)
    router.add_get(ASSETS_PATH, docs_asset)
