// Reloads a page about a running case every few seconds, so staff watch it move without a framework.
// It stops once staff start typing in a form, so a reload never throws away what they wrote.
(function () {
  "use strict";
  var every = Number(document.body.getAttribute("data-refresh-seconds") || "0");
  if (!every) { return; }
  var paused = false;
  function pause(event) {
    if (paused || !event.target || !event.target.form) { return; }
    paused = true;
    var note = document.getElementById("refresh-note");
    if (note) { note.textContent = "refresh paused while you fill in a form"; }
  }
  document.addEventListener("focusin", pause);
  document.addEventListener("input", pause);
  window.setInterval(function () {
    if (!paused) { window.location.reload(); }
  }, every * 1000);
})();
