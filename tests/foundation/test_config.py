from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from typing import Any

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
    "HERMES_PUBLIC_URL": "https://hermes.example.com",
    "EMAIL_URL": "smtp+tls://hermes:pw@smtp.example.com:587",
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


def test_production_requires_the_public_url_links_are_made_from() -> None:
    """Unset, it was http://127.0.0.1:8000 without a word: reset and invitation links pointed at loopback."""
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "HERMES_PUBLIC_URL"}
    assert problems_of(env) == [
        "HERMES_PUBLIC_URL is missing: set it to the URL people and peers reach this instance at "
        "(https://hermes.example.com); links in mail and agent cards are made from it."
    ]
    for hermes_env in ("dev", "test"):  # `make run` and `make test` need nothing
        assert load({"HERMES_ENV": hermes_env})["HERMES_PUBLIC_URL"] == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("change", "warning"),
    [
        ({"EMAIL_URL": "consolemail://"}, "EMAIL_URL is consolemail:// in production: invitation and password-reset"),
        ({"EMAIL_URL": "memorymail://"}, "EMAIL_URL is memorymail:// in production"),
        ({"EMAIL_URL": "dummymail://"}, "EMAIL_URL is dummymail:// in production"),
        ({"HERMES_PUBLIC_URL": "http://127.0.0.1:8000"}, "HERMES_PUBLIC_URL is http://127.0.0.1:8000 in production"),
        ({"HERMES_PUBLIC_URL": "http://localhost:8000"}, "HERMES_PUBLIC_URL is http://localhost:8000 in production"),
        ({"HERMES_PUBLIC_URL": "http://[::1]:8000"}, "HERMES_PUBLIC_URL is http://[::1]:8000 in production"),
    ],
)
def test_production_warns_about_mail_that_is_never_sent_and_loopback_links(
    change: dict[str, str], warning: str
) -> None:
    """`doctor` and every startup summary show these (with the fix); the default console backend printed a reset
    link to stdout, past the log redaction."""
    (found,) = load({**PRODUCTION_ENV, **change}).warnings
    assert found[0].startswith(warning) and found[1]
    if "EMAIL_URL" in change:
        assert "smtp+tls://" in found[1]
    # Outside production the defaults are what a developer wants: mail on the console, links to this machine.
    assert not [w for w in load({"HERMES_ENV": "dev", **change}).warnings if "production" in w[0]]


def test_every_problem_is_reported_not_just_the_first() -> None:
    problems = problems_of({"HERMES_ENV": "production"})
    assert len(problems) >= 4
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HERMES_FEATURE_TELEPORT": "true"}, "not a known feature flag"),
        ({"HERMES_FEATURE_METRICS": "maybe"}, "must be true or false"),
        ({"HERMES_ENV": "staging"}, "must be one of dev, test, production"),
        ({"DEBUG": "sometimes"}, "must be true or false"),
        ({"DATABASE_URL": "mysql://x/y"}, "a URL starting with postgres://"),
        ({"REDIS_URL": "http://x"}, "a URL starting with redis://, rediss://, unix://"),
        ({"CELERY_BROKER_URL": "http://x"}, "a URL starting with redis://, rediss://, amqp://"),
        ({"DATABASE_POOL_MAX": "-1"}, "must be a whole number, 1 or more"),
        ({"LOG_SAMPLE_RATE": "2"}, "must be a number from 0 to 1"),
        ({"LOG_FORMAT": "xml"}, "must be one of json, console"),
    ],
)
def test_malformed_values_are_errors_not_silent_defaults(env: dict[str, str], expected: str) -> None:
    assert any(expected in p for p in problems_of(env))


