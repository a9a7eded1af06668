"""What a notification says, independent of the channel: gate events resolved against the catalog.

`ApprovalView.from_gate_opened` turns a `GateOpened` into names, types, details and links for the current and the
upcoming stages (services, environments with their type, environment group, infrastructures with their details,
artifacts, GitOps clusters, custom metadata), the policy, the time left, the execution history and the approve /
reject links. `OutcomeView.from_event` does the same for approved / rejected / expired / cancelled gates.

Anything that cannot be resolved (an identifier the catalog does not know, a `<+...>` expression the executor could
not resolve yet) becomes an explicit unresolved `Item` whose display text is e.g.
`unresolved: <+pipeline.variables.svc> (not known until stage Deploy to production runs)`: never a blank, never a
raw expression inside prose. Expressions left in the approval message are marked the same way.

Pure: no I/O and no wall clock (`now` is passed in). Views are frozen dataclasses; renderers (see `render`) only
format them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote
from weakref import WeakKeyDictionary

from signoff.catalog import Catalog, InfrastructureDetails, RefKind, Resolved, is_expression
from signoff.catalog.filters import describe_filter
from signoff.contracts.base import format_utc, parse_utc
from signoff.contracts.envelope import Event
from signoff.contracts.events import (
    ApproverInput,
    EnvironmentRef,
    GateApproved,
    GateCancelled,
    GateEvent,
    GateExpired,
    GateOpened,
    GateRejected,
    HistoryEntry,
    RequestRefused,
    StageMetadata,
    TargetFilter,
    Vote,
)

ItemKind = Literal["service", "environment", "environmentGroup", "infrastructure", "gitopsCluster", "value"]
OutcomeKind = Literal["approved", "rejected", "expired", "cancelled", "refused"]

_KIND_WORDS: dict[str, str] = {
    "service": "service",
    "environment": "environment",
    "environmentGroup": "environment group",
    "infrastructure": "infrastructure",
    "gitopsCluster": "GitOps cluster",
    "value": "value",
}


@dataclass(frozen=True, slots=True)
class LinkView:
    """A labelled link."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class Item:
    """One thing a notification names: a catalog entry (resolved, with details and links), a plain value, or an
    unresolved reference (`resolved` False: `raw` is what the pipeline wrote, `reason` why it is not known)."""

    kind: ItemKind
    resolved: bool
    text: str
    raw: str
    reason: str = ""
    details: tuple[tuple[str, str], ...] = ()
    links: tuple[LinkView, ...] = ()

    def display(self) -> str:
        """The name (resolved) or `unresolved: <raw> (<reason>)`; a partly known value shows its known text with
        each expression marked `(unresolved: <+...>)`. Never blank."""
        if self.resolved:
            return self.text
        if self.text:
            return f"{self.text} ({self.reason})" if self.reason else self.text
        return f"unresolved: {self.raw} ({self.reason})" if self.reason else f"unresolved: {self.raw}"

    def details_text(self) -> str:
        """`key: value, key: value` of the details, or ``."""
        return ", ".join(f"{key}: {value}" for key, value in self.details)


@dataclass(frozen=True, slots=True)
class FilterView:
    """Targets chosen by filter: the names chosen and why (`environments tagged region=eu OR tier=prod`), or, while
    a filter cannot be applied yet, the filter marked unresolved with the reason."""

    entity: Literal["environments", "infrastructures", "gitOpsClusters"]
    chosen: tuple[str, ...]
    criteria: str
    resolved: bool = True
    reason: str = ""

    def display(self) -> str:
        """`Production EU, Production US (environments tagged region=eu OR tier=prod)`, `none (...)`, or
        `unresolved filter: environments tagged region=(unresolved: <+...>) (reason)`."""
        if not self.resolved:
            return f"unresolved filter: {self.criteria} ({self.reason})"
        return f"{', '.join(self.chosen) or 'none'} ({self.criteria})"


@dataclass(frozen=True, slots=True)
class EnvironmentView:
    """An environment of a stage with its infrastructures and GitOps clusters (and the filters that chose them)."""

    environment: Item
    type: str | None
    infrastructures: tuple[Item, ...] = ()
    gitops_clusters: tuple[Item, ...] = ()
    infrastructure_filter: FilterView | None = None
    gitops_cluster_filter: FilterView | None = None


