"""A YAML alias bomb shaped like a pipeline (the probe's): step groups reusing anchors, nine copies a level."""

from __future__ import annotations


def alias_bomb(levels: int = 6) -> str:
    """A pipeline of a few KiB whose one stage's steps expand to 9**levels copies of a step: `g0` is a list of
    one step with a mistake in it, each `g{i}` nine step groups whose steps are `*g{i-1}`."""
    lines = [
        "anchors:",
        "  g0: &g0",
        "    - step: {type: ShellScript, name: s, identifier: s,",
        "             spec: {shell: Bash, source: {type: Inline, spec: {script: echo}}, typo: 1}}",
    ]
    for i in range(1, levels + 1):
        lines.append(f"  g{i}: &g{i}")
        lines += [f"    - stepGroup: {{name: g{i}_{j}, identifier: g{i}_{j}, steps: *g{i - 1}}}" for j in range(9)]
    lines += [
        "pipeline:",
        "  name: bomb",
        "  identifier: bomb",
        "  stages:",
        "    - stage:",
        "        name: s",
        "        identifier: s",
        "        type: Custom",
        "        spec:",
        "          execution:",
        f"            steps: *g{levels}",
    ]
    return "\n".join(lines) + "\n"
