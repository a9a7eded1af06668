"""Harness's deployment-target filters, matched against catalog tags.

A CD stage may choose its environments, infrastructures and GitOps clusters by filter instead of by name
(docs/pipelines.md, "Targets chosen by filter"): `type: all` keeps every candidate, `type: tags` keeps the candidates
whose tags match `spec.tags` (`matchType: all`: every tag; `any`: at least one). The executor chooses with these
rules and the notifier describes the choice with the same words, so both live here, beside the catalog they read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias

FilterEntity: TypeAlias = Literal["environments", "infrastructures", "gitOpsClusters"]
"""What a filter chooses (Harness `entities`)."""

FILTER_ENTITIES: tuple[FilterEntity, ...] = ("environments", "infrastructures", "gitOpsClusters")

FilterType: TypeAlias = Literal["all", "tags"]
MatchType: TypeAlias = Literal["all", "any"]

ENTITY_WORDS: dict[str, tuple[str, str]] = {
    "environments": ("environment", "environments"),
    "infrastructures": ("infrastructure", "infrastructures"),
    "gitOpsClusters": ("GitOps cluster", "GitOps clusters"),
}
"""(singular, plural) of each entity, for messages."""


def tags_match(entity_tags: Mapping[str, str], tags: Mapping[str, str], match_type: MatchType) -> bool:
    """Whether an entry with `entity_tags` passes a tag filter. A filter tag with an empty value asks only for the
    key (Harness's key-only tags); otherwise key and value must both be equal."""

    def has(key: str, value: str) -> bool:
        return key in entity_tags and (value == "" or entity_tags[key] == value)

    checks = [has(key, value) for key, value in tags.items()]
    return all(checks) if match_type == "all" else any(checks)


def passes(
    entity_tags: Mapping[str, str], *, filter_type: FilterType, tags: Mapping[str, str], match_type: MatchType | None
) -> bool:
    """Whether an entry with `entity_tags` passes one filter (`type: all` passes everything)."""
    if filter_type == "all":
        return True
    return tags_match(entity_tags, tags, match_type or "all")


def describe_tags(tags: Mapping[str, str], match_type: MatchType | None) -> str:
    """`region=eu OR tier=prod` (any) / `region=eu AND tier=prod` (all); a key-only tag is its key. Sorted by key,
    so the words are the same wherever the tags travelled (JSONB, for one, does not keep key order)."""
    joiner = " OR " if match_type == "any" else " AND "
    return joiner.join(key if value == "" else f"{key}={value}" for key, value in sorted(tags.items()))


def describe_filter(
    entities: Iterable[str],
    filter_type: FilterType,
    tags: Mapping[str, str] | None = None,
    match_type: MatchType | None = None,
    tags_text: str | None = None,
) -> str:
    """What a filter keeps, in words: `environments tagged region=eu OR tier=prod`, `all infrastructures`,
    `environments and infrastructures tagged tier=prod`. `tags_text` replaces the tags when they are written as
    one expression (`tagged <+pipeline.variables.tags>`)."""
    words = [ENTITY_WORDS.get(entity, (entity, entity))[1] for entity in entities]
    what = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    if filter_type == "all":
        return f"all {what}"
    criteria = tags_text if tags_text is not None else describe_tags(tags or {}, match_type)
    if tags_text is not None and match_type is not None:
        criteria += f" (match {match_type})"
    return f"{what} tagged {criteria}"


def parse_tags_text(text: str) -> dict[str, str]:
    """Tags written as text, as an expression may render them: `region:eu, tier:prod` (also `key=value`; a bare
    word is a key-only tag). Raises ValueError when nothing is left or a key is empty."""
    tags: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        separator = ":" if ":" in part else "=" if "=" in part else None
        key, value = part.split(separator, 1) if separator else (part, "")
        key, value = key.strip(), value.strip()
        if not key:
            raise ValueError(f"tag {part!r} has no key")
        tags[key] = value
    if not tags:
        raise ValueError(f"no tags in {text!r}")
    return tags
