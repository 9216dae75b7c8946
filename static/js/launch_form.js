// The training launch form: changing the Kind loads that kind's default settings into the
// settings box. Settings edited for a kind are kept for it and come back when it is chosen again.
(function () {
  "use strict";
  const data = document.getElementById("kind-defaults");
  const form = document.getElementById("launch-form");
  if (!data || !form) return;
  const defaults = JSON.parse(data.textContent);
  const kind = form.querySelector("select[name=kind]");
  const box = form.querySelector("textarea[name=config]");
  const note = document.getElementById("kind-note");
  if (!kind || !box || !note) return;
  kind.parentNode.appendChild(note); // the note reads beside the Kind it explains
  const labels = {};
  Array.from(kind.options).forEach(function (o) { labels[o.value] = o.textContent; });
  const edited = {}; // kind -> the settings text as the user left it
  let current = kind.value;

  function defaultText(k) { return JSON.stringify(defaults[k], null, 2); }

  function isDefault(k, text) {
    try {
      return JSON.stringify(JSON.parse(text)) === JSON.stringify(defaults[k]);
    } catch (e) {
      return false; // not JSON: certainly an edit
    }
  }

  kind.addEventListener("change", function () {
    const next = kind.value;
    if (!(next in defaults)) return;
    if (isDefault(current, box.value)) delete edited[current];
    else edited[current] = box.value;
    const restored = next in edited;
    box.value = restored ? edited[next] : defaultText(next);
    const kept = Object.keys(edited).filter(function (k) { return k !== next; });
    let text = restored
      ? "Your earlier " + labels[next] + " settings are back."
      : "Settings: the " + labels[next] + " defaults.";
    if (kept.length) {
      text += " Your edits for " + kept.map(function (k) { return labels[k]; }).join(", ") +
        " are kept: choose that kind again to get them back.";
    }
    note.textContent = text;
    current = next;
  });
})();
