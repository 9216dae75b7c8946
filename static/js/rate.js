// The rating screen: one image at a time, the next one already downloaded, keys 1-7.
(function () {
  "use strict";
  const root = document.getElementById("rater");
  if (!root) return;
  const queueUrl = root.dataset.queue;
  const rateUrl = root.dataset.rate;
  const csrf = root.dataset.csrf;
  const img = document.getElementById("item");
  const viewer = document.getElementById("viewer");
  const progress = root.querySelector("[data-testid=rating-progress]");
  const warmup = root.querySelector("[data-testid=warmup]");
  const statusLine = document.getElementById("status");
  const done = document.getElementById("done");
  const buttons = Array.from(root.querySelectorAll("button[data-score]"));

  let current = null; // {token, kind, url}
  let upcoming = null; // {token, kind, blob: Promise<string>}
  let shownAt = 0;
  let busy = true;

  // Images come as blobs: the server forbids caching them, so a prefetch must hold the bytes.
  function download(item) {
    return fetch(item.image, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) throw new Error("image " + r.status);
      return r.blob();
    }).then(function (b) { return URL.createObjectURL(b); });
  }

  function setButtons(enabled) {
    buttons.forEach(function (b) { b.disabled = !enabled; });
  }

  function show(item, url, queue) {
    if (current && current.url) URL.revokeObjectURL(current.url);
    current = {token: item.token, kind: item.kind, url: url};
    // The button pressed for the previous image keeps the focus (and its ring): let go of it,
    // so the next image never looks as if a score were already chosen.
    if (buttons.indexOf(document.activeElement) >= 0) document.activeElement.blur();
    resetView();
    img.onload = function () {
      shownAt = performance.now();
      busy = false;
      setButtons(true);
    };
    img.src = url;
    warmup.hidden = item.kind !== "warmup";
    progress.textContent = Math.min(queue.done + 1, queue.total) + " / " + queue.total;
  }

  function finish(queue) {
    setButtons(false);
    progress.textContent = queue.done + " / " + queue.total;
    viewer.hidden = true;
    root.querySelector(".scale").hidden = true;
    done.hidden = false;
  }

  function prefetch(item) {
    upcoming = item ? {token: item.token, kind: item.kind, blob: download(item)} : null;
    if (upcoming) upcoming.blob.catch(function () { upcoming = null; });
  }

  function refresh() {
    return fetch(queueUrl, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) throw new Error("queue " + r.status);
      return r.json();
    });
  }

  function start() {
    refresh().then(function (queue) {
      if (!queue.current) return finish(queue);
      download(queue.current).then(function (url) { show(queue.current, url, queue); });
      prefetch(queue.next);
    }).catch(function (e) { statusLine.textContent = "Could not load the next image (" + e.message + "). Reload the page to continue."; });
  }

  // A server in trouble (a database restart, a proxy's error page) may answer with no JSON,
  // or not at all: the rater is told plainly and how to retry. "May": the rating can be stored
  // just before the failure. So a retry always sends the score first chosen for that image,
  // whichever key is pressed: the server then answers a stored one as a repeat, never as an
  // attempt to change a locked rating.
  function unavailable(score) {
    return "The server is unavailable, so your rating (" + score + ") may not have been " +
      "saved. Press any rating key to send it again.";
  }

  let retry = null; // {token, score} of a rating whose fate is unknown

  function refused(status, body, score) {
    if (status >= 500 || status < 400) return unavailable(score); // or not JSON
    const reason = body && typeof body.detail === "string" ? body.detail : "error " + status;
    return "Your rating was not saved: " + reason.replace(/\.$/, "") +
      ". Reload the page to continue.";
  }

  function submit(score) {
    if (busy || !current) return;
    if (retry && retry.token === current.token) score = retry.score;
    busy = true;
    setButtons(false);
    const seconds = (performance.now() - shownAt) / 1000;
    const sent = current.token;
    let saved = false;
    fetch(rateUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({token: current.token, score: score, seconds: seconds}),
    }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (body) {
        return {ok: r.ok && body !== null, status: r.status, body: body};
      });
    }).then(function (res) {
      if (!res.ok) {
        const error = new Error(refused(res.status, res.body, score));
        error.told = true;
        error.unknown = res.status >= 500 || res.status < 400;
        throw error;
      }
      saved = true;
      retry = null;
      statusLine.textContent = "";
      const queue = {done: res.body.done, total: res.body.total};
      if (queue.done >= queue.total) return finish(queue);
      const following = upcoming;
      if (following) {
        // Taken: a rating sent before the refresh below returns must not show it again.
        upcoming = null;
        // Show the prefetched image at once, then learn which one comes after it.
        return following.blob.then(function (url) {
          show(following, url, queue);
          const shown = current;
          return refresh().then(function (q) {
            if (current !== shown) return; // the rater has moved on; start() prefetched
            prefetch(q.current && q.current.token === following.token ? q.next : null);
          });
        });
      }
      return start();
    }).catch(function (e) {
      if (saved) {
        // The rating is stored; only fetching what comes after it failed. Still on the rated
        // image: load the next one afresh (start reports if that fails too). Otherwise the
        // next rating simply goes without a prefetched image.
        if (current && current.token === sent) start();
        return;
      }
      const unknown = !e.told || e.unknown; // no answer at all, or the server failed
      statusLine.textContent = e.told ? e.message : unavailable(score);
      if (unknown) {
        retry = {token: sent, score: score};
        busy = false;
        setButtons(true);
      } // a refusal with a reason: the page must be reloaded, so the buttons stay off
    });
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () { submit(parseInt(b.dataset.score, 10)); });
  });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key >= "1" && e.key <= "7") { e.preventDefault(); submit(parseInt(e.key, 10)); }
    else if (e.key === "0") { resetView(); }
    else if (e.key === "+" || e.key === "=") { zoomAt(1.25); }
    else if (e.key === "-") { zoomAt(0.8); }
  });

  // Zoom and pan: wheel or pinch to zoom, drag to pan; pointer events cover mouse and touch.
  let scale = 1, x = 0, y = 0;
  const pointers = new Map();
  let pinchDistance = 0;
  function apply() { img.style.transform = "translate(" + x + "px," + y + "px) scale(" + scale + ")"; }
  function resetView() { scale = 1; x = 0; y = 0; apply(); }
  function zoomAt(factor, cx, cy) {
    const rect = viewer.getBoundingClientRect();
    const px = (cx === undefined ? rect.width / 2 : cx - rect.left) - rect.width / 2;
    const py = (cy === undefined ? rect.height / 2 : cy - rect.top) - rect.height / 2;
    const next = Math.min(8, Math.max(1, scale * factor));
    const k = next / scale;
    x = px - (px - x) * k; y = py - (py - y) * k; scale = next;
    if (scale === 1) { x = 0; y = 0; }
    apply();
  }
  viewer.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX, e.clientY);
  }, {passive: false});
  viewer.addEventListener("pointerdown", function (e) {
    viewer.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, {x: e.clientX, y: e.clientY});
  });
  viewer.addEventListener("pointermove", function (e) {
    if (!pointers.has(e.pointerId)) return;
    const prev = pointers.get(e.pointerId);
    pointers.set(e.pointerId, {x: e.clientX, y: e.clientY});
    if (pointers.size === 2) {
      const [a, b] = Array.from(pointers.values());
      const d = Math.hypot(a.x - b.x, a.y - b.y);
      if (pinchDistance) zoomAt(d / pinchDistance, (a.x + b.x) / 2, (a.y + b.y) / 2);
      pinchDistance = d;
    } else if (scale > 1) {
      x += e.clientX - prev.x; y += e.clientY - prev.y; apply();
    }
  });
  function release(e) { pointers.delete(e.pointerId); if (pointers.size < 2) pinchDistance = 0; }
  viewer.addEventListener("pointerup", release);
  viewer.addEventListener("pointercancel", release);

  start();
})();