@dataclass(frozen=True, slots=True)
class ArtifactView:
    """An artifact: image, tag and digest, each a value or unresolved; `service` when the stage names it."""

    image: Item
    tag: Item | None = None
    digest: Item | None = None
    service: Item | None = None

    def display(self) -> str:
        """`image:tag@digest`, with unresolved parts labelled."""
        text = self.image.display()
        if self.tag is not None:
            text += f":{self.tag.display()}" if self.tag.resolved else f" tag {self.tag.display()}"
        if self.digest is not None:
            text += f"@{self.digest.display()}" if self.digest.resolved else f" digest {self.digest.display()}"
        return text


@dataclass(frozen=True, slots=True)
class StageView:
    """The CD metadata of one stage, resolved; `position` is `current` or `upcoming`."""

    identifier: str
    name: str
    type: str
    position: Literal["current", "upcoming"]
    services: tuple[Item, ...] = ()
    environment_group: Item | None = None
    environments: tuple[EnvironmentView, ...] = ()
    artifacts: tuple[ArtifactView, ...] = ()
    custom_metadata: tuple[tuple[str, Item], ...] = ()
    environment_filter: FilterView | None = None
    """How the environments were chosen, when by filter."""


@dataclass(frozen=True, slots=True)
class PolicyView:
    """Who may approve and how many must, as lines of text (one per rule, then constraints)."""

    rules: tuple[str, ...]
    constraints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One entry of the execution history."""

    stage: str
    step: str | None
    status: str
    started_at: str | None
    ended_at: str | None
    took: str | None

    def display(self) -> str:
        """`Stage / Step: status (took 8m)`."""
        what = f"{self.stage} / {self.step}" if self.step else self.stage
        took = f" (took {self.took})" if self.took else ""
        return f"{what}: {self.status}{took}"


@dataclass(frozen=True, slots=True)
class ApprovalView:
    """Everything an approval request notification shows, resolved; build it with `from_gate_opened`."""

    event_id: str
    event_type: str
    gate_id: str
    pipeline_id: str
    execution_id: str
    pipeline_name: str
    stage_name: str
    step_name: str
    triggered_by: str
    message: str
    stages: tuple[StageView, ...]
    policy: PolicyView
    time_left: str
    opened_at: str
    expires_at: str
    timeout_action: str
    history: tuple[HistoryLine, ...]
    approver_inputs: tuple[tuple[str, str], ...]
    """(name, description): default value, whether required, allowed values."""
    custom_data: tuple[tuple[str, Item], ...]
    gate_url: str
    approve_url: str
    reject_url: str
    review_url: str | None
    data_parts: tuple[str, str]
    """The event's data as deterministic JSON members (sorted keys), those before and those after the key
    `notification`: `data_json` joins them, the webhook body puts its `notification` member between them (see
    `data_with_notification`) without encoding the data again."""

    kind: Literal["opened"] = "opened"
    headline: str = "Approval needed"
    """First words of the title: `Approval needed`, or e.g. `Reminder: approval needed` (see `restated`)."""
    purpose: str | None = None
    """None for the request itself; a reminder's or an escalation's schedule purpose (`reminder:1h`,
    `escalation:sre`): a notice of its own, not a repeat of the request (see `restated`)."""

    def restated(self, *, now: datetime, headline: str, purpose: str) -> ApprovalView:
        """The same view at a later moment (time left recomputed) under another headline, as the notice `purpose`:
        for reminders (`Reminder: approval needed`) and escalations (`Escalated: approval needed`)."""
        time_left = humanize_time_left(parse_utc(self.expires_at), now)
        return replace(self, time_left=time_left, headline=headline, purpose=purpose)

    @property
    def data_json(self) -> str:
        """The event's data as deterministic JSON (sorted keys, no whitespace, UTF-8 kept)."""
        return _joined(*self.data_parts)

    @property
    def data(self) -> dict[str, Any]:
        """The event's data as a JSON object (a fresh copy)."""
        return json.loads(self.data_json)

    @property
    def current_stage(self) -> StageView:
        """The stage holding the approval step."""
        return self.stages[0]

    @property
    def upcoming_stages(self) -> tuple[StageView, ...]:
        """The stages the approval lets through."""
        return self.stages[1:]

    def unresolved(self) -> tuple[Item, ...]:
        """Every unresolved item, in display order."""
        return tuple(item for item in _items_of(self) if not item.resolved)

    @classmethod
    def from_gate_opened(
        cls,
        event: GateOpened | Event[GateOpened],
        catalog: Catalog,
        *,
        now: datetime,
        approval_page_url: str,
        event_id: str | None = None,
    ) -> ApprovalView:
        """Resolve a `GateOpened` (its data, or the whole CloudEvent) against `catalog`.

        `now` is the moment the notification is built (time left); `approval_page_url` the base of the approve /
        reject links. The event id (for idempotency keys) is the CloudEvent's id, else `event_id`, else
        `<type>/<gate id>` (a gate opens once).
        """
        data, event_id = _unwrap(event, event_id)
        assert isinstance(data, GateOpened)
        stages = [_stage_view(data.current_stage, "current", catalog)]
        stages += [_stage_view(stage, "upcoming", catalog) for stage in data.upcoming_stages]
        base = approval_page_url.rstrip("/")
        gate_url = _gate_url(base, data.gate_id)
        triggered = data.triggered_by
        return cls(
            event_id=event_id,
            event_type=data.event_type,
            gate_id=data.gate_id,
            pipeline_id=data.key.pipeline_id,
            execution_id=data.key.execution_id,
            pipeline_name=data.pipeline_name,
            stage_name=data.stage_name,
            step_name=data.step_name,
            triggered_by=f"{triggered.name} ({triggered.user})" if triggered.name else triggered.user,
            message=mark_expressions(data.message or data.message_template),
            stages=tuple(stages),
            policy=_policy_view(data),
            time_left=humanize_time_left(data.expires_at, now),
            opened_at=format_utc(data.opened_at),
            expires_at=format_utc(data.expires_at),
            timeout_action=data.timeout_action.value,
            history=tuple(_history_line(entry) for entry in data.execution_history),
            approver_inputs=tuple((item.name, _input_text(item)) for item in data.approver_inputs),
            custom_data=tuple((key, _value(value, None)) for key, value in sorted(data.custom_data.items())),
            gate_url=gate_url,
            approve_url=f"{gate_url}?action=approve",
            reject_url=f"{gate_url}?action=reject",
            review_url=data.review_url,
            data_parts=_data_parts(data),
        )


