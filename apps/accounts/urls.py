"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, path

from apps.accounts import api

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("me", api.MeView.as_view(), name="me"),
    path("auth/register", api.RegisterView.as_view(), name="auth-register"),
    path("auth/password/change", api.PasswordChangeView.as_view(), name="auth-password-change"),
    path("auth/password/reset", api.PasswordResetView.as_view(), name="auth-password-reset"),
    path("auth/password/reset/confirm", api.PasswordResetConfirmView.as_view(), name="auth-password-reset-confirm"),
]
urlpatterns: list[URLPattern | URLResolver] = []
