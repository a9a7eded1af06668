"""`<+...>` expressions: what resolves, and how what cannot resolve stays visible."""

from __future__ import annotations

import pytest

from signoff.executor.domain.expressions import (
    Context,
    DeclaredSteps,
    Unknown,
    bind_script,
    expression_syntax_problems,
    find_expressions,
    marker,
    render,
    render_marked,
)


@pytest.fixture
def ctx() -> Context:
    base = Context.for_pipeline(
        name="Checkout blue-green",
        identifier="checkout_bg",
        execution_id="ex-1",
        sequence_id=42,
        triggered_by_name="Ada",
        triggered_by_email="ada@example.com",
        start_ts=1_700_000_000_000,
        variables={
            "tag": "1.4.2",
            "image": "registry/checkout:<+pipeline.variables.tag>",
            "replicas": 3,
            "token": Unknown("secret variables are not rendered"),
        },
    ).with_stage_names({"staging": ("Staging", "Deployment"), "prod": ("Production", "Deployment")})
    base = base.with_step(
        stage="staging",
        identifier="smoke",
        name="Smoke",
        status="SUCCEEDED",
        output={"outputVariables": {"result": "passed"}},
    )
    base = base.with_step(
        stage="staging",
        identifier="approve",
        groups=("gate",),
        status="SUCCEEDED",
        output={
            "approverInputs": {"foo": "baz"},
            "approvalActivities": [{"user": {"name": "Bo", "email": "bo@example.com"}, "action": "APPROVE"}],
        },
    )
    base = base.with_stage(identifier="staging", name="Staging", type="Deployment", variables={"region": "eu"})
    base = base.with_scope("service", {"identifier": "checkout", "name": "Checkout API"})
    base = base.with_scope("env", {"identifier": "staging", "name": "Staging", "type": "PreProduction"})
    base = base.with_scope("infra", {"identifier": "k8s", "name": "Staging cluster", "namespace": "shop"})
    return base.with_scope("artifact", {"image": "registry/checkout", "tag": "1.4.2"})


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("<+pipeline.name>", "Checkout blue-green"),
        ("<+pipeline.identifier>", "checkout_bg"),
        ("<+pipeline.executionId>", "ex-1"),
        ("<+pipeline.sequenceId>", "42"),
        ("<+pipeline.startTs>", "1700000000000"),
        ("<+pipeline.triggeredBy.name>", "Ada"),
        ("<+pipeline.triggeredBy.email>", "ada@example.com"),
        ("<+pipeline.variables.tag>", "1.4.2"),
        ("<+pipeline.variables.replicas>", "3"),
        ("<+pipeline.variables.image>", "registry/checkout:1.4.2"),
        ("<+stage.name>", "Staging"),
        ("<+stage.identifier>", "staging"),
        ("<+stage.variables.region>", "eu"),
        ("<+service.name>", "Checkout API"),
        ("<+service.identifier>", "checkout"),
        ("<+env.name>", "Staging"),
        ("<+env.type>", "PreProduction"),
        ("<+infra.name>", "Staging cluster"),
        ("<+infra.namespace>", "shop"),
        ("<+artifact.tag>", "1.4.2"),
        ("<+artifact.image>", "registry/checkout"),
        ("<+artifacts.primary.tag>", "1.4.2"),
        ("<+execution.steps.smoke.output.outputVariables.result>", "passed"),
        ("<+pipeline.stages.staging.spec.execution.steps.smoke.output.outputVariables.result>", "passed"),
        ("<+execution.steps.approve.output.approverInputs.foo>", "baz"),
        ("<+execution.steps.gate.steps.approve.output.approverInputs.foo>", "baz"),
        ("<+execution.steps.approve.output.approvalActivities[0].user.name>", "Bo"),
        ("<+pipeline.stages.prod.name>", "Production"),
        ("<+ pipeline.name >", "Checkout blue-green"),
    ],
)
def test_supported_expressions_resolve(ctx: Context, expression: str, value: str) -> None:
    rendered = render(expression, ctx)
    assert rendered.text == value
    assert rendered.complete


