// placeholder: console-ui writes the console. Shows the live picture's version.
"use strict";
fetch("/-/api/live", {credentials: "same-origin"})
  .then((r) => r.json())
  .then((live) => {
    const view = document.getElementById("view");
    view.textContent = "luahook " + live.version + ", " + live.totals.events + " events";
  });
