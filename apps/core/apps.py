from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"

    def ready(self) -> None:
        from apps.core.tracing import init_tracing

        # Before any server builds its middleware chain (Django's instrumentation adds one).
        init_tracing()
