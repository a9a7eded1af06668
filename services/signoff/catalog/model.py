"""The catalog: what service, environment, environment-group, infrastructure and GitOps-cluster identifiers mean.

Pipelines refer to these things by identifier (`serviceRef: checkout`); the executor checks those references when
it validates a pipeline, and the executor and the notifier turn them into names, types and links for the people
who approve. The file format is documented in docs/catalog.md.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from signoff.catalog.yamldoc import (
    DocumentError,
    Issue,
    join_path,
    read_document,
    validate_document,
)

RefKind: TypeAlias = Literal["service", "environment", "environmentGroup", "infrastructure", "gitopsCluster"]
"""The kinds of thing a pipeline refers to by identifier."""

REF_KINDS: tuple[RefKind, ...] = ("service", "environment", "environmentGroup", "infrastructure", "gitopsCluster")

_IDENTIFIER = re.compile(r"^[a-zA-Z_][0-9a-zA-Z_$]{0,127}$")
_PLACEHOLDER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def is_expression(text: str) -> bool:
    """True when `text` holds a Harness expression (`<+...>`): a value known only while a pipeline runs."""
    return "<+" in text


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a valid identifier: start with a letter or '_', then letters, digits, '_' or '$' "
            "(at most 128 characters)"
        )
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _tags(value: Any) -> Any:
    # Harness writes tags as a mapping; a bare list of words is accepted as key-only tags (value "").
    if isinstance(value, list):
        return {str(item): "" for item in value}
    if isinstance(value, dict):
        # YAML reads `tier: 1` or `canary: true` as numbers and booleans; tags are text (filters compare text).
        return {
            key: ("true" if v is True else "false" if v is False else "" if v is None else _scalar(v))
            for key, v in value.items()
        }
    return value


def _scalar(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) else value


def _tag_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not key.strip():
            raise ValueError("a tag key must not be empty")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Tags = Annotated[dict[str, str], BeforeValidator(_tags), AfterValidator(_tag_keys)]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class Link(_Entry):
    """A named link shown next to a catalog entry in approval messages (dashboards, runbooks, repositories)."""

    name: str = Field(min_length=1, description="Label shown to people.")
    url: HttpUrl = Field(description="http(s) URL.")


class LinkTemplate(_Entry):
    """A link built for every entry of one kind: `{identifier}`, `{name}` and the kind's fields are substituted
    (URL-encoded). An entry lacking a field the template uses gets no link from that template."""

    name: str = Field(min_length=1)
    url: str = Field(min_length=1, description="http(s) URL with `{field}` placeholders.")


class Service(_Entry):
    """A deployable service (Harness `serviceRef`)."""

    identifier: Identifier
    name: str = Field(min_length=1)
    description: str = ""
    tags: Tags = Field(default_factory=dict)
    links: tuple[Link, ...] = ()


class Environment(_Entry):
    """A target environment (Harness `environmentRef`)."""

    identifier: Identifier
    name: str = Field(min_length=1)
    type: Literal["Production", "PreProduction"] = Field(description="Harness environment type.")
    description: str = ""
    tags: Tags = Field(default_factory=dict)
    links: tuple[Link, ...] = ()


class EnvironmentGroup(_Entry):
    """A named set of environments (Harness `envGroupRef`)."""

    identifier: Identifier
    name: str = Field(min_length=1)
    environments: tuple[Identifier, ...] = Field(min_length=1, description="Environment identifiers, in order.")
    description: str = ""
    tags: Tags = Field(default_factory=dict)
    links: tuple[Link, ...] = ()


class InfrastructureDetails(BaseModel):
    """Where an infrastructure definition deploys. Further scalar keys are kept (e.g. `project`, `account`)."""

    model_config = ConfigDict(frozen=True, extra="allow", alias_generator=to_camel, populate_by_name=True)

    namespace: str | None = None
    cluster: str | None = None
    region: str | None = None
    connector_ref: str | None = None
    release_name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """Scalar details as strings (labels excluded), keyed as written in the file."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(by_alias=True, exclude={"labels"}).items():
            if value is None or isinstance(value, dict | list):
                continue
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


class Infrastructure(_Entry):
    """An infrastructure definition of one environment (Harness `infrastructureDefinitions[].identifier`).

    Identifiers are scoped by environment, as in Harness: two environments may each have an `eks` infrastructure.
    """

    identifier: Identifier
    name: str = Field(min_length=1)
    environment_ref: Identifier = Field(description="The environment this infrastructure belongs to.")
    type: str = Field(min_length=1, description="Harness infrastructure type, e.g. KubernetesDirect.")
    description: str = ""
    details: InfrastructureDetails = Field(default_factory=InfrastructureDetails)
    tags: Tags = Field(default_factory=dict)
    links: tuple[Link, ...] = ()


