"""The shared command line of the config-as-code generators (railway.json, fly.toml).

Each platform file is rendered from a stack file through the same settings parser and DeploymentSpec
as `pulumi up`, so the file and the Pulumi targets cannot disagree; a test fails when a committed file
is stale. `--check` exits 1 when the file differs from what the stack gives, `--variables` prints the
platform commands that set the service's variables (secrets as placeholders).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pulumi

from infra.config import REPO_ROOT, ConfigError, StackConfig, load_stack_file

EXAMPLES = REPO_ROOT / "infra" / "examples"


def example_stack_file(target: str) -> Path:
    return EXAMPLES / f"Pulumi.{target}.yaml"


def stack_name(path: Path) -> str:
    """`Pulumi.<stack>.yaml` -> `<stack>`."""
    name = path.name
    if name.startswith("Pulumi.") and name.endswith(".yaml"):
        return name[len("Pulumi.") : -len(".yaml")]
    return path.stem


def load(path: Path, target: str) -> StackConfig:
    """The stack's settings, validated as for a deploy minus what only `pulumi up` needs (secrets'
    values, placeholders): the platform asks for those itself."""
    cfg = load_stack_file(stack_name(path), path, deploy=False)
    if cfg.target != target:
        raise ConfigError([f"reranker:target={cfg.target}: {path.name} is not a {target} stack"], path.name)
    return cfg


def main(
    argv: list[str] | None,
    *,
    target: str,
    output: Path,
    render: Callable[[StackConfig], str],
    variables: Callable[[StackConfig], str],
) -> int:
    parser = argparse.ArgumentParser(description=f"Write {output.name} from a {target} stack's settings.")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {output.name} is out of date")
    parser.add_argument(
        "--stack-file",
        type=Path,
        default=example_stack_file(target),
        help=f"the stack file to render (default: {example_stack_file(target).relative_to(REPO_ROOT)})",
    )
    parser.add_argument("--output", type=Path, default=output)
    parser.add_argument(
        "--variables", action="store_true", help="print the commands that set the service's variables"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load(args.stack_file, target)
        text = render(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.variables:
        print(variables(cfg), end="")
        return 0
    return write_or_check(args.output, text, check=args.check, regenerate=f"python scripts/{target}_config.py")


def write_or_check(output: Path, text: str, *, check: bool, regenerate: str) -> int:
    """Write a generated config file, or with `check` exit 1 when the file on disk differs (naming the
    command that regenerates it). Shared by every config-as-code generator (render.yaml, railway.json,
    fly.toml)."""
    current = output.read_text() if output.exists() else None
    if check:
        if current != text:
            print(f"{output} is out of date: run {regenerate}", file=sys.stderr)
            return 1
        print(f"{output} is up to date")
        return 0
    output.write_text(text)
    print(f"wrote {output}")
    return 0


def secret_names(cfg: StackConfig, spec) -> list[str]:
    """Variables the platform must hold as secrets: those the stack sets and those it requires."""
    from infra.config import KEYS_BY_NAME

    required = {KEYS_BY_NAME[key].env or key for key in cfg.required_secrets}
    return sorted(set(spec.secret_env) | required)


def refuse_pulumi_up(cfg: StackConfig, file: str, why: str, *, then: str, readme: str) -> NoReturn:
    """`pulumi up` / `preview` on a config-file target: stop with the way forward instead of a no-op."""
    target = cfg.target
    raise pulumi.RunError(
        f"reranker:target={target} is not deployed by Pulumi: {why}. Run "
        f"`python scripts/{target}_config.py --stack-file Pulumi.{cfg.stack}.yaml` to write {file}, "
        f'then {then} (README.md, "{readme}").'
    )
