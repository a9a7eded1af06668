"""Pipeline definitions in Harness's v0 YAML shape: parsing and validation.

`parse_pipeline` walks the document, validates each piece with a pydantic model, and collects every problem as an
`Issue` named by its path in the file (`pipeline.stages[1].stage.spec.execution.steps[0].parallel[1].step: approval
steps cannot run in parallel`). Nothing here runs anything; see docs/pipelines.md for the accepted format.

Leniency: keys Harness writes that signoff does not act on (`projectIdentifier`, `tags`, `failureStrategies`,
`rollbackSteps`, `serviceInputs`, `delegateSelectors`, ...) are accepted and ignored. A key Harness does not define
at all on a pipeline, stage, step group, step or variable (`HARNESS_PIPELINE_KEYS` etc.) is an error, as in Harness,
since a typo there (`timout`, `requird`) would silently do nothing. A step's `spec` is strict,
because a misspelt key there changes what runs. Keys that would change what runs and are not implemented (`when`
with a condition, `strategy`, Harness v1 `serviceConfig`) are errors, never silently dropped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from signoff.catalog import Catalog, RefKind, Unresolved, is_expression
from signoff.catalog.filters import (
    FILTER_ENTITIES,
    FilterEntity,
    FilterType,
    MatchType,
    describe_filter,
)
from signoff.catalog.model import Identifier
from signoff.catalog.yamldoc import (
    DocumentError,
    Issue,
    YamlDocumentError,
    issues_from_validation_error,
    join_path,
    parse_yaml,
)
from signoff.contracts.durations import parse_positive_duration
from signoff.kernel import TimeoutAction, quorum_beyond_listed

STEP_TYPES = ("HarnessApproval", "ShellScript", "Wait")
STAGE_TYPES = ("Deployment", "CI", "Approval", "Custom")
DEFAULT_TIMEOUTS = {"ShellScript": "10m"}
"""Harness's defaults when a step has no `timeout` (a Wait step is bounded by its `duration`). An approval step
without one leaves it to the approval service's default (`SIGNOFF_DEFAULT_TIMEOUT`, Harness's `1d` unless set)."""
DEFAULT_APPROVAL_MESSAGE = "Please review the following information and approve the pipeline progression"

# -- the keys Harness defines outside a `spec` ---------------------------------------------------------------------
#
# Source: Harness's published v0 pipeline JSON schema, github.com/harness/harness-schema (v0/pipeline.json, from
# v0/pipeline/pipeline.yaml; v0/pipeline/stages/{approval,cd,ci,custom}/*-stage-node.yaml and
# template/template-stage-node.yaml; v0/pipeline/stages/*/step-group-element-config.yaml;
# v0/pipeline/steps/custom/{shell-script,harness-approval,wait}-step-node.yaml, common/step-element-config.yaml and
# steps/custom/template-step-node.yaml; common/ng-variable.yaml with {string,number,secret}-ng-variable.yaml), as of
# its commit 1bb19b67. A level's set is the union over the node types signoff runs (stages Deployment, CI, Approval,
# Custom and a template stage; steps ShellScript, HarnessApproval, Wait and a template step). Any other key there is
# refused; one signoff does not use is accepted and ignored (or refused by `unsupported_keys` when it would change
# what runs). Keys marked "hidden" are not in the schema but Harness's own model still reads them (deprecated, hidden
# from the schema: harness-core `StepElementConfig`, `StepGroupElementConfig`, `AbstractStageNode`).

HARNESS_PIPELINE_KEYS = frozenset(
    {
        "allowStageExecutions",
        "delegateSelectors",
        "description",
        "fixedInputsOnRerun",
        "flowControl",
        "identifier",
        "name",
        "notificationRules",
        "orgIdentifier",
        "projectIdentifier",
        "properties",
        "stages",
        "tags",
        "template",
        "timeout",
        "variables",
    }
)
HARNESS_STAGE_KEYS = frozenset(
    {
        "delegateSelectors",
        "description",
        "failureStrategies",
        "identifier",
        "name",
        "pipelineVariables",  # CI stages
        "runMode",
        "skipCondition",  # hidden
        "skipInstances",  # Deployment stages
        "spec",
        "strategy",
        "tags",
        "template",  # a template stage
        "timeout",
        "type",
        "variables",
        "when",
    }
)
HARNESS_STEP_GROUP_KEYS = frozenset(
    {
        "delegateSelectors",
        "description",
        "failureStrategies",
        "identifier",
        "name",
        "platform",  # Deployment stages
        "sharedPaths",
        "skipCondition",  # hidden
        "stepGroupInfra",
        "steps",
        "strategy",
        "template",
        "variables",
        "when",
    }
)
HARNESS_STEP_KEYS = frozenset(
    {
        "delegateSelectors",  # hidden
        "description",
        "enforce",
        "failureStrategies",
        "identifier",
        "identities",  # ShellScript steps
        "name",
        "skipCondition",  # hidden
        "spec",
        "strategy",
        "template",  # a template step
        "timeout",
        "type",
        "when",
    }
)
HARNESS_VARIABLE_KEYS = frozenset({"default", "description", "metadata", "name", "required", "type", "value"})

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUNTIME_INPUT = re.compile(r"^<\+input>((?:\.[A-Za-z]+\([^()]*\))*)$")
_INPUT_METHOD = re.compile(r"\.([A-Za-z]+)\(([^()]*)\)")


# -- field types -------------------------------------------------------------------------------------------------


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid shell variable name")
    return value


def _scalar_text(value: Any) -> Any:
    # YAML reads `1`, `1.5`, `true` as numbers and booleans; these fields are text in Harness.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _duration(value: str) -> str:
    if is_expression(value):
        return value  # resolved when the step starts
    parse_positive_duration(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]
DurationText = Annotated[str, BeforeValidator(_scalar_text), AfterValidator(_duration)]
Ref = Annotated[str, BeforeValidator(_scalar_text), Field(min_length=1)]


class _Lenient(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)


class _Strict(_Lenient):
    model_config = ConfigDict(extra="forbid")


# -- variables ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeInput:
    """A variable whose value is `<+input>`: supplied when an execution starts (`.default(x)`,
    `.allowedValues(a,b)` and `.executionInput()` are understood)."""

    default: str | None = None
    allowed_values: tuple[str, ...] | None = None


def parse_runtime_input(value: Any) -> RuntimeInput | None:
    """`RuntimeInput` for `<+input>...`, None for anything else; raises ValueError for an unknown method."""
    if not isinstance(value, str):
        return None
    match = _RUNTIME_INPUT.match(value.strip())
    if not match:
        if value.strip().startswith("<+input>"):
            # A runtime input written wrong (`<+input>.allowedValues(dev` — a YAML flow mapping's comma cuts it
            # there — or `.default(x}`) would otherwise be taken for an expression and fail the run later.
            raise ValueError(
                "malformed runtime input: write <+input>, then any of .default(x), .allowedValues(a,b), "
                ".executionInput() (quote the value in a YAML flow mapping: its commas split it)"
            )
        return None
    default: str | None = None
    allowed: tuple[str, ...] | None = None
    for method, argument in _INPUT_METHOD.findall(match.group(1)):
        if method == "default":
            default = argument.strip()
        elif method == "allowedValues":
            allowed = tuple(item.strip() for item in argument.split(",") if item.strip())
        elif method != "executionInput":
            raise ValueError(f"runtime input method .{method}() is not supported (use .default() or .allowedValues())")
    return RuntimeInput(default, allowed)


class Variable(_Lenient):
    """A pipeline or stage variable: `<+pipeline.variables.NAME>` / `<+stage.variables.NAME>`.

    `value` may be a literal, an expression, or `<+input>` (supplied when the execution starts). Secret variables
    hold a secret reference that signoff does not resolve: they are never rendered.
    """

    name: Identifier
    type: Literal["String", "Number", "Secret"] = "String"
    value: str | int | float | bool | None = None
    description: str = ""
    required: bool = False

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any) -> Any:
        parse_runtime_input(value)
        return value

    @property
    def runtime_input(self) -> RuntimeInput | None:
        return parse_runtime_input(self.value)


# -- step specs --------------------------------------------------------------------------------------------------


class InlineScript(_Strict):
    script: str = Field(min_length=1, description="The script; expressions are resolved before it runs.")


class ScriptSource(_Strict):
    type: Literal["Inline"] = "Inline"
    spec: InlineScript


def _not_secret(value: Any) -> Any:
    if value == "Secret":
        raise ValueError("Secret variables are not supported in ShellScript steps (signoff stores no secrets)")
    return value


class EnvironmentVariable(_Strict):
    """Exported to the script; `value` may hold expressions."""

    name: Annotated[str, AfterValidator(_env_name)]
    type: Annotated[Literal["String", "Number"], BeforeValidator(_not_secret)] = "String"
    value: Text = ""


class OutputVariable(_Strict):
    """After the script, the shell variable `value` (default: `name`) becomes
    `<+execution.steps.STEP.output.outputVariables.NAME>`."""

    name: Identifier
    type: Annotated[Literal["String"], BeforeValidator(_not_secret)] = "String"
    value: Annotated[str, AfterValidator(_env_name)] | None = None

    @property
    def shell_variable(self) -> str:
        return self.value or self.name


class ShellScriptSpec(_Strict):
    """`ShellScript` step spec (Harness shape, plus `retryOnRestart`)."""

    shell: Literal["Bash"] = Field(description="Only Bash is run.")
    on_delegate: bool = True
    source: ScriptSource
    environment_variables: tuple[EnvironmentVariable, ...] = ()
    output_variables: tuple[OutputVariable, ...] = ()
    execution_target: dict[str, Any] = Field(default_factory=dict)
    delegate_selectors: tuple[str, ...] = ()
    include_infra_selectors: bool = False
    retry_on_restart: bool = Field(
        False,
        description="Run the script again (next attempt) when the executor restarted while it ran; only for "
        "idempotent scripts. Without it such a step fails.",
    )

    @field_validator("execution_target")
    @classmethod
    def _local_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        if any(v not in (None, "", {}, []) for v in value.values()):
            raise ValueError("remote execution targets are not supported: scripts run on the executor")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ShellScriptSpec:
        for label, items in (("environment", self.environment_variables), ("output", self.output_variables)):
            names = [item.name for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {label} variable name(s): {', '.join(duplicates)}")
        return self

    @property
    def script(self) -> str:
        return self.source.spec.script


class WaitSpec(_Strict):
    """`Wait` step spec."""

    duration: DurationText


class ApproverInput(_Strict):
    """A value approvers may set (`<+execution.steps.STEP.output.approverInputs.NAME>`); `required` and
    `allowedValues` are signoff extensions."""

    name: Identifier
    default_value: Text = ""
    required: bool = False
    allowed_values: tuple[Text, ...] = ()

    @model_validator(mode="after")
    def _default_allowed(self) -> ApproverInput:
        if (
            self.allowed_values
            and self.default_value
            and not is_expression(self.default_value)
            and self.default_value not in self.allowed_values
        ):
            raise ValueError(f"defaultValue {self.default_value!r} is not one of allowedValues")
        return self


class ApprovalRule(_Strict):
    """An extra rule that must pass as well: `minimumCount` unique approvers from these groups / users."""

    name: str | None = None
    user_groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    minimum_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _someone(self) -> ApprovalRule:
        if not self.user_groups and not self.users:
            raise ValueError("a rule needs userGroups or users")
        # The shared kernel's rule (users compare case-folded), asked early; the approval service decides.
        if problem := quorum_beyond_listed(self.user_groups, self.users, self.minimum_count):
            raise ValueError(problem)
        return self


class Approvers(_Strict):
    """Who may approve: members of `userGroups` and the listed `users`; `minimumCount` unique approvers; optional
    `rules` (signoff extension) that must all pass too."""

    user_groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    minimum_count: int = Field(1, ge=1)
    disallow_pipeline_executor: bool = False
    rules: tuple[ApprovalRule, ...] = ()

    def written_rules(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...], int]]:
        """The rules this block makes, as written: (where, user groups, users, minimum count), `where` relative to
        the block (`""`, `rules[0]`). The top-level groups and users are one rule when they name anyone, then each
        of `rules`: how the executor builds the request's policy, and how `run` checks it up front."""
        top = [("", self.user_groups, self.users, self.minimum_count)] if self.user_groups or self.users else []
        return top + [
            (f"rules[{index}]", rule.user_groups, rule.users, rule.minimum_count)
            for index, rule in enumerate(self.rules)
        ]

    @model_validator(mode="after")
    def _someone(self) -> Approvers:
        if not self.user_groups and not self.users and not self.rules:
            raise ValueError("name at least one user group or user who may approve")
        if self.users and (problem := quorum_beyond_listed(self.user_groups, self.users, self.minimum_count)):
            raise ValueError(problem)
        return self


