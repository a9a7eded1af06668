"""The view remembers what a catalog resolved (gates name the same services and environments again and again), per
catalog: a changed catalog is a new one, and the next view shows what it says."""

from __future__ import annotations

from signoff.catalog import Catalog
from signoff.notifier.domain import ApprovalView, render
from tests.unit.notifier.builders import NOW, PAGE, catalog, opened


def _text(view: ApprovalView) -> str:
    return render(view, "email").body


def test_the_same_catalog_gives_the_same_view_and_a_changed_one_shows_its_change() -> None:
    first = catalog()
    event = opened()
    before = _text(ApprovalView.from_gate_opened(event, first, now=NOW, approval_page_url=PAGE))
    assert before == _text(ApprovalView.from_gate_opened(event, first, now=NOW, approval_page_url=PAGE))
    document = first.document.model_dump(by_alias=True, mode="json")
    staging = next(entry for entry in document["environments"] if entry["identifier"] == "staging")
    staging["name"] = "Staging (renamed)"
    changed = Catalog.from_mapping(document)
    after = _text(ApprovalView.from_gate_opened(event, changed, now=NOW, approval_page_url=PAGE))
    assert "Staging (renamed)" in after and "Staging (renamed)" not in before
    # The first catalog's answers are still its own.
    assert _text(ApprovalView.from_gate_opened(event, first, now=NOW, approval_page_url=PAGE)) == before


def test_an_empty_catalog_leaves_the_references_unresolved_after_a_full_one_resolved_them() -> None:
    event = opened()
    full = _text(ApprovalView.from_gate_opened(event, catalog(), now=NOW, approval_page_url=PAGE))
    empty = _text(ApprovalView.from_gate_opened(event, Catalog.empty(), now=NOW, approval_page_url=PAGE))
    assert "unresolved: staging" in empty and "unresolved: staging" not in full