@dataclass(frozen=True, slots=True)
class OutcomeView:
    """A gate's outcome (approved, rejected, expired, cancelled), told to the same recipients as the request; or a
    request the approval service refused (`refused`: no gate was opened, `gate_id` is the request's natural key),
    told to the pipeline's triggerer."""

    kind: OutcomeKind
    event_id: str
    event_type: str
    gate_id: str
    pipeline_id: str
    execution_id: str
    stage_id: str
    step_id: str
    pipeline_name: str
    stage_name: str
    step_name: str
    headline: str
    details: tuple[str, ...]
    votes: tuple[str, ...]
    at: str
    gate_url: str
    data_parts: tuple[str, str]
    """As `ApprovalView.data_parts`."""

    @property
    def data_json(self) -> str:
        """The event's data as deterministic JSON (sorted keys, no whitespace, UTF-8 kept)."""
        return _joined(*self.data_parts)

    @property
    def data(self) -> dict[str, Any]:
        """The event's data as a JSON object (a fresh copy)."""
        return json.loads(self.data_json)

    @classmethod
    def from_event(
        cls,
        event: GateApproved | GateRejected | GateExpired | GateCancelled | RequestRefused | Event[Any],
        *,
        approval_page_url: str,
        opened: GateOpened | None = None,
        event_id: str | None = None,
    ) -> OutcomeView:
        """The outcome view of a gate event; `opened` (the gate's `GateOpened`, when known) supplies the
        pipeline, stage and step names, otherwise their identifiers are shown."""
        data, event_id = _unwrap(event, event_id)
        pipeline = opened.pipeline_name if opened else data.key.pipeline_id
        stage = opened.stage_name if opened else data.key.stage_id
        step = opened.step_name if opened else data.key.step_id
        if isinstance(data, RequestRefused):
            pipeline, step = data.pipeline_name or pipeline, data.step_name or step
        what = f"{pipeline} / {stage} / {step}"
        details: list[str] = []
        kind: OutcomeKind
        if isinstance(data, GateApproved):
            kind, at = "approved", data.approved_at
            by = ", ".join(vote.approver for vote in data.votes if vote.status.value == "Approved")
            headline = f"Approved: {what}"
            if data.cause.value == "timeout_action":
                details.append("approved by the timeout action")
            elif by:
                details.append(f"by {by}")
            details += [f"input {name} = {value}" for name, value in sorted(data.inputs.items())]
        elif isinstance(data, GateRejected):
            kind, at = "rejected", data.rejected_at
            headline = f"Rejected: {what}"
            if data.cause.value == "approver":
                details.append(f"by {data.rejected_by}")
            elif data.cause.value == "superseded":
                details.append(f"superseded by gate {data.superseded_by}")
            else:
                details.append("rejected by the timeout action")
            if data.comment:
                details.append(f"comment: {mark_expressions(data.comment)}")
        elif isinstance(data, GateExpired):
            kind, at = "expired", data.expired_at
            headline = f"Expired: {what}"
            details.append("nobody decided in time; the pipeline fails")
        elif isinstance(data, GateCancelled):
            kind, at = "cancelled", data.cancelled_at
            headline = f"Cancelled: {what}"
            if data.reason:
                details.append(f"reason: {mark_expressions(data.reason)}")
        elif isinstance(data, RequestRefused):
            kind, at = "refused", data.refused_at
            headline = f"Approval request refused: {what}"
            details.append("the approval service cannot serve this request: no gate was opened, the pipeline fails")
            details += [f"{field}: {mark_expressions(reason)}" for field, reason in data.reasons.items()]
        else:
            raise TypeError(f"not a gate outcome event: {type(data).__name__}")
        votes: tuple[Vote, ...] = tuple(getattr(data, "votes", ()))
        if isinstance(data, RequestRefused):
            gate_id, gate_url = data.key.as_path(), approval_page_url.rstrip("/")  # no gate: the approval page
        else:
            gate_id, gate_url = data.gate_id, _gate_url(approval_page_url.rstrip("/"), data.gate_id)
        return cls(
            kind=kind,
            event_id=event_id,
            event_type=data.event_type,
            gate_id=gate_id,
            pipeline_id=data.key.pipeline_id,
            execution_id=data.key.execution_id,
            stage_id=data.key.stage_id,
            step_id=data.key.step_id,
            pipeline_name=pipeline,
            stage_name=stage,
            step_name=step,
            headline=headline,
            details=tuple(details),
            votes=tuple(_vote_line(vote) for vote in votes),
            at=format_utc(at),
            gate_url=gate_url,
            data_parts=_data_parts(data),
        )


