"""The OpenAPI document the api serves is the committed schemas/openapi.json, and it describes what the api does."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.integration.api.conftest import FrontDoor

pytestmark = pytest.mark.integration

COMMITTED = Path(__file__).resolve().parents[3] / "schemas" / "openapi.json"


async def test_the_served_document_is_the_committed_one(front_door: FrontDoor) -> None:
    async with httpx.AsyncClient() as client:
        served = await client.get(f"{front_door.url}/api/v1/openapi.json")
    assert served.status_code == 200
    document = served.json()
    assert document == json.loads(COMMITTED.read_text())
    assert document["openapi"].startswith("3.1")
    decide = document["paths"]["/api/v1/gates/{gate_id}/decisions"]["post"]
    assert {"200", "202", "400", "401", "403", "404", "409", "413", "422"} <= decide["responses"].keys()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_health_and_metrics_are_served_like_every_role(front_door: FrontDoor) -> None:
    async with await front_door.client("dana") as dana:
        assert (await dana.get("/gates/no-such-gate")).status_code == 404
    port = front_door.api.http.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
    assert ready.status_code == 200, ready.text
    assert metrics.status_code == 200
    assert 'signoff_api_requests_total{method="GET",route="/api/v1/gates/{gate_id}",status="404"}' in metrics.text
