"""WSGI entry for HTTP in production (gunicorn): sync views without per-request thread hand-offs."""

import os

from django.core.wsgi import get_wsgi_application

from hermes_site.boot import explain_failures

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hermes_site.settings")

with explain_failures("wsgi"):
    application = get_wsgi_application()

    from apps.core.startup import print_summary_in_background

    print_summary_in_background("web (wsgi)")
