"""Fixtures for the deploy/ tests: each overlay rendered once per session by the real kustomize (kubectl)."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import DEPLOY, OVERLAYS, Manifest, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    """overlay name -> the objects `kubectl apply -k deploy/overlays/NAME` would apply."""
    return {overlay: render(DEPLOY / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def objects(rendered: dict[str, list[Manifest]], overlay: str) -> list[Manifest]:
    return rendered[overlay]
