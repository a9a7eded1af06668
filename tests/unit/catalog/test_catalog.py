"""The catalog file: loading, cross-checks with path-named errors, lookups, links and ref resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from signoff.catalog import Catalog, CatalogError, CatalogLookupError, Resolved, Unresolved

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "catalog.yaml"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLE)


def problems(data: dict) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        Catalog.from_mapping(data, "test.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_example_catalog_loads_with_every_kind(catalog: Catalog) -> None:
    assert catalog.service("checkout").name == "Checkout API"
    assert catalog.environment("prod_eu").type == "Production"
    assert [env.identifier for env in catalog.environments_of_group("production")] == ["prod_eu", "prod_us"]
    assert catalog.infrastructure("eks_eu", "prod_eu").details.namespace == "shop"
    assert catalog.gitops_cluster("argo_prod_eu").url == "https://argocd.prod-eu.example.com"
    assert [infra.identifier for infra in catalog.infrastructures_of("prod_us")] == ["eks_us"]
    assert catalog.service("storefront").tags == {"web": ""}  # a list of words is key-only tags


def test_resolve_ref_returns_the_entry_with_explicit_then_templated_links(catalog: Catalog) -> None:
    resolved = catalog.resolve_ref("service", "checkout")
    assert isinstance(resolved, Resolved)
    assert (resolved.identifier, resolved.name) == ("checkout", "Checkout API")
    assert [link.name for link in resolved.links] == ["Repository", "Runbook"]
    assert resolved.links[1].url == "https://runbooks.example.com/services/checkout"

    infra = catalog.resolve_ref("infrastructure", "eks_us", environment="prod_us")
    assert isinstance(infra, Resolved)
    assert infra.links[0].url == "https://grafana.example.com/d/k8s-workloads?var-cluster=prod-us-1&var-namespace=shop"


def test_expressions_and_unknown_refs_are_unresolved_never_blank(catalog: Catalog) -> None:
    expression = catalog.resolve_ref("service", "<+pipeline.variables.svc>")
    assert isinstance(expression, Unresolved)
    assert expression.raw == "<+pipeline.variables.svc>"
    assert "expression" in expression.reason

    unknown = catalog.resolve_ref("environment", "qa")
    assert isinstance(unknown, Unresolved)
    assert unknown.raw == "qa"
    assert "unknown environment 'qa'" in unknown.reason

    empty = catalog.resolve_ref("gitopsCluster", "")
    assert isinstance(empty, Unresolved)
    assert empty.raw
    assert empty.reason == "no GitOps cluster given"


def test_infrastructure_identifiers_are_scoped_by_environment() -> None:
    catalog = Catalog.from_mapping(
        {
            "environments": [
                {"identifier": "a", "name": "A", "type": "PreProduction"},
                {"identifier": "b", "name": "B", "type": "Production"},
            ],
            "infrastructures": [
                {"identifier": "k8s", "name": "A k8s", "environmentRef": "a", "type": "KubernetesDirect"},
                {"identifier": "k8s", "name": "B k8s", "environmentRef": "b", "type": "KubernetesDirect"},
            ],
        }
    )
    assert catalog.infrastructure("k8s", "b").name == "B k8s"
    with pytest.raises(CatalogLookupError, match="ambiguous"):
        catalog.infrastructure("k8s")
    wrong_env = catalog.resolve_ref("infrastructure", "k8s", environment="c")
    assert isinstance(wrong_env, Unresolved)
    assert "in environment 'c'" in wrong_env.reason


def test_link_templates_encode_values_and_skip_entries_missing_a_field() -> None:
    catalog = Catalog.from_mapping(
        {
            "links": {
                "infrastructure": [{"name": "Logs", "url": "https://logs.example.com/?q={namespace}&r={region}"}]
            },
            "environments": [{"identifier": "a", "name": "A", "type": "Production"}],
            "infrastructures": [
                {
                    "identifier": "x",
                    "name": "X",
                    "environmentRef": "a",
                    "type": "KubernetesDirect",
                    "details": {"namespace": "a b&c", "region": "eu"},
                },
                {"identifier": "y", "name": "Y", "environmentRef": "a", "type": "KubernetesDirect"},
            ],
        }
    )
    x = catalog.resolve_ref("infrastructure", "x", environment="a")
    y = catalog.resolve_ref("infrastructure", "y", environment="a")
    assert isinstance(x, Resolved) and isinstance(y, Resolved)
    assert [link.url for link in x.links] == ["https://logs.example.com/?q=a%20b%26c&r=eu"]
    assert y.links == ()


def test_bad_catalog_reports_every_problem_by_path() -> None:
    found = problems(
        {
            "services": [
                {"identifier": "svc", "name": "Service"},
                {"identifier": "svc", "name": "Again"},
                {"identifier": "bad-id", "name": "Bad", "links": [{"name": "x", "url": "javascript:alert(1)"}]},
            ],
            "environments": [{"identifier": "prod", "name": "Prod", "type": "Live"}],
        }
    )
    assert "services[2].identifier: 'bad-id' is not a valid identifier" in found[0]
    assert any(p.startswith("services[2].links[0].url: 'javascript:alert(1)' is not an http(s) URL") for p in found)
    assert any(p.startswith("environments[0].type: Input should be 'Production' or 'PreProduction'") for p in found)


def test_cross_references_and_duplicates_are_checked() -> None:
    found = problems(
        {
            "services": [{"identifier": "svc", "name": "S"}, {"identifier": "svc", "name": "S2"}],
            "environments": [{"identifier": "prod", "name": "Prod", "type": "Production"}],
            "environmentGroups": [{"identifier": "g", "name": "G", "environments": ["prod", "qa"]}],
            "infrastructures": [
                {"identifier": "i", "name": "I", "environmentRef": "nowhere", "type": "KubernetesDirect"}
            ],
        }
    )
    assert found == [
        "services[1].identifier: duplicate identifier 'svc'",
        "infrastructures[0].environmentRef: unknown environment 'nowhere'",
        "environmentGroups[0].environments[1]: unknown environment 'qa'",
    ]


def test_unknown_fields_and_unsafe_templates_are_refused() -> None:
    assert problems({"servics": []}) == ["servics: unknown field (check the spelling)"]
    found = problems(
        {
            "links": {
                "service": [{"name": "x", "url": "https://x.example.com/{identifier.__class__}"}],
                "environment": [{"name": "y", "url": "https://y.example.com/{namespace}"}],
            },
        }
    )
    assert any(p.startswith("links.service[0].url: bad placeholder") for p in found)
    assert any(p.startswith("links.environment[0].url: unknown placeholder {namespace}") for p in found)


def test_unreadable_and_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the file"):
        Catalog.load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("services:\n  - identifier: a\n    name: [unclosed\n")
    with pytest.raises(CatalogError, match=r"(?s)broken\.yaml.*line 4, column 1"):
        Catalog.load(broken)
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("services: []\nservices: []\n")
    with pytest.raises(CatalogError, match="duplicate key 'services'"):
        Catalog.load(duplicate)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n")
    with pytest.raises(CatalogError, match=r"\(root\): expected a mapping"):
        Catalog.load(not_mapping)
