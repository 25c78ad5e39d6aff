from django.apps import AppConfig


class FederationConfig(AppConfig):
    name = "apps.federation"
    label = "federation"

    def ready(self) -> None:
        # Registers the task_request / task_result handlers and reports federated tasks' events (the tasks app's
        # `task_event_recorded` signal) back to their requesters.
        from apps.federation import remote_tasks

        remote_tasks.connect_task_signal()
