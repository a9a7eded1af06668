"""The shared YAML reader: alias expansion is bounded (an alias bomb is refused while it is read, never expanded),
aliases in moderation still work, and an error message lists a bounded number of problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from signoff.catalog import Catalog, CatalogError
from signoff.catalog.yamldoc import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_ISSUE_CHARS,
    MAX_REPORTED_ISSUES,
    DocumentError,
    Issue,
    YamlDocumentError,
    describe_issues,
    parse_yaml,
)
from tests.support.yaml_bombs import alias_bomb

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)]
)


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_with_a_short_error_naming_the_problem(levels: int) -> None:
    with pytest.raises(YamlDocumentError) as caught:
        parse_yaml(alias_bomb(levels), "bomb.yaml")
    message = str(caught.value)
    assert f"the document expands to more than {MAX_ALIAS_NODES} nodes" in message
    assert "YAML aliases" in message
    assert message.startswith("bomb.yaml: line ")  # the alias where the count crossed the limit
    assert len(message) < 300 and "\n" not in message


def test_the_count_stops_at_the_alias_that_crosses_the_limit_without_expanding_the_rest() -> None:
    # `a` is 10 nodes, `b` 91, `c` 820, `d` 7,381: the aliases of `b`, `c` and `d` add 8,289 nodes, the first `*d`
    # of `e` 7,381 more, and the second one crosses 20,000. The refusal names that alias, before the later (far
    # larger) levels are even read.
    assert MAX_ALIAS_NODES == 20_000
    with pytest.raises(YamlDocumentError, match=r"^<string>: line 5, column 12: the document expands to more than"):
        parse_yaml(BILLION_LAUGHS)


def test_the_limit_is_on_the_nodes_aliases_add() -> None:
    anchored = "[" + ", ".join(["x"] * 99) + "]"  # a list and its 99 items: 100 nodes
    fits = MAX_ALIAS_NODES // 100
    at_the_limit = f"a: &a {anchored}\nb: [{', '.join(['*a'] * fits)}]\n"
    loaded = parse_yaml(at_the_limit)
    assert len(loaded["b"]) == fits and loaded["b"][0] is loaded["a"]
    with pytest.raises(YamlDocumentError, match="expands to more than"):
        parse_yaml(f"a: &a {anchored}\nb: [{', '.join(['*a'] * (fits + 1))}]\n")


def test_a_document_written_out_in_full_is_not_limited_however_many_nodes_it_has() -> None:
    loaded = parse_yaml("items: [" + ", ".join(["1"] * (MAX_ALIAS_NODES + 100)) + "]\n")
    assert len(loaded["items"]) == MAX_ALIAS_NODES + 100


def test_a_few_anchors_aliases_and_merge_keys_still_parse() -> None:
    text = """
defaults: &defaults {shell: Bash, onDelegate: true}
script: &script {type: Inline, spec: {script: echo hi}}
steps:
  - {name: a, spec: {<<: *defaults, source: *script}}
  - {name: b, spec: {<<: *defaults, onDelegate: false, source: *script}}
