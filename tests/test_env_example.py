""".env.example lists every variable the settings read, so an operator sees all the knobs."""

from __future__ import annotations

import re

from config.stack.services import BASE_DIR
from tests.test_docker_compose import settings_variables  # noqa: F401 - the fixture


def test_every_setting_read_from_the_environment_is_in_env_example(settings_variables):  # noqa: F811
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.M))

    assert settings_variables - listed == set()
