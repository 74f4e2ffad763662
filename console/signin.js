// The sign-in form: the server inserts nothing into the page, so a failed attempt comes
// back as /-/signin?failed=1 and this shows the message.
'use strict';
(function () {
    const form = document.getElementById('signin-form');
    const params = new URLSearchParams(location.search);
    if (params.get('failed') === '1') {
        document.getElementById('signin-error').hidden = false;
    }
    // A link to a view (/-/#/d/ID) that landed here keeps its view: the fragment of the
    // form's action is never sent, and the server's 303 to /-/ inherits it.
    if (/^#\/[\w\-./%?=&]*$/.test(location.hash)) {
        form.action = '/-/signin' + location.hash;
    }
    // Wrong tokens are answered late on purpose: say that something is happening.
    form.addEventListener('submit', function () {
        const button = document.getElementById('signin-submit');
        button.textContent = 'Signing in…';
        setTimeout(function () { button.disabled = true; }, 0);
    });
})();