tags: &tags [blue, green]
again: *tags
"""
    loaded = parse_yaml(text)
    assert loaded["steps"][0]["spec"] == {"shell": "Bash", "onDelegate": True, "source": loaded["script"]}
    assert loaded["steps"][1]["spec"]["onDelegate"] is False
    assert loaded["again"] == ["blue", "green"]


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    with pytest.raises(YamlDocumentError, match=r"line 1, column 12: the alias \*a is inside the node it names"):
        parse_yaml("a: &a {b: [*a]}")


@pytest.mark.parametrize(
    "text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join(f"{'  ' * i}- b:\n" for i in range(1, 400))]
)
def test_a_document_nested_too_deep_is_refused_naming_the_line_not_a_recursion_error(text: str) -> None:
    with pytest.raises(YamlDocumentError, match=rf"line \d+, column \d+: the document nests deeper than {MAX_DEPTH}"):
        parse_yaml(text)


def test_a_document_nested_as_deep_as_allowed_parses() -> None:
    assert parse_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None


def test_other_yaml_errors_are_unchanged() -> None:
    with pytest.raises(YamlDocumentError, match="found undefined alias 'nope'"):
        parse_yaml("a: *nope")
    with pytest.raises(YamlDocumentError, match="duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n")


def test_a_catalog_bomb_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(BILLION_LAUGHS.replace("a: &a", "services: []\na: &a", 1))
    with pytest.raises(CatalogError, match="expands to more than") as caught:
        Catalog.load(path)
    assert len(str(caught.value)) < 400


def test_an_error_lists_the_first_problems_then_how_many_more() -> None:
    issues = [Issue(f"items[{n}]", "is required") for n in range(MAX_REPORTED_ISSUES + 30)]
    line = describe_issues(issues)
    assert line.startswith("items[0]: is required; items[1]: is required; ")
    assert line.endswith(f"items[{MAX_REPORTED_ISSUES - 1}]: is required; and 30 more")
    message = str(DocumentError("doc.yaml", issues))
    assert message.startswith(f"doc.yaml: invalid document ({MAX_REPORTED_ISSUES + 30} problem(s)):\n  items[0]: ")
    assert message.splitlines()[-1] == "  and 30 more" and len(message.splitlines()) == MAX_REPORTED_ISSUES + 2
    assert describe_issues(issues[:MAX_REPORTED_ISSUES]).count(";") == MAX_REPORTED_ISSUES - 1
    assert describe_issues(["bad value " + "x" * 10_000]) == "bad value " + "x" * (MAX_ISSUE_CHARS - 11) + "…"


# -- text no store can hold (a NUL character, a lone surrogate) is refused by path ------------------------------

UNSTORABLE = [
    # (YAML text, path, problem); every one is a double-quoted escape: the reader refuses such characters raw.
    ('a:\n  b: "nul\\0here"\n', "a.b", "contains a NUL character"),
    ('a: ["ok", "x\\x00"]\n', "a[1]", "contains a NUL character"),
    ('a:\n  "k\\0ey": 1\n', "a.k\\0ey", "the key contains a NUL character"),
    ('a: "sur\\uD800rogate"\n', "a", "contains a lone surrogate (\\ud800), not valid Unicode text"),
    ('a: "\\uDE00 low first"\n', "a", "contains a lone surrogate (\\ude00), not valid Unicode text"),
    ('a: [{"k\\uDBFF": 1}]\n', "a[0].k\\udbff", "the key contains a lone surrogate (\\udbff), not valid Unicode text"),
    ('"\\0"\n', "(root)", "contains a NUL character"),
    ('a: &x {b: "\\0"}\nc: *x\n', "a.b", "contains a NUL character"),  # the first place, in document order
    ('a: !!set {"\\0": null}\n', "a[0]", "contains a NUL character"),
]


@pytest.mark.parametrize(("text", "path", "problem"), UNSTORABLE)
def test_a_nul_character_or_a_lone_surrogate_in_a_key_or_a_value_is_refused_naming_its_path(
    text: str, path: str, problem: str
) -> None:
    with pytest.raises(YamlDocumentError) as caught:
        parse_yaml(text, "doc.yaml")
    error = caught.value
    assert str(error) == f"doc.yaml: {path}: {problem}"
    assert (error.path, error.problem, error.detail) == (path, problem, f"{path}: {problem}")
    assert error.issue == Issue(path, problem)
    # The message itself is storable text: the characters are written as escapes.
    assert "\x00" not in str(error) and str(error).encode("utf-8")


def test_a_surrogate_pair_written_as_two_escapes_is_one_character_as_in_json() -> None:
    assert parse_yaml('a: "smile \\uD83D\\uDE00"\n"\\uD83D\\uDE00": k\n') == {"a": "smile 😀", "😀": "k"}
    assert parse_yaml('a: "\\U0001F600"\n') == {"a": "😀"}
    with pytest.raises(YamlDocumentError, match=r"^<string>: a: contains a lone surrogate \(\\udc00\)"):
        parse_yaml('a: "\\uD83D\\uDE00\\uDC00"\n')  # a pair, then a lone low surrogate


def test_escapes_of_storable_characters_still_parse() -> None:
    text = 'a: "tab\\there\\nline \\\\0 \\x01 \\u00e9 \\\\uD800"\n'
    assert parse_yaml(text) == {"a": "tab\there\nline \\0 \x01 é \\uD800"}


def test_a_raw_nul_or_surrogate_is_refused_by_the_reader_as_before() -> None:
    for raw in ("a: x\x00y\n", "a: x\ud800y\n"):
        with pytest.raises(YamlDocumentError, match="unacceptable character #x"):
            parse_yaml(raw)


def test_a_catalog_with_a_nul_character_is_refused_by_path(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text('services:\n  - identifier: billing\n    name: "bill\\0ing"\n')
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path)
    assert caught.value.issues == [Issue("services[0].name", "contains a NUL character")]
