// Draws the page's Chart.js charts from their JSON configs and polls the page's fragment every refresh.
(function () {
  const charts = [];
  function fmtTime(ms) { return new Date(ms).toISOString().slice(11, 19); }
  function draw() {
    while (charts.length) charts.pop().destroy();
    document.querySelectorAll("script.chart-config").forEach(function (s) {
      const cfg = JSON.parse(s.textContent);
      const x = cfg.options.scales.x;
      if (x && x.timeAxis) { delete x.timeAxis; x.ticks = { callback: function (v) { return fmtTime(v); } }; }
      charts.push(new Chart(document.getElementById(s.dataset.canvas), cfg));
    });
    document.querySelectorAll(".ts").forEach(function (e) {
      e.textContent = new Date(Number(e.dataset.ms)).toISOString().replace("T", " ").slice(0, 19);
    });
    document.querySelectorAll("form.act").forEach(function (f) {
      f.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        const token = sessionStorage.getItem("fusion-token") || prompt("UI token") || "";
        sessionStorage.setItem("fusion-token", token);
        const res = await fetch("/action/" + f.dataset.action, { method: "POST", body: new FormData(f), headers: { "X-Fusion-Token": token } });
        const out = await res.json();
        if (!out.ok) sessionStorage.removeItem("fusion-token");
        document.getElementById("flash").textContent = (out.ok ? "done: " : "refused: ") + JSON.stringify(out);
        refresh();
      });
    });
  }
  async function refresh() {
    const u = new URL(location.href); u.searchParams.set("fragment", "1");
    try {
      const res = await fetch(u);
      if (res.ok) {
        document.getElementById("main").innerHTML = await res.text();
        draw();
        document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      }
    } catch (e) { /* server away: keep the last figures */ }
  }
  draw();
  const every = Number(document.body.dataset.refreshMs || 5000);
  setInterval(refresh, every);
})();
