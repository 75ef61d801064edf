// certgate console: the little that needs a script. Every page works
// without it; this adds "select all" and keeps the device list current.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // "Select all on this page" for the bulk actions (delegated: the live
  // refresh below replaces the table).
  document.addEventListener("change", (e) => {
    const all = e.target;
    if (all instanceof HTMLInputElement && all.matches("input[data-select-all]")) {
      for (const box of document.querySelectorAll("input[name=id]")) {
        box.checked = all.checked;
      }
    }
  });

  // The device list refreshes itself (new pending devices appear) while
  // nothing on it is selected and the page is visible.
  const live = document.querySelector("[data-live]");
  if (live) {
    const every = 5000;
    const refresh = async () => {
      // Anything ticked (a device, "select all", "all matching") is the
      // admin's work in progress: never replaced under them.
      const busy = live.querySelector("input:checked");
      if (document.hidden || busy || live.contains(document.activeElement)) {
        return;
      }
      try {
        const r = await fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } });
        if (!r.ok) {
          return;
        }
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const fresh = doc.querySelector("[data-live]");
        if (fresh && fresh.innerHTML !== live.innerHTML) {
          live.innerHTML = fresh.innerHTML;
        }
      } catch (_) {
        // Offline for a moment: the next round tries again.
      }
    };
    setInterval(refresh, every);
  }
});
