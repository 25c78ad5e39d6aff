from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "apps.ops"
    label = "ops"

    def ready(self) -> None:
        from apps.ops import health, metrics

        health.register()
        metrics.register_collectors()
