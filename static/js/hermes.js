/* Console behaviour that htmx attributes cannot express: readable errors, copy buttons, confirmations, local times.
   Loaded on every page after htmx (templates/base.html). No build step. */
(function () {
  "use strict";

  var STATUS_TEXT = {
    400: "The request was not valid.",
    401: "Your session has expired: sign in again.",
    403: "You do not have permission to do that.",
    404: "Not found: it may have been deleted, or it belongs to another organization.",
    409: "That conflicts with the current state; reload the page and try again.",
    413: "That is too large.",
    429: "Too many requests: wait a moment and try again.",
    500: "The server hit an error; try again. If it persists, quote the request id to an operator.",
    502: "The server is unreachable right now; try again shortly.",
    503: "The service is temporarily unavailable; try again shortly."
  };

  function toastRegion() {
    return document.getElementById("toasts");
  }

  // Shows a dismissible error message (role=alert is announced by screen readers).
  function showError(message) {
    var region = toastRegion();
    if (!region) { window.alert(message); return; }
    var toast = document.createElement("div");
    toast.className = "toast";
    toast.setAttribute("role", "alert");
    var text = document.createElement("span");
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.addEventListener("click", function () { toast.remove(); });
    toast.appendChild(text);
    toast.appendChild(close);
    region.appendChild(toast);
    window.setTimeout(function () { toast.remove(); }, 12000);
  }
  window.hermesShowError = showError;

  function messageFor(xhr) {
    var header = xhr && xhr.getResponseHeader && xhr.getResponseHeader("X-Hermes-Error");
    if (header) { return header; }
    var status = xhr ? xhr.status : 0;
    var ctype = (xhr && xhr.getResponseHeader && xhr.getResponseHeader("Content-Type")) || "";
    if (ctype.indexOf("application/json") === 0) {
      try {
        var body = JSON.parse(xhr.responseText);
        if (body && body.error && body.error.message) { return body.error.message; }
      } catch (e) { /* fall through to the generic text */ }
    }
    return (STATUS_TEXT[status] || "The request failed.") + (status ? " (HTTP " + status + ")" : "");
  }

  document.addEventListener("htmx:responseError", function (event) {
    showError(messageFor(event.detail.xhr));
    // A refused change leaves nothing changed: a form marked data-reset-on-error shows the saved values again
    // (a role select kept showing the role that was refused).
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("form[data-reset-on-error]");
    if (form) { form.reset(); }
  });
  document.addEventListener("htmx:sendError", function () {
    showError("Could not reach the server. Check your connection and try again.");
  });
  document.addEventListener("htmx:timeout", function () {
    showError("The server took too long to answer; try again.");
  });
  document.addEventListener("htmx:swapError", function () {
    showError("The page could not be updated; reload it.");
  });

  // Copy buttons: <button data-copy="#element-id">. Announces the result through the button's own label.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) { return; }
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) { return; }
    var value = source.value !== undefined && source.tagName === "INPUT" ? source.value : source.textContent.trim();
    var done = function () {
      var original = button.getAttribute("data-label") || button.textContent;
      button.setAttribute("data-label", original);
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = original; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(done, function () { showError("Copy failed: select the text and copy it by hand."); });
    } else {
      // Plain-HTTP deployments have no async clipboard: select the text so Ctrl+C works.
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { document.execCommand("copy"); done(); } catch (e) { showError("Press Ctrl+C to copy the selected text."); }
    }
  });

  // Confirmation for one submit button: <button data-confirm-click="Really?">, in a plain form or an htmx one.
  // It asks on the click, before any submit event: a declined click submits nothing, so htmx never sees it. (htmx
  // reads hx-confirm from the element that issues the request, the <form>, so hx-confirm on a button is ignored.)
  // Enter in a text field "clicks" the form's first submit button, so that path asks too.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-confirm-click]");
    if (button && !window.confirm(button.getAttribute("data-confirm-click"))) { event.preventDefault(); }
  }, true);

  // A form that came back with errors (422) puts the keyboard on its first invalid field, whether the page was
  // rendered whole or the form was swapped in by htmx; otherwise focus stayed on the page, or on whatever field
  // another form on it had autofocused.
  function focusFirstInvalid(root) {
    var field = root && root.querySelector && root.querySelector('[aria-invalid="true"]');
    if (field) { field.focus(); }
  }
  document.addEventListener("DOMContentLoaded", function () { focusFirstInvalid(document.querySelector("main")); });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.xhr && event.detail.xhr.status === 422) { focusFirstInvalid(event.detail.target); }
  });

  // Confirmation for a whole form, plain or htmx: <form data-confirm="Really?">, or a question that depends on what
  // is chosen: <option data-confirm="Really?"> asks only while that option is selected (rotating an API key
  // "Immediately"). Declined, the submit stops here, in the capture phase, before htmx's listener on the form.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.querySelector) { return; }
    var chosen = form.querySelector("option[data-confirm]:checked");
    var question = form.getAttribute("data-confirm") || (chosen && chosen.getAttribute("data-confirm"));
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);

  // Times. The server renders <time datetime="ISO 8601">2026-11-26 23:49:11 UTC</time> (templates/includes/time.html),
  // unambiguous without JavaScript; here every one of them is shown in the viewer's local time, in the one format
  // the live task timeline uses too (static/js/live.js calls hermesTime.show): 2026-11-26 15:49:11, 24-hour.
  // The UTC time goes in the title.
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function parseTime(iso) {
    // Python's isoformat() may carry microseconds; Date.parse is only specified for milliseconds.
    var date = new Date(String(iso || "").replace(/(\.\d{3})\d+/, "$1"));
    return isNaN(date.getTime()) ? null : date;
  }
  function formatTime(date, precision) {
    var day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
    var minutes = pad(date.getHours()) + ":" + pad(date.getMinutes());
    var seconds = minutes + ":" + pad(date.getSeconds());
    if (precision === "date") { return day; }
    if (precision === "minutes") { return day + " " + minutes; }
    if (precision === "time") { return seconds; }
    return day + " " + seconds;
  }
  // Shows `iso` in `el` (a <time>) as local time; precision: "seconds" (default), "minutes", "date" or "time".
  function showTime(el, iso, precision) {
    var date = parseTime(iso);
    if (!date) { return; }
    if (!el.getAttribute("title")) { el.setAttribute("title", date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")); }
    el.setAttribute("datetime", iso);
    el.textContent = formatTime(date, precision || el.getAttribute("data-precision") || "seconds");
    el.setAttribute("data-local", "");
  }
  function localizeTimes(root) {
    if (!root || !root.querySelectorAll) { return; }
    var times = Array.prototype.slice.call(root.querySelectorAll("time[datetime]:not([data-local])"));
    if (root.matches && root.matches("time[datetime]:not([data-local])")) { times.push(root); }
    times.forEach(function (el) { showTime(el, el.getAttribute("datetime")); });
  }
  window.hermesTime = { parse: parseTime, format: formatTime, show: showTime, localize: localizeTimes };
  document.addEventListener("DOMContentLoaded", function () { localizeTimes(document); });
  // Every fragment htmx swaps in (lists refreshed live or filtered, out-of-band swaps) fires htmx:load.
  document.addEventListener("htmx:load", function (event) { localizeTimes(event.detail.elt); });

  // Every post says which organization its page was showing (htmx requests carry the X-Hermes-Console-Org header
  // from <body hx-headers>; plain forms get this field), so a tab left open after switching org in another tab
  // is refused instead of acting on the org switched to.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var org = document.body.getAttribute("data-console-org");
    if (!org || event.defaultPrevented || (form.method || "").toLowerCase() !== "post") { return; }
    var field = form.querySelector('input[name="console_org"]');
    if (!field) {
      field = document.createElement("input");
      field.type = "hidden";
      field.name = "console_org";
      form.appendChild(field);
    }
    field.value = org;
  });
})();
