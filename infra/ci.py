"""CI: copy a GitHub environment's variables and secrets into a stack's Pulumi config before `pulumi up`.

Each `reranker:<key>` has one CI variable name: the deployment guide's keys keep their names
(LLM_API_KEY, SUPABASE_URL, ...), every other key is RERANKER_<KEY_IN_SNAKE_CASE> (imageName ->
RERANKER_IMAGE_NAME). Secret keys are written with `--secret`; values travel on stdin (never on a
command line, never printed). Unset or empty variables are skipped, so a missing required secret
fails `pulumi preview` with the config's own message.

    python scripts/ci_stack_config.py --stack prod
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Mapping

from infra.config import GUIDE_KEYS, Key, all_keys


def ci_variable(key: Key) -> str:
    """The CI variable that carries `reranker:<key>`."""
    if key in GUIDE_KEYS and key.env:
        return key.env
    return "RERANKER_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key.name).upper()


def commands(stack: str, environ: Mapping[str, str]) -> list[tuple[list[str], str, Key]]:
    """(argv, stdin value, key) for every key whose CI variable is set."""
    planned = []
    for key in all_keys():
        value = environ.get(ci_variable(key), "")
        if value.strip() == "":
            continue
        argv = ["pulumi", "config", "set", "--stack", stack]
        argv += ["--secret"] if key.secret else ["--plaintext"]
        argv += ["--", key.name]
        planned.append((argv, value, key))
    return planned


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write CI variables into a stack's Pulumi config.")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--list", action="store_true", help="print the variable name of every key and exit")
    args = parser.parse_args(argv)
    if args.list:
        for key in all_keys():
            print(f"{ci_variable(key):40} reranker:{key.name}{' (secret)' if key.secret else ''}")
        return 0
    environ = os.environ if environ is None else environ
    for command, value, key in commands(args.stack, environ):
        result = subprocess.run(command, input=value, text=True, capture_output=True)
        if result.returncode != 0:
            print(f"error: pulumi config set {key.name} failed: {result.stderr.strip()}", file=sys.stderr)
            return result.returncode
        print(f"set reranker:{key.name} from {ci_variable(key)}{' (secret)' if key.secret else ''}")
    return 0
