// The console's only script. Pages work without it; it shows times in the viewer's zone (UTC stays in
// the tooltip) and asks for confirmation before buttons marked data-confirm.
(function () {
  "use strict";
  function localTimes(root) {
    var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) { el.textContent = format.format(moment); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    document.addEventListener("click", function (event) {
      var button = event.target.closest("[data-confirm]");
      if (button && !window.confirm(button.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
