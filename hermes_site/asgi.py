"""ASGI entry: WebSockets (Channels) in production; HTTP too under `make run`.

An ASGI process runs sync views in a thread pool; persistent connections would leak one per thread, so this
entry switches the database to psycopg's pool before settings load.
"""

import os

from hermes_site.boot import explain_failures

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")
os.environ.setdefault("DATABASE_POOL", "true")

with explain_failures("asgi"):
    from django.core.asgi import get_asgi_application

    django_asgi = get_asgi_application()

    from apps.core.logging import adopt_server_loggers

    adopt_server_loggers()  # uvicorn's lines as JSON too, and redacted: its handshake line carries `?api_key=`

    from apps.core.startup import print_summary_in_background

    print_summary_in_background("web (asgi)")

    from channels.routing import ProtocolTypeRouter, URLRouter

    from apps.agents.demo.app import DemoAgentsDispatcher
    from hermes_site.routing import websocket_urlpatterns
    from hermes_site.ws_auth import OriginCheckUnlessAPIKey, WebSocketAuthMiddleware

    # /demo-agents/ are real A2A agents (Starlette apps from the a2a-sdk, SSE streaming), so they live in the ASGI
    # process; the reverse proxy routes that prefix here (docs/deploy.md).
    application = DemoAgentsDispatcher(
        ProtocolTypeRouter(
            {
                "http": django_asgi,
                "websocket": OriginCheckUnlessAPIKey(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
            }
        )
    )
