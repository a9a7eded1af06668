"""The Gate aggregate: one approval step of one pipeline run, waiting for its approvers.

State machine: PENDING -> APPROVED | REJECTED | EXPIRED | CANCELLED. Nothing changes after a final state.

Commands (``decide``, ``expire``, ``cancel``, ``supersede``) return the domain events they caused and also keep
them until ``collect_events`` (what the unit of work turns into outbox rows on commit); a business refusal is a
``DecisionRefused`` event, never an exception. Exceptions (``InvalidDefinition``) are reserved for
malformed calls: naive datetimes, inconsistent definitions.

Time is always passed in. Every command first applies a timeout that is due at its ``at``, so an outcome does not
depend on how late the expiry sweeper runs: a decision processed after the deadline finds the gate already expired.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from signoff.approval.domain.events import (
    DecisionRefused,
    GateApproved,
    GateCancelled,
    GateEvent,
    GateExpired,
    GateOpened,
    GateRejected,
    VoteRecorded,
)
from signoff.approval.domain.model import (
    Approver,
    Comment,
    Directory,
    Member,
    OutcomeCause,
    RuleProgress,
    Vote,
    counts_for,
    require_aware,
)
from signoff.approval.domain.refusals import RefusalReason
from signoff.kernel import (
    ApproverInput,
    DecisionStatus,
    GateKey,
    GateStatus,
    InvalidDefinition,
    Policy,
    TimeoutAction,
    has_value,
    user_key,
)

TokenFactory = Callable[[], str]


def new_token() -> str:
    """A fresh unguessable gate token (192 bits, URL-safe), like CodePipeline's approval token."""
    return secrets.token_urlsafe(24)


