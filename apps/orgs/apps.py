from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "apps.orgs"
    label = "orgs"

    def ready(self) -> None:
        from apps.orgs import schema  # noqa: F401 - registers the OpenAPI auth extension
