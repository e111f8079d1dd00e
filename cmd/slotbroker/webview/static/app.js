// slotbroker live view. Every text from the broker goes into the page with
// textContent (holder texts are chosen by any user of a limit): never as HTML.
"use strict";
(function () {
  var MAX_LISTED = 50; // holders or waiters shown per limit
  var offset = 0; // server clock minus browser clock, in ms
  var shown = 0; // server time of the snapshot shown, so an older one never replaces it
  var cards = new Map(); // limit name -> its section
  var $ = function (id) { return document.getElementById(id); };

  function serverNow() { return Date.now() + offset; }

  // dur renders milliseconds as "850ms", "12s", "3m 05s", "2h 03m", "4d 2h".
  function dur(ms) {
    if (ms < 0) ms = 0;
    if (ms < 1000) return Math.round(ms) + "ms";
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    var m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (m < 60) return m + "m " + pad(s % 60) + "s";
    if (h < 24) return h + "h " + pad(m % 60) + "m";
    return d + "d " + (h % 24) + "h";
  }

  function ageText(el) {
    var since = Date.parse(el.dataset.since);
    if (isNaN(since) || since <= 0) return "";
    var ms = serverNow() - since;
    return el.dataset.prefix + (ms < 1000 ? "<1s" : dur(ms));
  }

  function tick() {
    document.querySelectorAll(".age").forEach(function (el) { el.textContent = ageText(el); });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function age(prefix, since) {
    var e = el("span", "age");
    e.dataset.prefix = prefix;
    e.dataset.since = since || "";
    e.textContent = ageText(e);
    return e;
  }

  function who(text) {
    return text ? el("span", "who", text) : el("span", "who anon", "(no holder text)");
  }

  function also(names, self) {
    var others = (names || []).filter(function (n) { return n !== self; });
    return others.length ? el("span", "dim", "with " + others.join(", ")) : null;
  }

  function fillList(box, items, total, render, none) {
    var ol = box.querySelector("ol"), more = box.querySelector(".more");
    var lis = [];
    items.slice(0, MAX_LISTED).forEach(function (it) { lis.push(render(it)); });
    if (!lis.length) lis.push(el("li", "none", none));
    ol.replaceChildren.apply(ol, lis);
    var hidden = Math.max(total, items.length) - Math.min(items.length, MAX_LISTED);
    more.hidden = hidden <= 0;
    more.textContent = hidden > 0 ? "and " + hidden + " more" : "";
  }

  function holderItem(name) {
    return function (h) {
      var li = el("li");
      li.append(who(h.holder));
      if (h.occupy !== 1) li.append(el("span", "dim", "×" + h.occupy));
      var w = also(h.names, name);
      if (w) li.append(w);
      li.append(el("span", "dim", "token " + h.token), age("held ", h.acquired_at));
      return li;
    };
  }

  function waiterItem(name) {
    return function (w) {
      var li = el("li");
      li.append(el("span", "dim", w.position + "."), who(w.holder));
      if (w.occupy !== 1) li.append(el("span", "dim", "×" + w.occupy));
      var a = also(w.names, name);
      if (a) li.append(a);
      li.append(age("waiting ", w.since));
      return li;
    };
  }

  function card(name) {
    var c = cards.get(name);
    if (!c) {
      c = $("limit-template").content.firstElementChild.cloneNode(true);
      c.dataset.name = name;
      c.querySelector(".name").textContent = name;
      cards.set(name, c);
    }
    return c;
  }

  function update(c, l) {
    var limit = l.limit, active = l.active_slots, isRate = l.slot_decay_per_second > 0;
    var waiting = Math.max(l.waiters_total || 0, (l.waiters || []).length);
    c.classList.toggle("inactive", !l.active);
    c.querySelector(".inactive-tag").hidden = l.active;
    var tag = c.querySelector(".rate-tag");
    tag.hidden = !isRate;
    tag.textContent = isRate ? "rate · drains " + l.slot_decay_per_second + "/s" : "";
    c.querySelector(".count").textContent = active + " / " + limit;
    c.querySelector(".count").title = isRate ? "level (slots not yet drained) / limit" : "slots held / limit";
    var q = c.querySelector(".queue");
    q.textContent = waiting + " waiting";
    q.classList.toggle("busy", waiting > 0);
    var frac = limit > 0 ? Math.min(1, active / limit) : 0;
    var fill = c.querySelector(".fill");
    fill.style.width = (frac * 100).toFixed(2) + "%";
    fill.className = "fill" + (isRate ? " is-rate" : frac >= 1 ? " full" : frac >= 0.7 ? " warn" : "");
    var rate = c.querySelector(".rate-line");
    rate.hidden = !isRate;
    if (isRate) {
      var next = active < limit ? "a slot is free now" :
        l.next_slot_in_ms > 0 ? "next slot in " + dur(l.next_slot_in_ms) : "next slot now";
      rate.textContent = "level " + active + " of " + limit + " · draining " + l.slot_decay_per_second + " slots/s · " + next;
    }
    var holders = l.holders || [], waiters = l.waiters || [];
    fillList(c.querySelector(".holders"), holders, l.holders_total || 0, holderItem(l.name), "nobody");
    fillList(c.querySelector(".waiters"), waiters, l.waiters_total || 0, waiterItem(l.name), "nobody");
  }

  function render(snap) {
    var now = Date.parse(snap.now);
    if (now < shown) return;
    shown = now;
    if (!isNaN(now)) offset = now - Date.now();
    var err = $("error");
    err.hidden = !snap.error;
    err.textContent = snap.error ? "Cannot list the limits: " + snap.error : "";
    if (!snap.limits) return; // keep the last limits shown under the error
    var seen = new Set(), box = $("limits"), list = [];
    var held = 0, waiting = 0;
    snap.limits.forEach(function (l) {
      var c = card(l.name);
      update(c, l);
      seen.add(l.name);
      list.push(c);
      held += Math.max(l.holders_total || 0, (l.holders || []).length);
      waiting += Math.max(l.waiters_total || 0, (l.waiters || []).length);
    });
    cards.forEach(function (_, name) { if (!seen.has(name)) cards.delete(name); });
    // Re-append only when the order or the set changed, so bars keep animating.
    var same = box.children.length === list.length && list.every(function (c, i) { return box.children[i] === c; });
    if (!same) box.replaceChildren.apply(box, list);
    $("empty").hidden = list.length > 0;
    var n = list.length;
    $("summary").textContent = n + (n === 1 ? " limit · " : " limits · ") + held + " holding · " + waiting + " waiting";
  }

  function status(text, cls) {
    var s = $("status");
    s.textContent = text;
    s.className = "status " + cls;
  }

  function connect() {
    var es = new EventSource("events");
    es.addEventListener("snapshot", function (e) {
      status("live", "live");
      try { render(JSON.parse(e.data)); } catch (x) { status("bad data: " + x, "down"); }
    });
    es.onopen = function () { status("live", "live"); };
    es.onerror = function () { status("reconnecting…", "down"); };
  }

  fetch("api/limits", { cache: "no-store" })
    .then(function (r) { return r.json(); })
    .then(render)
    .catch(function () { /* the event stream will try again */ });
  connect();
  setInterval(tick, 1000);
})();