# QA's list, and a value of the same sort for every other variable that can be wrong: each is refused in one line
# naming the variable, the value and what it accepts (it was a traceback from settings.py, Django's multi-line
# SystemCheckError, or a silent default that broke the platform later).
MALFORMED = [
    *[
        (name, "abc")
        for name in (
            "HERMES_TASK_DEADLINE_SECONDS",
            "HERMES_TASK_HEARTBEAT_SECONDS",
            "HERMES_TASK_STALE_SECONDS",
            "HERMES_TASK_REDISPATCH_SECONDS",
            "HERMES_TASK_MAX_ATTEMPTS",
            "HERMES_TASK_RETRY_BASE_SECONDS",
            "HERMES_TASK_RETRY_MAX_SECONDS",
            "HERMES_TASK_POLL_SECONDS",
            "HERMES_TASK_SWEEP_SECONDS",
            "HERMES_SSE_MAX_SECONDS",
            "HERMES_SSE_POLL_SECONDS",
            "HERMES_WS_RESYNC_SECONDS",
            "HERMES_FEDERATION_INBOUND_PER_MINUTE",
        )
    ],
    ("HERMES_FEDERATION_RETRY_MAX_DELAY", "nan"),
    ("HERMES_FEDERATION_TIMEOUT", "inf"),
    ("EMAIL_URL", "notaurl"),
    ("EMAIL_URL", "smtp://host:notaport"),
    ("EMAIL_URL", "smtp://"),
    ("EMAIL_URL", "filemail://var/mail"),  # "var" would be a host name: a directory needs three slashes
    ("LOG_LEVEL", "LOUD"),
    ("CSRF_TRUSTED_ORIGINS", "hermes.example.com"),
    ("CSRF_TRUSTED_ORIGINS", "https://hermes.example.com/"),
    ("SECURE_SSL_REDIRECT", "ture"),
    ("DATABASE_POOL", "maybe"),
    ("CELERY_TASK_ALWAYS_EAGER", "maybe"),
    ("DEBUG", ""),
    ("DATABASE_POOL_MAX", "0"),
    ("METRICS_ALLOWED_IPS", "999.1.1.1"),
    ("METRICS_ALLOWED_IPS", "127.0.0.1,10.0.0.0/33"),
    ("HERMES_TRUSTED_PROXIES", "notanip"),
    ("CELERY_WORKER_METRICS_PORT", "99999"),
    ("HERMES_PUBLIC_URL", "not-a-url"),
    ("HERMES_PUBLIC_URL", "https://"),
    ("HERMES_PUBLIC_URL", "https://hermes.example.com/?next=1"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"),
    ("CELERY_TASK_DEFAULT_QUEUE", ""),
    ("HERMES_TASK_MAX_ATTEMPTS", "0"),
    ("HERMES_TASK_DEADLINE_SECONDS", "-10"),
    ("HERMES_TASK_SWEEP_SECONDS", "0"),
    ("HERMES_TASK_HEARTBEAT_SECONDS", "0"),
    ("HERMES_TASK_POLL_SECONDS", "0"),
    ("HERMES_SSE_POLL_SECONDS", "0"),
    ("HERMES_WS_RESYNC_SECONDS", "0"),
    ("HERMES_FEDERATION_MAX_ATTEMPTS", "0"),
    ("HERMES_FEDERATION_INBOUND_PER_MINUTE", "-5"),
    # The rest of docs/configuration.md, checked the same way.
    ("ALLOWED_HOSTS", "https://hermes.example.com"),
    ("ALLOWED_HOSTS", "hermes.example.com:8000"),
    ("DATABASE_URL", "postgres://db:notaport/hermes"),
    ("REDIS_URL", "redis://redis:notaport/0"),
    ("SECURE_HSTS_SECONDS", "a year"),
    ("DEFAULT_FROM_EMAIL", "not an address"),
    ("LOG_SAMPLE_RATE", "nan"),
    ("HEALTH_STALE_AFTER", "5"),
    ("CELERY_WORKER_METRICS_HOST", "http://0.0.0.0"),
    ("HERMES_BACKUP_DIR", __file__),
    ("PROMETHEUS_MULTIPROC_DIR", __file__),
    ("PROMETHEUS_MULTIPROC_DIR", f"{__file__}/metrics"),  # cannot be created under a file either
    ("OTEL_SERVICE_NAME", ""),
    ("HERMES_SSRF_ALLOWLIST", "https://agent.internal"),
    ("HERMES_FEDERATION_TOLERANCE", "0"),
    ("HERMES_FEDERATION_DEFAULT_POLICY", "ALLOW ALL"),
    ("HERMES_FEDERATION_POLICY_CACHE_TTL", "-1"),
    ("HERMES_FEDERATION_MAX_AGE", "1e3"),
    ("HERMES_FEDERATION_RETRY_BASE", "0"),
    ("HERMES_FEDERATION_SWEEP_INTERVAL", "-1"),
    ("HERMES_FIELD_KEY", "key-one,,key-two"),
    ("HERMES_MAX_TASK_INPUT_BYTES", "256k"),
    ("HERMES_MAX_EVENT_BYTES", "12"),
    ("HERMES_TASK_STALE_SECONDS", "-1"),
    ("HERMES_TASK_REDISPATCH_SECONDS", "0"),
    ("HERMES_TASK_RETRY_BASE_SECONDS", "0"),
    ("HERMES_TASK_RETRY_MAX_SECONDS", "0"),
    ("HERMES_SSE_MAX_SECONDS", "0"),
    ("HERMES_DEMO_FLAKY_FAILURE_RATE", "30%"),
    ("HERMES_FEATURE_CONSOLE", "enabled"),
    ("HERMES_FEDERATION_HMAC", "sure"),
    ("CELERY_BROKER_URL", "http://broker"),
    ("LOG_FORMAT", "xml"),
    *[(f"HERMES_FEATURE_{flag.upper()}", "maybe") for flag in config.FEATURES],
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_a_malformed_value_is_one_line_naming_variable_value_and_what_is_expected(name: str, value: str) -> None:
    (problem,) = problems_of({name: value})
    assert problem.startswith(tuple(f"{name}={value!r} {verb} " for verb in ("must be", "contains", "has the port")))
    assert "\n" not in problem and problem.endswith(".")


def test_every_variable_that_can_be_malformed_is_covered() -> None:
    """A variable added to the table without a malformed example here fails this test."""
    anything_goes = {s.name for s in config.SETTINGS_TABLE if s.kind == config.ANY_TEXT}
    uncovered = {s.name for s in config.SETTINGS_TABLE} - {name for name, _ in MALFORMED} - anything_goes
    # A bad HERMES_ENV is validated as production (more than one line): test_malformed_values_are_errors_...
    assert uncovered == {"HERMES_ENV"}


NUMBERS = [s for s in config.SETTINGS_TABLE if isinstance(s.kind, config.Number)]


@pytest.mark.parametrize("setting", NUMBERS, ids=lambda s: s.name)
def test_every_number_refuses_text_non_finite_values_and_its_bounds(setting: config.Setting) -> None:
    kind = setting.kind
    assert isinstance(kind, config.Number)
    bad = ["abc", "", "nan", "inf", "-inf", "1,5"]
    if kind.integer:
        bad.append("2.5")
    if kind.min is not None:
        bad.append(str(kind.min - 1))
    if kind.above is not None:
        bad.append(str(kind.above))
    if kind.max is not None:
        bad.append(str(kind.max + 1))
    for value in bad:
        assert problems_of({setting.name: value}) == [f"{setting.name}={value!r} must be {kind.expected}."]
    edge = kind.min if kind.min is not None else (kind.above or 0) + 0.5
    edge_text = str(int(edge)) if kind.integer else str(edge)
    fast_heartbeat = {"HERMES_TASK_HEARTBEAT_SECONDS": "0.1"}  # so the stale edge passes the cross-check
    assert load({**fast_heartbeat, setting.name: edge_text})[setting.name] == edge


@pytest.mark.parametrize("setting", [s for s in config.SETTINGS_TABLE if s.type == "bool"], ids=lambda s: s.name)
def test_every_boolean_takes_the_usual_spellings_and_refuses_the_rest(setting: config.Setting) -> None:
    env = {"HERMES_ENV": "dev"}  # where DEBUG and HERMES_FEDERATION_HMAC may take either value
    for raw, value in [("true", True), ("FALSE", False), ("1", True), ("0", False), ("Yes", True), ("no", False)]:
        assert load({**env, setting.name: raw})[setting.name] is value
    for raw, value in [("on", True), (" off ", False)]:
        assert load({**env, setting.name: raw})[setting.name] is value
    for raw in ("ture", "maybe", "", "2", "y", "enabled"):
        assert problems_of({**env, setting.name: raw}) == [
            f"{setting.name}={raw!r} must be true or false (or 1/0, yes/no, on/off)."
        ]


def test_a_misspelled_ssl_redirect_in_production_is_refused_not_read_as_false() -> None:
    assert load(PRODUCTION_ENV)["SECURE_SSL_REDIRECT"] is True
    assert problems_of({**PRODUCTION_ENV, "SECURE_SSL_REDIRECT": "ture"}) == [
        "SECURE_SSL_REDIRECT='ture' must be true or false (or 1/0, yes/no, on/off)."
    ]


@pytest.mark.parametrize(
    ("name", "value", "parsed"),
    [
        ("HERMES_FEDERATION_INBOUND_PER_MINUTE", "0", 0),  # documented: 0 = no limit
        ("CELERY_WORKER_METRICS_PORT", "0", 0),  # off
        ("SECURE_HSTS_SECONDS", "0", 0),
        ("HERMES_FEDERATION_POLICY_CACHE_TTL", "0", 0),
        ("METRICS_ALLOWED_IPS", "", []),  # only the bearer token
        ("METRICS_ALLOWED_IPS", " 10.0.0.0/8 , ::1", ["10.0.0.0/8", "::1"]),
        ("HERMES_TRUSTED_PROXIES", "172.30.80.10,10.1.0.0/16", ["172.30.80.10", "10.1.0.0/16"]),
        ("HERMES_SSRF_ALLOWLIST", "agent.internal,10.0.0.0/8,[fd00::1]", ["agent.internal", "10.0.0.0/8", "[fd00::1]"]),
        ("ALLOWED_HOSTS", ".example.com,[::1],10.0.0.5", [".example.com", "[::1]", "10.0.0.5"]),
        (
            "CSRF_TRUSTED_ORIGINS",
            "https://*.example.com,http://[::1]:8000",
            ["https://*.example.com", "http://[::1]:8000"],
        ),
        ("LOG_LEVEL", "warning", "WARNING"),
        ("HERMES_TASK_POLL_SECONDS", "1e-1", 0.1),  # django-environ read `1e-1` as 11.0
        ("HERMES_FEDERATION_RETRY_MAX_DELAY", "1e3", 1000.0),  # and `1e3` as 13.0
        ("EMAIL_URL", "smtp+tls://user:pass@mail.example.com:587", None),
        ("DEFAULT_FROM_EMAIL", "Hermes <hermes@example.com>", None),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "", ""),  # off
        ("REDIS_URL", "unix:///run/redis.sock", None),
        ("CELERY_BROKER_URL", "amqp://guest:guest@rabbitmq:5672//", None),
        ("DATABASE_URL", "", None),  # unset: the SQLite default in dev
    ],
)
def test_values_that_mean_something_are_accepted(name: str, value: str, parsed: object) -> None:
    cfg = load({name: value})
    assert cfg[name] == (value if parsed is None else parsed)


def test_a_filemail_url_names_an_absolute_directory() -> None:
    """django-environ read filemail:///tmp/hermes-mail as tmp/hermes-mail, relative to the working directory:
    invitation and reset mail landed where nobody looked."""
    from hermes_site.config import email_settings

    assert load({"EMAIL_URL": "filemail:///tmp/hermes-mail"})["EMAIL_URL"] == "filemail:///tmp/hermes-mail"
    values = email_settings("filemail:///tmp/hermes-mail")
    assert values["EMAIL_FILE_PATH"] == "/tmp/hermes-mail"
    assert values["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend"
    assert email_settings("smtp+tls://u:p@mail.example.com:587")["EMAIL_HOST"] == "mail.example.com"


def test_console_mail_is_printed_past_the_redacting_log() -> None:
    # Django's console backend wrote into a worker's redirected stdout: the reset link came out masked.
    from hermes_site.config import email_settings

    assert email_settings("consolemail://")["EMAIL_BACKEND"] == "apps.core.mail.ConsoleEmailBackend"


def test_stale_after_must_outlast_two_heartbeats() -> None:
    assert problems_of({"HERMES_TASK_HEARTBEAT_SECONDS": "20"}) == [
        "HERMES_TASK_STALE_SECONDS (30) must be at least twice HERMES_TASK_HEARTBEAT_SECONDS (20): a running task "
        "would be re-dispatched after one late heartbeat."
    ]
    assert load({"HERMES_TASK_HEARTBEAT_SECONDS": "0.2", "HERMES_TASK_STALE_SECONDS": "0.4"})
    # A refused heartbeat is one line, not a second one comparing against its stand-in default.
    assert len(problems_of({"HERMES_TASK_HEARTBEAT_SECONDS": "abc", "HERMES_TASK_STALE_SECONDS": "6"})) == 1


@pytest.mark.parametrize("hermes_env", config.ENVIRONMENTS)
def test_every_default_is_a_value_its_variable_accepts(hermes_env: str) -> None:
    """A row without an explicit fallback uses its documented default, parsed as if it were set."""
    for setting in config.SETTINGS_TABLE:
        setting.default_value(hermes_env)  # raises Invalid for a documented default its kind refuses
    values = load({"HERMES_ENV": hermes_env, **(PRODUCTION_ENV if hermes_env == "production" else {})}).values
    assert set(values) == {s.name for s in config.SETTINGS_TABLE}


def test_settings_read_the_environment_only_through_the_contract() -> None:
    """settings.py takes every value from CONFIG: a second parse there (django-environ's env.int, env.float...)
    crashed on what config.py did not check, or read `1e3` as 13."""
    source = (config.BASE_DIR / "hermes_site" / "settings.py").read_text()
    assert not re.search(r"\benv\.(str|int|float|bool|list|tuple|dict|json|path|url|db|email_url|cache)\(", source)
    assert "os.environ" not in source and "getenv" not in source


@pytest.mark.parametrize(
    ("name", "value", "port"),
    [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:99999/qa_ops", "99999"),
        ("REDIS_URL", "redis://[::1]:70000/0", "70000"),
        ("CELERY_BROKER_URL", "amqp://guest:guest@rabbitmq:-1//", "-1"),
        ("HERMES_PUBLIC_URL", "https://hermes.example.com:443443", "443443"),
        ("EMAIL_URL", "smtp+tls://user:pass@mail.example.com:5870000", "5870000"),
    ],
)
def test_a_url_with_a_bad_port_names_the_port(name: str, value: str, port: str) -> None:
    """It said "must be empty or a URL starting with postgres://…" of a URL that does start so."""
    assert problems_of({name: value}) == [
        f"{name}={value!r} has the port {port!r}: a port is a whole number up to 65535."
    ]
    # A wrong scheme is still reported as the scheme, whatever the port.
    assert "must be" in problems_of({"DATABASE_URL": "mysql://db:99999/hermes"})[0]


def test_a_bad_redis_url_is_reported_once_not_again_as_the_broker_url_derived_from_it() -> None:
    assert problems_of({"REDIS_URL": "http://127.0.0.1:6379"}) == [
        "REDIS_URL='http://127.0.0.1:6379' must be empty or a URL starting with redis://, rediss://, unix://."
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


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"HERMES_TASK_POLL_SECONDS": "abc"},
            "HERMES_TASK_POLL_SECONDS='abc' must be a number of seconds greater than 0 and at most 31536000.",
        ),
        (
            {"HERMES_FEDERATION_TIMEOUT": "inf"},
            "HERMES_FEDERATION_TIMEOUT='inf' must be a number of seconds greater than 0 and at most 31536000.",
        ),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD' must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL."),
        (
            {"EMAIL_URL": "smtp://host:notaport"},
            "EMAIL_URL='smtp://host:notaport' has the port 'notaport': a port is a whole number up to 65535.",
        ),
        (
            {"CSRF_TRUSTED_ORIGINS": "hermes.example.com"},
            "CSRF_TRUSTED_ORIGINS='hermes.example.com' contains 'hermes.example.com': each entry must be an origin",
        ),
    ],
)
@pytest.mark.parametrize("command", ["doctor", "health"])
def test_commands_report_a_bad_value_in_one_line_and_exit_1(env: dict[str, str], line: str, command: str) -> None:
    result = _boot(env, command)
    assert result.returncode == 1
    (reported,) = result.stderr.strip().splitlines()
    assert reported.startswith("hermes: configuration error: " + line)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["manage.py", "doctor"], ["-m", "hermes_site.run", "--port", "{port}"]])