NotificationView = ApprovalView | OutcomeView


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def humanize_time_left(expires_at: datetime, now: datetime) -> str:
    """`2d 3h left`, `45m left`, `less than a minute left`, or `expired` (at most two units, rounded down)."""
    left = parse_utc(expires_at) - parse_utc(now)
    if left <= timedelta(0):
        return "expired"
    minutes = int(left.total_seconds() // 60)
    if minutes == 0:
        return "less than a minute left"
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n]
    return " ".join(parts[:2]) + " left"


def mark_expressions(text: str) -> str:
    """`text` with every `<+...>` expression (nesting allowed) shown as `(unresolved: <+...>)`, so prose never
    carries a bare expression. An unterminated `<+` is marked up to the end of the text."""
    return "".join(f"(unresolved: {part})" if expression else part for part, expression in expression_parts(text))


def expression_parts(text: str) -> list[tuple[str, bool]]:
    """`text` cut into prose and `<+...>` expressions (nesting allowed; an unterminated `<+` runs to the end), in
    order: (part, is an expression). For views that mark expressions their own way (the approval page)."""
    out: list[tuple[str, bool]] = []
    i = 0
    while True:
        start = text.find("<+", i)
        if start < 0:
            if text[i:]:
                out.append((text[i:], False))
            return out
        if start > i:
            out.append((text[i:start], False))
        depth, j = 0, start
        while j < len(text):
            if text.startswith("<+", j):
                depth += 1
                j += 2
                continue
            if text[j] == ">":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        end = min(j + 1, len(text))
        out.append((text[start:end], True))
        i = end


