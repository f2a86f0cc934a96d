// Passkeys on tinypds's pages: the only script, because WebAuthn has no HTML-only form.
// Fetches options (POST, CSRF token in the body), runs the browser ceremony, puts the
// JSON result into the form's hidden field and submits it. No third-party code.
"use strict";
(function () {
  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(o) {
    o.challenge = b64urlToBuf(o.challenge);
    o.user.id = b64urlToBuf(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return o;
  }
  function requestOptions(o) {
    o.challenge = b64urlToBuf(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    return o;
  }
  function credentialJSON(cred) {
    var r = cred.response, out = {
      id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: bufToB64url(r.clientDataJSON) }
    };
    if (cred.authenticatorAttachment) out.authenticatorAttachment = cred.authenticatorAttachment;
    if (r.attestationObject) {
      out.response.attestationObject = bufToB64url(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = bufToB64url(r.authenticatorData);
      out.response.signature = bufToB64url(r.signature);
      if (r.userHandle) out.response.userHandle = bufToB64url(r.userHandle);
    }
    return out;
  }
  function wire(formId, buttonId, create) {
    var form = document.getElementById(formId), button = document.getElementById(buttonId);
    if (!form || !button) return;
    var status = form.querySelector("[role=status]");
    function say(text) { if (status) status.textContent = text; }
    if (!window.PublicKeyCredential) { button.disabled = true; say("This browser does not support passkeys."); return; }
    button.addEventListener("click", function () {
      button.disabled = true;
      say(create ? "Follow your browser's prompt to create the passkey…" : "Follow your browser's prompt…");
      var body = new URLSearchParams(new FormData(form));
      fetch(form.dataset.optionsUrl, { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("the server refused (" + r.status + ")"); return r.json(); })
        .then(function (data) {
          form.elements.ceremony.value = data.ceremony;
          return create ? navigator.credentials.create({ publicKey: creationOptions(data.options) })
                        : navigator.credentials.get({ publicKey: requestOptions(data.options) });
        })
        .then(function (cred) {
          form.elements.credential.value = JSON.stringify(credentialJSON(cred));
          form.submit();
        })
        .catch(function (err) { button.disabled = false; say("Passkey not used: " + err.message); });
    });
  }
  wire("passkey-form", "passkey-button", false);
  wire("passkey-register", "passkey-register-button", true);
})();