def test_unresolved_expressions_keep_their_raw_text_and_are_reported(ctx: Context) -> None:
    text = "deploy <+service.name> with <+pipeline.variables.missing> and <+pipeline.variables.missing> to <+foo.bar>"
    rendered = render(text, ctx)
    assert rendered.text == text.replace("<+service.name>", "Checkout API")
    assert rendered.unresolved == ["<+pipeline.variables.missing>", "<+foo.bar>"]
    assert rendered.reasons == {
        "<+pipeline.variables.missing>": "no pipeline variable 'missing'",
        "<+foo.bar>": "unknown expression root 'foo' (signoff evaluates pipeline, stage, service, env, infra, "
        "artifact, artifacts, execution)",
    }


def test_render_marked_shows_unresolved_expressions_to_people(ctx: Context) -> None:
    rendered = render_marked("tag <+artifact.tag>, speed <+pipeline.variables.speed>", ctx)
    assert rendered.text == "tag 1.4.2, speed ⟨unresolved: pipeline.variables.speed⟩"
    assert rendered.unresolved == ["<+pipeline.variables.speed>"]
    assert marker(" a.b ") == "⟨unresolved: a.b⟩"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("<+pipeline.variables.token>", "secret variables are not rendered"),
        ('<+secrets.getValue("x")>', "secret references are not supported"),
        ("<+input>", "runtime inputs (<+input>) are only supported as pipeline variable values"),
        ("<+pipeline.variables.tag.toLowerCase()>", "unsupported expression"),
        ("<+execution.steps.deploy.output.outputVariables.url>", "step 'deploy' has no outputs here"),
        ("<+execution.steps.smoke.output.outputVariables.nope>", "the step set no output variable 'nope'"),
        ("<+execution.steps.approve.output.approverInputs.bar>", "the approval has no input 'bar'"),
        ("<+pipeline.stages.prod.spec.execution.steps.x.status>", "stage 'prod' has no step outputs yet"),
        ("<+pipeline.stages.qa.name>", "no stage 'qa'"),
        ("<+pipeline.triggeredBy>", "is an object, not a value"),
        ("<+execution.steps.approve.output.approvalActivities[3].user.name>", "no item [3]"),
    ],
)
def test_unresolvable_expressions_say_why(ctx: Context, expression: str, reason: str) -> None:
    rendered = render(expression, ctx)
    assert rendered.text == expression
    assert reason in rendered.reasons[expression]


def test_scopes_can_be_unknown_with_a_reason(ctx: Context) -> None:
    multi = ctx.with_scope("service", Unknown("stage deploys 2 services"))
    rendered = render("<+service.name>", multi)
    assert rendered.reasons == {"<+service.name>": "stage deploys 2 services"}
    outside = Context.for_pipeline(name="p", identifier="p")
    assert render("<+stage.name>", outside).reasons == {"<+stage.name>": "no stage here"}
    assert "current stage" in render("<+execution.steps.a.output>", outside).reasons["<+execution.steps.a.output>"]
    assert "not started" in render("<+pipeline.executionId>", outside).reasons["<+pipeline.executionId>"]


def test_variables_referring_to_each_other_resolve_and_cycles_stop() -> None:
    ctx = Context.for_pipeline(
        name="p",
        identifier="p",
        variables={
            "a": "<+pipeline.variables.b>",
            "b": "<+pipeline.variables.a>",
            "c": "x-<+pipeline.variables.d>",
            "d": "y",
        },
    )
    assert render("<+pipeline.variables.c>", ctx).text == "x-y"
    cyclic = render("<+pipeline.variables.a>", ctx)
    assert cyclic.unresolved == ["<+pipeline.variables.a>"]
    assert "nested more than" in cyclic.reasons["<+pipeline.variables.a>"]


def test_contexts_are_immutable(ctx: Context) -> None:
    later = ctx.with_step(stage="staging", identifier="swap", output={"outputVariables": {"ok": "yes"}})
    assert render("<+execution.steps.swap.output.outputVariables.ok>", later).text == "yes"
    assert not render("<+execution.steps.swap.output.outputVariables.ok>", ctx).complete


def test_find_expressions() -> None:
    assert find_expressions("a <+x.y> b <+z> <+x.y>") == ["<+x.y>", "<+z>", "<+x.y>"]