class GitOpsCluster(_Entry):
    """A GitOps (Argo CD) cluster a GitOps-enabled stage syncs to."""

    identifier: Identifier
    name: str = Field(min_length=1)
    url: HttpUrl
    environments: tuple[Identifier, ...] = Field(
        (),
        description="Environments the cluster is linked to (as in Harness); a gitOpsClusters filter chooses among "
        "the clusters linked to an environment.",
    )
    description: str = ""
    tags: Tags = Field(default_factory=dict)
    links: tuple[Link, ...] = ()


CatalogEntity: TypeAlias = Service | Environment | EnvironmentGroup | Infrastructure | GitOpsCluster


class LinkTemplates(_Entry):
    """Link templates per kind."""

    service: tuple[LinkTemplate, ...] = ()
    environment: tuple[LinkTemplate, ...] = ()
    environment_group: tuple[LinkTemplate, ...] = ()
    infrastructure: tuple[LinkTemplate, ...] = ()
    gitops_cluster: tuple[LinkTemplate, ...] = ()

    def for_kind(self, kind: RefKind) -> tuple[LinkTemplate, ...]:
        return {
            "service": self.service,
            "environment": self.environment,
            "environmentGroup": self.environment_group,
            "infrastructure": self.infrastructure,
            "gitopsCluster": self.gitops_cluster,
        }[kind]


class CatalogDocument(_Entry):
    """The catalog file as written (see docs/catalog.md)."""

    services: tuple[Service, ...] = ()
    environments: tuple[Environment, ...] = ()
    environment_groups: tuple[EnvironmentGroup, ...] = ()
    infrastructures: tuple[Infrastructure, ...] = ()
    gitops_clusters: tuple[GitOpsCluster, ...] = ()
    links: LinkTemplates = Field(default_factory=LinkTemplates)


# Template fields every entry of a kind has (infrastructures also offer their details' keys).
_TEMPLATE_FIELDS: dict[RefKind, frozenset[str]] = {
    "service": frozenset({"identifier", "name"}),
    "environment": frozenset({"identifier", "name", "type"}),
    "environmentGroup": frozenset({"identifier", "name"}),
    "infrastructure": frozenset({"identifier", "name", "type", "environment"}),
    "gitopsCluster": frozenset({"identifier", "name", "url"}),
}


class Resolved(BaseModel):
    """A reference found in the catalog: the entry, with its explicit and templated links."""

    model_config = ConfigDict(frozen=True)

    status: Literal["resolved"] = "resolved"
    kind: RefKind
    ref: str = Field(description="The identifier that was looked up.")
    entity: CatalogEntity
    links: tuple[Link, ...] = ()

    @property
    def identifier(self) -> str:
        return self.entity.identifier

    @property
    def name(self) -> str:
        return self.entity.name


class Unresolved(BaseModel):
    """A reference that could not be turned into a catalog entry; `raw` is what the pipeline says, never blank."""

    model_config = ConfigDict(frozen=True)

    status: Literal["unresolved"] = "unresolved"
    kind: RefKind | None = None
    raw: str
    reason: str

    @property
    def identifier(self) -> str:
        return self.raw


ResolvedRef: TypeAlias = Annotated[Resolved | Unresolved, Field(discriminator="status")]


class CatalogError(DocumentError):
    """A catalog file is unreadable or invalid; `issues` lists every problem by path."""

    kind = "catalog"


