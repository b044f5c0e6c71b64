"""Production settings refuse unsafe configuration; every variable is read through settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from config.settings.base import ANVIL_DEFAULT_PRIVATE_KEYS
from config.stack.services import BASE_DIR

SAFE = {
    "DJANGO_SECRET_KEY": "k" * 50,
    "DJANGO_DEBUG": "false",
    "CHAIN_PRIVATE_KEY": "0x" + "ab" * 32,
    "CONSENT_PRIVATE_KEY": "0x" + "cd" * 32,
    "CONSENT_PSEUDONYM_KEY": "p" * 40,
    "DEID_SECRET": "d" * 40,
}


def import_production(**overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SAFE}
    env.update(SAFE)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-c", "import config.settings.production"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True,
    )


def test_production_starts_with_safe_values():
    result = import_production()

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_SECRET_KEY": "short"}, "DJANGO_SECRET_KEY must be set"),
        ({"DJANGO_DEBUG": "true"}, "DJANGO_DEBUG must be off"),
        ({"CHAIN_PRIVATE_KEY": None}, "CHAIN_PRIVATE_KEY must be set"),
        ({"CHAIN_PRIVATE_KEY": ANVIL_DEFAULT_PRIVATE_KEYS[0]}, "public development key"),
        ({"CHAIN_PRIVATE_KEY": ANVIL_DEFAULT_PRIVATE_KEYS[1].upper().replace("0X", "0x")},
         "public development key"),
        ({"CHAIN_PRIVATE_KEY": ANVIL_DEFAULT_PRIVATE_KEYS[2].removeprefix("0x")}, "public development key"),
        ({"CONSENT_PRIVATE_KEY": None}, "CONSENT_PRIVATE_KEY must be set"),
        ({"CONSENT_PRIVATE_KEY": ANVIL_DEFAULT_PRIVATE_KEYS[2]}, "public development key"),
        ({"CONSENT_PRIVATE_KEY": "0x" + "ab" * 32}, "must differ from CHAIN_PRIVATE_KEY"),
        ({"CONSENT_PSEUDONYM_KEY": None}, "CONSENT_PSEUDONYM_KEY must be set"),
        ({"CONSENT_PSEUDONYM_KEY": "short"}, "CONSENT_PSEUDONYM_KEY must be set"),
    ],
)
def test_production_refuses_unsafe_values(overrides, message):
    result = import_production(**overrides)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("index", range(10))
@pytest.mark.parametrize("name", ["CHAIN_PRIVATE_KEY", "CONSENT_PRIVATE_KEY"])
def test_production_refuses_every_well_known_anvil_key(name, index):
    result = import_production(**{name: ANVIL_DEFAULT_PRIVATE_KEYS[index]})

    assert result.returncode != 0 and "public development key" in result.stderr


def test_the_listed_anvil_keys_are_the_default_mnemonics_accounts_0_to_9():
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    mnemonic = "test test test test test test test test test test test junk"
    derived = tuple("0x" + Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").key.hex()
                    .removeprefix("0x") for i in range(10))

    assert ANVIL_DEFAULT_PRIVATE_KEYS == derived


@pytest.mark.parametrize("secret", ["django-insecure-" + "x" * 50, "k" * 49, "dev-only-" + "x" * 50])
def test_production_refuses_insecure_or_short_secret_keys(secret):
    result = import_production(DJANGO_SECRET_KEY=secret)

    assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr
