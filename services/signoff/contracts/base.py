"""The base of every contract model and the small value types the events share.

Models are strict when built (`extra="forbid"`: a producer that misspells a field fails at once) and frozen (an
event is a fact). Consumers validate with `extra="ignore"` (see `envelope.decode`), so a newer producer's added
fields never break an older consumer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter


class ContractModel(BaseModel):
    """Base of all wire models: snake_case field names on the wire, unknown fields refused when building."""

    # validate_by_alias + validate_by_name: the few models that mirror Harness YAML (policy, approver inputs) take
    # both the YAML's camelCase and our snake_case; everything is written in snake_case (aliases are input-only).
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=False,
    )


class EventData(ContractModel):
    """The `data` of one CloudEvent type. Subclasses set `event_type` and say which id the event is about."""

    event_type: ClassVar[str]
    checked_as_sent: ClassVar[bool] = False
    """Whether a consumer's checks read the data object as the sender wrote it (`Event.received`), not only the
    validated model: a decision's signature covers the JSON as sent."""

    def default_subject(self) -> str:
        """The CloudEvents `subject`: the gate or execution id the event is about (or the best id known yet)."""
        raise NotImplementedError

    def partition_key(self) -> str:
        """The Kafka message key; events with the same key stay in order on one partition (see `topics`)."""
        return self.default_subject()


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_as_utc)]
"""A moment with an explicit offset, normalised to UTC; written as ISO 8601 with a `Z` suffix. Naive datetimes
are refused: a missing offset is a bug that would shift deadlines by hours."""

_UTC_DATETIME: TypeAdapter[datetime] = TypeAdapter(UtcDateTime)


def parse_utc(value: object) -> datetime:
    """A UTC datetime from an ISO 8601 string (or an aware datetime); pydantic's ValidationError otherwise."""
    return _UTC_DATETIME.validate_python(value)


def format_utc(moment: datetime) -> str:
    """`moment` in UTC as ISO 8601 with a `Z` suffix, exactly as event fields are written."""
    return _UTC_DATETIME.dump_python(parse_utc(moment), mode="json")


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\s/]+$")]
"""An id (pipeline, stage, step, execution, gate): no whitespace and no `/`, so ids joined with `/` stay unambiguous."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""A display name."""

Ref = Annotated[
    str,
    StringConstraints(min_length=1, max_length=1024),
    Field(examples=["payments_api", "<+pipeline.variables.env>"]),
]
"""A reference as the pipeline wrote it: a catalog identifier, or a `<+...>` expression that could not be resolved
yet. Kept raw so the notifier can show an unresolved expression instead of a silent blank."""

Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
"""An e-mail address (only its shape is checked)."""

HttpUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://\S+$")]
"""An http(s) URL, kept exactly as given."""

Comment = Annotated[str, StringConstraints(max_length=4096)]
"""Free text from a person (approval comment, CodePipeline summary)."""

StringMap = dict[
    Annotated[str, StringConstraints(min_length=1, max_length=256)], Annotated[str, Field(max_length=8192)]
]
"""Named string values (custom data, approver inputs, step outputs)."""


class Person(ContractModel):
    """Who did something: a user as the directory of user groups knows them."""

    user: Identifier = Field(
        description="User id (login) as listed in user groups and policies; compared for "
        "eligibility and `disallowPipelineExecutor`."
    )
    name: Name | None = Field(None, description="Display name.")
    email: Email | None = Field(None, description="E-mail address.")
