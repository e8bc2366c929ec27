// The console works without this file; with it, live parts of a page refresh
// themselves and the keypad sends without reloading the page.
"use strict";

(function () {
  const PERIOD_MS = 1000;
  const lost = document.getElementById("live-status");

  function signedOut(response) {
    if (response.status === 401) {
      window.location.reload(); // the page itself redirects to the sign-in form
      return true;
    }
    return false;
  }

  // [data-live] elements are fetched again every second and replaced only when
  // they changed, so a button is not swapped out from under a finger unless
  // something really happened. Nothing is fetched while the tab is hidden.
  function live(element) {
    let last = null;
    async function tick() {
      if (!document.hidden) {
        try {
          const response = await fetch(element.dataset.live, {
            cache: "no-store", headers: { Accept: "text/html" },
          });
          if (signedOut(response)) return;
          if (!response.ok) throw new Error(String(response.status));
          const html = await response.text();
          if (last !== null && html !== last) element.innerHTML = html;
          last = html;
          if (lost) lost.hidden = true;
        } catch (error) {
          if (lost) lost.hidden = false;
        }
      }
      window.setTimeout(tick, PERIOD_MS);
    }
    // The first answer only primes `last`: the page was rendered with it.
    tick();
  }
  document.querySelectorAll("[data-live]").forEach(live);

  // A form that takes a while (placing a call dials and waits for an answer)
  // says so and cannot be sent twice.
  document.querySelectorAll("form[data-busy]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      const button = event.submitter;
      if (button) {
        button.disabled = true;
        button.textContent = form.dataset.busy;
      }
    });
  });

  const pad = document.getElementById("keypad");
  if (!pad) return;
  const typed = pad.elements.namedItem("keys");
  const result = document.getElementById("keypad-result");
  const sent = document.getElementById("sent");
  let pending = "";
  let sending = false;

  function say(text, kind) {
    result.textContent = text;
    result.className = "result " + kind;
  }

  // One request at a time, in order: keys pressed while one is on the line go
  // out together as the next request (SendDTMF returns when its tones are done).
  async function pump() {
    if (sending || !pending) return;
    sending = true;
    const keys = pending;
    pending = "";
    const body = new URLSearchParams(new FormData(pad));
    body.set("keys", keys);
    body.delete("key");
    say("Sending " + keys + "…", "busy");
    try {
      const response = await fetch(pad.action, {
        method: "POST", body, headers: { Accept: "application/json" },
      });
      if (signedOut(response)) return;
      const answer = await response.json();
      if (answer.ok) {
        sent.textContent += keys;
        say("Sent " + keys + ".", "ok");
      } else {
        // Keys pressed after a refusal are not sent on their own: half a code is worse.
        say("Not sent" + (pending ? " (nor " + pending + ")" : "") + ". " + answer.code + ": " +
            answer.message, "error");
        pending = "";
      }
    } catch (error) {
      say("The gateway did not answer; " + keys + " may not have been sent.", "error");
      pending = "";
    }
    sending = false;
    pump();
  }

  pad.addEventListener("submit", (event) => {
    const button = event.submitter;
    if (button && button.hasAttribute("formaction")) return; // hang up: a plain post
    event.preventDefault();
    const keys = button && button.value ? button.value : typed.value.trim();
    if (!keys) return;
    if (!(button && button.value)) typed.value = "";
    pending += keys;
    pump();
  });
})();
