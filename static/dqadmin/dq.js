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
