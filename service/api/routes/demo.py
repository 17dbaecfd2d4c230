"""A small demo page: upload a clip or a frame + audio, see the overlay, boxes, score and sounding flag."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["demo"])

_PAGE = Path(__file__).resolve().parents[2] / "static" / "index.html"


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
async def demo_page() -> HTMLResponse:
    # The page holds no secrets; it calls /localize, which checks the API key if one is configured.
    return HTMLResponse(_PAGE.read_text(encoding="utf-8"))
