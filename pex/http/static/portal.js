// Progressive enhancement only: every page works without this file.
// - counts down the validity of an offer ([data-countdown] seconds);
// - offers to show times in the browser's time zone while none was chosen ([data-tz-detect]);
// - preselects the browser's zone on the preferences page ([data-tz-select]);
// - asks before a delete ([data-confirm] forms);
// - keeps a table up to date by fetching its page again ([data-refresh] seconds), e.g. the
//   instances' status and IP address as the dispatcher reports them;
// - shows the next free windows for what is typed in the new-reservation form
//   (form[data-availability] names the section the page renders them in);
// - selects a range of free calendar cells of one node: a first click marks the start, a
//   second on a later free cell of the same node opens the new-reservation form for the whole
//   range, with the largest size that fits in every cell ([data-sizes], a.slot.free).
(function () {
  "use strict";
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }

  document.querySelectorAll("[data-countdown]").forEach(function (el) {
    var deadline = Date.now() + parseInt(el.getAttribute("data-countdown"), 10) * 1000;
    function tick() {
      var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      el.textContent = Math.floor(left / 60) + " min " + (left % 60) + " s";
      if (left === 0) {
        el.textContent = "0 s: the offer has lapsed";
        if (el.parentElement) { el.parentElement.classList.add("lapsed"); }
        return;
      }
      setTimeout(tick, 1000);
    }
    tick();
  });

  var detect = document.querySelector("[data-tz-detect]");
  if (detect && zone && zone !== "UTC" && zone !== "Etc/UTC") {
    detect.querySelector("input[name=tz]").value = zone;
    detect.querySelector("[data-tz-name]").textContent = zone;
    detect.hidden = false;
  }

  var select = document.querySelector("[data-tz-select]");
  if (select && zone && select.value === "UTC") {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === zone) { select.selectedIndex = i; break; }
    }
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  document.querySelectorAll("table[data-refresh]").forEach(function (table) {
    var every = parseInt(table.getAttribute("data-refresh"), 10) * 1000;
    if (!every || !window.fetch || !window.DOMParser) { return; }
    setInterval(function () {
      if (document.hidden) { return; }
      fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          // The whole table: a page of instances has a tbody per reservation.
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("table[data-refresh]");
          if (fresh && table.innerHTML !== fresh.innerHTML) { table.innerHTML = fresh.innerHTML; }
        })
        .catch(function () { /* the next round tries again */ });
    }, every);
  });

  document.querySelectorAll("form[data-availability]").forEach(function (form) {
    var section = document.getElementById(form.getAttribute("data-availability"));
    if (!section || !window.fetch || !window.DOMParser || !window.URLSearchParams) { return; }
    var timer = null;
    function refresh() {
      var query = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrf_token" && name !== "nonce") { query.append(name, value); }
      });
      fetch("/reservations/new?" + query.toString(), { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(section.id);
          if (fresh && section.innerHTML !== fresh.innerHTML) { section.innerHTML = fresh.innerHTML; }
        })
        .catch(function () { /* the next change tries again */ });
    }
    form.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 400);
    });
  });

  var gantt = document.querySelector(".gantt[data-sizes]");
  var hint = document.querySelector("[data-range-hint]");
  if (gantt && hint) {
    var sizes = JSON.parse(gantt.getAttribute("data-sizes") || "[]");
    var first = null;
    var clear = function () {
      if (first) { first.classList.remove("selected"); }
      first = null;
      hint.hidden = true;
    };
    gantt.addEventListener("click", function (event) {
      var cell = event.target.closest ? event.target.closest("a.slot.free") : null;
      if (!cell) { return; }
      event.preventDefault();
      if (!first || first === cell || first.parentElement !== cell.parentElement) {
        clear();
        first = cell;
        cell.classList.add("selected");  // the hint (aria-live) says what was picked
        hint.textContent = "";
        hint.append("From " + cell.getAttribute("data-start").replace("T", " ") + ": pick the last cell of the range on the same node, or ");
        var one = document.createElement("a");
        one.href = cell.href;
        one.textContent = "reserve this cell alone";
        hint.append(one, ".");
        hint.hidden = false;
        return;
      }
      var cells = Array.prototype.slice.call(first.parentElement.children);
      var a = cells.indexOf(first), b = cells.indexOf(cell);
      var range = cells.slice(Math.min(a, b), Math.max(a, b) + 1);
      if (range.some(function (c) { return !c.classList.contains("free"); })) {
        hint.textContent = "That range is not free all along: pick a last cell before the first full one.";
        return;
      }
      var least = function (name) { return Math.min.apply(null, range.map(function (c) { return +c.getAttribute(name); })); };
      var cpus = least("data-cpus"), memory = least("data-memory"), disk = least("data-disk");
      var size = sizes.filter(function (s) { return s.cpus <= cpus && s.memory_mb <= memory && s.disk_gb <= disk; })[0];
      var query = new URLSearchParams({ start: range[0].getAttribute("data-start"), end: range[range.length - 1].getAttribute("data-end") });
      if (size) { query.set("size", size.name); }
      window.location.href = "/reservations/new?" + query.toString();
    });
    document.addEventListener("keydown", function (event) { if (event.key === "Escape") { clear(); } });
  }
})();
