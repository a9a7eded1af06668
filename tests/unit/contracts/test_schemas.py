import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from signoff.cli.main import cli
from signoff.contracts import EVENT_TYPES, TOPICS, decode
from signoff.contracts.cdevents import CDEVENT_TYPES
from signoff.contracts.schemagen import ASYNCAPI_FILE, OPENAPI_FILE, message_name, operation_id, render, schema_file
from signoff.contracts.topics import DEAD_LETTER
from tests.unit.contracts.conftest import EXAMPLES, SCHEMAS

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))
TOPIC_BY_NAME = {topic.name: topic for topic in TOPICS}


def test_committed_schemas_match_the_contracts() -> None:
    expected = render()
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMAS.iterdir() if path.is_file()}
    drifted = sorted(name for name in expected.keys() | committed.keys() if expected.get(name) != committed.get(name))
    assert not drifted, f"schemas/ is out of date ({', '.join(drifted)}); run `signoff schemas generate`"


def test_generation_is_byte_identical() -> None:
    assert render() == render()
    assert all(content.endswith("\n") for content in render().values())


def test_every_event_type_has_a_schema_and_an_example() -> None:
    assert {schema_file(event_type) for event_type in EVENT_TYPES} | {ASYNCAPI_FILE, OPENAPI_FILE} == set(render())
    examples = {json.loads(path.read_text())["type"] for path in EXAMPLE_FILES}
    assert examples == set(EVENT_TYPES)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda path: path.stem)
def test_example_validates_against_its_schema_and_decodes(path: Path) -> None:
    document = json.loads(path.read_text())
    schema = json.loads((SCHEMAS / schema_file(document["type"])).read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)
    ]
    assert not errors
    event = decode(path.read_bytes(), [])
    assert event.type == document["type"] and event.id == document["id"]


def test_a_schema_refuses_what_producers_must_not_write() -> None:
    document = json.loads((EXAMPLES / "io.signoff.approval.requested.v1.json").read_text())
    schema = json.loads((SCHEMAS / schema_file(document["type"])).read_text())
    document["data"]["timeout"] = "soon"
    document["data"]["policy"]["minimumCount"] = 1
    document["type"] = "io.signoff.gate.opened.v1"
    messages = sorted(error.json_path for error in Draft202012Validator(schema).iter_errors(document))
    assert messages == ["$.data.policy", "$.data.timeout", "$.type"]


def test_asyncapi_document_lists_topics_and_messages() -> None:
    document = yaml.safe_load((SCHEMAS / ASYNCAPI_FILE).read_text())
    assert document["asyncapi"] == "3.0.0"
    assert sorted(document["channels"]) == sorted(topic.name for topic in TOPICS)
    messages = document["components"]["messages"]
    for topic in TOPICS:
        channel = document["channels"][topic.name]
        assert channel["address"] == topic.name and topic.key in channel["description"]
        for ref in channel["messages"].values():
            assert ref["$ref"].removeprefix("#/components/messages/") in messages
    for event_type, model in EVENT_TYPES.items():
        message = messages[model.__name__]
        assert message["name"] == event_type
        assert (SCHEMAS / message["payload"]["$ref"]).is_file()


def test_asyncapi_operations_say_which_role_sends_and_which_receives() -> None:
    document = yaml.safe_load((SCHEMAS / ASYNCAPI_FILE).read_text())
    operations = document["operations"]
    expected = {
        (role, action, topic.name)
        for topic in TOPICS
        for action, roles in (("send", topic.senders), ("receive", topic.receivers))
        for role in roles
    }
    found = set()
    for op_id, operation in operations.items():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        (tag,) = operation["tags"]
        role = tag["name"].removeprefix("role:")
        found.add((role, operation["action"], channel))
        assert op_id == operation_id(role, operation["action"], TOPIC_BY_NAME[channel])
        listed = {ref["$ref"].rsplit("/", 1)[1] for ref in operation["messages"]}
        assert listed == set(document["channels"][channel]["messages"])
    assert found == expected
    assert ("approval", "send", "signoff.cdevents.v1") in found
    assert ("executor", "receive", "signoff.approval.gates.v1") in found
    assert ("api", "send", "signoff.approval.decisions.v1") in found


def test_the_roles_publish_and_consume_what_the_topics_say() -> None:
    """Topic.senders / receivers (the AsyncAPI operations) agree with the roles' service specs."""
    from signoff.approval.service import approval_spec
    from signoff.approval.settings import ApprovalSettings
    from signoff.executor.service import executor_spec
    from signoff.executor.settings import ExecutorSettings

    specs = {
        "approval": approval_spec(ApprovalSettings(database_url="postgresql://x@127.0.0.1/x")),
        "executor": executor_spec(ExecutorSettings(database_url="postgresql://x@127.0.0.1/x")),
    }
    for role, spec in specs.items():
        sent = {topic.name for topic in TOPICS if role in topic.senders} - {DEAD_LETTER.name}
        received = {topic.name for topic in TOPICS if role in topic.receivers}
        assert set(spec.produces) == sent, role
        assert set(spec.all_topics) == received, role


def test_asyncapi_cdevents_channel() -> None:
    document = yaml.safe_load((SCHEMAS / ASYNCAPI_FILE).read_text())
    channel = document["channels"]["signoff.cdevents.v1"]
    assert sorted(channel["messages"]) == ["ApprovalClosedCDEvent", "ApprovalCreatedCDEvent", "ApprovalUpdatedCDEvent"]
    for cdevent_type in CDEVENT_TYPES:
        message = document["components"]["messages"][message_name(cdevent_type)]
        assert message["name"] == cdevent_type and message["payload"]["properties"]["type"] == {
            "const": cdevent_type,
            "description": "The CDEvents type.",
        }
        official = message["description"].split("`schemas/", 1)[1].split("`", 1)[0]
        assert (SCHEMAS / official).is_file()


def test_cli_generate_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "schemas"
    result = runner.invoke(cli, ["schemas", "generate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == set(render())
    result = runner.invoke(cli, ["schemas", "generate", "--check", "--out", str(out)])
    assert result.exit_code == 0 and "matches" in result.output

    (out / ASYNCAPI_FILE).write_text("asyncapi: 2.6.0\n")
    (out / schema_file("io.signoff.gate.opened.v1")).unlink()
    (out / "io.signoff.gate.removed.v1.json").write_text("{}\n")
    (out / "README.md").write_text("not generated\n")
    result = runner.invoke(cli, ["schemas", "generate", "--check", "--out", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for name in (ASYNCAPI_FILE, "io.signoff.gate.opened.v1.json", "io.signoff.gate.removed.v1.json"):
        assert name in lines[0]
    assert "README.md" not in lines[0]

    result = runner.invoke(cli, ["schemas", "generate", "--out", str(out)])
    assert result.exit_code == 0 and "3 file(s) updated" in result.output
    assert not (out / "io.signoff.gate.removed.v1.json").exists() and (out / "README.md").exists()
    assert runner.invoke(cli, ["schemas", "generate", "--check", "--out", str(out)]).exit_code == 0