def _unwrap(event: Any, event_id: str | None) -> tuple[Any, str]:
    if isinstance(event, Event):
        return event.data, event.id
    if isinstance(event, RequestRefused):
        return event, event_id or f"{event.event_type}/{event.key.as_path()}"
    if not isinstance(event, GateEvent):
        raise TypeError(f"expected a gate event or its CloudEvent, not {type(event).__name__}")
    return event, event_id or f"{event.event_type}/{event.gate_id}"


def _gate_url(base: str, gate_id: str) -> str:
    return f"{base}/gates/{quote(gate_id, safe='')}"


_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
"""`json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`, the encoder built once."""


def _data_parts(data: GateEvent | RequestRefused) -> tuple[str, str]:
    dumped = data.model_dump(mode="json")
    before = _ENCODE({key: value for key, value in dumped.items() if key < NOTIFICATION_KEY})
    after = _ENCODE({key: value for key, value in dumped.items() if key > NOTIFICATION_KEY})
    return before[1:-1], after[1:-1]


def _joined(*members: str) -> str:
    return "{" + ",".join(member for member in members if member) + "}"


NOTIFICATION_KEY = "notification"


def data_with_notification(view: NotificationView, notification: Any) -> str:
    """The view's event data as JSON with a `notification` member: byte for byte `json.dumps({**view.data,
    "notification": notification}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))`, the data not
    encoded again."""
    before, after = view.data_parts
    return _joined(before, f"{_ENCODE(NOTIFICATION_KEY)}:{_ENCODE(notification)}", after)


def _reason(raw: str, reason: str, stage: StageMetadata, position: str) -> str:
    if is_expression(raw):
        if position == "upcoming":
            return f"not known until stage {stage.name} runs"
        return "expression not resolved at this point of the pipeline"
    return reason


def _links(resolved: Resolved) -> tuple[LinkView, ...]:
    return tuple(LinkView(link.name, link.url) for link in resolved.links)


def _unresolved(kind: ItemKind, raw: str, reason: str) -> Item:
    return Item(kind=kind, resolved=False, text="", raw=raw, reason=reason)


@dataclass(slots=True)
class _Memo:
    """What one catalog has resolved: reference items by (kind, raw, environment), stage views by (position, the
    stage's JSON). Both are functions of the catalog and their key alone."""

    refs: dict[tuple[str, str, str | None], Item]
    stages: dict[tuple[str, str], StageView]


_MEMOS: WeakKeyDictionary[Catalog, _Memo] = WeakKeyDictionary()
"""Per catalog. A catalog is immutable and a changed one is a new `Catalog` (its memo starts empty, the old one goes
with it), so an entry never outlives what it was resolved from."""

_MEMO_LIMIT = 10_000
"""Entries kept per table: keys come from events, and new ones must not grow a memo without end (a full table is
emptied and starts again)."""


def _memo(catalog: Catalog) -> _Memo:
    memo = _MEMOS.get(catalog)
    if memo is None:
        memo = _MEMOS.setdefault(catalog, _Memo({}, {}))
    return memo


def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    if len(table) >= _MEMO_LIMIT:
        table.clear()
    table[key] = value


def _ref(
    kind: RefKind,
    raw: str,
    catalog: Catalog,
    stage: StageMetadata,
    position: str,
    environment: str | None = None,
) -> Item:
    if is_expression(raw):  # its reason names the stage: resolved each time (no catalog lookup)
        return _resolve_ref(kind, raw, catalog, stage, position, environment)
    # Anything else resolves the same in every stage and event: gates name the same few services, environments
    # and infrastructures again and again, so each is resolved once per catalog.
    refs = _memo(catalog).refs
    key = (kind, raw, environment)
    item = refs.get(key)
    if item is None:
        item = _resolve_ref(kind, raw, catalog, stage, position, environment)
        _remember(refs, key, item)
    return item