# -- scripts: values are data -------------------------------------------------------------------------------------

HOSTILE = '$(touch /tmp/pwned) `id` ; rm -rf x && it\'s "quoted"\nEOF\nnext'


def _hostile() -> Context:
    return Context({"pipeline": {"variables": {"x": HOSTILE, "y": "plain"}}})


def test_a_script_references_each_value_as_an_environment_variable_quoted_for_where_it_stands() -> None:
    script = "\n".join(
        [
            "echo <+pipeline.variables.x>",
            'echo "in double <+pipeline.variables.x>"',
            "echo 'in single <+pipeline.variables.x>'",
            "echo $'ansi <+pipeline.variables.y>\\t'",
            "# it's a comment <+pipeline.variables.y>",
            "echo <+pipeline.variables.y>",
        ]
    )
    bound = bind_script(script, _hostile())
    assert bound.text == "\n".join(
        [
            'echo "${SIGNOFF_EXPR_1}"',
            'echo "in double ${SIGNOFF_EXPR_1}"',
            "echo 'in single '\"${SIGNOFF_EXPR_1}\"''",
            "echo $'ansi '\"${SIGNOFF_EXPR_2}\"$'\\t'",
            "# it's a comment <+pipeline.variables.y>",  # nothing in a comment runs
            'echo "${SIGNOFF_EXPR_2}"',  # the comment's quote did not open a string
        ]
    )
    assert bound.values == {"SIGNOFF_EXPR_1": HOSTILE, "SIGNOFF_EXPR_2": "plain"}
    assert "touch" not in bound.text and not bound.unresolved


def test_here_documents_expand_a_reference_and_a_quoted_one_never_ends_early() -> None:
    script = "cat <<EOF\nv=<+pipeline.variables.x>\nEOF\ncat <<-'END'\n\tv=<+pipeline.variables.y>\n\tEND\necho done\n"
    bound = bind_script(script, _hostile())
    assert bound.text == "cat <<EOF\nv=${SIGNOFF_EXPR_1}\nEOF\ncat <<-'END'\n\tv=plain\n\tEND\necho done\n"
    # In a quoted here-document nothing expands, so the value is written there, unless it would end it early.
    early = bind_script("cat <<'EOF'\n<+pipeline.variables.x>\nEOF\n", _hostile())
    assert early.unresolved == ["<+pipeline.variables.x>"]
    assert early.reasons["<+pipeline.variables.x>"] == "its value would end the quoted here-document 'EOF'"


def test_an_unresolved_expression_in_a_script_keeps_its_raw_text() -> None:
    bound = bind_script("echo <+pipeline.variables.nope> <+pipeline.variables.y>", _hostile())
    assert bound.text == 'echo <+pipeline.variables.nope> "${SIGNOFF_EXPR_1}"'
    assert bound.unresolved == ["<+pipeline.variables.nope>"]
    assert bound.reasons == {"<+pipeline.variables.nope>": "no pipeline variable 'nope'"}


# -- checked before anything runs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "no expression",
        "<+pipeline.name>",
        "<+input>.default(<+pipeline.variables.x>)",
        "<+<+pipeline.variables.tag>.length()>",  # nested: unsupported, left unresolved when it runs
        '<+secrets.getValue("token")>',
        "echo <+pipeline.name> > out.txt 2>&1",
        "<+pipeline.variables.n > 3>",  # an operator: unsupported, not malformed
    ],
)
def test_well_formed_expressions_have_no_syntax_problem(text: str) -> None:
    assert expression_syntax_problems(text) == []


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("<+pipeline.name", ["unclosed expression '<+pipeline.name': no '>' closes it on its line"]),
        ("<+a <+pipeline.name>", ["unclosed expression '<+a <+pipeline.name>': no '>' closes it on its line"]),
        ("x <+pipeline.\nname>", ["unclosed expression '<+pipeline.': no '>' closes it on its line"]),
        ("<+> and <+ >", ["empty expression '<+>'", "empty expression '<+ >'"]),
    ],
)
def test_unclosed_and_empty_expressions_are_syntax_problems(text: str, problems: list[str]) -> None:
    assert expression_syntax_problems(text) == problems


