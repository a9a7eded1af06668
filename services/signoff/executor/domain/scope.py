"""The expression context of an execution and its stages' CD metadata: what `<+pipeline.*>`, `<+stage.*>`,
`<+service.*>`, `<+env.*>`, `<+infra.*>`, `<+artifact.*>` and the steps' outputs are, as far as the execution has
come, with catalog references resolved. Pure; the state machine (`execution.py`) asks it when it dispatches a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signoff.catalog import Catalog, Resolved, ResolvedRef, Unresolved, is_expression
from signoff.catalog.filters import parse_tags_text
from signoff.executor.domain.actions import ArtifactMetadata, FilterMetadata, StageMetadata
from signoff.executor.domain.expressions import EXPRESSION, Context, Rendered, Unknown, render
from signoff.executor.domain.pipeline import Pipeline, Stage, TargetFilter, Variable
from signoff.executor.domain.plan import Plan
from signoff.executor.domain.state import ACTIVE, ExecutionState, StepStatus
from signoff.executor.domain.targets import choose_targets, filter_metadata


def base_context(pipeline: Pipeline, plan: Plan, state: ExecutionState) -> Context:
    """The context every step of an execution starts from: the pipeline, its variables, its stages' names and the
    outputs of the steps that ran (unknown, with the reason, for those still running)."""
    triggered = state.triggered_by
    steps = {step.path: step for step in state.steps}
    ctx = Context.for_pipeline(
        name=pipeline.name,
        identifier=pipeline.identifier,
        execution_id=state.execution_id,
        sequence_id=state.sequence_id,
        triggered_by_name=triggered.name,
        triggered_by_email=triggered.email,
        start_ts=int(state.started_at.timestamp() * 1000),
        variables=_variable_values(pipeline, state),
        tags=pipeline.tags,
    ).with_stage_names({stage.identifier: (stage.name, stage.stage.type) for stage in plan.stages()})
    for planned in plan.steps():
        step = steps[planned.path]
        if step.status in (StepStatus.QUEUED, StepStatus.SKIPPED):
            continue
        output: dict[str, Any] | Unknown = {}
        if step.status in ACTIVE:
            output = Unknown(f"step {planned.identifier!r} has not finished")
        elif step.type == "ShellScript":
            output["outputVariables"] = dict(step.outputs)
        elif step.approval is not None:
            output["approverInputs"] = dict(step.approval.inputs)
            output["approvalActivities"] = [
                {
                    "user": {
                        "name": activity.approver.name,
                        "email": activity.approver.email or Unknown("the approver has no e-mail"),
                    },
                    # Harness's spelling of the shared vocabulary: APPROVE / REJECT, APPROVED / REJECTED / EXPIRED.
                    "action": activity.action.upper(),
                    "approvalAction": activity.action.upper(),  # what Harness's expressions call it
                    "comments": activity.comments or "",
                    "approvedAt": activity.decided_at.isoformat(),
                }
                for activity in step.approval.activities
            ]
            output["action"] = step.approval.action.upper()
        ctx = ctx.with_step(
            stage=planned.stage,
            identifier=planned.identifier,
            groups=planned.groups,
            name=planned.name,
            status=step.status.value,
            output=output,
        )
    return ctx


def _variable_values(pipeline: Pipeline, state: ExecutionState) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable in pipeline.variables:
        if variable.type == "Secret":
            values[variable.name] = Unknown("secret variables are not rendered")
            continue
        value = state.variables.get(variable.name)
        values[variable.name] = value if value is not None else Unknown(f"variable {variable.name!r} has no value")
    return values


def stage_context(
    base: Context, stage: Stage, status: StepStatus, catalog: Catalog | None
) -> tuple[Context, StageMetadata]:
    """A stage's context (its variables and, for one service / environment / infrastructure / artifact, their
    scopes) and its CD metadata, resolved against `catalog` as far as the expressions are known."""
    ctx = base.with_stage(
        identifier=stage.identifier, name=stage.name, type=stage.type, variables=_stage_variables(stage.variables)
    )
    md = stage.deployment
    if md is None:
        return ctx, StageMetadata(identifier=stage.identifier, name=stage.name, type=stage.type, status=status.value)
    unresolved: list[str] = []

    def resolve(kind: Any, ref: str, environment: str | None = None) -> ResolvedRef:
        result, rendered = resolve_ref(kind, ref, ctx, catalog, environment)
        unresolved.extend(raw for raw in rendered.unresolved if raw not in unresolved)
        return result

    services = tuple(resolve("service", ref) for ref in md.service_refs)
    group = resolve("environmentGroup", md.environment_group.env_group_ref) if md.environment_group else None
    filter_ctx = _with_service_scope(ctx, services)

    def resolve_filter(target_filter: TargetFilter) -> FilterMetadata:
        result = _render_filter(target_filter, filter_ctx)
        for raw in _filter_expressions(result):
            if raw not in unresolved:
                unresolved.append(raw)
        return result

    targets = choose_targets(md, group, catalog, lambda kind, ref, env: resolve(kind, ref, env), resolve_filter)
    environments = list(targets.environments)
    problems = [problem.message for problem in targets.problems]
    for chosen_by in (targets.environment_filters, *(env.filters for env in environments)):
        problems += [f"{f.description}: {f.unresolved}" for f in chosen_by if f.unresolved]
    artifacts: list[ArtifactMetadata] = []
    for artifact in (md.primary_artifact, *md.sidecars):
        if artifact is None:
            continue
        image, tag = render(artifact.image, ctx), render(artifact.tag, ctx)
        missing = tuple(dict.fromkeys([*image.unresolved, *tag.unresolved]))
        unresolved.extend(raw for raw in missing if raw not in unresolved)
        artifacts.append(
            ArtifactMetadata(identifier=artifact.identifier, image=image.text, tag=tag.text, unresolved=missing)
        )
    custom: dict[str, str] = {}
    for key, value in md.custom_metadata.items():
        rendered = render(value, ctx)
        unresolved.extend(raw for raw in rendered.unresolved if raw not in unresolved)
        custom[key] = rendered.text
    metadata = StageMetadata(
        identifier=stage.identifier,
        name=stage.name,
        type=stage.type,
        status=status.value,
        deployment_type=md.deployment_type,
        gitops_enabled=md.gitops_enabled,
        services=services,
        environments=tuple(environments),
        environment_filters=targets.environment_filters,
        environment_group=group,
        artifacts=tuple(artifacts),
        custom_metadata=custom,
        unresolved=tuple(unresolved),
        target_problems=tuple(dict.fromkeys(problems)),
    )
    return _with_scopes(ctx, metadata), metadata


def resolve_ref(
    kind: Any, ref: str, ctx: Context, catalog: Catalog | None, environment: str | None = None
) -> tuple[ResolvedRef, Rendered]:
    """A catalog reference rendered in `ctx` and resolved (unresolved, with the reason, when an expression in it is
    not known yet, there is no catalog, or the catalog has no such entity)."""
    rendered = render(ref, ctx)
    if rendered.unresolved:
        return Unresolved(kind=kind, raw=ref, reason=rendered.describe_unresolved()), rendered
    text = rendered.text
    origin = f" (from {ref})" if text != ref else ""
    if catalog is None:
        return Unresolved(kind=kind, raw=text, reason=f"no catalog configured{origin}"), rendered
    result = catalog.resolve_ref(kind, text, environment=environment)
    if isinstance(result, Unresolved) and origin:
        result = result.model_copy(update={"reason": result.reason + origin})
    return result, rendered


def _stage_variables(variables: tuple[Variable, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable in variables:
        if variable.type == "Secret":
            values[variable.name] = Unknown("secret variables are not rendered")
        elif variable.runtime_input is not None:
            values[variable.name] = Unknown("runtime inputs (<+input>) are only supported for pipeline variables")
        elif variable.value is None:
            values[variable.name] = Unknown(f"stage variable {variable.name!r} has no value")
        else:
            values[variable.name] = variable.value
    return values


def _ref_scope(ref: ResolvedRef, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if isinstance(ref, Resolved):
        scope: dict[str, Any] = {"identifier": ref.identifier, "name": ref.name}
        description = getattr(ref.entity, "description", "")
        scope["description"] = description
        scope.update(extra or {})
        return scope
    unknown = Unknown(ref.reason)
    scope = {
        "identifier": ref.raw if not is_expression(ref.raw) else unknown,
        "name": unknown,
        "description": unknown,
    }
    for key in extra or {}:
        scope[key] = unknown
    return scope


def _with_service_scope(ctx: Context, services: tuple[ResolvedRef, ...]) -> Context:
    """`<+service.*>` for a stage with one service (with its catalog tags: `<+service.tags>`)."""
    if len(services) == 1:
        service = services[0]
        tags = dict(getattr(service.entity, "tags", {})) if isinstance(service, Resolved) else Unknown(service.reason)  # type: ignore[union-attr]
        return ctx.with_scope("service", {**_ref_scope(service), "tags": tags})
    if services:
        return ctx.with_scope("service", Unknown(f"stage deploys {len(services)} services"))
    return ctx


def _render_filter(target_filter: TargetFilter, ctx: Context) -> FilterMetadata:
    """The filter with its tags rendered; unresolved (with the reason) when an expression is not known yet."""
    if target_filter.tags_expression is not None:
        raw = target_filter.tags_expression
        value = ctx.lookup(raw)
        if isinstance(value, Unknown):
            return filter_metadata(target_filter, {}, raw, value.reason)
        try:
            if isinstance(value, Mapping):
                tags = {str(k): _tag_text(v) for k, v in value.items()}
                if not tags:
                    raise ValueError("an empty tag set")
            else:
                tags = parse_tags_text(str(value))
        except ValueError as exc:
            # Matching against no tags would keep everything (any) or nothing (all): neither was asked for.
            return filter_metadata(target_filter, {}, raw, f"{raw} gives no tags: {exc}")
        return filter_metadata(target_filter, tags, None)
    tags: dict[str, str] = {}
    missing: list[str] = []
    for key, value in target_filter.tags.items():
        rendered_key, rendered_value = render(key, ctx), render(value, ctx)
        tags[rendered_key.text] = rendered_value.text
        # The expressions stay visible in the tags; the reason says why they are not known yet.
        missing += [item.reasons[raw] for item in (rendered_key, rendered_value) for raw in item.unresolved]
    return filter_metadata(target_filter, tags, None, "; ".join(dict.fromkeys(missing)) or None)


def _tag_text(value: Any) -> str:
    return "true" if value is True else "false" if value is False else "" if value is None else str(value)


def _filter_expressions(metadata: FilterMetadata) -> list[str]:
    if not metadata.unresolved:
        return []
    texts = [metadata.tags_expression or "", *metadata.tags, *metadata.tags.values()]
    return [match.group(0) for text in texts for match in EXPRESSION.finditer(text)]


def _with_scopes(ctx: Context, metadata: StageMetadata) -> Context:
    """`<+service.*>`, `<+env.*>`, `<+infra.*>` and `<+artifact.*>` for a stage with one service / environment /
    infrastructure; with several, each is unknown with the reason (e.g. `stage deploys 2 services`)."""
    ctx = _with_service_scope(ctx, metadata.services)
    if len(metadata.environments) == 1:
        target = metadata.environments[0]
        env = target.environment
        extra: dict[str, Any] = {"type": env.entity.type if isinstance(env, Resolved) else None}  # type: ignore[union-attr]
        scope = _ref_scope(env, extra)
        group = metadata.environment_group
        if group is not None:
            scope["envGroupRef"] = group.identifier if isinstance(group, Resolved) else Unknown(group.reason)
            scope["envGroupName"] = group.name if isinstance(group, Resolved) else Unknown(group.reason)
        ctx = ctx.with_scope("env", scope)
        if len(target.infrastructures) == 1:
            infra = target.infrastructures[0]
            if isinstance(infra, Resolved):
                entity = infra.entity
                details = dict(entity.details.fields())  # type: ignore[union-attr]
                details.setdefault("namespace", Unknown("the infrastructure has no namespace in the catalog"))
                infra_scope = {**details, **_ref_scope(infra, {"type": entity.type})}  # type: ignore[union-attr]
            else:
                infra_scope = _ref_scope(infra, {"type": None, "namespace": None})
            ctx = ctx.with_scope("infra", infra_scope)
        elif target.infrastructures:
            ctx = ctx.with_scope("infra", Unknown(f"stage deploys to {len(target.infrastructures)} infrastructures"))
    elif metadata.environments:
        ctx = ctx.with_scope("env", Unknown(f"stage deploys to {len(metadata.environments)} environments"))
        ctx = ctx.with_scope("infra", Unknown(f"stage deploys to {len(metadata.environments)} environments"))
    for artifact in metadata.artifacts:
        values = {
            "image": artifact.image if "<+" not in artifact.image else Unknown(f"unresolved: {artifact.image}"),
            "tag": artifact.tag if "<+" not in artifact.tag else Unknown(f"unresolved: {artifact.tag}"),
        }
        if artifact.identifier == "primary":
            ctx = ctx.with_scope("artifact", values)
        else:
            ctx = ctx.with_sidecar(artifact.identifier, values)
    return ctx
