from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "apps.orgs"
    label = "orgs"

    def ready(self) -> None:
        # schema registers the OpenAPI auth extension; auth the sign-out receiver that closes the session's sockets.
        from apps.orgs import auth, schema  # noqa: F401