class CatalogLookupError(KeyError):
    """An identifier is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not in the catalog"


_KIND_WORDS: dict[RefKind, str] = {
    "service": "service",
    "environment": "environment",
    "environmentGroup": "environment group",
    "infrastructure": "infrastructure",
    "gitopsCluster": "GitOps cluster",
}


class Catalog:
    """A loaded, cross-checked catalog with lookups by identifier. Immutable."""

    def __init__(self, document: CatalogDocument, source: str = "<catalog>") -> None:
        """Index `document`; raises `CatalogError` when identifiers repeat or references dangle."""
        self.document = document
        self.source = source
        issues: list[Issue] = []
        self._services = self._index("services", document.services, issues)
        self._environments = self._index("environments", document.environments, issues)
        self._groups = self._index("environmentGroups", document.environment_groups, issues)
        self._gitops = self._index("gitopsClusters", document.gitops_clusters, issues)
        self._infras: dict[tuple[str, str], Infrastructure] = {}
        for i, infra in enumerate(document.infrastructures):
            key = (infra.environment_ref, infra.identifier)
            if key in self._infras:
                issues.append(
                    Issue(
                        join_path("infrastructures", i, "identifier"),
                        f"duplicate infrastructure {infra.identifier!r} in environment {infra.environment_ref!r}",
                    )
                )
            self._infras[key] = infra
            if infra.environment_ref not in self._environments:
                issues.append(
                    Issue(
                        join_path("infrastructures", i, "environmentRef"),
                        f"unknown environment {infra.environment_ref!r}",
                    )
                )
        for i, group in enumerate(document.environment_groups):
            for j, env in enumerate(group.environments):
                if env not in self._environments:
                    issues.append(
                        Issue(join_path("environmentGroups", i, "environments", j), f"unknown environment {env!r}")
                    )
        for i, cluster in enumerate(document.gitops_clusters):
            for j, env in enumerate(cluster.environments):
                if env not in self._environments:
                    issues.append(
                        Issue(join_path("gitopsClusters", i, "environments", j), f"unknown environment {env!r}")
                    )
        for kind in REF_KINDS:
            for i, template in enumerate(document.links.for_kind(kind)):
                problem = _check_template(kind, template.url)
                if problem:
                    issues.append(Issue(join_path("links", kind, i, "url"), problem))
        if issues:
            raise CatalogError(source, issues)

    @staticmethod
    def _index(section: str, entries: Iterable[Any], issues: list[Issue]) -> dict[str, Any]:
        index: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            if entry.identifier in index:
                issues.append(Issue(join_path(section, i, "identifier"), f"duplicate identifier {entry.identifier!r}"))
            index[entry.identifier] = entry
        return index

    # -- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Any, source: str = "<catalog>") -> Catalog:
        """Build from parsed YAML/JSON; raises `CatalogError` naming every bad path."""
        expected = "expected a mapping with services, environments, ..."
        return cls(validate_document(CatalogDocument, data, source, CatalogError, expected), source)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a catalog YAML file; raises `CatalogError` (unreadable file, bad YAML, or invalid content)."""
        return cls.from_mapping(read_document(path, CatalogError), str(path))

    @classmethod
    def empty(cls) -> Catalog:
        return cls(CatalogDocument(), "<empty catalog>")

    # -- lookups -----------------------------------------------------------------------------------------------

    @property
    def services(self) -> Mapping[str, Service]:
        return dict(self._services)

    @property
    def environments(self) -> Mapping[str, Environment]:
        return dict(self._environments)

    @property
    def environment_groups(self) -> Mapping[str, EnvironmentGroup]:
        return dict(self._groups)

    @property
    def gitops_clusters(self) -> Mapping[str, GitOpsCluster]:
        return dict(self._gitops)

    def _get(self, kind: RefKind, index: Mapping[str, Any], identifier: str) -> Any:
        try:
            return index[identifier]
        except KeyError:
            raise CatalogLookupError(f"unknown {_KIND_WORDS[kind]} {identifier!r} in {self.source}") from None

    def service(self, identifier: str) -> Service:
        """The service; raises `CatalogLookupError` when unknown."""
        return self._get("service", self._services, identifier)

    def environment(self, identifier: str) -> Environment:
        """The environment; raises `CatalogLookupError` when unknown."""
        return self._get("environment", self._environments, identifier)

    def environment_group(self, identifier: str) -> EnvironmentGroup:
        """The environment group; raises `CatalogLookupError` when unknown."""
        return self._get("environmentGroup", self._groups, identifier)

    def gitops_cluster(self, identifier: str) -> GitOpsCluster:
        """The GitOps cluster; raises `CatalogLookupError` when unknown."""
        return self._get("gitopsCluster", self._gitops, identifier)

    def infrastructure(self, identifier: str, environment: str | None = None) -> Infrastructure:
        """The infrastructure `identifier` of `environment`; without an environment the identifier must be
        unique across environments. Raises `CatalogLookupError`."""
        if environment is not None:
            found = self._infras.get((environment, identifier))
            if found is None:
                raise CatalogLookupError(
                    f"unknown infrastructure {identifier!r} in environment {environment!r} in {self.source}"
                )
            return found
        matches = [infra for (_, ident), infra in self._infras.items() if ident == identifier]
        if not matches:
            raise CatalogLookupError(f"unknown infrastructure {identifier!r} in {self.source}")
        if len(matches) > 1:
            envs = ", ".join(sorted(infra.environment_ref for infra in matches))
            raise CatalogLookupError(
                f"infrastructure {identifier!r} is ambiguous: it exists in environments {envs}; name the environment"
            )
        return matches[0]

    def infrastructures_of(self, environment: str) -> tuple[Infrastructure, ...]:
        """Every infrastructure of an environment, in file order."""
        return tuple(infra for (env, _), infra in self._infras.items() if env == environment)

    def gitops_clusters_of(self, environment: str) -> tuple[GitOpsCluster, ...]:
        """Every GitOps cluster linked to an environment, in file order."""
        return tuple(cluster for cluster in self._gitops.values() if environment in cluster.environments)

    def environments_of_group(self, identifier: str) -> tuple[Environment, ...]:
        """The environments of a group, in the group's order; raises `CatalogLookupError` for an unknown group."""
        group = self.environment_group(identifier)
        return tuple(self._environments[env] for env in group.environments)

    def links_for(self, kind: RefKind, entity: CatalogEntity) -> tuple[Link, ...]:
        """The entry's own links, then the links its kind's templates produce for it."""
        links = list(entity.links)
        values = _template_values(kind, entity)
        for template in self.document.links.for_kind(kind):
            url = _fill_template(template.url, values)
            if url is not None:
                links.append(Link(name=template.name, url=url))
        return tuple(links)

    def resolve_ref(self, kind: RefKind, ref: str | None, *, environment: str | None = None) -> Resolved | Unresolved:
        """Resolve a pipeline reference to a catalog entry, or say why not.

        Expressions (`<+pipeline.variables.svc>`) are `Unresolved`: render them first when a value is known.
        `environment` scopes an infrastructure lookup.
        """
        if kind not in REF_KINDS:
            raise ValueError(f"unknown reference kind {kind!r}; expected one of {', '.join(REF_KINDS)}")
        raw = "" if ref is None else str(ref)
        if not raw.strip():
            return Unresolved(kind=kind, raw=raw or "(empty)", reason=f"no {_KIND_WORDS[kind]} given")
        if is_expression(raw):
            return Unresolved(kind=kind, raw=raw, reason="expression not resolved at this point of the pipeline")
        try:
            entity: CatalogEntity
            if kind == "service":
                entity = self.service(raw)
            elif kind == "environment":
                entity = self.environment(raw)
            elif kind == "environmentGroup":
                entity = self.environment_group(raw)
            elif kind == "gitopsCluster":
                entity = self.gitops_cluster(raw)
            else:
                entity = self.infrastructure(raw, environment)
        except CatalogLookupError as exc:
            return Unresolved(kind=kind, raw=raw, reason=str(exc))
        return Resolved(kind=kind, ref=raw, entity=entity, links=self.links_for(kind, entity))


