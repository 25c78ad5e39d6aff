from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.accounts import urls as accounts_urls
from apps.agents import urls as agents_urls
from apps.core.api import api_fallback
from apps.core.schema import SchemaContentNegotiation
from apps.federation import urls as federation_urls
from apps.ops import urls as ops_urls
from apps.orgs import urls as orgs_urls
from apps.orgs.quotas import limit_sign_ins
from apps.tasks import urls as tasks_urls

DOMAIN_APPS = (ops_urls, accounts_urls, orgs_urls, agents_urls, tasks_urls, federation_urls)

api_v1 = [
    path("schema/", SpectacularAPIView.as_view(content_negotiation_class=SchemaContentNegotiation), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
for module in DOMAIN_APPS:
    api_v1 += module.api_urlpatterns
api_v1.append(
    re_path(r"^(?P<unmatched>.*)$", api_fallback, name="api-fallback")
)  # a trailing slash tolerated; else a JSON 404

urlpatterns = [
    # Browsers ask for /favicon.ico on pages that name no icon (the Django admin, JSON responses).
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.svg"), permanent=True)),
    # The admin's sign-in guards the staff accounts: the per-address budget of every other sign-in form, and the
    # account's budget of failed sign-ins, as the console's sign-in.
    path("admin/login/", limit_sign_ins(admin.site.login)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]
for module in DOMAIN_APPS:
    urlpatterns += module.urlpatterns

handler400 = "apps.core.errors.handler400"
handler403 = "apps.core.errors.handler403"
handler404 = "apps.core.errors.handler404"
handler500 = "apps.core.errors.handler500"