def test_an_unclosed_expression_never_resolves() -> None:
    """What the check refuses is what rendering leaves unresolved: the raw text, not an expression."""
    rendered = render("<+pipeline.name", Context.for_pipeline(name="P", identifier="p"))
    assert rendered.text == "<+pipeline.name" and expression_syntax_problems(rendered.text)


@pytest.fixture
def declared() -> DeclaredSteps:
    steps = DeclaredSteps()
    steps.add_stage("build")
    steps.add_step("build", "compile")
    steps.add_step("build", "smoke", ("checks", "inner"))
    steps.add_stage("prod")
    steps.add_step("prod", "approve")
    return steps


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("<+pipeline.stages.prod.name> <+pipeline.stages.build.spec.execution.steps.compile.status>", None),
        ("<+pipeline.stages.prod.spec.execution.steps.approve.output.approvalActivities[0].user.name>", "build"),
        ("<+execution.steps.smoke.status> <+execution.steps.checks.steps.inner.steps.smoke.status>", "build"),
        ("<+execution.steps.approve.output.approverInputs.foo>", None),  # a pipeline variable: any stage's step
        ("<+stage.name> <+pipeline.variables.x> <+service.name> <+pipeline.stages[0].name>", "build"),
        ("<+pipeline.stages.build.name.toUpperCase()>", "prod"),
    ],
)
def test_references_to_declared_stages_and_steps_pass(declared: DeclaredSteps, text: str, stage: str | None) -> None:
    assert declared.reference_problems(text, stage) == []


@pytest.mark.parametrize(
    ("text", "stage", "problem"),
    [
        ("<+pipeline.stages.nosuch.name>", None, "<+pipeline.stages.nosuch.name>: no stage 'nosuch' in the pipeline"),
        (
            "x <+pipeline.stages.prod.spec.execution.steps.nosuch.output.approvalActivities> y",
            "build",
            "<+pipeline.stages.prod.spec.execution.steps.nosuch.output.approvalActivities>: "
            "no step 'nosuch' in stage 'prod'",
        ),
        (
            "<+execution.steps.approve.status>",
            "build",
            "<+execution.steps.approve.status>: no step 'approve' in stage 'build'",
        ),
        ("<+execution.steps.nosuch.status>", None, "<+execution.steps.nosuch.status>: no stage has a step 'nosuch'"),
        (
            "<+execution.steps.checks.steps.smoke.status>",  # smoke is in checks.inner, not directly in checks
            "build",
            "<+execution.steps.checks.steps.smoke.status>: no step 'smoke' in step group 'checks' of stage 'build'",
        ),
        (
            "<+execution.steps.compile.steps.x.status>",
            "build",
            "<+execution.steps.compile.steps.x.status>: 'compile' in stage 'build' is a step, not a step group: "
            "it has no steps",
        ),
    ],
)
def test_references_to_undeclared_stages_and_steps_are_problems(
    declared: DeclaredSteps, text: str, stage: str | None, problem: str
) -> None:
    assert declared.reference_problems(text, stage) == [problem]


def test_declared_steps_are_placed_as_the_context_resolves_them() -> None:
    """The check and the context share where a step is reachable: what passes the check resolves once it ran."""
    ctx = Context.for_pipeline(name="P", identifier="p").with_stage(identifier="build", name="Build")
    ctx = ctx.with_step(stage="build", identifier="smoke", groups=("checks", "inner"), status="SUCCEEDED")
    declared = DeclaredSteps()
    declared.add_step("build", "smoke", ("checks", "inner"))
    for text in (
        "<+execution.steps.smoke.status>",
        "<+execution.steps.checks.steps.inner.steps.smoke.status>",
        "<+pipeline.stages.build.spec.execution.steps.checks.steps.inner.steps.smoke.status>",
    ):
        assert declared.reference_problems(text, "build") == []
        assert render(text, ctx).text == "SUCCEEDED"
    for text in ("<+execution.steps.inner.steps.smoke.status>", "<+execution.steps.checks.steps.smoke.status>"):
        assert declared.reference_problems(text, "build") != []
        assert not render(text, ctx).complete
