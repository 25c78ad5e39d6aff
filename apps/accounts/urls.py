"""`api_urlpatterns` are mounted under /api/v1/; `urlpatterns` are the console pages."""

from django.urls import URLPattern, URLResolver, include, path

from apps.accounts import api, views
from apps.orgs.quotas import limit_anonymous_posts

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("me", api.MeView.as_view(), name="me"),
    path("auth/register", api.RegisterView.as_view(), name="auth-register"),
    path("auth/password/change", api.PasswordChangeView.as_view(), name="auth-password-change"),
    path("auth/password/reset", api.PasswordResetView.as_view(), name="auth-password-reset"),
    path("auth/password/reset/confirm", api.PasswordResetConfirmView.as_view(), name="auth-password-reset-confirm"),
]

console_urlpatterns: list[URLPattern | URLResolver] = [
    path("register/", limit_anonymous_posts(views.register), name="register"),
    path("login/", views.LoginView.as_view(), name="login"),  # counts its POSTs itself (LoginView.post)
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("password/", views.password_change, name="password_change"),
    path("password-reset/", limit_anonymous_posts(views.password_reset), name="password_reset"),
    path("password-reset/sent/", views.password_reset_done, name="password_reset_done"),
    # The page the reset email links to (apps.accounts.actions.password_reset_url reverses this name).
    path(
        "password-reset/<uidb64>/<token>/",
        limit_anonymous_posts(views.password_reset_confirm),
        name="password_reset_confirm",
    ),
    path("password-reset/done/", views.password_reset_complete, name="password_reset_complete"),
]
urlpatterns: list[URLPattern | URLResolver] = [path("accounts/", include((console_urlpatterns, "accounts")))]
