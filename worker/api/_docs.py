"""``/docs`` without internet: Swagger UI's files served by the API itself.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a
CDN, so on a machine without internet (a support desk's, an air-gapped
cluster's) it is blank. The files come instead from the ``swagger-ui-bundle-v2``
wheel (Swagger UI under the Apache-2.0 licence, whose text ships inside that
wheel), installed with the project: nothing is downloaded at run time and
nothing is vendored here. Swagger UI's online validator badge, which asks a
public server about the document, is turned off. ``/redoc`` is not served: its
script, too, would come from a CDN.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from worker.serving import Refused

ASSETS = "/docs/assets"
# The only files the page needs; nothing else of the bundle's directory is served.
FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def docs_routes(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title}: API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(ASSETS + "/{name}")
    async def asset(name: str) -> Response:
        if name not in FILES:
            raise Refused(404, "path: no such file")
        return FileResponse(
            str(swagger_ui_path / name), media_type=FILES[name], headers={"Cache-Control": "max-age=86400"}
        )

    return router
