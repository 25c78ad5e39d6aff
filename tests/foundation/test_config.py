from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hermes_site import config
from hermes_site.config import ConfigError, load

PRODUCTION_ENV = {
    "HERMES_ENV": "production",
    "SECRET_KEY": "k3y-" + "abcdefghij" * 6,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "hermes.example.com",
    "DATABASE_URL": "postgres://hermes:pw@db:5432/hermes",
    "REDIS_URL": "redis://redis:6379/0",
    "CSRF_TRUSTED_ORIGINS": "https://hermes.example.com",
}


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(env)
    return err.value.problems


def test_dev_defaults_need_nothing() -> None:
    cfg = load({})
    assert cfg.env == "dev"
    assert cfg.debug is True
    assert cfg.database_url.startswith("sqlite:///")
    assert cfg.redis_url is None
    assert all(cfg.features.values())
    assert any("embedded" in fix for _, fix in cfg.warnings)


def test_complete_production_env_is_accepted() -> None:
    cfg = load(PRODUCTION_ENV)
    assert cfg.env == "production" and cfg.debug is False and cfg.warnings == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is missing"),
        ({"SECRET_KEY": config.INSECURE_SECRET_KEY}, "SECRET_KEY is unsafe"),
        ({"DEBUG": "true"}, "DEBUG is on in production"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS is empty"),
        ({"ALLOWED_HOSTS": "*"}, "contains '*'"),
        ({"DATABASE_URL": "sqlite:///tmp/x.db"}, "SQLite in production"),
        ({"REDIS_URL": ""}, "REDIS_URL is missing"),
        ({"HERMES_FEDERATION_HMAC": "false"}, "only allowed in dev"),
    ],
)
def test_unsafe_production_values_are_refused(change: dict[str, str], expected: str) -> None:
    problems = problems_of({**PRODUCTION_ENV, **change})
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_not_just_the_first() -> None:
    problems = problems_of({"HERMES_ENV": "production"})
    assert len(problems) >= 4
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HERMES_FEATURE_TELEPORT": "true"}, "not a known feature flag"),
        ({"HERMES_FEATURE_METRICS": "maybe"}, "is not a boolean"),
        ({"HERMES_ENV": "staging"}, "is not one of"),
        ({"DEBUG": "sometimes"}, "is not a boolean"),
        ({"DATABASE_URL": "mysql://x/y"}, "not supported"),
        ({"REDIS_URL": "http://x"}, "must start with redis://"),
        ({"CELERY_BROKER_URL": "http://x"}, "redis:// or amqp://"),
        ({"DATABASE_POOL_MAX": "-1"}, "non-negative integer"),
        ({"LOG_SAMPLE_RATE": "2"}, "between 0 and 1"),
        ({"LOG_FORMAT": "xml"}, "json or console"),
    ],
)
def test_malformed_values_are_errors_not_silent_defaults(env: dict[str, str], expected: str) -> None:
    assert any(expected in p for p in problems_of(env))


def test_a_bad_redis_url_is_reported_once_not_again_as_the_broker_url_derived_from_it() -> None:
    assert problems_of({"REDIS_URL": "http://127.0.0.1:6379"}) == [
        "REDIS_URL='http://127.0.0.1:6379' must start with redis://, rediss:// or unix://."
    ]
    # A broker URL the operator did set is still checked on its own.
    problems = problems_of({"REDIS_URL": "http://127.0.0.1:6379", "CELERY_BROKER_URL": "http://127.0.0.1:5672"})
    assert len(problems) == 2 and problems[1].startswith("CELERY_BROKER_URL='http://127.0.0.1:5672'")


def test_feature_flags_parse() -> None:
    cfg = load({"HERMES_FEATURE_TRACING": "off", "HERMES_FEATURE_FEDERATION": "1"})
    assert cfg.features["tracing"] is False and cfg.features["federation"] is True


def test_documentation_mirrors_the_contract() -> None:
    table = (config.BASE_DIR / "docs" / "configuration.md").read_text()
    example = (config.BASE_DIR / ".env.example").read_text()
    for setting in config.SETTINGS_TABLE:
        assert f"`{setting.name}`" in table, setting.name
        assert f"{setting.name}=" in example, setting.name
    assert table == config.configuration_doc()
    assert example == config.env_example()


def _boot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "DATABASE_", "REDIS_", "SECRET"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env={**clean, **env},
        cwd=config.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_boot_without_secret_key_stops_with_one_line() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = _boot(env, "check")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["hermes: configuration error: " + problems_of(env)[0]]
    assert "Traceback" not in result.stderr


def test_check_deploy_is_clean_with_a_complete_production_env() -> None:
    result = _boot(PRODUCTION_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