class Gate:
    """An approval gate and its votes.

    Build a new gate with ``Gate.open``. The constructor is for the repository, to rebuild a stored gate exactly
    (including the directory snapshot and every accepted vote, oldest first).
    """

    def __init__(
        self,
        *,
        key: GateKey,
        policy: Policy,
        inputs: Iterable[ApproverInput],
        directory: Directory,
        pipeline_executor: str | None,
        token: str,
        opened_at: datetime,
        expires_at: datetime,
        timeout_action: TimeoutAction = TimeoutAction.FAIL,
        status: GateStatus = GateStatus.PENDING,
        votes: Iterable[Vote] = (),
        closed_at: datetime | None = None,
    ) -> None:
        require_aware(opened_at, "opened_at")
        require_aware(expires_at, "expires_at")
        if expires_at <= opened_at:
            raise InvalidDefinition(f"expires_at {expires_at} must be after opened_at {opened_at}")
        if not isinstance(token, str) or not token:
            raise InvalidDefinition("a gate token must be a non-empty string")
        definitions = tuple(inputs)
        names = [definition.name for definition in definitions]
        if len(set(names)) != len(names):
            raise InvalidDefinition(f"approver input names must be unique, got {names}")
        timeout_action = TimeoutAction(timeout_action)
        # Auto-approving would hand the pipeline a required input with no value; refuse the definition up front
        # rather than fail (or approve incompletely) a day later.
        if timeout_action is TimeoutAction.APPROVE:
            unfillable = [d.name for d in definitions if d.required and not d.has_default]
            if unfillable:
                raise InvalidDefinition(
                    f"timeout action 'approve' needs a default for required input(s): {', '.join(unfillable)}"
                )
        status = GateStatus(status)
        if closed_at is not None:
            require_aware(closed_at, "closed_at")
        self._key = key
        self._policy = policy
        self._inputs = definitions
        self._directory = directory
        self._pipeline_executor = pipeline_executor
        self._token = token
        self._opened_at = opened_at
        self._expires_at = expires_at
        self._timeout_action = timeout_action
        self._status = status
        self._votes: list[Vote] = list(votes)
        self._closed_at = closed_at
        self._events: list[GateEvent] = []

    # ----------------------------------------------------------------------------------------------- creation

    @classmethod
    def open(
        cls,
        key: GateKey,
        policy: Policy,
        inputs: Iterable[ApproverInput],
        members_by_group: Mapping[str, Iterable[Member]] | Directory,
        pipeline_executor: str | None,
        opened_at: datetime,
        timeout: timedelta,
        timeout_action: TimeoutAction = TimeoutAction.FAIL,
        token_factory: TokenFactory = new_token,
    ) -> tuple[Gate, list[GateEvent]]:
        """Open a gate that waits ``timeout`` from ``opened_at``; returns the gate and ``[GateOpened]``.

        ``members_by_group`` is the membership of the policy's groups, resolved by the service now: it is frozen
        into the gate. ``timeout`` is the effective one (see ``effective_timeout``). ``pipeline_executor`` is the
        user id of whoever ran the pipeline, or ``None`` if unknown (then the self-approval ban cannot apply).
        """
        require_aware(opened_at, "opened_at")
        if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
            raise InvalidDefinition(f"timeout must be a positive timedelta, got {timeout!r}")
        directory = members_by_group if isinstance(members_by_group, Directory) else Directory(members_by_group)
        gate = cls(
            key=key,
            policy=policy,
            inputs=inputs,
            directory=directory,
            pipeline_executor=pipeline_executor,
            token=token_factory(),
            opened_at=opened_at,
            expires_at=opened_at + timeout,
            timeout_action=timeout_action,
        )
        opened = GateOpened(
            gate_key=key,
            at=opened_at,
            token=gate.token,
            expires_at=gate.expires_at,
            timeout_action=gate.timeout_action,
            policy=policy,
            inputs=gate.inputs,
            pipeline_executor=pipeline_executor,
            approvers=gate.eligible_approvers(),
            unsatisfiable_rules=gate.unsatisfiable_rules(),
        )
        gate._events.append(opened)
        return gate, [opened]

    # ----------------------------------------------------------------------------------------------- state

    @property
    def key(self) -> GateKey:
        """The gate's natural key."""
        return self._key

    @property
    def policy(self) -> Policy:
        """Who may decide, and how many."""
        return self._policy

    @property
    def inputs(self) -> tuple[ApproverInput, ...]:
        """The declared approver inputs, in declaration order."""
        return self._inputs

    @property
    def directory(self) -> Directory:
        """Group membership frozen at open time."""
        return self._directory

    @property
    def pipeline_executor(self) -> str | None:
        """User id of whoever ran the pipeline, if known."""
        return self._pipeline_executor

    @property
    def token(self) -> str:
        """The token a decision must carry."""
        return self._token

    @property
    def opened_at(self) -> datetime:
        """When the gate opened."""
        return self._opened_at

    @property
    def expires_at(self) -> datetime:
        """The deadline; at or after it the timeout action applies."""
        return self._expires_at

    @property
    def timeout_action(self) -> TimeoutAction:
        """What the deadline does to a pending gate."""
        return self._timeout_action

    @property
    def status(self) -> GateStatus:
        """Current status; final unless ``PENDING``."""
        return self._status

    @property
    def closed_at(self) -> datetime | None:
        """When the gate reached its final status, if it has."""
        return self._closed_at

    @property
    def votes(self) -> tuple[Vote, ...]:
        """Every accepted vote, oldest first, including those later replaced (the repository stores them all)."""
        return tuple(self._votes)

    def collect_events(self) -> list[GateEvent]:
        """The events of every command since the last call (or since the gate was built), oldest first; they are
        handed out once."""
        events, self._events = self._events, []
        return events

    def vote(self, decision_id: str) -> Vote | None:
        """The accepted vote of decision ``decision_id``, if there is one."""
        return next((vote for vote in self._votes if vote.decision_id == decision_id), None)

    def is_due(self, now: datetime) -> bool:
        """Whether the timeout action applies at ``now`` (pending and at or past the deadline)."""
        require_aware(now, "now")
        return self._status is GateStatus.PENDING and now >= self._expires_at

    def current_votes(self) -> tuple[Vote, ...]:
        """The latest vote of each approver, ordered by when that vote was cast."""
        latest: dict[str, int] = {}
        for position, vote in enumerate(self._votes):
            latest[vote.approver.key] = position
        return tuple(self._votes[position] for position in sorted(latest.values()))

    def is_eligible(self, user_id: str) -> bool:
        """Whether ``user_id`` counts for at least one rule (ignoring the self-approval ban)."""
        return any(counts_for(rule, user_id, self._directory) for rule in self._policy.rules)

    def is_pipeline_executor(self, user_id: str) -> bool:
        """Whether ``user_id`` is the pipeline executor and the policy bans them from deciding."""
        return (
            self._policy.disallow_pipeline_executor
            and self._pipeline_executor is not None
            and user_key(self._pipeline_executor) == user_key(user_id)
        )

    def progress(self) -> tuple[RuleProgress, ...]:
        """Per rule: which approvers (user ids) count for it so far, out of its minimum count."""
        approving = [vote.approver for vote in self.current_votes() if vote.status is DecisionStatus.APPROVE]
        return tuple(
            RuleProgress(
                rule_index=index,
                minimum_count=rule.minimum_count,
                approved_by=tuple(a.user_id for a in approving if counts_for(rule, a.user_id, self._directory)),
            )
            for index, rule in enumerate(self._policy.rules)
        )

    def final_inputs(self) -> dict[str, str]:
        """Every declared input's value as of now: the last approver's value wins, defaults fill the rest, else ``""``.

        Only current approving votes contribute: a replaced vote's values are gone with it.
        """
        provided = self.provided_inputs()
        return {
            definition.name: provided[definition.name][1]
            if definition.name in provided
            else definition.default_value or ""
            for definition in self._inputs
        }

    def provided_inputs(self) -> dict[str, tuple[str, str]]:
        """Input name -> (approver's user id, value) of the last current approving vote that gave it a value: what
        `final_inputs` takes instead of the default."""
        provided: dict[str, tuple[str, str]] = {}
        for vote in self.current_votes():
            if vote.status is not DecisionStatus.APPROVE:
                continue
            for name, value in vote.inputs.items():
                if has_value(value):
                    provided[name] = (vote.approver.user_id, value)
        return provided

    def eligible_approvers(self) -> tuple[Member, ...]:
        """Everyone who may decide: group members, then listed users, each once; the banned executor left out."""
        seen: set[str] = set()
        people: list[Member] = []

        def add(member: Member) -> None:
            if member.key not in seen and not self.is_pipeline_executor(member.user_id):
                seen.add(member.key)
                people.append(member)

        for rule in self._policy.rules:
            for group in rule.user_groups:
                for member in self._directory.members_of(group):
                    add(member)
        for rule in self._policy.rules:
            for user in rule.users:
                add(Member(user_id=user))
        return tuple(people)

    def unsatisfiable_rules(self) -> tuple[int, ...]:
        """Indexes of rules with fewer eligible people than their minimum count (given the executor ban)."""
        unsatisfiable = []
        for index, rule in enumerate(self._policy.rules):
            keys = set(rule.user_keys())
            for group in rule.user_groups:
                keys.update(member.key for member in self._directory.members_of(group))
            if self._policy.disallow_pipeline_executor and self._pipeline_executor is not None:
                keys.discard(user_key(self._pipeline_executor))
            if len(keys) < rule.minimum_count:
                unsatisfiable.append(index)
        return tuple(unsatisfiable)

    # ----------------------------------------------------------------------------------------------- commands

    def decide(
        self,
        *,
        decision_id: str,
        approver: Approver,
        status: DecisionStatus,
        token: str | None,
        comment: str = "",
        inputs: Mapping[str, str] | None = None,
        at: datetime,
        source: str,
        decided_at: datetime | None = None,
    ) -> list[GateEvent]:
        """Apply one approver's decision.

        ``at`` is when the service processes the decision (its clock), not the time the sender claims: the
        deadline is enforced on the service's time. ``source`` (the decision source) and ``decided_at`` (the
        sender's time, ``at`` when not given) are kept with the vote. Returns, in order: any timeout outcome that
        was due, then either ``DecisionRefused`` or ``VoteRecorded`` followed by ``GateApproved`` /
        ``GateRejected`` if the vote closed the gate.

        Refusals, checked in this order: ``duplicate`` (this decision id was already counted), ``gate_closed``,
        ``stale_token``, ``self_approval``, ``not_eligible``, ``invalid_inputs``. A rejection is never refused for
        its inputs (stopping a deployment must not fail on a form field); they are ignored and not recorded.
        """
        require_aware(at, "at")
        if not isinstance(decision_id, str) or not decision_id:
            raise InvalidDefinition("decision_id must be a non-empty string")
        if not isinstance(approver, Member):
            raise InvalidDefinition(f"approver must be an Approver (Member), got {approver!r}")
        if decided_at is not None:
            require_aware(decided_at, "decided_at")
        status = DecisionStatus(status)
        given_inputs = dict(inputs or {})
        events: list[GateEvent] = list(self._expire(at))

        def refuse(reason: RefusalReason, detail: str, offending: Iterable[str] = ()) -> list[GateEvent]:
            refused = DecisionRefused(
                gate_key=self._key,
                at=at,
                decision_id=decision_id,
                approver=approver,
                status=status,
                reason=reason,
                detail=detail,
                offending_inputs=tuple(offending),
            )
            return self._record([*events, refused])

        if any(vote.decision_id == decision_id for vote in self._votes):
            return refuse(RefusalReason.DUPLICATE, f"decision {decision_id} was already counted")
        if self._status.is_final:
            return refuse(RefusalReason.GATE_CLOSED, f"gate is {self._status.value}")
        # Constant-time comparison, so response timing does not reveal how much of a guessed token was right.
        if token is None or not hmac.compare_digest(token.encode(), self._token.encode()):
            return refuse(RefusalReason.STALE_TOKEN, "token does not match the gate's current token")
        if self.is_pipeline_executor(approver.user_id):
            return refuse(RefusalReason.SELF_APPROVAL, "the pipeline executor may not decide this gate")
        if not self.is_eligible(approver.user_id):
            return refuse(RefusalReason.NOT_ELIGIBLE, f"{approver.user_id} is not a listed approver or group member")

        if status is DecisionStatus.APPROVE:
            problems, offending = self._input_problems(approver, given_inputs)
            if problems:
                return refuse(RefusalReason.INVALID_INPUTS, "; ".join(problems), offending)
        else:
            given_inputs = {}

        replaced = self._current_vote_of(approver)
        vote = Vote(
            decision_id=decision_id,
            approver=approver,
            status=status,
            comment=comment,
            inputs=given_inputs,
            at=at,
            source=source,
            decided_at=decided_at or at,
        )
        self._votes.append(vote)
        progress = self.progress()
        events.append(
            VoteRecorded(
                gate_key=self._key,
                at=at,
                decision_id=decision_id,
                approver=approver,
                status=status,
                comment=comment,
                inputs=dict(given_inputs),
                replaced_decision_id=replaced.decision_id if replaced else None,
                progress=progress,
            )
        )
        if status is DecisionStatus.REJECT:
            # Any eligible rejection rejects at once: one "no" outweighs any number of "yes".
            self._close(GateStatus.REJECTED, at)
            events.append(
                GateRejected(
                    gate_key=self._key,
                    at=at,
                    cause=OutcomeCause.VOTES,
                    rejected_by=approver,
                    comment=comment,
                    comments=self._comments(),
                )
            )
        elif all(rule.satisfied for rule in progress):
            self._close(GateStatus.APPROVED, at)
            events.append(self._approved(at, OutcomeCause.VOTES))
        return self._record(events)

    def expire(self, now: datetime) -> list[GateEvent]:
        """Apply the timeout action if the gate is pending and ``now`` is at or past its deadline; else ``[]``.

        ``FAIL`` -> ``GateExpired``; ``APPROVE`` -> ``GateApproved`` (cause timeout; inputs from approvals so far,
        defaults for the rest); ``REJECT`` -> ``GateRejected`` (cause timeout).
        """
        return self._record(self._expire(now))

    def _expire(self, now: datetime) -> list[GateEvent]:
        if not self.is_due(now):
            return []
        if self._timeout_action is TimeoutAction.APPROVE:
            self._close(GateStatus.APPROVED, now)
            return [self._approved(now, OutcomeCause.TIMEOUT)]
        if self._timeout_action is TimeoutAction.REJECT:
            self._close(GateStatus.REJECTED, now)
            return [GateRejected(gate_key=self._key, at=now, cause=OutcomeCause.TIMEOUT, comments=self._comments())]
        self._close(GateStatus.EXPIRED, now)
        return [GateExpired(gate_key=self._key, at=now, expires_at=self._expires_at)]

    def cancel(self, reason: str, at: datetime) -> list[GateEvent]:
        """Withdraw a pending gate (the pipeline aborted its execution). ``[]`` if the gate is already final.

        A timeout due at ``at`` is applied first (and then the cancel does nothing).
        """
        events = self._expire(at)
        if self._status.is_final:
            return self._record(events)
        self._close(GateStatus.CANCELLED, at)
        return self._record([GateCancelled(gate_key=self._key, at=at, reason=reason)])

    def supersede(self, by_gate_key: GateKey, at: datetime) -> list[GateEvent]:
        """Auto-reject this pending gate because a newer gate of the same step asked for it.

        This is Harness's "Auto-Reject previous deployments paused in this step on approval". It is a rejection
        (``GateRejected``, cause ``superseded``, ``superseded_by`` set), not a cancellation: the older run's step
        fails as rejected, which is what Harness reports, whereas cancel means the pipeline itself withdrew.
        ``[]`` if the gate is already final. Which gates are older is the service's call (it knows the runs).
        """
        if not self._key.same_step(by_gate_key) or by_gate_key == self._key:
            raise InvalidDefinition(f"gate {by_gate_key} cannot supersede {self._key}: not another run of its step")
        events = self._expire(at)
        if self._status.is_final:
            return self._record(events)
        self._close(GateStatus.REJECTED, at)
        return self._record(
            [
                GateRejected(
                    gate_key=self._key,
                    at=at,
                    cause=OutcomeCause.SUPERSEDED,
                    superseded_by=by_gate_key,
                    comments=self._comments(),
                )
            ]
        )

    # ----------------------------------------------------------------------------------------------- internals

    def _record(self, events: list[GateEvent]) -> list[GateEvent]:
        self._events.extend(events)
        return events

    def _close(self, status: GateStatus, at: datetime) -> None:
        self._status = status
        self._closed_at = at

    def _current_vote_of(self, approver: Approver) -> Vote | None:
        for vote in reversed(self._votes):
            if vote.approver.key == approver.key:
                return vote
        return None

    def input_errors(self, user_id: str, given: Mapping[str, str]) -> dict[str, str]:
        """Per input name, why an approving vote of `user_id` with the inputs `given` would be refused for its
        inputs (empty: they would pass). The rules `decide` applies, for a form that shows each problem by its field
        before anything is sent."""
        _, offending = self._input_problems(Member(user_id=user_id), given)
        definitions = {definition.name: definition for definition in self._inputs}
        errors: dict[str, str] = {}
        for name in offending:
            definition = definitions.get(name)
            if definition is None:
                errors[name] = "this gate has no such input"
            elif name in given and not definition.allows(given[name]):
                errors[name] = f"{given[name]!r} is not one of: {', '.join(definition.allowed_values or ())}"
            else:
                errors[name] = "required: give it a value"
        return errors

    def _input_problems(self, approver: Approver, given: Mapping[str, str]) -> tuple[list[str], list[str]]:
        """Why an approving vote's inputs are unacceptable (human-readable problems, offending input names)."""
        definitions = {definition.name: definition for definition in self._inputs}
        problems: list[str] = []
        offending: list[str] = []

        unknown = sorted(name for name in given if name not in definitions)
        if unknown:
            problems.append(f"unknown input(s): {', '.join(unknown)}")
            offending.extend(unknown)
        for name, value in given.items():
            definition = definitions.get(name)
            if definition is not None and not definition.allows(value):
                allowed = ", ".join(definition.allowed_values or ())
                problems.append(f"input {name!r}: {value!r} is not one of: {allowed}")
                offending.append(name)

        # A required input may come from another approver's current approval: each approver need not repeat it.
        # The voter's own earlier vote does not count, since this vote replaces it.
        from_others: set[str] = set()
        for vote in self.current_votes():
            if vote.status is DecisionStatus.APPROVE and vote.approver.key != approver.key:
                from_others.update(name for name, value in vote.inputs.items() if has_value(value))
        missing = [
            definition.name
            for definition in self._inputs
            if definition.required
            and not has_value(given.get(definition.name))
            and not definition.has_default
            and definition.name not in from_others
        ]
        if missing:
            problems.append(f"missing required input(s): {', '.join(missing)}")
            offending.extend(missing)
        return problems, offending

    def _comments(self) -> tuple[Comment, ...]:
        return tuple(
            Comment(user_id=vote.approver.user_id, status=vote.status, text=vote.comment, at=vote.at)
            for vote in self.current_votes()
            if vote.comment
        )

    def _approved(self, at: datetime, cause: OutcomeCause) -> GateApproved:
        return GateApproved(
            gate_key=self._key,
            at=at,
            cause=cause,
            inputs=self.final_inputs(),
            approvers=tuple(vote.approver for vote in self.current_votes() if vote.status is DecisionStatus.APPROVE),
            comments=self._comments(),
        )

    def __repr__(self) -> str:
        return f"Gate({self._key}, {self._status.value}, votes={len(self._votes)})"
