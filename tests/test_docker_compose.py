"""docker-compose.yml describes the same stack; Docker cannot run here, so check it statically."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from config.stack.services import BASE_DIR

APP_SERVICES = {"web", "worker", "beat", "dicom-scp"}
BACKING_SERVICES = {"DATABASE_URL": "postgres", "REDIS_URL": "redis", "CHAIN_RPC_URL": "anvil"}

# Imports the production settings with django-environ's view of the environment recorded.
RECORD_SETTINGS_READS = """
import json, os, environ
read = set()
class Recording(dict):
    def __getitem__(self, key):
        read.add(key)
        return super().__getitem__(key)
    def get(self, key, default=None):
        read.add(key)
        return super().get(key, default)
    def __contains__(self, key):
        read.add(key)
        return super().__contains__(key)
environ.Env.ENVIRON = Recording(os.environ)
import config.settings.production
print(json.dumps(sorted(read)))
"""


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def settings_variables() -> set[str]:
    env = dict(os.environ, DJANGO_SECRET_KEY="s" * 50, CHAIN_PRIVATE_KEY="0x" + "cd" * 32,
               CONSENT_PRIVATE_KEY="0x" + "ef" * 32, CONSENT_PSEUDONYM_KEY="p" * 40, DEID_SECRET="d" * 40)
    result = subprocess.run([sys.executable, "-c", RECORD_SETTINGS_READS], cwd=BASE_DIR,
                            env=env, capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout)) | {"DJANGO_SETTINGS_MODULE"}


def test_every_service_of_the_stack_is_present_with_a_healthcheck(compose):
    services = compose["services"]

    assert {"postgres", "redis", "anvil", *APP_SERVICES} <= set(services)
    for name, service in services.items():
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"


def test_stateful_services_keep_their_data_in_named_volumes(compose):
    declared = set(compose["volumes"])
    for name in ("postgres", "redis", "anvil", *APP_SERVICES):
        mounted = {volume.split(":")[0] for volume in compose["services"][name]["volumes"]}
        assert mounted & declared, f"{name} keeps no named volume"


def test_every_variable_given_to_the_app_is_read_by_the_settings(compose, settings_variables):
    for name in APP_SERVICES:
        unknown = set(compose["services"][name]["environment"]) - settings_variables
        assert not unknown, f"{name} sets variables the settings never read: {unknown}"


def test_settings_read_the_backing_service_urls(settings_variables):
    assert set(BACKING_SERVICES) <= settings_variables


@pytest.mark.parametrize("app", sorted(APP_SERVICES))
def test_each_app_service_points_at_healthy_backing_services(compose, app):
    service = compose["services"][app]
    for variable, backing in BACKING_SERVICES.items():
        url = re.sub(r"\$\{[^}]*\}", "secret", service["environment"][variable])
        assert urlsplit(url).hostname == backing, f"{app}: {variable} does not point at {backing}"
        assert service["depends_on"][backing]["condition"] == "service_healthy"


def test_production_settings_are_used_and_secrets_are_required(compose):
    environment = compose["services"]["web"]["environment"]

    assert environment["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    for secret in ("DJANGO_SECRET_KEY", "CHAIN_PRIVATE_KEY", "CONSENT_PRIVATE_KEY", "CONSENT_PSEUDONYM_KEY",
                   "DEID_SECRET"):
        assert re.fullmatch(r"\$\{%s:\?[^}]+\}" % secret, environment[secret])
