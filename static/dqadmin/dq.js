// dq dashboard: the little behaviour htmx does not cover. No dependencies.
(function () {
  "use strict";

  // A <select data-autosubmit> submits its form when changed (refresh interval, purge state).
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) {
      el.form.submit();
    }
  });

  // The message browser: "select all", and buttons enabled only with a selection.
  function refreshSelection() {
    var picks = document.querySelectorAll("#messages input.pick");
    var checked = document.querySelectorAll("#messages input.pick:checked");
    document.querySelectorAll("[data-needs-selection]").forEach(function (button) {
      button.disabled = checked.length === 0;
    });
    var all = document.querySelector("[data-select-all]");
    if (all) {
      all.checked = picks.length > 0 && checked.length === picks.length;
      all.indeterminate = checked.length > 0 && checked.length < picks.length;
    }
    var count = document.querySelector("[data-selected-count]");
    if (count) {
      count.textContent = checked.length
        ? checked.length + " selected — the table stops refreshing until you clear the selection."
        : "Select messages to act on them.";
    }
  }

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (!el.matches) return;
    if (el.matches("[data-select-all]")) {
      document.querySelectorAll("#messages input.pick").forEach(function (box) {
        box.checked = el.checked;
      });
      refreshSelection();
    } else if (el.matches("#messages input.pick")) {
      refreshSelection();
    }
  });

  document.addEventListener("htmx:afterSwap", refreshSelection);
  document.addEventListener("DOMContentLoaded", refreshSelection);
})();

// The theme: the system's (no data-theme), dark or light; kept in localStorage.
(function () {
  "use strict";
  var order = ["", "dark", "light"];
  function current() { return document.documentElement.dataset.theme || ""; }
  function show() {
    document.querySelectorAll("[data-theme-name]").forEach(function (el) {
      el.textContent = current() || "auto";
    });
  }
  function next() {
    var theme = order[(order.indexOf(current()) + 1) % order.length];
    if (theme) {
      document.documentElement.dataset.theme = theme;
    } else {
      delete document.documentElement.dataset.theme;
    }
    try { if (theme) localStorage.setItem("dq-theme", theme); else localStorage.removeItem("dq-theme"); } catch (e) {}
    show();
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-theme-toggle]")) next();
  });
  document.addEventListener("DOMContentLoaded", show);
  window.dqNextTheme = next;
})();

// Keyboard shortcuts: / search, ? this list, g t / g f / g k go to a page, t theme.
(function () {
  "use strict";
  var pending = null;
  function urls() {
    try { return JSON.parse(document.getElementById("dq-urls").textContent); } catch (e) { return {}; }
  }
  function dialog() { return document.getElementById("shortcuts"); }
  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-shortcuts-open]")) dialog().hidden = false;
    else if (event.target === dialog()) dialog().hidden = true;
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && dialog() && !dialog().hidden) { dialog().hidden = true; return; }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (pending === "g") {
      pending = null;
      var to = {t: "topics", f: "failed", k: "tasks", a: "activity"}[event.key];
      if (to && urls()[to]) { event.preventDefault(); window.location.href = urls()[to]; }
      return;
    }
    if (event.key === "/") {
      var box = document.querySelector("#search input[name=q]");
      if (box) { event.preventDefault(); box.focus(); box.select(); }
    } else if (event.key === "?") {
      event.preventDefault();
      dialog().hidden = !dialog().hidden;
    } else if (event.key === "g") {
      pending = "g";
      setTimeout(function () { pending = null; }, 1500);
    } else if (event.key === "t" && window.dqNextTheme) {
      window.dqNextTheme();
    }
  });
})();
