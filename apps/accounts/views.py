"""Console pages for signing in and out, registering and resetting a password.

Sign-in and sign-out are Django's views (session rotation, safe redirects). Registration and password reset call
the account actions (apps/accounts/actions.py), the same ones the API uses, so both surfaces apply one set of
rules, write the same audit rows and send the same email (whose link points at `password_reset_confirm`).
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import login, update_session_auth_hash
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from apps.accounts import actions
from apps.accounts.forms import (
    NewPasswordForm,
    PasswordChangeForm,
    PasswordResetRequestForm,
    RegistrationForm,
    SignInForm,
)
from apps.core.console import add_action_errors
from apps.orgs import quotas


class LoginView(auth_views.LoginView):
    form_class = SignInForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # The per-address and per-account budgets (quotas.limit_sign_ins), refused with this form again rather than
        # the generic refused-post redirect, which went to the home page without `next`.
        guarded = quotas.limit_sign_ins(super().post, refused=self._refused)
        return cast(HttpResponse, guarded(request, *args, **kwargs))  # super().post's or _refused's answer

    def _refused(self, refused: quotas.QuotaExceeded) -> HttpResponse:
        """The form again, unchecked (checking it is the password guess being refused), with the address typed,
        `next` kept and the reason; 429 with Retry-After."""
        messages.error(self.request, str(refused.detail))
        form = self.get_form_class()(self.request, initial={"username": self.request.POST.get("username", "")})
        response = self.render_to_response(self.get_context_data(form=form), status=429)
        for name, value in refused.headers.items():
            response[name] = value
        return response


class LogoutView(auth_views.LogoutView):
    next_page = "accounts:login"


@sensitive_post_parameters("password1", "password2")
@require_http_methods(["GET", "POST"])
def register(request: HttpRequest) -> HttpResponse:
    # `next`: where to go once registered (an invitation link sends people here and expects them back); only a
    # page of this site, like the sign-in view's own `next`.
    next_url = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = ""
    if request.user.is_authenticated:
        return redirect(next_url or "orgs:dashboard")
    form = RegistrationForm(request.POST or None, initial={"email": request.GET.get("email", "")})
    if request.method == "POST" and form.is_valid():
        try:
            user = actions.register_user(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                name=form.cleaned_data["name"],
            )
        except ValidationError as exc:
            add_action_errors(form, exc, rename={"password": "password1"})
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            if next_url:
                messages.success(request, "Welcome to Hermes.")
                return redirect(next_url)
            messages.success(request, "Welcome to Hermes. Create your first organization to get started.")
            return redirect("orgs:create")
    status = 422 if form.errors else 200
    return render(request, "accounts/register.html", {"form": form, "next": next_url}, status=status)


@require_http_methods(["GET", "POST"])
def password_reset(request: HttpRequest) -> HttpResponse:
    form = PasswordResetRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # The same answer whether or not the address has an account: the page must not reveal who is registered.
        actions.request_password_reset(email=form.cleaned_data["email"])
        return redirect("accounts:password_reset_done")
    status = 422 if form.errors else 200
    return render(request, "accounts/password_reset_form.html", {"form": form}, status=status)


def password_reset_done(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/password_reset_done.html")


@never_cache
@sensitive_post_parameters("new_password1", "new_password2")
@require_http_methods(["GET", "POST"])
def password_reset_confirm(request: HttpRequest, uidb64: str, token: str) -> HttpResponse:
    validlink = actions.user_for_reset(uidb64, token) is not None
    form = NewPasswordForm(request.POST or None)
    if validlink and request.method == "POST" and form.is_valid():
        try:
            actions.reset_password(uidb64=uidb64, token=token, new_password=form.cleaned_data["new_password1"])
        except ValidationError as exc:
            add_action_errors(form, exc, rename={"new_password": "new_password1"})
        else:
            return redirect("accounts:password_reset_complete")
    status = 422 if form.errors else 200
    context = {"form": form, "validlink": validlink}
    response = render(request, "accounts/password_reset_confirm.html", context, status=status)
    # The token is in this page's URL: do not leak it to other sites through the Referer header. Not
    # "no-referrer": with it Chromium sends `Origin: null` on the page's own form post, which Django's CSRF origin
    # check refuses, so nobody could set a new password.
    response["Referrer-Policy"] = "same-origin"
    return response


def password_reset_complete(request: HttpRequest) -> HttpResponse:
    return render(request, "accounts/password_reset_complete.html")


@login_required
@sensitive_post_parameters("current_password", "new_password1", "new_password2")
@require_http_methods(["GET", "POST"])
def password_change(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = actions.change_password(
                user=request.user,
                current_password=form.cleaned_data["current_password"],
                new_password=form.cleaned_data["new_password1"],
            )
        except ValidationError as exc:
            add_action_errors(form, exc, rename={"new_password": "new_password1"})
        else:
            update_session_auth_hash(request, user)  # stay signed in here; other sessions end
            messages.success(request, "Password changed.")
            return redirect("orgs:dashboard")
    status = 422 if form.errors else 200
    return render(request, "accounts/password_change.html", {"form": form}, status=status)