TIMEOUT_ACTIONS = {"Expire": TimeoutAction.FAIL, "Approve": TimeoutAction.APPROVE, "Reject": TimeoutAction.REJECT}
"""A HarnessApproval step's `timeoutAction` as written -> the shared kernel's (the wire's words)."""


class HarnessApprovalSpec(_Strict):
    """`HarnessApproval` step spec: the Harness fields, plus `autoRejectPreviousApprovals` (Harness spells it
    `isAutoRejectEnabled`; either works) and `timeoutAction`."""

    approval_message: str = DEFAULT_APPROVAL_MESSAGE
    include_pipeline_execution_history: bool = True
    approvers: Approvers
    approver_inputs: tuple[ApproverInput, ...] = ()
    is_auto_reject_enabled: bool = False
    auto_reject_previous_approvals: bool = False
    timeout_action: Literal["Expire", "Approve", "Reject"] = Field(
        "Expire", description="On timeout: Expire (the pipeline fails), Approve or Reject."
    )
    auto_approval: Any = None

    @property
    def kernel_timeout_action(self) -> TimeoutAction:
        """`timeout_action` in the shared kernel's words (`Expire` is `fail`)."""
        return TIMEOUT_ACTIONS[self.timeout_action]

    @field_validator("auto_approval")
    @classmethod
    def _no_auto_approval(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("autoApproval is not supported; use timeoutAction: Approve")
        return value

    @model_validator(mode="after")
    def _unique_inputs(self) -> HarnessApprovalSpec:
        names = [item.name for item in self.approver_inputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate approver input name(s): {', '.join(duplicates)}")
        return self

    @property
    def auto_reject_previous(self) -> bool:
        return self.is_auto_reject_enabled or self.auto_reject_previous_approvals


StepSpec: TypeAlias = ShellScriptSpec | WaitSpec | HarnessApprovalSpec
_SPEC_MODELS: dict[str, type[BaseModel]] = {
    "ShellScript": ShellScriptSpec,
    "Wait": WaitSpec,
    "HarnessApproval": HarnessApprovalSpec,
}


# -- structure ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One `step`; `spec` is the type's model."""

    identifier: str
    name: str
    type: Literal["ShellScript", "Wait", "HarnessApproval"]
    spec: Any
    timeout: str | None = None
    description: str = ""

    @property
    def effective_timeout(self) -> str | None:
        """The step's timeout text, or Harness's default for its type (None for Wait)."""
        return self.timeout or DEFAULT_TIMEOUTS.get(self.type)


@dataclass(frozen=True)
class StepGroup:
    """A `stepGroup`: its steps run in order (flattened into the plan, their paths keep the group)."""

    identifier: str
    name: str
    steps: tuple[StepElement, ...]


@dataclass(frozen=True)
class ParallelSteps:
    """A `parallel` block: its elements run at the same time."""

    items: tuple[StepElement, ...]


StepElement: TypeAlias = Step | StepGroup | ParallelSteps


class TargetFilter(BaseModel):
    """A Harness filter choosing deployment targets by tag (`filters[]`: `type`, `entities`, `spec.matchType`,
    `spec.tags`). `tags` are as written (values may hold expressions); `tags_expression` is set instead when the
    whole tag set is one expression (`spec.tags: <+pipeline.variables.tags>`), rendered to `key:value, ...`."""

    model_config = ConfigDict(frozen=True)

    type: FilterType
    entities: tuple[FilterEntity, ...]
    match_type: MatchType | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    tags_expression: str | None = None

    @property
    def is_static(self) -> bool:
        """True when nothing in it is an expression: it can be matched when the pipeline is validated."""
        return self.tags_expression is None and not any(
            is_expression(key) or is_expression(value) for key, value in self.tags.items()
        )

    def chooses(self, entity: FilterEntity) -> bool:
        return entity in self.entities

    def describe(self) -> str:
        """`environments tagged region=eu OR tier=prod` (expressions as written)."""
        return describe_filter(self.entities, self.type, self.tags, self.match_type, self.tags_expression)


class EnvironmentTarget(BaseModel):
    """An environment a stage deploys to, with its infrastructure definitions and GitOps clusters (refs as
    written: they may be expressions), and its own filters (they choose its infrastructures / GitOps clusters)."""

    model_config = ConfigDict(frozen=True)

    environment_ref: str
    deploy_to_all: bool = False
    infrastructure_refs: tuple[str, ...] = ()
    gitops_cluster_refs: tuple[str, ...] = ()
    filters: tuple[TargetFilter, ...] = ()


class EnvironmentGroupTarget(BaseModel):
    """`spec.environmentGroup`: the group, and either chosen environments or `deployToAll`."""

    model_config = ConfigDict(frozen=True)

    env_group_ref: str
    deploy_to_all: bool = False
    environments: tuple[EnvironmentTarget, ...] = ()


class Artifact(_Strict):
    """An artifact a stage deploys (signoff extension; Harness keeps artifacts in the service definition)."""

    identifier: Identifier = "primary"
    image: Text
    tag: Text
    type: str | None = None


class DeploymentMetadata(BaseModel):
    """The CD metadata of a Deployment or Custom stage, normalized from Harness's several spellings."""

    model_config = ConfigDict(frozen=True)

    deployment_type: str | None = None
    gitops_enabled: bool = False
    service_refs: tuple[str, ...] = ()
    services_parallel: bool = False
    environments: tuple[EnvironmentTarget, ...] = ()
    environments_parallel: bool = False
    environment_group: EnvironmentGroupTarget | None = None
    primary_artifact: Artifact | None = None
    sidecars: tuple[Artifact, ...] = ()
    custom_metadata: dict[str, str] = Field(default_factory=dict)
    filters: tuple[TargetFilter, ...] = Field(
        (),
        description="Filters of `environments` or `environmentGroup`: they choose the environments (entity "
        "environments) and, in every environment without filters of its own, infrastructures and GitOps clusters.",
    )

    @property
    def all_environments(self) -> tuple[EnvironmentTarget, ...]:
        """The environments named in the stage (a group's chosen environments included)."""
        if self.environment_group is not None:
            return self.environment_group.environments
        return self.environments


@dataclass(frozen=True)
class Stage:
    """One `stage`."""

    identifier: str
    name: str
    type: Literal["Deployment", "CI", "Approval", "Custom"]
    steps: tuple[StepElement, ...]
    deployment: DeploymentMetadata | None = None
    variables: tuple[Variable, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class ParallelStages:
    """A `parallel` block of stages."""

    stages: tuple[Stage, ...]


StageElement: TypeAlias = Stage | ParallelStages


@dataclass(frozen=True)
class Pipeline:
    """A valid pipeline. `document` is the parsed YAML as given (what an execution persists)."""

    identifier: str
    name: str
    items: tuple[StageElement, ...]
    variables: tuple[Variable, ...] = ()
    description: str = ""
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    tags: Mapping[str, str] = field(default_factory=dict)
    """The pipeline's Harness `tags` (`<+pipeline.tags>`, e.g. as a filter's tag set)."""

    def stages(self) -> tuple[Stage, ...]:
        """Every stage in document order (parallel blocks flattened)."""
        out: list[Stage] = []
        for item in self.items:
            out.extend(item.stages if isinstance(item, ParallelStages) else (item,))
        return tuple(out)

    def stage(self, identifier: str) -> Stage:
        """The stage `identifier`; KeyError when the pipeline has none."""
        for stage in self.stages():
            if stage.identifier == identifier:
                return stage
        raise KeyError(f"no stage {identifier!r} in pipeline {self.identifier!r}")

    def variable(self, name: str) -> Variable:
        """The pipeline variable `name`; KeyError when it is not declared."""
        for variable in self.variables:
            if variable.name == name:
                return variable
        raise KeyError(f"no variable {name!r} in pipeline {self.identifier!r}")


def iter_steps(
    elements: tuple[StepElement, ...], groups: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Step]]:
    """Depth-first `(enclosing stepGroup identifiers, step)` pairs in document order."""
    for element in elements:
        if isinstance(element, Step):
            yield groups, element
        elif isinstance(element, StepGroup):
            yield from iter_steps(element.steps, (*groups, element.identifier))
        else:
            yield from iter_steps(element.items, groups)


# -- errors ------------------------------------------------------------------------------------------------------


class PipelineError(DocumentError):
    """A pipeline is invalid; `issues` lists every problem by path in the file."""

    kind = "pipeline"


# -- raw shapes of the stage spec (lenient: Harness writes many keys we do not use) ------------------------------


class _UseFromStage(_Lenient):
    stage: Identifier


class _ServiceRaw(_Lenient):
    service_ref: Ref | None = None
    use_from_stage: _UseFromStage | None = None

    @model_validator(mode="after")
    def _one(self) -> _ServiceRaw:
        if (self.service_ref is None) == (self.use_from_stage is None):
            raise ValueError("give exactly one of serviceRef or useFromStage")
        return self


class _Parallel(_Lenient):
    parallel: bool = False


class _ServicesRaw(_Lenient):
    values: list[_ServiceRaw] = Field(min_length=1)
    metadata: _Parallel = Field(default_factory=_Parallel)


class _IdentifierRef(_Lenient):
    identifier: Ref


class _EnvironmentRaw(_Lenient):
    environment_ref: Ref
    deploy_to_all: bool = False
    infrastructure_definitions: list[_IdentifierRef] = Field(default_factory=list)
    git_ops_clusters: list[_IdentifierRef] = Field(default_factory=list)
    filters: Any = None

    def target(self, filters: tuple[TargetFilter, ...] = ()) -> EnvironmentTarget:
        return EnvironmentTarget(
            environment_ref=self.environment_ref,
            deploy_to_all=self.deploy_to_all,
            infrastructure_refs=tuple(item.identifier for item in self.infrastructure_definitions),
            gitops_cluster_refs=tuple(item.identifier for item in self.git_ops_clusters),
            filters=filters,
        )


class _EnvironmentsRaw(_Lenient):
    values: list[_EnvironmentRaw] = Field(default_factory=list)
    metadata: _Parallel = Field(default_factory=_Parallel)
    filters: Any = None

    @model_validator(mode="after")
    def _some(self) -> _EnvironmentsRaw:
        if not self.values and self.filters is None:
            raise ValueError("give environments in 'values', or 'filters' that choose them")
        return self


class _EnvironmentGroupRaw(_Lenient):
    env_group_ref: Ref
    deploy_to_all: bool = False
    environments: list[_EnvironmentRaw] = Field(default_factory=list)
    filters: Any = None


class _ArtifactsRaw(_Strict):
    primary: Artifact | None = None
    sidecars: tuple[Artifact, ...] = ()


class _DeploymentSpecRaw(_Lenient):
    service: _ServiceRaw | None = None
    services: _ServicesRaw | None = None
    environment: _EnvironmentRaw | None = None
    environments: _EnvironmentsRaw | None = None
    environment_group: _EnvironmentGroupRaw | None = None
    deployment_type: str | None = None
    git_ops_enabled: bool = False
    artifacts: _ArtifactsRaw | None = None
    custom_metadata: dict[str, Text] = Field(default_factory=dict)


class _PipelineHeader(_Lenient):
    identifier: Identifier
    name: str = Field(min_length=1)
    description: str = ""
    variables: tuple[Variable, ...] = ()
    tags: dict[str, Text] = Field(default_factory=dict)

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_values(cls, value: Any) -> Any:
        # Harness writes `tags: {}`; a value-less tag (`web:`) reads as None.
        return {k: "" if v is None else v for k, v in value.items()} if isinstance(value, Mapping) else value


class _StageHeader(_Lenient):
    identifier: Identifier
    name: str = Field(min_length=1)
    type: str
    description: str = ""
    variables: tuple[Variable, ...] = ()


class _StepGroupHeader(_Lenient):
    identifier: Identifier
    name: str = Field(min_length=1)


class _StepHeader(_Lenient):
    identifier: Identifier
    name: str = Field(min_length=1)
    type: str
    timeout: DurationText | None = None
    description: str = ""


# -- the parser --------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, catalog: Catalog | None, *, unknown_keys: bool = True) -> None:
        self.catalog = catalog
        self.check_unknown_keys = unknown_keys
        self.issues: list[Issue] = []
        self.stage_paths: dict[str, str] = {}
        self.stage_services: dict[str, tuple[str, ...]] = {}

    def error(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def model(self, cls: type[Any], data: Any, path: str) -> Any:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            self.issues.extend(issues_from_validation_error(exc, path))
            return None

    def mapping(self, value: Any, path: str, what: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.error(path, f"expected {what} (a mapping), got {_kind(value)}")
            return None
        return value

    def unknown_keys(self, node: Mapping[str, Any], path: str, known: frozenset[str]) -> None:
        """Each key Harness does not define at this level, with the closest known key when one is near."""
        if not self.check_unknown_keys:
            return
        for key in node:
            if isinstance(key, str) and key in known:
                continue
            text = str(key)
            close = difflib.get_close_matches(text, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.error(join_path(path, text), f"unknown key {text!r}{hint}")

    def unknown_variable_keys(self, node: Mapping[str, Any], path: str) -> None:
        variables = node.get("variables")
        if not self.check_unknown_keys:
            return
        if not isinstance(variables, list):
            return  # reported by the header model
        for i, variable in enumerate(variables):
            if isinstance(variable, Mapping):
                self.unknown_keys(variable, join_path(path, "variables", i), HARNESS_VARIABLE_KEYS)

    def unsupported_keys(self, node: Mapping[str, Any], path: str) -> None:
        when = node.get("when")
        if when is not None:
            # Harness exports write the default condition explicitly: stages `pipelineStatus: Success`, steps
            # `stageStatus: Success`. Anything else would change what runs.
            keys = {"pipelineStatus", "stageStatus"}
            default = isinstance(when, Mapping) and set(when) <= keys and all(when[k] == "Success" for k in when)
            if not default:
                message = "conditional execution is not supported (only the default status Success)"
                self.error(join_path(path, "when"), message)
        if node.get("strategy") not in (None, {}):
            message = "looping strategies (matrix, repeat, parallelism) are not supported"
            self.error(join_path(path, "strategy"), message)
        skip = node.get("skipCondition")
        if skip is not None and str(skip).strip().lower() not in ("", "false"):
            # Harness skips what its condition holds for; ignoring it would run what the author meant to skip.
            message = "skip conditions are not supported (only false)"
            self.error(join_path(path, "skipCondition"), message)

    # pipeline ------------------------------------------------------------------------------------------------

    def parse(self, document: Any) -> Pipeline | None:
        root = self.mapping(document, "(root)", "a document with a top-level 'pipeline' key")
        if root is None:
            return None
        if "pipeline" not in root:
            self.error("(root)", "expected a top-level 'pipeline' key")
            return None
        node = self.mapping(root["pipeline"], "pipeline", "the pipeline")
        if node is None:
            return None
        header = self.model(_PipelineHeader, {k: v for k, v in node.items() if k != "stages"}, "pipeline")
        self.unknown_keys(node, "pipeline", HARNESS_PIPELINE_KEYS)
        self.unknown_variable_keys(node, "pipeline")
        if header is not None:
            self.unique_variables(header.variables, "pipeline.variables")
        items = self.stages(node.get("stages"), "pipeline.stages")
        if header is None or self.issues:
            return None
        return Pipeline(
            identifier=header.identifier,
            name=header.name,
            items=tuple(items),
            variables=header.variables,
            description=header.description,
            document=dict(root),
            tags=dict(header.tags),
        )

    def unique_variables(self, variables: tuple[Variable, ...], path: str) -> None:
        seen: set[str] = set()
        for i, variable in enumerate(variables):
            if variable.name in seen:
                self.error(join_path(path, i, "name"), f"duplicate variable {variable.name!r}")
            seen.add(variable.name)

    def stages(self, value: Any, path: str) -> list[StageElement]:
        if not isinstance(value, list) or not value:
            self.error(path, "expected a non-empty list of stages")
            return []
        out: list[StageElement] = []
        for i, item in enumerate(value):
            ipath = join_path(path, i)
            node = self.mapping(item, ipath, "'stage' or 'parallel'")
            if node is None:
                continue
            keys = [key for key in ("stage", "parallel") if key in node]
            if len(keys) != 1:
                self.error(ipath, "expected exactly one of 'stage' or 'parallel'")
                continue
            if keys[0] == "stage":
                stage = self.stage(node["stage"], join_path(ipath, "stage"))
                if stage is not None:
                    out.append(stage)
                continue
            lanes = node["parallel"]
            ppath = join_path(ipath, "parallel")
            if not isinstance(lanes, list) or not lanes:
                self.error(ppath, "expected a non-empty list of stages")
                continue
            parallel: list[Stage] = []
            for j, lane in enumerate(lanes):
                lpath = join_path(ppath, j)
                lane_node = self.mapping(lane, lpath, "'stage'")
                if lane_node is None:
                    continue
                if set(lane_node) != {"stage"}:
                    self.error(lpath, "expected 'stage' (parallel blocks of stages cannot be nested)")
                    continue
                stage = self.stage(lane_node["stage"], join_path(lpath, "stage"))
                if stage is not None:
                    parallel.append(stage)
            out.append(ParallelStages(tuple(parallel)))
        return out

    # stage ---------------------------------------------------------------------------------------------------

    def stage(self, value: Any, path: str) -> Stage | None:
        node = self.mapping(value, path, "a stage")
        if node is None:
            return None
        header = self.model(_StageHeader, node, path)
        self.unknown_keys(node, path, HARNESS_STAGE_KEYS)
        self.unknown_variable_keys(node, path)
        if header is not None:
            if header.identifier in self.stage_paths:
                first = self.stage_paths[header.identifier]
                message = f"duplicate stage identifier {header.identifier!r} (first at {first})"
                self.error(join_path(path, "identifier"), message)
            else:
                self.stage_paths[header.identifier] = path
            self.unique_variables(header.variables, join_path(path, "variables"))
            if header.type not in STAGE_TYPES:
                self.error(
                    join_path(path, "type"),
                    f"unknown stage type {header.type!r} (supported: {', '.join(STAGE_TYPES)})",
                )
        self.unsupported_keys(node, path)
        spec_path = join_path(path, "spec")
        spec = self.mapping(node.get("spec"), spec_path, "the stage spec")
        if spec is None:
            return None
        deployment = None
        if header is not None and header.type in ("Deployment", "Custom"):
            deployment = self.deployment(spec, spec_path, header.type, header.identifier)
        execution = self.mapping(spec.get("execution"), join_path(spec_path, "execution"), "execution with steps")
        if execution is None:
            return None
        ids: dict[str, str] = {}
        steps = self.steps(execution.get("steps"), join_path(spec_path, "execution", "steps"), ids, in_parallel=False)
        if header is None or header.type not in STAGE_TYPES:
            return None
        return Stage(
            identifier=header.identifier,
            name=header.name,
            type=header.type,  # type: ignore[arg-type]
            steps=tuple(steps),
            deployment=deployment,
            variables=header.variables,
            description=header.description,
        )

    def deployment(
        self, spec: Mapping[str, Any], path: str, stage_type: str, stage_id: str
    ) -> DeploymentMetadata | None:
        for legacy, instead in (("serviceConfig", "service.serviceRef"), ("infrastructure", "environment")):
            if legacy in spec:
                self.error(
                    join_path(path, legacy),
                    f"Harness v1 '{legacy}' is not supported; use '{instead}' (Harness v2 CD YAML)",
                )
        raw = self.model(_DeploymentSpecRaw, {k: v for k, v in spec.items() if k != "execution"}, path)
        if raw is None:
            return None
        if raw.service is not None and raw.services is not None:
            self.error(path, "give either 'service' or 'services', not both")
        env_keys = [k for k in ("environment", "environments", "environmentGroup") if spec.get(k) is not None]
        if len(env_keys) > 1:
            self.error(path, f"give one of environment, environments or environmentGroup, not {', '.join(env_keys)}")
        if stage_type == "Deployment":
            if raw.service is None and raw.services is None:
                self.error(path, "a Deployment stage needs 'service' or 'services'")
            if not env_keys:
                self.error(path, "a Deployment stage needs 'environment', 'environments' or 'environmentGroup'")

        service_refs: list[str] = []
        service_entries = [("service", raw.service)] if raw.service else []
        if raw.services:
            service_entries = [(f"services.values[{i}]", item) for i, item in enumerate(raw.services.values)]
        for where, entry in service_entries:
            if entry.use_from_stage is not None:
                source = entry.use_from_stage.stage
                spath = join_path(path, where, "useFromStage", "stage")
                if source not in self.stage_services:
                    self.error(spath, f"useFromStage names {source!r}, which is not an earlier deployment stage")
                else:
                    service_refs.extend(self.stage_services[source])
            elif entry.service_ref is not None:
                service_refs.append(entry.service_ref)
                self.check_ref("service", entry.service_ref, join_path(path, where, "serviceRef"))
        self.stage_services[stage_id] = tuple(service_refs)

        environments: list[EnvironmentTarget] = []
        env_paths: list[str] = []
        group: EnvironmentGroupTarget | None = None
        stage_filters: tuple[TargetFilter, ...] = ()
        filters_path = path
        if raw.environment is not None:
            env_paths.append(join_path(path, "environment"))
            environments.append(self.environment(raw.environment, env_paths[-1]))
        if raw.environments is not None:
            filters_path = join_path(path, "environments", "filters")
            stage_filters = self.filters(raw.environments.filters, filters_path, FILTER_ENTITIES)
            for i, item in enumerate(raw.environments.values):
                env_paths.append(join_path(path, "environments", "values", i))
                environments.append(self.environment(item, env_paths[-1]))
        if raw.environment_group is not None:
            gpath = join_path(path, "environmentGroup")
            self.check_ref("environmentGroup", raw.environment_group.env_group_ref, join_path(gpath, "envGroupRef"))
            filters_path = join_path(gpath, "filters")
            stage_filters = self.filters(raw.environment_group.filters, filters_path, FILTER_ENTITIES)
            env_paths = [join_path(gpath, "environments", i) for i in range(len(raw.environment_group.environments))]
            chosen = [
                self.environment(item, env_path)
                for item, env_path in zip(raw.environment_group.environments, env_paths, strict=True)
            ]
            self.check_group_members(raw.environment_group.env_group_ref, chosen, gpath, bool(stage_filters))
            group = EnvironmentGroupTarget(
                env_group_ref=raw.environment_group.env_group_ref,
                deploy_to_all=raw.environment_group.deploy_to_all,
                environments=tuple(chosen),
            )
        artifacts = raw.artifacts or _ArtifactsRaw()
        metadata = DeploymentMetadata(
            deployment_type=raw.deployment_type,
            gitops_enabled=raw.git_ops_enabled,
            service_refs=tuple(service_refs),
            services_parallel=bool(raw.services and raw.services.metadata.parallel),
            environments=tuple(environments),
            environments_parallel=bool(raw.environments and raw.environments.metadata.parallel),
            environment_group=group,
            primary_artifact=artifacts.primary,
            sidecars=artifacts.sidecars,
            custom_metadata=dict(raw.custom_metadata),
            filters=stage_filters,
        )
        self.check_static_filters(metadata, filters_path, env_paths)
        return metadata

    def filters(self, value: Any, path: str, allowed: tuple[str, ...]) -> tuple[TargetFilter, ...]:
        """Harness `filters[]` (`type`, `entities`, `spec.matchType`, `spec.tags`), each problem at its path."""
        if value is None:
            return ()
        if isinstance(value, str) and is_expression(value):
            self.error(path, "filters written as one expression are not supported: list them (tags may be expressions)")
            return ()
        if not isinstance(value, list) or not value:
            self.error(path, f"expected a non-empty list of filters, got {_kind(value)}")
            return ()
        out: list[TargetFilter] = []
        for i, item in enumerate(value):
            fpath = join_path(path, i)
            node = self.mapping(item, fpath, "a filter")
            if node is None:
                continue
            before = len(self.issues)
            filter_type = node.get("type")
            if filter_type not in ("all", "tags"):
                self.error(join_path(fpath, "type"), f"unknown filter type {filter_type!r} (expected all or tags)")
            entities = node.get("entities")
            if not isinstance(entities, list) or not entities:
                self.error(join_path(fpath, "entities"), "expected a non-empty list of entity types")
                entities = []
            for j, entity in enumerate(entities):
                epath = join_path(fpath, "entities", j)
                if entity not in FILTER_ENTITIES:
                    expected = ", ".join(FILTER_ENTITIES)
                    self.error(epath, f"unknown entity type {entity!r} (expected {expected})")
                elif entity not in allowed:
                    self.error(
                        epath,
                        "an environment's own filters choose its infrastructures or gitOpsClusters only; "
                        "filter environments under 'environments' or 'environmentGroup'",
                    )
                elif entities.index(entity) != j:
                    self.error(epath, f"entity type {entity!r} is listed twice")
            spec = node.get("spec")
            match_type: Any = None
            tags: dict[str, str] = {}
            tags_expression: str | None = None
            if filter_type == "all":
                if spec not in (None, {}):
                    self.error(join_path(fpath, "spec"), "a filter of type all takes no spec")
            elif filter_type == "tags":
                spath = join_path(fpath, "spec")
                spec = self.mapping(spec, spath, "the filter spec with matchType and tags")
                if spec is not None:
                    for key in sorted(set(spec) - {"matchType", "tags"}):
                        self.error(join_path(spath, key), "unknown field (check the spelling)")
                    match_type = spec.get("matchType")
                    if match_type not in ("all", "any"):
                        self.error(join_path(spath, "matchType"), f"matchType must be all or any, not {match_type!r}")
                    raw_tags = spec.get("tags")
                    tpath = join_path(spath, "tags")
                    if isinstance(raw_tags, str) and is_expression(raw_tags):
                        tags_expression = raw_tags
                    elif isinstance(raw_tags, Mapping) and raw_tags:
                        for key, tag_value in raw_tags.items():
                            if not isinstance(key, str) or not key.strip():
                                self.error(tpath, "a tag key must not be empty")
                            elif isinstance(tag_value, Mapping | list):
                                self.error(join_path(tpath, key), "a tag value must be text")
                            else:
                                tags[key] = "" if tag_value is None else _scalar_text(tag_value)
                    elif isinstance(raw_tags, Mapping | type(None)):
                        self.error(tpath, "empty tag set: name at least one tag (key: value)")
                    else:
                        self.error(tpath, "expected a mapping of tags, or one expression such as <+pipeline.tags>")
            if len(self.issues) == before:
                out.append(
                    TargetFilter(
                        type=filter_type,
                        entities=tuple(entities),
                        match_type=match_type,
                        tags=tags,
                        tags_expression=tags_expression,
                    )
                )
        return tuple(out)

    def check_static_filters(self, md: DeploymentMetadata, filters_path: str, env_paths: list[str]) -> None:
        """With a catalog, a filter without expressions must keep something (it would fail the stage anyway)."""
        if self.catalog is None or not (md.filters or any(target.filters for target in md.all_environments)):
            return
        # targets imports this module (it works on the models above), hence the import here.
        from signoff.executor.domain.targets import choose_targets, static_filter

        catalog = self.catalog

        def resolve(kind: Any, ref: str, environment: str | None) -> Any:
            return catalog.resolve_ref(kind, ref, environment=environment)

        group = md.environment_group
        group_ref = resolve("environmentGroup", group.env_group_ref, None) if group is not None else None
        for problem in choose_targets(md, group_ref, catalog, resolve, static_filter).problems:
            if problem.kind != "no_match":
                continue  # outside the group: reported with the environment's path (check_group_members)
            if problem.own_filters and problem.environment is not None:
                self.error(join_path(env_paths[problem.environment], "filters"), problem.message)
            else:
                self.error(filters_path, problem.message)

    def environment(self, raw: _EnvironmentRaw, path: str) -> EnvironmentTarget:
        filters = self.filters(raw.filters, join_path(path, "filters"), ("infrastructures", "gitOpsClusters"))
        self.check_ref("environment", raw.environment_ref, join_path(path, "environmentRef"))
        env = None if is_expression(raw.environment_ref) else raw.environment_ref
        for i, infra in enumerate(raw.infrastructure_definitions):
            self.check_ref(
                "infrastructure", infra.identifier, join_path(path, "infrastructureDefinitions", i, "identifier"), env
            )
        for i, cluster in enumerate(raw.git_ops_clusters):
            self.check_ref("gitopsCluster", cluster.identifier, join_path(path, "gitOpsClusters", i, "identifier"))
        return raw.target(filters)

    def check_ref(self, kind: RefKind, ref: str, path: str, environment: str | None = None) -> None:
        if self.catalog is None or is_expression(ref):
            return  # expressions are allowed: they are resolved (or marked unresolved) while the pipeline runs
        if kind == "infrastructure" and environment is None:
            return  # scoped by an environment that is itself an expression
        if kind == "infrastructure" and environment not in self.catalog.environments:
            return  # the unknown environment is reported on its own
        result = self.catalog.resolve_ref(kind, ref, environment=environment)
        if isinstance(result, Unresolved):
            self.error(path, result.reason)

    def check_group_members(
        self, group_ref: str, chosen: list[EnvironmentTarget], path: str, filtered: bool = False
    ) -> None:
        if self.catalog is None or is_expression(group_ref) or group_ref not in self.catalog.environment_groups:
            return
        members = set(self.catalog.environment_group(group_ref).environments)
        for i, target in enumerate(chosen):
            ref = target.environment_ref
            if not is_expression(ref) and ref in self.catalog.environments and ref not in members:
                message = f"environment {ref!r} is not in environment group {group_ref!r}"
                if filtered:
                    message += " (the group's filters choose among its own environments only)"
                self.error(join_path(path, "environments", i, "environmentRef"), message)

    # steps ---------------------------------------------------------------------------------------------------

    def steps(self, value: Any, path: str, ids: dict[str, str], *, in_parallel: bool) -> list[StepElement]:
        if not isinstance(value, list) or not value:
            self.error(path, "expected a non-empty list of steps")
            return []
        out: list[StepElement] = []
        for i, item in enumerate(value):
            ipath = join_path(path, i)
            node = self.mapping(item, ipath, "'step', 'parallel' or 'stepGroup'")
            if node is None:
                continue
            keys = [key for key in ("step", "parallel", "stepGroup") if key in node]
            if len(keys) != 1:
                self.error(ipath, "expected exactly one of 'step', 'parallel' or 'stepGroup'")
                continue
            key = keys[0]
            kpath = join_path(ipath, key)
            if key == "step":
                step = self.step(node[key], kpath, ids, in_parallel=in_parallel)
                if step is not None:
                    out.append(step)
            elif key == "parallel":
                if in_parallel and not path.endswith(".steps"):
                    self.error(kpath, "parallel blocks cannot be nested directly in parallel blocks")
                    continue
                items = self.steps(node[key], kpath, ids, in_parallel=True)
                out.append(ParallelSteps(tuple(items)))
            else:
                group = self.step_group(node[key], kpath, ids, in_parallel=in_parallel)
                if group is not None:
                    out.append(group)
        return out

    def claim(self, identifier: str, path: str, ids: dict[str, str]) -> None:
        if identifier in ids:
            self.error(
                join_path(path, "identifier"),
                f"duplicate step identifier {identifier!r} in this stage (first at {ids[identifier]})",
            )
        else:
            ids[identifier] = path

    def step_group(self, value: Any, path: str, ids: dict[str, str], *, in_parallel: bool) -> StepGroup | None:
        node = self.mapping(value, path, "a step group")
        if node is None:
            return None
        header = self.model(_StepGroupHeader, node, path)
        self.unknown_keys(node, path, HARNESS_STEP_GROUP_KEYS)
        self.unknown_variable_keys(node, path)
        if header is not None:
            self.claim(header.identifier, path, ids)
        self.unsupported_keys(node, path)
        steps = self.steps(node.get("steps"), join_path(path, "steps"), ids, in_parallel=in_parallel)
        if header is None:
            return None
        return StepGroup(header.identifier, header.name, tuple(steps))

    def step(self, value: Any, path: str, ids: dict[str, str], *, in_parallel: bool) -> Step | None:
        node = self.mapping(value, path, "a step")
        if node is None:
            return None
        header = self.model(_StepHeader, node, path)
        self.unknown_keys(node, path, HARNESS_STEP_KEYS)
        self.unsupported_keys(node, path)
        if header is None:
            return None
        self.claim(header.identifier, path, ids)
        if header.type not in _SPEC_MODELS:
            self.error(
                join_path(path, "type"),
                f"unknown step type {header.type!r} (supported: {', '.join(STEP_TYPES)})",
            )
            return None
        if header.type == "HarnessApproval" and in_parallel:
            self.error(path, "approval steps cannot run in parallel")
        spec_path = join_path(path, "spec")
        if self.mapping(node.get("spec"), spec_path, f"the {header.type} spec") is None:
            return None
        spec = self.model(_SPEC_MODELS[header.type], node["spec"], spec_path)
        if spec is None:
            return None
        return Step(header.identifier, header.name, header.type, spec, header.timeout, header.description)  # type: ignore[arg-type]


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    return type(value).__name__


# -- public entry points -----------------------------------------------------------------------------------------


def validate_pipeline(
    document: Mapping[str, Any] | str, *, catalog: Catalog | None = None, source: str = "<pipeline>"
) -> list[Issue]:
    """Every problem of a pipeline document (parsed YAML, or YAML text), by path; empty when valid.

    With a catalog, literal service / environment / environment-group / infrastructure / GitOps-cluster refs must
    exist in it; expressions are allowed and stay unresolved until the pipeline runs.
    """
    try:
        data = parse_yaml(document, source) if isinstance(document, str) else document
    except YamlDocumentError as exc:
        return [exc.issue]
    parser = _Parser(catalog)
    parser.parse(data)
    return parser.issues


def parse_pipeline(
    document: Mapping[str, Any] | str,
    *,
    catalog: Catalog | None = None,
    source: str = "<pipeline>",
    unknown_keys: bool = True,
) -> Pipeline:
    """Parse and validate; raises `PipelineError` listing every problem. `unknown_keys=False` lets keys Harness
    does not define pass, as they did before they were refused: for the document of an execution that started then
    (a restore must not fail what was accepted)."""
    try:
        data = parse_yaml(document, source) if isinstance(document, str) else document
    except YamlDocumentError as exc:
        raise PipelineError(source, [exc.issue]) from None
    parser = _Parser(catalog, unknown_keys=unknown_keys)
    pipeline = parser.parse(data)
    if parser.issues or pipeline is None:
        raise PipelineError(source, parser.issues or [Issue("(root)", "not a pipeline")])
    return pipeline
