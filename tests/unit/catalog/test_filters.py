"""Filter matching against catalog tags, and the catalog's tags on environments, infrastructures and clusters."""

from __future__ import annotations

import pytest

from signoff.catalog import Catalog, CatalogError
from signoff.catalog.filters import describe_filter, parse_tags_text, passes, tags_match
from tests.unit.executor.builders import EXAMPLES

PROD_EU = {"tier": "prod", "region": "eu"}


@pytest.mark.parametrize(
    ("tags", "match_type", "expected"),
    [
        ({"tier": "prod", "region": "eu"}, "all", True),
        ({"tier": "prod", "region": "us"}, "all", False),
        ({"tier": "prod", "region": "us"}, "any", True),
        ({"tier": "staging", "region": "us"}, "any", False),
        ({"region": ""}, "all", True),  # a key-only filter tag asks for the key, whatever its value
        ({"owner": ""}, "any", False),
    ],
)
def test_tags_match_all_or_any(tags: dict[str, str], match_type: str, expected: bool) -> None:
    assert tags_match(PROD_EU, tags, match_type) is expected  # type: ignore[arg-type]


def test_a_filter_of_type_all_keeps_everything_even_untagged() -> None:
    assert passes({}, filter_type="all", tags={}, match_type=None)
    assert not passes({}, filter_type="tags", tags={"tier": "prod"}, match_type="any")


def test_descriptions_say_what_a_filter_keeps() -> None:
    assert describe_filter(["environments"], "tags", {"region": "eu", "tier": "prod"}, "any") == (
        "environments tagged region=eu OR tier=prod"
    )
    assert describe_filter(["environments", "infrastructures"], "tags", {"tier": "prod", "web": ""}, "all") == (
        "environments and infrastructures tagged tier=prod AND web"
    )
    assert describe_filter(["gitOpsClusters"], "all") == "all GitOps clusters"
    assert describe_filter(["infrastructures"], "tags", None, "any", "<+pipeline.variables.tags>") == (
        "infrastructures tagged <+pipeline.variables.tags> (match any)"
    )


def test_tags_written_as_text_are_parsed() -> None:
    assert parse_tags_text("region:eu, tier=prod,web") == {"region": "eu", "tier": "prod", "web": ""}
    with pytest.raises(ValueError, match="no tags"):
        parse_tags_text(" , ")
    with pytest.raises(ValueError, match="has no key"):
        parse_tags_text(":eu")


def test_the_example_catalog_tags_environments_infrastructures_and_linked_clusters() -> None:
    catalog = Catalog.load(EXAMPLES / "catalog.yaml")
    assert catalog.environment("prod_eu").tags == {"tier": "prod", "region": "eu"}
    assert catalog.infrastructure("eks_eu_canary", "prod_eu").tags == {"kind": "eks", "traffic": "canary"}
    assert [c.identifier for c in catalog.gitops_clusters_of("prod_us")] == ["argo_prod_us"]
    assert catalog.gitops_clusters_of("staging") == ()


def test_tags_are_text_and_clusters_link_only_known_environments() -> None:
    catalog = Catalog.from_mapping(
        {"environments": [{"identifier": "e", "name": "E", "type": "Production", "tags": {"tier": 1, "live": True}}]}
    )
    assert catalog.environment("e").tags == {"tier": "1", "live": "true"}
    with pytest.raises(CatalogError) as caught:
        Catalog.from_mapping(
            {"environments": [{"identifier": "e", "name": "E", "type": "Production", "tags": {" ": "x"}}]}
        )
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("environments[0].tags", "a tag key must not be empty")
    ]
    with pytest.raises(CatalogError) as caught:
        Catalog.from_mapping(
            {
                "gitopsClusters": [
                    {"identifier": "c", "name": "C", "url": "https://argo.example.com", "environments": ["nowhere"]}
                ]
            }
        )
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("gitopsClusters[0].environments[0]", "unknown environment 'nowhere'")
    ]
