"""Health, readiness and metrics: no key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chatmedia.http.openapi import answers
from chatmedia.http.shapes import Status
from chatmedia.pipelines.health import check_ready

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=None, responses=answers(ok=Status), summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None, responses=answers(ok=Status), summary="Readiness")
async def readyz(request: Request) -> dict[str, str]:
    """200 when the database and the blob store both answer, else 503: a load balancer
    sends this node no traffic meanwhile."""
    await check_ready(request.app.state.services)
    return {"status": "ok"}


@router.get(
    "/metrics",
    response_class=Response,
    responses=answers(ok={CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}),
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    """Requests, bytes in and out, upload and download durations."""
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