def test_a_metrics_directory_that_is_a_file_is_one_line_not_a_traceback(command: list[str], free_port: int) -> None:
    """hermes_site/celery.py created PROMETHEUS_MULTIPROC_DIR when the package was imported, before the
    configuration was read: a file there was a FileExistsError traceback out of every command."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "DATABASE_", "REDIS_", "SECRET"))}
    result = subprocess.run(
        [sys.executable, *(part.format(port=free_port) for part in command)],
        env={**clean, "PROMETHEUS_MULTIPROC_DIR": __file__},
        cwd=config.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"hermes: configuration error: PROMETHEUS_MULTIPROC_DIR={__file__!r} must be empty or a directory path "
        "(not an existing file, nor under one)."
    ]


def test_make_run_reports_a_bad_value_in_one_line_before_starting_anything(free_port: int) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HERMES_", "DATABASE_", "REDIS_", "SECRET"))}
    result = subprocess.run(
        [sys.executable, "-m", "hermes_site.run", "--port", str(free_port)],
        env={**clean, "HERMES_WS_RESYNC_SECONDS": "0"},
        cwd=config.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hermes: configuration error: HERMES_WS_RESYNC_SECONDS='0' must be a number of seconds greater than 0 "
        "and at most 31536000."
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [("HERMES_TASK_DEADLINE_SECONDS", "99999999999999"), ("HERMES_FEDERATION_TIMEOUT", "1e300")],
)
def test_absurdly_large_durations_are_refused_at_boot(name: str, value: str) -> None:
    """They passed, then overflowed where used: every task a 500 (timedelta), every delivery a crash (C int)."""
    kind = next(s.kind for s in config.SETTINGS_TABLE if s.name == name)
    assert problems_of({name: value}) == [f"{name}={value!r} must be {kind.expected}."]
    assert "31536000" in kind.expected  # a year


def test_installations_on_other_redis_databases_do_not_hear_each_others_groups(settings: Any) -> None:
    # PUBLISH ignores the database number: two installations sharing a Redis server on databases 4 and 5 used to
    # share every group (org.<id>, auth.key.<id>) because the channel names were the same.
    from channels_redis.pubsub import RedisPubSubChannelLayer

    host = settings.REDIS_URL.rsplit("/", 1)[0]
    assert config.channel_prefix(f"{host}/4") != config.channel_prefix(f"{host}/5")
    assert config.channel_prefix("unix:///run/redis.sock?db=3") == "hermes3"
    assert config.channel_prefix("redis://redis:6379") == config.channel_prefix("redis://redis:6379/0")
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] == config.channel_prefix(settings.REDIS_URL)

    def layer(db: int) -> RedisPubSubChannelLayer:
        return RedisPubSubChannelLayer(hosts=[f"{host}/{db}"], prefix=config.channel_prefix(f"{host}/{db}"))

    async def heard(sender_db: int) -> bool:
        listener, sender = layer(4), layer(sender_db)
        channel = await listener.new_channel()
        await listener.group_add("org.1", channel)
        try:
            await sender.group_send("org.1", {"type": "task.status", "n": 1})
            try:
                await asyncio.wait_for(listener.receive(channel), timeout=0.5)
            except TimeoutError:
                return False
            return True
        finally:
            await listener.flush()
            await sender.flush()

    assert not asyncio.run(heard(sender_db=5))
    assert asyncio.run(heard(sender_db=4))  # the same installation still does


def test_a_database_url_option_libpq_does_not_know_is_refused_by_name() -> None:
    """`?sslmod=require` passed, then backup, seed_demo and restore ended in tracebacks: `psycopg.ProgrammingError:
    invalid connection option "sslmod"`."""
    url = "postgres://postgres@127.0.0.1:5432/hermes?sslmod=require"
    (problem,) = problems_of({"DATABASE_URL": url})
    assert problem.startswith(f"DATABASE_URL={url!r} has the option 'sslmod', which PostgreSQL does not know: ")
    # libpq's own options, and those django-environ or Django's backend take for themselves, pass.
    fine = "postgres://postgres@db:5432/hermes?sslmode=require&connect_timeout=5&conn_max_age=60&application_name=h"
    assert load({"DATABASE_URL": fine}).database_url == fine
