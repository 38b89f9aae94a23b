"""env.template lists every variable the service and its deployment use; the README section documents
every stack setting and every CI variable the workflows read."""

from __future__ import annotations

import re

from infra.config import KEYS
from tests.infra.harness import ROOT

TEMPLATE = (ROOT / "env.template").read_text()
README = (ROOT / "README.md").read_text()
WORKFLOWS = "\n".join(p.read_text() for p in sorted((ROOT / ".github" / "workflows").glob("*.yml")))


def template_names() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", TEMPLATE, re.MULTILINE))


def active_assignments() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", TEMPLATE, re.MULTILINE))


def test_env_template_lists_every_service_setting():
    from service.settings import Settings

    aliases = {field.alias for field in Settings.model_fields.values() if field.alias}
    assert aliases <= template_names(), aliases - template_names()


def test_env_template_lists_every_variable_the_stacks_set():
    names = {key.env for key in KEYS if key.env}
    assert names <= template_names(), names - template_names()


def test_env_template_lists_every_variable_and_secret_the_workflows_read():
    used = set(re.findall(r"\b(?:secrets|vars)\.([A-Z][A-Z0-9_]*)", WORKFLOWS)) - {"GITHUB_TOKEN"}
    assert used <= template_names(), used - template_names()


def test_env_template_is_a_valid_dotenv_for_the_service():
    """Copied to .env as is, the service accepts it (optional entries are commented out, not empty)."""
    from service.settings import Settings

    class FromTemplate(Settings):
        @classmethod
        def settings_customise_sources(
            cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        ):
            return (init_settings,)

    FromTemplate(**active_assignments())


def test_env_template_holds_no_secret_values():
    secret_envs = {key.env for key in KEYS if key.secret and key.env}
    for name, value in active_assignments().items():
        if name in secret_envs:
            assert value == "", f"{name} has a value in env.template"


def test_readme_section_documents_every_setting():
    for key in KEYS:
        assert f"| `{key.name}` |" in README, f"{key.name} is missing from the settings table"


def test_readme_section_states_the_render_list_prices():
    from infra.targets.render import SIZES

    for plan in SIZES:
        assert f"| `{plan.api_name}` |" in README and f"${plan.usd_per_month} / month" in README
    assert "list price" in README.lower()


def readme_configuration_table() -> set[str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {name for cell in re.findall(r"^\| ([^|]+) \|", section, re.MULTILINE)
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}


def test_readme_configuration_table_lists_every_setting_of_the_service_and_the_download_scripts():
    from service.model_download import DownloadSettings

    aliases = {field.alias for field in DownloadSettings.model_fields.values() if field.alias}
    aliases -= {"PROMETHEUS_MULTIPROC_DIR"}  # set by `python -m service` itself, not by the user
    assert {"RERANK_LOCAL_DIR", "HF_HUB_ETAG_TIMEOUT", "RERANK_MODEL"} <= aliases
    missing = aliases - readme_configuration_table()
    assert not missing, f"README's configuration table does not list {sorted(missing)}"


def test_readme_has_a_section_per_added_platform_with_dated_prices_and_limits():
    from infra.targets import cloudrun, ecs

    assert "App Runner has taken no new customers since 2026-04-30" in README
    for section, module in (
        ("### On Google Cloud Run (`target: cloudrun`)", cloudrun),
        ("### On AWS: ECS on Fargate (`target: ecs`)", ecs),
    ):
        assert section in README
        body = README.split(section, 1)[1].split("\n### ", 1)[0]
        assert "published in 2025" in body and "What " in body and "cannot do" in body
        assert "pulumi up" in body and "Needs " in body
    assert f"${cloudrun.usd_per_month(1, 2048):.2f} / month" in README
    assert f"${next(s for s in ecs.SIZES if s.name == '1024/2048').usd_per_month:.2f} / month" in README
