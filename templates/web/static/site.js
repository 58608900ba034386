// papers digest web front: progressive enhancement only; every form works without it.
(function () {
  "use strict";

  // Detect the reader's timezone, unless they (or their saved settings) chose one.
  var zone = document.querySelector("select[data-detect-timezone]");
  if (zone && !zone.hasAttribute("data-chosen")) {
    try {
      var detected = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (detected && zone.querySelector('option[value="' + CSS.escape(detected) + '"]')) {
        zone.value = detected;
      }
    } catch (e) { /* keep the server's default */ }
  }

  // The error summary's links take the focus to their field, not only the view.
  document.querySelectorAll('#error-summary a[href^="#"]').forEach(function (anchor) {
    anchor.addEventListener("click", function (event) {
      var field = document.getElementById(anchor.getAttribute("href").slice(1));
      if (field) {
        event.preventDefault();
        field.focus();
      }
    });
  });

  // Weekly subscribers pick a day; the day menu only matters then.
  var weekday = document.getElementById("weekday");
  function syncWeekday() {
    var weekly = document.querySelector('input[name="frequency"][value="weekly"]');
    if (weekday && weekly) { weekday.disabled = !weekly.checked; }
  }
  document.querySelectorAll('input[name="frequency"]').forEach(function (radio) {
    radio.addEventListener("change", syncWeekday);
  });
  syncWeekday();

  // As a topic is typed, show how many papers it matches and a few titles.
  var endpoint = document.body.getAttribute("data-match-url");
  function watch(input) {
    var box = document.getElementById(input.id + "-matches");
    var timer = null;
    var seq = 0;
    var sent = input.getAttribute("aria-invalid") === "true" ? input.value.trim() : null;
    function show(data, ticket) {
      if (ticket !== seq) { return; }
      box.textContent = "";
      // The page already states the server's error for what it was sent: not twice.
      if (data.error && sent !== null && input.value.trim() === sent) { return; }
      if (data.error) {
        var err = document.createElement("span");
        err.className = "error";
        err.textContent = data.error;
        box.appendChild(err);
        return;
      }
      var line = document.createElement("span");
      // The same count as the topic's page and the email: "400+" when it hit the limit.
      var count = data.count + (data.capped ? "+" : "");
      var days = data.days ? " in the last " + data.days + " days" : "";
      line.textContent = (count === "1" ? "1 paper matches" : count + " papers match") + days +
        (data.count ? ", for example:" : "");
      box.appendChild(line);
      if (data.examples.length) {
        var list = document.createElement("ul");
        data.examples.forEach(function (title) {
          var item = document.createElement("li");
          item.textContent = title;
          list.appendChild(item);
        });
        box.appendChild(list);
      }
    }
    function lookup() {
      var text = input.value.trim();
      var ticket = ++seq;
      if (!text) { box.textContent = ""; return; }
      fetch(endpoint + "?q=" + encodeURIComponent(text), {headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (response.status === 429) { return {error: "Slow down a little: too many lookups."}; }
          return response.json();
        })
        .then(function (data) { show(data, ticket); })
        .catch(function () { if (ticket === seq) { box.textContent = ""; } });
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(lookup, 300);
    });
    if (input.value.trim()) { lookup(); }
  }
  if (endpoint) { document.querySelectorAll("input[data-topic]").forEach(watch); }

  // Without JavaScript every topic field shows; with it, empty ones beyond the first
  // two fold away behind "Add a topic".
  var more = document.getElementById("more-topics");
  if (more) {
    var fields = Array.prototype.slice.call(document.querySelectorAll(".topic"));
    var shown = 0;
    fields.forEach(function (field) {
      var empty = !field.querySelector("input").value.trim();
      if (empty && shown >= 2) { field.hidden = true; } else { shown += 1; }
    });
    var hidden = function () { return document.querySelectorAll(".topic[hidden]"); };
    more.hidden = !hidden().length;
    more.addEventListener("click", function () {
      var next = hidden()[0];
      if (next) {
        next.hidden = false;
        next.querySelector("input").focus();
      }
      more.hidden = !hidden().length;
    });
  }
})();
