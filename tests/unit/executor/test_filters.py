"""Targets chosen by filter: parsing and validation (bad input by path, static filters that keep nothing), and the
execution's choice (all / any, each entity type, no match, expressions, unresolved until known)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from signoff.catalog import Catalog, Resolved, Unresolved
from signoff.executor.domain.actions import RequestApproval, StageMetadata, TriggeredBy
from signoff.executor.domain.execution import Execution
from signoff.executor.domain.pipeline import parse_pipeline, validate_pipeline
from signoff.executor.domain.state import ExecutionStatus, StepStatus
from tests.unit.executor.builders import EXAMPLES, approval, load_pipeline, pipeline, shell, stage

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLES / "catalog.yaml")


def tags(match_type: str = "any", entities: tuple[str, ...] = ("environments",), **values: Any) -> dict:
    return {"type": "tags", "entities": list(entities), "spec": {"matchType": match_type, "tags": values}}


def targeted(*steps: dict, identifier: str = "prod", gitops: bool = False, **spec: Any) -> dict:
    """A Deployment stage of checkout whose environment spec is `spec` (environments / environmentGroup / ...)."""
    if gitops:
        spec["gitOpsEnabled"] = True
    return stage(
        identifier, *(steps or (shell("roll_out"),)), type="Deployment", service={"serviceRef": "checkout"}, **spec
    )


def filtered(*filters: dict, values: list[dict] | None = None) -> dict:
    body: dict[str, Any] = {"filters": list(filters)}
    if values is not None:
        body["values"] = values
    return body


def start(document: dict, catalog: Catalog, **variables: str) -> Execution:
    return Execution.start(
        parse_pipeline(document, catalog=catalog),
        execution_id="ex-1",
        sequence_id=1,
        triggered_by=TriggeredBy(name="Ada"),
        now=T0,
        catalog=catalog,
        variables=variables,
    )


def chosen(metadata: StageMetadata) -> list[tuple[str, list[str], list[str]]]:
    """(environment, infrastructures, GitOps clusters) as identifiers."""
    return [
        (
            env.environment.identifier,
            [i.identifier for i in env.infrastructures],
            [c.identifier for c in env.gitops_clusters],
        )
        for env in metadata.environments
    ]


def problems(document: dict, catalog: Catalog) -> list[str]:
    return [str(issue) for issue in validate_pipeline(document, catalog=catalog)]


# -- choosing ---------------------------------------------------------------------------------------------------


def test_environments_tagged_any_of_the_tags(catalog: Catalog) -> None:
    execution = start(pipeline(targeted(environments=filtered(tags("any", region="eu", tier="prod")))), catalog)
    metadata = execution.stage_metadata("prod")
    # Filter-chosen environments deploy to all their infrastructures unless an infrastructure filter says otherwise.
    assert chosen(metadata) == [("prod_eu", ["eks_eu", "eks_eu_canary"], []), ("prod_us", ["eks_us"], [])]
    (env_filter,) = metadata.environment_filters
    assert env_filter.description == "environments tagged region=eu OR tier=prod" and env_filter.unresolved is None


def test_environments_tagged_all_of_the_tags(catalog: Catalog) -> None:
    execution = start(pipeline(targeted(environments=filtered(tags("all", region="eu", tier="prod")))), catalog)
    assert [env for env, _, _ in chosen(execution.stage_metadata("prod"))] == ["prod_eu"]


def test_infrastructures_are_chosen_per_environment(catalog: Catalog) -> None:
    environments = filtered(tags("all", tier="prod"), tags("all", ("infrastructures",), traffic="live", kind="eks"))
    execution = start(pipeline(targeted(environments=environments)), catalog)
    metadata = execution.stage_metadata("prod")
    assert chosen(metadata) == [("prod_eu", ["eks_eu"], []), ("prod_us", ["eks_us"], [])]
    assert [[f.description for f in env.filters] for env in metadata.environments] == [
        ["infrastructures tagged kind=eks AND traffic=live"],
        ["infrastructures tagged kind=eks AND traffic=live"],
    ]


def test_an_environments_own_filter_chooses_among_its_listed_infrastructures(catalog: Catalog) -> None:
    own = {
        "environmentRef": "prod_eu",
        "infrastructureDefinitions": [{"identifier": "eks_eu"}, {"identifier": "eks_eu_canary"}],
        "filters": [tags("any", ("infrastructures",), traffic="canary")],
    }
    execution = start(pipeline(targeted(environment=own)), catalog)
    assert chosen(execution.stage_metadata("prod")) == [("prod_eu", ["eks_eu_canary"], [])]


def test_gitops_clusters_linked_to_the_groups_environments(catalog: Catalog) -> None:
    group = {
        "envGroupRef": "production",
        "deployToAll": True,
        "filters": [tags("all", ("gitOpsClusters",), traffic="live")],
    }
    execution = start(pipeline(targeted(environmentGroup=group, gitops=True)), catalog)
    assert chosen(execution.stage_metadata("prod")) == [
        ("prod_eu", [], ["argo_prod_eu"]),
        ("prod_us", [], ["argo_prod_us"]),
    ]


def test_a_filter_of_type_all_keeps_every_candidate(catalog: Catalog) -> None:
    group = {"envGroupRef": "production", "filters": [{"type": "all", "entities": ["environments"]}]}
    execution = start(pipeline(targeted(environmentGroup=group)), catalog)
    assert [env for env, _, _ in chosen(execution.stage_metadata("prod"))] == ["prod_eu", "prod_us"]
    assert execution.stage_metadata("prod").environment_filters[0].description == "all environments"


def test_a_group_filter_chooses_among_the_groups_environments_only(catalog: Catalog) -> None:
    # staging is tagged tier=staging too, but is not in the production group.
    group = {"envGroupRef": "production", "filters": [tags("any", tier="prod", region="us")]}
    execution = start(pipeline(targeted(environmentGroup=group)), catalog)
    assert [env for env, _, _ in chosen(execution.stage_metadata("prod"))] == ["prod_eu", "prod_us"]


# -- expressions ------------------------------------------------------------------------------------------------


def test_tag_values_may_be_expressions_resolved_from_variables(catalog: Catalog) -> None:
    document = pipeline(
        targeted(environments=filtered(tags("all", region="<+pipeline.variables.region>"))),
        variables=[{"name": "region", "type": "String", "value": "<+input>"}],
    )
    assert problems(document, catalog) == []  # an expression is matched when the pipeline runs
    assert [env for env, _, _ in chosen(start(document, catalog, region="us").stage_metadata("prod"))] == ["prod_us"]


def test_the_whole_tag_set_may_be_one_expression(catalog: Catalog) -> None:
    by_variable = filtered(tags("all"))
    by_variable["filters"][0]["spec"]["tags"] = "<+pipeline.variables.tags>"
    document = pipeline(
        targeted(environments=by_variable), variables=[{"name": "tags", "type": "String", "value": "region:eu"}]
    )
    metadata = start(document, catalog).stage_metadata("prod")
    assert [env for env, _, _ in chosen(metadata)] == ["prod_eu"]
    assert metadata.environment_filters[0].tags == {"region": "eu"}
    # <+pipeline.tags>: the pipeline's own Harness tags.
    by_pipeline = filtered(tags("all"))
    by_pipeline["filters"][0]["spec"]["tags"] = "<+pipeline.tags>"
    document = pipeline(targeted(environments=by_pipeline))
    document["pipeline"]["tags"] = {"tier": "prod"}
    assert [env for env, _, _ in chosen(start(document, catalog).stage_metadata("prod"))] == ["prod_eu", "prod_us"]
    # <+service.tags>: the stage's service's catalog tags (checkout is team=payments, tier=1: no environment has both).
    by_service = filtered(tags("all"))
    by_service["filters"][0]["spec"]["tags"] = "<+service.tags>"
    execution = start(pipeline(targeted(shell("a"), environments=by_service)), catalog)
    service_filter = execution.stage_metadata("prod").environment_filters[0]
    assert service_filter.tags == {"team": "payments", "tier": "1"}
    assert execution.stage_metadata("prod").target_problems == (
        "matches no environment: environments tagged team=payments AND tier=1",
    )


def test_a_filter_known_only_later_is_unresolved_in_the_approval_request_then_applied(catalog: Catalog) -> None:
    speed = "<+pipeline.stages.staging.spec.execution.steps.approve.output.approverInputs.traffic>"
    document = pipeline(
        stage(
            "staging",
            approval("approve", approverInputs=[{"name": "traffic", "defaultValue": "live"}]),
        ),
        targeted(environments=filtered(tags("all", tier="prod"), tags("all", ("infrastructures",), traffic=speed))),
    )
    assert problems(document, catalog) == []
    execution = start(document, catalog)
    (request,) = [a for a in execution.next_actions(T0) if isinstance(a, RequestApproval)]
    (upcoming,) = request.request.upcoming_stages
    # The environments are known now (static filter); their infrastructures wait for the approver's input.
    assert chosen(upcoming) == [("prod_eu", [], []), ("prod_us", [], [])]
    infra_filter = upcoming.environments[0].filters[0]
    assert infra_filter.tags == {"traffic": speed}
    assert infra_filter.unresolved == "stage 'staging' has no step outputs yet"
    assert speed in upcoming.unresolved
    # When the stage starts, the approver's answer is known and the filter is applied.
    execution.approval_approved("staging.approve", {"traffic": "live"}, now=T0 + timedelta(minutes=1))
    (run,) = execution.next_actions(T0 + timedelta(minutes=1))
    assert run.step_path == "prod.roll_out"  # type: ignore[union-attr]
    assert chosen(execution.stage_metadata("prod")) == [("prod_eu", ["eks_eu"], []), ("prod_us", ["eks_us"], [])]


# -- no match ---------------------------------------------------------------------------------------------------


def test_a_static_filter_that_keeps_nothing_fails_validation_at_its_path(catalog: Catalog) -> None:
    document = pipeline(targeted(environments=filtered(tags("all", region="mars"))))
    assert problems(document, catalog) == [
        "pipeline.stages[0].stage.spec.environments.filters: matches no environment: environments tagged region=mars"
    ]
    own = {"environmentRef": "prod_us", "filters": [tags("any", ("infrastructures",), traffic="canary")]}
    assert problems(pipeline(targeted(environment=own)), catalog) == [
        "pipeline.stages[0].stage.spec.environment.filters: matches no infrastructure of environment 'prod_us': "
        "infrastructures tagged traffic=canary"
    ]


def test_a_filter_that_keeps_nothing_at_run_time_fails_the_stage_with_the_reason(catalog: Catalog) -> None:
    document = pipeline(
        targeted(environments=filtered(tags("all", region="<+pipeline.variables.region>"))),
        variables=[{"name": "region", "type": "String", "value": "mars"}],
    )
    execution = start(document, catalog)
    execution.next_actions(T0)
    assert execution.status == ExecutionStatus.FAILED
    step = execution.step("prod.roll_out")
    assert step.status == StepStatus.FAILED
    assert step.reason == (
        "the stage's targets cannot be chosen: matches no environment: environments tagged region=mars"
    )


# -- bad input --------------------------------------------------------------------------------------------------


def test_bad_filters_are_validation_errors_naming_the_path(catalog: Catalog) -> None:
    bad = [
        {"type": "tags", "entities": ["services"], "spec": {"matchType": "any", "tags": {"tier": "prod"}}},
        {"type": "tags", "entities": ["environments"], "spec": {"matchType": "any", "tags": {}}},
        {"type": "tags", "entities": ["environments"], "spec": {"matchType": "most", "tags": {"tier": "prod"}}},
        {"type": "labels", "entities": ["environments"]},
        {"type": "tags", "entities": [], "spec": {"matchType": "all", "tags": {"tier": "prod"}, "extra": 1}},
    ]
    base = "pipeline.stages[0].stage.spec.environments.filters"
    assert problems(pipeline(targeted(environments=filtered(*bad))), catalog) == [
        f"{base}[0].entities[0]: unknown entity type 'services' (expected environments, infrastructures, "
        "gitOpsClusters)",
        f"{base}[1].spec.tags: empty tag set: name at least one tag (key: value)",
        f"{base}[2].spec.matchType: matchType must be all or any, not 'most'",
        f"{base}[3].type: unknown filter type 'labels' (expected all or tags)",
        f"{base}[4].entities: expected a non-empty list of entity types",
        f"{base}[4].spec.extra: unknown field (check the spelling)",
    ]


def test_an_environments_own_filter_cannot_choose_environments(catalog: Catalog) -> None:
    own = {"environmentRef": "prod_eu", "filters": [tags("any", tier="prod")]}
    assert problems(pipeline(targeted(environment=own)), catalog) == [
        "pipeline.stages[0].stage.spec.environment.filters[0].entities[0]: an environment's own filters choose its "
        "infrastructures or gitOpsClusters only; filter environments under 'environments' or 'environmentGroup'"
    ]


def test_a_group_filter_naming_environments_outside_the_group_is_refused(catalog: Catalog) -> None:
    group = {
        "envGroupRef": "production",
        "environments": [{"environmentRef": "prod_eu"}, {"environmentRef": "staging"}],
        "filters": [tags("any", tier="prod", region="eu")],
    }
    assert problems(pipeline(targeted(environmentGroup=group)), catalog) == [
        "pipeline.stages[0].stage.spec.environmentGroup.environments[1].environmentRef: environment 'staging' is "
        "not in environment group 'production' (the group's filters choose among its own environments only)"
    ]


def test_an_expression_naming_an_environment_outside_the_group_is_refused_when_run(catalog: Catalog) -> None:
    group = {
        "envGroupRef": "production",
        "environments": [{"environmentRef": "<+pipeline.variables.env>"}],
        "filters": [tags("any", ("infrastructures",), traffic="live")],
    }
    document = pipeline(
        targeted(environmentGroup=group), variables=[{"name": "env", "type": "String", "value": "staging"}]
    )
    execution = start(document, catalog)
    (env,) = execution.stage_metadata("prod").environments
    assert isinstance(env.environment, Unresolved)
    assert env.environment.reason == "environment 'staging' is not in environment group 'production'"
    execution.next_actions(T0)
    assert execution.status == ExecutionStatus.FAILED
    assert "is not in environment group 'production'" in (execution.reason or "")


def test_the_example_filtered_rollout_validates_and_chooses_its_targets(catalog: Catalog) -> None:
    rollout = load_pipeline(EXAMPLES / "pipelines" / "filtered-rollout.yaml", catalog=catalog)
    execution = Execution.start(
        rollout,
        execution_id="ex-2",
        sequence_id=1,
        triggered_by=TriggeredBy(name="Ada"),
        now=T0,
        catalog=catalog,
        variables={"traffic": "canary"},
    )
    assert chosen(execution.stage_metadata("production_rollout")) == [
        ("prod_eu", ["eks_eu_canary"], []),
        ("prod_us", [], []),
    ]
    assert execution.stage_metadata("production_rollout").target_problems == (
        "matches no infrastructure of environment 'prod_us': infrastructures tagged traffic=canary",
    )
    assert chosen(execution.stage_metadata("gitops_sync")) == [
        ("prod_eu", [], ["argo_prod_eu"]),
        ("prod_us", [], ["argo_prod_us"]),
    ]
    assert all(isinstance(env.environment, Resolved) for env in execution.stage_metadata("gitops_sync").environments)


def test_a_tag_set_expression_giving_no_tags_is_unresolved_not_match_all() -> None:
    bare = Catalog.from_mapping(
        {
            "services": [{"identifier": "checkout", "name": "Checkout"}],
            "environments": [{"identifier": "prod", "name": "Prod", "type": "Production"}],
        }
    )
    by_service = filtered(tags("any"))
    by_service["filters"][0]["spec"]["tags"] = "<+service.tags>"
    metadata = start(pipeline(targeted(environments=by_service)), bare).stage_metadata("prod")
    assert metadata.environments == ()
    assert metadata.environment_filters[0].unresolved == "<+service.tags> gives no tags: an empty tag set"
    assert metadata.target_problems == (
        "environments tagged <+service.tags> (match any): <+service.tags> gives no tags: an empty tag set",
    )