def _resolve_ref(
    kind: RefKind,
    raw: str,
    catalog: Catalog,
    stage: StageMetadata,
    position: str,
    environment: str | None = None,
) -> Item:
    found = catalog.resolve_ref(kind, raw, environment=environment)
    if not isinstance(found, Resolved):
        reason = found.reason
        if not is_expression(raw) and found.raw != "(empty)":
            reason = f"{_KIND_WORDS[kind]} not in the catalog"
        return _unresolved(kind, found.raw, _reason(raw, reason, stage, position))
    entity = found.entity
    details: list[tuple[str, str]] = []
    if kind == "environment":
        details.append(("type", str(getattr(entity, "type", ""))))
    elif kind == "infrastructure":
        details.append(("type", str(getattr(entity, "type", ""))))
        infra_details = getattr(entity, "details", None)
        if isinstance(infra_details, InfrastructureDetails):
            details += sorted(infra_details.fields().items())
            details += [(f"label {key}", value) for key, value in sorted(infra_details.labels.items())]
    elif kind == "environmentGroup":
        names = [catalog.environment(env).name for env in getattr(entity, "environments", ())]
        details.append(("environments", ", ".join(names)))
    elif kind == "gitopsCluster":
        details.append(("url", str(getattr(entity, "url", ""))))
    links = _links(found)
    if kind == "gitopsCluster":
        links = (LinkView("Cluster", str(getattr(entity, "url", ""))), *links)
    return Item(kind=kind, resolved=True, text=entity.name, raw=raw, details=tuple(details), links=links)


def _value(raw: str | None, stage: StageMetadata | None, position: str = "current") -> Item:
    text = "" if raw is None else raw
    if is_expression(text):
        reason = "expression not resolved at this point of the pipeline"
        if stage is not None and position == "upcoming":
            reason = f"not known until stage {stage.name} runs"
        marked = mark_expressions(text)
        if marked == f"(unresolved: {text})":  # the whole value is one expression
            return _unresolved("value", text, reason)
        return Item(kind="value", resolved=False, text=marked, raw=text, reason=reason)
    if not text.strip():
        return _unresolved("value", "(empty)", "no value given")
    return Item(kind="value", resolved=True, text=text, raw=text)


def _environment_view(env: EnvironmentRef, catalog: Catalog, stage: StageMetadata, position: str) -> EnvironmentView:
    item = _ref("environment", env.ref, catalog, stage, position)
    env_type = dict(item.details).get("type") if item.resolved else None
    if env_type is None and env.type is not None:
        env_type = env.type.value
    if item.resolved:
        infras = tuple(
            _ref("infrastructure", ref, catalog, stage, position, env.ref) for ref in env.infrastructure_refs
        )
    else:
        # Infrastructure identifiers are scoped by environment: without a known environment, none is guessed.
        infras = tuple(
            _unresolved(
                "infrastructure",
                ref,
                _reason(ref, f"its environment {env.ref} is not resolved", stage, position),
            )
            for ref in env.infrastructure_refs
        )
    clusters = tuple(_ref("gitopsCluster", ref, catalog, stage, position) for ref in env.gitops_cluster_refs)
    return EnvironmentView(
        environment=item,
        type=env_type,
        infrastructures=infras,
        gitops_clusters=clusters,
        infrastructure_filter=_filter_view("infrastructures", env.filters, infras),
        gitops_cluster_filter=_filter_view("gitOpsClusters", env.filters, clusters),
    )


def _filter_view(
    entity: Literal["environments", "infrastructures", "gitOpsClusters"],
    filters: list[TargetFilter],
    chosen: tuple[Item, ...],
) -> FilterView | None:
    """How `chosen` was chosen, when `filters` (those of the stage or an environment) choose this entity."""
    relevant = [f for f in filters if entity in f.entities]
    if not relevant:
        return None
    criteria = "; or ".join(
        describe_filter(
            [entity],
            f.type.value,
            f.tags,
            f.match_type.value if f.match_type else None,
            f.tags_expression,
        )
        for f in relevant
    )
    blocked = next((f.unresolved_reason for f in relevant if f.unresolved_reason), None)
    if blocked is not None:
        return FilterView(entity, (), mark_expressions(criteria), resolved=False, reason=mark_expressions(blocked))
    return FilterView(entity, tuple(item.display() for item in chosen), mark_expressions(criteria))


def _stage_view(stage: StageMetadata, position: Literal["current", "upcoming"], catalog: Catalog) -> StageView:
    # The gates of one pipeline carry the same stages, execution after execution: each is resolved once per
    # catalog (keyed by its JSON, which pydantic-core writes in a few microseconds).
    stages = _memo(catalog).stages
    key = (position, stage.model_dump_json())
    view = stages.get(key)
    if view is None:
        view = _resolve_stage(stage, position, catalog)
        _remember(stages, key, view)
    return view


