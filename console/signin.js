// Shows the sign-in error when the server sent us back with ?failed=1: it puts nothing in HTML.
"use strict";
if (new URLSearchParams(window.location.search).get("failed") === "1") {
  document.getElementById("signin-error").hidden = false;
}
