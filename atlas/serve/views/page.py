"""The browser page at ``/`` and the interactive API docs at ``/docs`` (Swagger UI from the
installed swagger-ui-bundle package; no CDN)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse((resources.files("atlas.serve") / "static" / "index.html").read_text(
        encoding="utf-8"))


@router.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(openapi_url="/openapi.json", title="atlas API",
                               swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger/swagger-ui.css",
                               swagger_favicon_url="/static/swagger/favicon-32x32.png")
