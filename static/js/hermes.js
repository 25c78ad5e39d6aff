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

  // Shows a dismissible error message (role=alert is announced by screen readers). The same message again (a poll,
  // or the live task list, refused every few seconds in a tab left on an org switched away from) keeps the toast
  // on screen longer instead of stacking another one.
  function showError(message) {
    var region = toastRegion();
    if (!region) { window.alert(message); return; }
    var shown = Array.prototype.filter.call(region.children, function (t) { return t.hermesMessage === message; })[0];
    if (shown) {
      window.clearTimeout(shown.hermesTimer);
      shown.hermesTimer = window.setTimeout(function () { shown.remove(); }, 12000);
      return;
    }
    var toast = document.createElement("div");
    toast.hermesMessage = message;
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
    toast.hermesTimer = window.setTimeout(function () { toast.remove(); }, 12000);
  }
  window.hermesShowError = showError;

  // X-Hermes-Error is percent-encoded UTF-8 beyond printable ASCII (apps.core.console.error_message_header): a
  // header value is Latin-1, and "Beta 東京 Labs" or "…" came out as "?". A value that does not decode (a "%" sent
  // by an older server as it was) is shown as it came.
  function headerText(value) {
    try { return decodeURIComponent(value); } catch (e) { return value; }
  }
  function messageFor(xhr) {
    var header = xhr && xhr.getResponseHeader && xhr.getResponseHeader("X-Hermes-Error");
    if (header) { return headerText(header); }
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
    // A refused action answers with a toast, not a swap: the previous action's "Role changed" stayed in #messages
    // beside the red toast. Cleared, as a 422 clears it (apps.core.console.render_console); a refused read (a
    // poll, a filter) leaves it alone, as its answers do.
    var config = event.detail.requestConfig;
    var messagesRegion = document.getElementById("messages");
    if (messagesRegion && config && String(config.verb).toLowerCase() !== "get") { messagesRegion.textContent = ""; }
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

  // One submission at a time, for every form. A double click on "Create key" sent it twice: the second click landed
  // on the empty form the first answer had just swapped in, and that form's 422 replaced the one-time secret.
  // - The second click of a double click (event.detail > 1) on a submit button submits nothing, whatever is under
  //   the pointer by then (the same form, or a fresh one swapped in).
  // - While a form's request is in flight (an htmx one's, not a GET: filters and searches may be refined while
  //   one is on its way; a plain one's until the page is left), the form is aria-busy, its submit buttons say aria-disabled (not `disabled`: the keyboard focus
  //   stays on the button), and a submit of it stops here, in the capture phase, before htmx's listener on the form.
  // Registered before the confirmations below, so a dropped click asks nothing.
  var SUBMIT_BUTTONS = 'button[type="submit"], button:not([type]), input[type="submit"], input[type="image"]';
  document.addEventListener("click", function (event) {
    var button = event.detail > 1 && event.target.closest && event.target.closest(SUBMIT_BUTTONS);
    if (button && button.form) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  document.addEventListener("submit", function (event) {
    if (event.target.hasAttribute && event.target.hasAttribute("data-submitting")) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  function formOf(elt) {
    if (!elt || !elt.closest) { return null; }
    return elt.tagName === "FORM" ? elt : (elt.form || elt.closest("form"));
  }
  function submitButtons(form) {
    var buttons = Array.prototype.slice.call(form.querySelectorAll(SUBMIT_BUTTONS));
    if (form.id) {  // buttons outside the form that name it (form="id")
      buttons = buttons.concat(Array.prototype.slice.call(document.querySelectorAll('[form="' + form.id + '"]')));
    }
    return buttons;
  }
  function markBusy(form) {
    form.setAttribute("data-submitting", "");
    form.setAttribute("aria-busy", "true");
    submitButtons(form).forEach(function (button) {
      if (button.getAttribute("aria-disabled") === "true") { return; }
      button.setAttribute("aria-disabled", "true");
      button.setAttribute("data-disabled-while-submitting", "");
    });
  }
  function unmarkBusy(form) {
    form.removeAttribute("data-submitting");
    form.removeAttribute("aria-busy");
    submitButtons(form).forEach(function (button) {
      if (!button.hasAttribute("data-disabled-while-submitting")) { return; }
      button.removeAttribute("aria-disabled");
      button.removeAttribute("data-disabled-while-submitting");
    });
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var config = event.detail.requestConfig;
    var form = formOf(event.detail.elt);
    if (!form || !config || String(config.verb).toLowerCase() === "get") { return; }
    markBusy(form);
    event.detail.xhr.hermesSubmitting = form;  // the same xhr comes back in htmx:afterRequest
  });
  // After the answer: a form that was swapped out is gone anyway; one that stayed (an error shown as a toast) is
  // usable again, unless the answer sends the browser to another page (HX-Redirect: htmx keeps its indicators).
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.xhr && event.detail.xhr.hermesSubmitting;
    if (!form || event.detail.keepIndicators === true) { return; }
    event.detail.xhr.hermesSubmitting = null;
    unmarkBusy(form);
  });
  // A plain form (no htmx: the browser loads the answer) is busy from its submit until the page is left: a second
  // single click on a slow answer sent it twice (two tasks, or an org created and then "slug taken"). Bubbling,
  // so it sees only submits nobody declined or took over (htmx cancels the default for its own forms first).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.getAttribute || (form.method || "").toLowerCase() !== "post") { return; }
    markBusy(form);
  });
  // Back to a page the browser kept (bfcache): its forms are usable again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }
    Array.prototype.forEach.call(document.querySelectorAll("form[data-submitting]"), unmarkBusy);
  });

  // Confirmation for one submit button: <button data-confirm-click="Really?">, in a plain form or an htmx one.
  // It asks on the click, before any submit event: a declined click submits nothing, so htmx never sees it. (htmx
  // reads hx-confirm from the element that issues the request, the <form>, so hx-confirm on a button is ignored.)
  // Enter in a text field "clicks" the form's first submit button, so that path asks too.
  // With data-confirm-if-checked="ids" it asks only while a box named "ids" in its form is ticked: with none, the
  // question ("Requeue the selected messages?") came first and "Select at least one message first." after it; the
  // submit now goes unasked and the server's answer says so.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-confirm-click]");
    if (!button) { return; }
    var needs = button.getAttribute("data-confirm-if-checked");
    if (needs && button.form && !button.form.querySelector('[name="' + CSS.escape(needs) + '"]:checked')) { return; }
    if (!window.confirm(button.getAttribute("data-confirm-click"))) { event.preventDefault(); }
  }, true);

  // Where the keyboard goes after an htmx swap. A form that came back with errors (422) puts it on its first invalid
  // field, whether the page was rendered whole or the form was swapped in by htmx. Any other swap that took the
  // focused element away (the "Re-fetch the card" button inside the card it replaces, a link in a list refreshed
  // live) puts it on the same control in the new content, or else on the new content itself: it fell back to
  // <body>, the top of the page (htmx itself restores the focus only to an element with an id).
  function focusFirstInvalid(root) {
    var field = root && root.querySelector && root.querySelector('[aria-invalid="true"]');
    if (field) { field.focus(); }
    return Boolean(field);
  }
  function sameControl(root, old) {
    var action = function (el) { return el.form ? el.form.getAttribute("action") : null; };
    var candidates = Array.prototype.slice.call(root.querySelectorAll(old.tagName));
    if (root.tagName === old.tagName) { candidates.unshift(root); }
    for (var i = 0; i < candidates.length; i++) {
      var el = candidates[i];
      if (el.getAttribute("name") === old.getAttribute("name") && el.getAttribute("type") === old.getAttribute("type") &&
          el.getAttribute("href") === old.getAttribute("href") && action(el) === action(old) &&
          el.textContent.trim() === old.textContent.trim()) { return el; }
    }
    return null;
  }
  // A control of the same kind as `old` (tag, type, text: another row's "Remove"), visible and enabled, in the
  // nearest row that has one: `next` and the rows after it, then `prev` and the rows before it. A row removed with
  // the keyboard ("Remove" on a member, "Revoke" on a key) leaves the keyboard on the next row's button.
  function likeControlNear(next, prev, old) {
    var rows = [];
    for (var el = next; el; el = el.nextElementSibling) { rows.push(el); }
    for (el = prev; el; el = el.previousElementSibling) { rows.push(el); }
    for (var i = 0; i < rows.length; i++) {
      var candidates = Array.prototype.slice.call(rows[i].querySelectorAll(old.tagName));
      for (var j = 0; j < candidates.length; j++) {
        var c = candidates[j];
        if (c.getAttribute("type") === old.getAttribute("type") && c.textContent.trim() === old.textContent.trim() &&
            !c.disabled && c.getClientRects().length) { return c; }
      }
    }
    return null;
  }
  function focusHeadingOf(container) {
    while (container && !container.isConnected) { container = container.parentNode; }
    var region = container && container.closest && container.closest("section, .card, main");
    var heading = region && region.querySelector("h1, h2, h3");
    var target = heading || region;
    if (!target) { return; }
    if (!target.hasAttribute("tabindex")) { target.setAttribute("tabindex", "-1"); }
    target.focus();
  }
  // The row (the nearest element with an id: tr#member-3, tr#key-5) that held the focused element, in `within`.
  function rowOf(el, within) {
    for (; el && el !== within; el = el.parentNode) {
      if (el.id) { return el; }
    }
    return null;
  }
  var SECTIONS = "section, .card";
  // The section (or card) that held the focus, in the new content `root`: itself when the swap happened inside it
  // (or was it), else the one with the same heading id, else the one at the same place among the sections.
  function sectionAgain(root, record) {
    var old = record.section;
    if (!old || old.isConnected) { return old; }
    if (old === record.target) { return root; }
    var heading = old.querySelector("h1, h2, h3");
    var same = heading && heading.id && document.getElementById(heading.id);
    if (same && root.contains(same)) { return same.closest(SECTIONS); }
    return root.querySelectorAll(SECTIONS)[record.sectionIndex] || null;
  }
  // {target, parent, next, prev, focused, row, button, section, sectionIndex, inSection, item, itemIndex}: the
  // target htmx is about to swap, where it is, the focus inside it, the id of the row that holds the focus, whether
  // the focus is a button (a row's own "Revoke", "Remove"), and what finds the focus's surroundings again in the
  // new content where ids cannot: its section, and its table row or list item (the address book's rows have no
  // id) as a position among its like in that section (or in the target).
  var swapping = null;
  document.addEventListener("DOMContentLoaded", function () { focusFirstInvalid(document.querySelector("main")); });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target, active = document.activeElement;
    var focused = active && active !== document.body && target && target.contains(active) ? active : null;
    var row = focused ? rowOf(focused, target) : null;
    var within = function (el) { return el && el !== target && target.contains(el) ? el : null; };
    var section = focused ? focused.closest(SECTIONS) : null;
    var scope = within(section) || target;
    var item = focused ? within(focused.closest("tr, li")) : null;
    swapping = target ? {
      target: target,
      parent: target.parentNode,
      next: target.nextElementSibling,
      prev: target.previousElementSibling,
      focused: focused,
      row: row ? row.id : null,
      button: Boolean(focused && focused.matches(SUBMIT_BUTTONS)),
      section: section,
      sectionIndex: Array.prototype.indexOf.call(target.querySelectorAll(SECTIONS), section),
      inSection: scope !== target,
      item: item ? item.tagName : null,
      itemIndex: item ? Array.prototype.indexOf.call(scope.querySelectorAll(item.tagName), item) : -1
    } : null;
  });
  // The new content of a swap. An innerHTML swap keeps its target. After an outerHTML one it is the element that
  // took the target's place: the one with the target's id, or else one where the target was. (htmx fires
  // htmx:afterSwap on the out-of-band elements of the same answer too: the flash messages are not where the
  // keyboard goes.)
  function swappedIn(event) {
    var target = event.detail.target, elt = event.target;
    if (!target) { return null; }
    if (target.isConnected) { return target; }
    if (target.id) { return elt.id === target.id ? elt : null; }
    return swapping && swapping.target === target && elt.parentNode === swapping.parent ? elt : null;
  }
  document.addEventListener("htmx:afterSwap", function (event) {
    var root = swappedIn(event);
    if (!root) { return; }
    var record = swapping && swapping.target === event.detail.target ? swapping : null;
    var focused = record ? record.focused : null;
    swapping = null;  // htmx fires this once for each new element: the first one of the content decides
    // The invalid field may have come out of band (hx-swap-oob: the agent preview answers for step 1's URL field).
    if (event.detail.xhr && event.detail.xhr.status === 422 &&
        (focusFirstInvalid(root) || focusFirstInvalid(document.querySelector("main")))) { return; }
    var active = document.activeElement;
    if (!focused || (active && active !== document.body)) { return; }
    var control = sameControl(root, focused);
    // The control is gone with what it did (a revoked key has no "Revoke"): the same kind of control in its row
    // or the nearest one.
    var row = !control && record.row ? document.getElementById(record.row) : null;
    if (row && !root.contains(row)) { row = null; }
    var section = sectionAgain(root, record);
    if (row) {
      control = likeControlNear(row, row.previousElementSibling, focused);
    } else if (!control && record.button && record.item) {
      // The row went with what its button did (a contact removed), or has no id to be found by: the row now in its
      // place (the one after it) and the ones above.
      var rows = ((record.inSection ? section : root) || root).querySelectorAll(record.item);
      control = likeControlNear(rows[record.itemIndex] || null, rows[record.itemIndex - 1] || null, focused);
    }
    if (control) { control.focus(); return; }
    // A row's own button with no like of it left (the only key revoked, the last contact removed): the heading of
    // the row's section, as for a row removed by an empty swap (below). The section itself is no place to land.
    if (record.button && (row || record.item)) { focusHeadingOf(row || section || root); return; }
    if (!root.hasAttribute("tabindex")) { root.setAttribute("tabindex", "-1"); }
    root.focus();
  });
  // A swap that put nothing in the target's place (a member removed: the row's outerHTML swapped with nothing)
  // fires no htmx:afterSwap for it, and the keyboard was left on <body>. After the request (htmx fires it on the
  // nearest element still in the page), the focus goes to the same control in the nearest remaining row, or else
  // to the heading of the section the row was in.
  document.addEventListener("htmx:afterRequest", function () {
    var record = swapping;
    swapping = null;
    if (!record || !record.focused || record.focused.isConnected) { return; }
    var active = document.activeElement;
    if (active && active !== document.body) { return; }
    var control = likeControlNear(record.next, record.prev, record.focused);
    if (control) { control.focus(); } else { focusHeadingOf(record.parent); }
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

  // Filter forms and the address bar. A filter form (method="get", hx-get to this page, hx-push-url) puts its query
  // in the address bar; Back and Forward then restore htmx's snapshot of the page, which keeps the markup but not
  // what was chosen in it: the selects read "Any status" under ?status=working, and the task list's next live
  // refresh (static/js/live.js reads the form) listed with the form's filters, not the address bar's. After every
  // history restore, each such form shows the query of the address it came back to.
  function filterForms() {
    return Array.prototype.filter.call(document.querySelectorAll("form"), function (form) {
      var path = form.getAttribute("hx-get") || form.getAttribute("data-hx-get");
      return path !== null && (form.getAttribute("method") || "get").toLowerCase() === "get" &&
        new URL(path || location.href, location.href).pathname === location.pathname;
    });
  }
  function showQuery(form, params) {
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || /^(hidden|submit|button|image|reset|file)$/.test(field.type)) { return; }
      var values = params.getAll(field.name);
      if (field.type === "checkbox" || field.type === "radio") {
        field.checked = values.indexOf(field.value) !== -1;
      } else if (field.tagName === "SELECT") {
        var options = Array.prototype.slice.call(field.options);
        var chosen = options.filter(function (o) { return values.indexOf(o.value) !== -1; });
        // A value the select does not offer (an edited link) shows its "any" choice, as a page load would.
        if (!chosen.length) { chosen = options.filter(function (o) { return o.value === ""; }).slice(0, 1); }
        options.forEach(function (o) { o.selected = chosen.indexOf(o) !== -1 && (field.multiple || o === chosen[0]); });
      } else {
        field.value = values.length ? values[0] : "";
      }
    });
  }
  document.addEventListener("htmx:historyRestore", function () {
    var params = new URLSearchParams(location.search);
    filterForms().forEach(function (form) { showQuery(form, params); });
  });
  // A burst of changes from one form (each arrow key on a focused select is a change, each pause in typing a
  // search) is one step in the history: a change within HISTORY_BURST_MS of the same form's last one replaces the
  // entry it pushed, instead of pushing one per keypress. The list still follows every change at once.
  var HISTORY_BURST_MS = 1000;
  var lastPush = null;  // {form, at, path}
  document.addEventListener("htmx:beforeHistoryUpdate", function (event) {
    var history = event.detail.history;
    var form = formOf(event.detail.requestConfig && event.detail.requestConfig.elt);
    if (!history || !form) { return; }
    var now = Date.now();
    if (history.type === "push" && lastPush && lastPush.form === form && now - lastPush.at < HISTORY_BURST_MS &&
        lastPush.path === location.pathname + location.search) {  // and no other navigation since
      history.type = "replace";
    }
    var pushed = new URL(history.path, location.href);
    lastPush = { form: form, at: now, path: pushed.pathname + pushed.search };
  });

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

  // What was typed in a plain form survives its refusal. A refused plain post (another tab switched org, so it did
  // nothing: apps.orgs.decorators) comes back through a redirect to its page with the reason flashed, and the
  // message typed on "Send a task" was gone. On submit, the fields the person changed go to this tab's
  // sessionStorage, with the organization the page showed (<body data-console-org>, and its name for the note that
  // names it): what was typed belongs to that org. The next page puts them back into the same form when it is the
  // same page, for the same org, and says the post was refused (a message marked data-refused-post,
  // apps.core.console); and forgets them otherwise.
  // Refused because another tab switched org, the page comes back as the other org's: the draft is kept, not put
  // into that org's form (the reloaded settings of Beta held the name typed for Acme, and one more Save renamed
  // Beta), until this page shows its org again (the switcher, as the refusal suggests, lands on the same page).
  // Passwords, files and hidden fields are never kept.
  var DRAFT_KEY = "hermes:form-draft";
  var NOT_KEPT = /^(hidden|password|file|submit|button|image|reset)$/;
  function currentOrg() {
    return document.body.getAttribute("data-console-org") || "";
  }
  function postForms() {
    return Array.prototype.filter.call(document.querySelectorAll("main form"), function (form) {
      return (form.getAttribute("method") || "").toLowerCase() === "post";
    });
  }
  function formKey(form) {
    var action = form.getAttribute("action") || "";
    var same = postForms().filter(function (f) { return (f.getAttribute("action") || "") === action; });
    return { action: action, index: same.indexOf(form) };
  }
  function changedFields(form) {
    var fields = [];
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || NOT_KEPT.test(field.type) || field.name === "csrfmiddlewaretoken") { return; }
      if (field.type === "checkbox" || field.type === "radio") {
        if (field.checked !== field.defaultChecked) { fields.push({ name: field.name, value: field.value, checked: field.checked }); }
      } else if (field.tagName === "SELECT") {
        var options = Array.prototype.slice.call(field.options);
        var initial = options.filter(function (o) { return o.defaultSelected; });
        if (!initial.length && !field.multiple && options.length) { initial = [options[0]]; }
        var chosen = options.filter(function (o) { return o.selected; });
        var same = chosen.length === initial.length && chosen.every(function (o) { return initial.indexOf(o) !== -1; });
        if (!same) { fields.push({ name: field.name, values: chosen.map(function (o) { return o.value; }) }); }
      } else if (field.value !== field.defaultValue) {
        fields.push({ name: field.name, value: field.value });
      }
    });
    return fields;
  }
  function storeDraft(draft) {
    try {
      if (draft) { window.sessionStorage.setItem(DRAFT_KEY, JSON.stringify(draft)); }
      else { window.sessionStorage.removeItem(DRAFT_KEY); }
    } catch (e) { /* storage full or disabled: the form is sent all the same */ }
  }
  // Puts `fields` back into `form`; returns the ones it had no place for (an agent deleted meanwhile).
  function restoreFields(form, fields) {
    var unplaced = [];
    fields.forEach(function (saved) {
      var placed = false;
      Array.prototype.forEach.call(form.elements, function (field) {
        if (field.name !== saved.name || NOT_KEPT.test(field.type)) { return; }
        if (field.type === "checkbox" || field.type === "radio") {
          if (field.value === saved.value) { field.checked = saved.checked; placed = true; }
        } else if (field.tagName === "SELECT") {
          var options = Array.prototype.slice.call(field.options);
          var matching = options.filter(function (o) { return saved.values.indexOf(o.value) !== -1; });
          if (matching.length === saved.values.length) {
            options.forEach(function (o) { o.selected = matching.indexOf(o) !== -1; });
            placed = true;
          }
        } else if (saved.value !== undefined) {
          field.value = saved.value;
          placed = true;
        }
      });
      if (!placed) { unplaced.push(saved); }
    });
    return unplaced;
  }
  // Only the page's own forms: the header's (the org switcher, "Sign out") leave a kept draft alone, so switching
  // back to its org finds it.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (event.defaultPrevented || !form.closest || !form.closest("main")) { return; }
    if ((form.method || "").toLowerCase() !== "post") { return; }
    var fields = changedFields(form);
    var key = formKey(form);
    storeDraft(fields.length ? {
      path: location.pathname, org: currentOrg(), orgName: document.body.getAttribute("data-console-org-name") || "",
      action: key.action, index: key.index, reason: "refused", fields: fields
    } : null);
  });
  document.addEventListener("DOMContentLoaded", function () {
    var draft = null;
    try {
      draft = JSON.parse(window.sessionStorage.getItem(DRAFT_KEY) || "null");
      window.sessionStorage.removeItem(DRAFT_KEY);
    } catch (e) { return; }
    if (!draft || draft.path !== location.pathname) { return; }
    var refusal = document.querySelector("#messages [data-refused-post]");
    if (draft.reason === "refused" && !refusal) { return; }  // not refused: the post went through
    if ((draft.org || "") !== currentOrg()) {
      // Typed for another org than this page shows: kept for it, and said so under the refusal.
      draft.reason = "waiting";
      storeDraft(draft);
      if (refusal && draft.org) {
        var note = document.createElement("span");
        note.setAttribute("data-draft-waiting", "");
        note.textContent = " What you typed here is kept for " + (draft.orgName || draft.org) + ": switch back to it and this form " +
          "shows it again.";
        refusal.appendChild(note);
      }
      return;
    }
    var form = postForms().filter(function (f) { return (f.getAttribute("action") || "") === draft.action; })[draft.index];
    if (!form) { return; }
    var unplaced = restoreFields(form, draft.fields || []);
    var active = document.activeElement;
    if (!active || active === document.body) {
      var first = (draft.fields || []).filter(function (f) { return unplaced.indexOf(f) === -1; })[0];
      var field = first && form.querySelector('[name="' + CSS.escape(first.name) + '"]');
      if (field) { field.focus(); }
    }
  });
})();