def _resolve_stage(stage: StageMetadata, position: Literal["current", "upcoming"], catalog: Catalog) -> StageView:
    group = (
        _ref("environmentGroup", stage.environment_group_ref, catalog, stage, position)
        if stage.environment_group_ref is not None
        else None
    )
    artifacts = tuple(
        ArtifactView(
            image=_value(artifact.image, stage, position),
            tag=_value(artifact.tag, stage, position) if artifact.tag is not None else None,
            digest=_value(artifact.digest, stage, position) if artifact.digest is not None else None,
            service=(
                _ref("service", artifact.service_ref, catalog, stage, position)
                if artifact.service_ref is not None
                else None
            ),
        )
        for artifact in stage.artifacts
    )
    environments = tuple(_environment_view(env, catalog, stage, position) for env in stage.environments)
    return StageView(
        identifier=stage.identifier,
        name=stage.name,
        type=stage.type.value,
        position=position,
        services=tuple(_ref("service", ref, catalog, stage, position) for ref in stage.service_refs),
        environment_group=group,
        environments=environments,
        environment_filter=_filter_view(
            "environments", stage.environment_filters, tuple(env.environment for env in environments)
        ),
        artifacts=artifacts,
        custom_metadata=tuple(
            (key, _value(value, stage, position)) for key, value in sorted(stage.custom_metadata.items())
        ),
    )


def _who(groups: list[str], users: list[str]) -> str:
    parts = []
    if groups:
        parts.append(("group " if len(groups) == 1 else "groups ") + ", ".join(groups))
    if users:
        parts.append(("user " if len(users) == 1 else "users ") + ", ".join(users))
    return " or ".join(parts)


def _policy_view(data: GateOpened) -> PolicyView:
    rules = tuple(
        f"{rule.minimum_count} approval{'s' if rule.minimum_count > 1 else ''} "
        f"from {_who(rule.user_groups, rule.users)}"
        for rule in data.policy.all_rules()
    )
    constraints: list[str] = []
    if len(rules) > 1:
        constraints.append("every rule must pass; any eligible rejection rejects")
    if data.policy.disallow_pipeline_executor:
        constraints.append(f"{data.triggered_by.user} (who triggered the pipeline) may not approve")
    done = {"approve": "approved", "reject": "rejected"}.get(data.timeout_action.value)
    if done is not None:
        constraints.append(f"on timeout the gate is {done} automatically")
    return PolicyView(rules=rules, constraints=tuple(constraints))


def _took(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None or end < start:
        return None
    seconds = int((end - start).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    hours, rest = divmod(seconds // 60, 60)
    return f"{hours}h{rest}m" if hours else f"{rest}m"


def _history_line(entry: HistoryEntry) -> HistoryLine:
    return HistoryLine(
        stage=entry.stage_name,
        step=entry.step_name,
        status=entry.status.value,
        started_at=format_utc(entry.started_at) if entry.started_at else None,
        ended_at=format_utc(entry.ended_at) if entry.ended_at else None,
        took=_took(entry.started_at, entry.ended_at),
    )


def _input_text(item: ApproverInput) -> str:
    parts = [f"default: {item.default_value}" if item.default_value else "no default"]
    if item.required:
        parts.append("required")
    if item.allowed_values:
        parts.append("one of " + ", ".join(item.allowed_values))
    return "; ".join(parts)


def _vote_line(vote: Vote) -> str:
    comment = f": {mark_expressions(vote.comment)}" if vote.comment else ""
    return f"{vote.approver} {vote.status.value.lower()} via {vote.source}{comment}"


def _items_of(view: ApprovalView) -> list[Item]:
    items: list[Item] = []
    for stage in view.stages:
        items += stage.services
        if stage.environment_group is not None:
            items.append(stage.environment_group)
        for env in stage.environments:
            items += [env.environment, *env.infrastructures, *env.gitops_clusters]
        for artifact in stage.artifacts:
            items += [part for part in (artifact.service, artifact.image, artifact.tag, artifact.digest) if part]
        items += [item for _, item in stage.custom_metadata]
    items += [item for _, item in view.custom_data]
    return items


def resolve_stage(stage: StageMetadata, position: Literal["current", "upcoming"], catalog: Catalog) -> StageView:
    """One stage's CD metadata resolved against `catalog`, exactly as notifications show it (the api's gate
    documents and the approval page use it too)."""
    return _stage_view(stage, position, catalog)
