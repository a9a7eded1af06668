"""Choosing a stage's deployment targets: the environments, infrastructures and GitOps clusters it names, or the
ones its filters choose from the catalog (docs/pipelines.md, "Targets chosen by filter").

One algorithm serves the pipeline validation (static filters, against the catalog) and the execution (filters
rendered with what is known so far): the caller says how a ref and a filter are resolved.

- A filter narrows the targets listed next to it; with none listed it chooses among all candidates: the catalog's
  environments (`environments.filters`), the group's (`environmentGroup.filters`), an environment's
  infrastructures or linked GitOps clusters.
- Several filters for one entity add up (a candidate passes when any filter keeps it).
- An environment's own filters decide its infrastructures / GitOps clusters; without them the stage's filters do.
- A filter that cannot be applied yet (an unresolved expression, an unresolved candidate) leaves its choice empty
  and says why; one that keeps nothing is a problem (validation error when static, stage failure at run time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from signoff.catalog import Catalog, Resolved, ResolvedRef, Unresolved
from signoff.catalog.filters import ENTITY_WORDS, describe_filter, passes
from signoff.executor.domain.actions import EnvironmentMetadata, FilterMetadata
from signoff.executor.domain.pipeline import DeploymentMetadata, EnvironmentTarget, TargetFilter

RefResolver = Callable[[str, str, "str | None"], ResolvedRef]
"""(kind, ref, environment scope) -> the catalog entry or why not."""
FilterResolver = Callable[[TargetFilter], FilterMetadata]
"""A filter with its tags rendered, or marked unresolved with the reason."""


@dataclass(frozen=True)
class Problem:
    """Why the targets cannot be deployed to. `environment` is the index in `DeploymentMetadata.all_environments`
    of the listed environment it is about (None: the stage's own choice); `own_filters` when that environment's own
    filters are at fault (else the stage's)."""

    kind: Literal["no_match", "outside_group"]
    message: str
    environment: int | None = None
    own_filters: bool = False


@dataclass(frozen=True)
class Targets:
    environments: tuple[EnvironmentMetadata, ...]
    environment_filters: tuple[FilterMetadata, ...]
    problems: tuple[Problem, ...]


def static_filter(target_filter: TargetFilter) -> FilterMetadata:
    """The filter as written; a filter holding an expression is unresolved (it is known only at run time)."""
    metadata = filter_metadata(target_filter, target_filter.tags, target_filter.tags_expression)
    if target_filter.is_static:
        return metadata
    return metadata.model_copy(update={"unresolved": "expression resolved while the pipeline runs"})


def filter_metadata(
    target_filter: TargetFilter, tags: dict[str, str], tags_expression: str | None, unresolved: str | None = None
) -> FilterMetadata:
    return FilterMetadata(
        type=target_filter.type,
        entities=target_filter.entities,
        match_type=target_filter.match_type,
        tags=tags,
        tags_expression=tags_expression,
        description=describe_filter(
            target_filter.entities, target_filter.type, tags, target_filter.match_type, tags_expression
        ),
        unresolved=unresolved,
    )


def _keeps(filters: Sequence[FilterMetadata], tags: dict[str, str]) -> bool:
    return any(passes(tags, filter_type=f.type, tags=f.tags, match_type=f.match_type) for f in filters)


def _described(filters: Sequence[FilterMetadata]) -> str:
    return "; or ".join(f.description for f in filters)


def _unresolved(filters: Sequence[FilterMetadata], reason: str) -> tuple[FilterMetadata, ...]:
    return tuple(f if f.unresolved else f.model_copy(update={"unresolved": reason}) for f in filters)


def _tags(ref: ResolvedRef) -> dict[str, str]:
    return dict(getattr(ref.entity, "tags", {})) if isinstance(ref, Resolved) else {}


def choose_targets(
    md: DeploymentMetadata,
    group: ResolvedRef | None,
    catalog: Catalog | None,
    resolve_ref: RefResolver,
    resolve_filter: FilterResolver,
) -> Targets:
    """The stage's environments with their infrastructures and GitOps clusters, the filters that chose them, and
    the problems found (see the module docstring)."""
    problems: list[Problem] = []
    stage_filters = tuple(resolve_filter(f) for f in md.filters)
    env_filters = tuple(f for f in stage_filters if "environments" in f.entities)
    listed = list(md.all_environments)
    members = set(getattr(group.entity, "environments", ())) if isinstance(group, Resolved) else None

    entries: list[tuple[int | None, EnvironmentTarget]] = []
    if env_filters:
        candidates: list[tuple[int | None, EnvironmentTarget]] = list(enumerate(listed))
        blocked = next((f.unresolved for f in env_filters if f.unresolved), None)
        if blocked is None and catalog is None:
            blocked = "no catalog configured: environments cannot be chosen by tag"
        if blocked is None and not listed:
            if group is None:
                ids: Sequence[str] = list(catalog.environments) if catalog else []
            elif isinstance(group, Resolved):
                ids = getattr(group.entity, "environments", ())
            else:
                blocked, ids = f"its environment group is not resolved: {group.reason}", []
            candidates = [(None, EnvironmentTarget(environment_ref=env, deploy_to_all=True)) for env in ids]
        if blocked is None:
            kept = []
            for index, target in candidates:
                ref = resolve_ref("environment", target.environment_ref, None)
                if isinstance(ref, Unresolved):
                    blocked = f"environment {target.environment_ref} is not resolved: {ref.reason}"
                    break
                if _keeps(env_filters, _tags(ref)):
                    kept.append((index, target))
            if blocked is None and not kept:
                where = f" of environment group {group.identifier!r}" if isinstance(group, Resolved) else ""
                problems.append(Problem("no_match", f"matches no environment{where}: {_described(env_filters)}"))
            entries = kept
        if blocked is not None:
            env_filters = _unresolved(env_filters, blocked)
            entries = []
    elif listed:
        entries = list(enumerate(listed))
    elif isinstance(group, Resolved) and catalog is not None:
        entries = [
            (None, EnvironmentTarget(environment_ref=env, deploy_to_all=True))
            for env in getattr(group.entity, "environments", ())
        ]

    environments: list[EnvironmentMetadata] = []
    for index, target in entries:
        env = resolve_ref("environment", target.environment_ref, None)
        if members is not None and isinstance(env, Resolved) and env.identifier not in members:
            reason = f"environment {env.identifier!r} is not in environment group {group.identifier!r}"  # type: ignore[union-attr]
            problems.append(Problem("outside_group", reason, index))
            env = Unresolved(kind="environment", raw=env.identifier, reason=reason)
        env_id = env.identifier if isinstance(env, Resolved) else None
        own = tuple(resolve_filter(f) for f in target.filters)
        chosen: dict[str, tuple[ResolvedRef, ...]] = {}
        used: list[FilterMetadata] = []
        for entity, kind, listed_refs, everything in (
            (
                "infrastructures",
                "infrastructure",
                target.infrastructure_refs,
                (lambda e: [i.identifier for i in catalog.infrastructures_of(e)]) if catalog else None,
            ),
            (
                "gitOpsClusters",
                "gitopsCluster",
                target.gitops_cluster_refs,
                (lambda e: [c.identifier for c in catalog.gitops_clusters_of(e)]) if catalog else None,
            ),
        ):
            mine = [f for f in own if entity in f.entities]
            filters = mine or [f for f in stage_filters if entity in f.entities]
            scope = env_id if kind == "infrastructure" else None
            if not filters:
                refs = list(listed_refs)
                # deployToAll: every infrastructure, or in a GitOps stage every linked cluster.
                expand = target.deploy_to_all and (kind == "gitopsCluster") == md.gitops_enabled
                if not refs and expand and env_id and everything is not None:
                    refs = everything(env_id)
                chosen[entity] = tuple(resolve_ref(kind, ref, scope) for ref in refs)
                continue
            result, filters_used, problem = _choose_within(
                entity, kind, filters, listed_refs, env, everything, lambda r, k=kind, s=scope: resolve_ref(k, r, s)
            )
            chosen[entity] = result
            used += [f for f in filters_used if f not in used]
            if problem is not None:
                problems.append(Problem("no_match", problem, index, own_filters=bool(mine)))
        environments.append(
            EnvironmentMetadata(
                environment=env,
                infrastructures=chosen["infrastructures"],
                gitops_clusters=chosen["gitOpsClusters"],
                deploy_to_all=target.deploy_to_all,
                filters=tuple(used),
            )
        )
    return Targets(tuple(environments), env_filters, tuple(problems))


def _choose_within(
    entity: str,
    kind: str,
    filters: Sequence[FilterMetadata],
    listed_refs: Sequence[str],
    env: ResolvedRef,
    everything: Callable[[str], list[str]] | None,
    resolve: Callable[[str], ResolvedRef],
) -> tuple[tuple[ResolvedRef, ...], tuple[FilterMetadata, ...], str | None]:
    """What `filters` keep among an environment's candidates of one kind: (chosen, filters as applied, problem)."""
    blocked = next((f.unresolved for f in filters if f.unresolved), None)
    if blocked is None and not isinstance(env, Resolved):
        blocked = f"its environment {env.raw} is not resolved: {env.reason}"
    if blocked is None and not listed_refs and everything is None:
        blocked = f"no catalog configured: {ENTITY_WORDS[entity][1]} cannot be chosen by tag"
    if blocked is not None:
        return (), _unresolved(filters, blocked), None
    refs = list(listed_refs) or (everything(env.identifier) if everything else [])
    candidates = [resolve(ref) for ref in refs]
    missing = next((ref for ref in candidates if isinstance(ref, Unresolved)), None)
    if missing is not None:
        reason = f"{ENTITY_WORDS[entity][0]} {missing.raw} is not resolved: {missing.reason}"  # type: ignore[union-attr]
        return (), _unresolved(filters, reason), None
    kept = tuple(ref for ref in candidates if _keeps(filters, _tags(ref)))
    if not kept:
        word = ENTITY_WORDS[entity][0]
        return (), tuple(filters), f"matches no {word} of environment {env.identifier!r}: {_described(filters)}"
    return kept, tuple(filters), None