def _template_values(kind: RefKind, entity: CatalogEntity) -> dict[str, str]:
    values = {"identifier": entity.identifier, "name": entity.name}
    if isinstance(entity, Environment):
        values["type"] = entity.type
    elif isinstance(entity, Infrastructure):
        values.update(entity.details.fields())
        values.update(type=entity.type, environment=entity.environment_ref)
    elif isinstance(entity, GitOpsCluster):
        values["url"] = entity.url
    return values


def _check_template(kind: RefKind, url: str) -> str | None:
    try:
        fields = [part for part in string.Formatter().parse(url)]
    except ValueError as exc:
        return f"bad link template: {exc}"
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        # Only plain names: `{0.__class__}`-style attribute access must never reach str.format.
        if not _PLACEHOLDER.match(field) or spec or conversion:
            return f"bad placeholder {{{field}}}: use plain field names such as {{identifier}}"
        if kind != "infrastructure" and field not in _TEMPLATE_FIELDS[kind]:
            allowed = ", ".join(sorted(_TEMPLATE_FIELDS[kind]))
            return f"unknown placeholder {{{field}}} for {_KIND_WORDS[kind]} links (allowed: {allowed})"
    sample = _fill_template(url, dict.fromkeys(_TEMPLATE_FIELDS[kind], "x"), strict=False)
    if sample is not None:
        try:
            _http_url(sample)
        except ValueError:
            return "link template must produce an http(s) URL"
    return None


def _fill_template(url: str, values: Mapping[str, str], strict: bool = True) -> str | None:
    out = []
    for literal, field, _, _ in string.Formatter().parse(url):
        out.append(literal)
        if field is None:
            continue
        if field not in values:
            if strict:
                return None
            out.append("x")
            continue
        out.append(quote(values[field], safe=""))
    return "".join(out)
