"""The two documents the product was made from (../shared/seeds/), as the tests use them: verbatim."""

from __future__ import annotations

# The HarnessApproval step from "Using manual Harness approval steps in CD stages", character for character.
HARNESS_APPROVAL_STEP_YAML = """\
- step:
    type: HarnessApproval
    name: Harness Approval Step
    identifier: Harness_Approval_Step
    timeout: 1d
    spec:
      approvalMessage: Test
      includePipelineExecutionHistory: true
      approvers:
        userGroups:
          - docs
        minimumCount: 1
        disallowPipelineExecutor: false
      approverInputs:
        - name: foo
          defaultValue: bar
"""

# The put-approval-result input (approvalstage-approved.json) from "Approve or Reject an Approval Action in AWS
# CodePipeline", verbatim.
CODEPIPELINE_DECISION = {
    "pipelineName": "MyFirstPipeline",
    "stageName": "MyApprovalStage",
    "actionName": "MyApprovalAction",
    "token": "1a2b3c4d-573f-4ea7-a67E-XAMPLETOKEN",
    "result": {"status": "Approved", "summary": "The new design looks good. Ready to release to customers."},
}
