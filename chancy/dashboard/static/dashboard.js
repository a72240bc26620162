// The dashboard's only script: keep the page live, ask before destructive actions, and
// tick every job of a page for a bulk action.
// Pages are rendered on the server; every few seconds the <main> region is re-fetched
// (same URL, same session cookie) and swapped in, unless the user is busy in a form.
(function () {
  "use strict";
  var live = document.getElementById("live");

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // The job list's "tick every job on this page" box.
  document.addEventListener("change", function (event) {
    if (!event.target.hasAttribute("data-select-all")) return;
    var boxes = event.target.form.querySelectorAll("input[name=ids]");
    for (var i = 0; i < boxes.length; i++) boxes[i].checked = event.target.checked;
  });

  if (!live || !live.dataset.refresh) return;
  var every = parseFloat(live.dataset.refresh) * 1000;

  function busy() {
    var active = document.activeElement;
    return (active && live.contains(active) && active.closest("form")) ||
      live.querySelector("input[name=ids]:checked") !== null ||  // a selection in progress
      String(window.getSelection && window.getSelection()) !== "";
  }

  // A page that is slow to build (a big job table) refreshes less often: at most a tenth
  // of the time goes to refreshing.
  var delay = every;

  function refresh() {
    if (document.hidden || busy()) return schedule();
    var started = Date.now();
    fetch(window.location.href, {
      headers: { "X-Chancy-Fragment": "1" }, credentials: "same-origin", redirect: "manual"
    }).then(function (response) {
      if (response.type === "opaqueredirect" || response.status === 303) {
        window.location.reload();  // the session ended: show the login page
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      delay = Math.max(every, 10 * (Date.now() - started));
      if (html !== null && html !== undefined && !busy()) {
        live.innerHTML = html;
        live.dataset.updated = String(Date.now());
      }
    }).catch(function () { /* offline for a moment: try again next time */ })
      .then(schedule);
  }

  function schedule() { window.setTimeout(refresh, delay); }
  schedule();
})();
