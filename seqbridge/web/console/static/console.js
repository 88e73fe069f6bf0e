/* Seqbridge console: local times, confirmations, auto-submitting filters, charts. No inline
   script anywhere (the Content-Security-Policy forbids it); everything hooks on data- attributes. */
(function () {
  "use strict";

  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short"
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) return;
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.textContent = fmt.format(d);
      el.dataset.local = "1";   // the UTC time stays in the title (shown on hover)
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  }, true);

  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-autosubmit]")) event.target.form.submit();
  });

  var COLORS = {
    processed: "#2f855a", queued: "#3182ce", processing: "#805ad5", failed: "#dd6b20",
    dead: "#c53030", rejected: "#718096", ignored: "#a0aec0"
  };

  var plots = [];
  var current = null;

  function drawCharts(data) {
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var c = data[el.dataset.window];
      if (!c || !window.uPlot) return;
      if (el.dataset.chart === "latency" && !c.has_latency) { el.textContent = "Loading…"; return; }
      el.textContent = "";
      var width = Math.max(280, el.clientWidth || 600);
      var opts, series;
      if (el.dataset.chart === "deliveries") {
        var names = Object.keys(c.series);
        series = [c.x].concat(names.map(function (n) { return c.series[n]; }));
        opts = {
          width: width, height: 220,
          scales: { x: { time: true } },
          axes: [{}, { label: "per minute", size: 60 }],
          series: [{}].concat(names.map(function (n) {
            return { label: n, stroke: COLORS[n] || "#333", width: 1.5, points: { show: false } };
          }))
        };
      } else {
        series = [c.x, c.latency.p50, c.latency.p99];
        opts = {
          width: width, height: 220,
          scales: { x: { time: true }, y: { distr: 3 } },
          axes: [{}, { label: "ms", size: 60 }],
          series: [{}, { label: "p50", stroke: "#3182ce", width: 1.5, points: { show: true, size: 4 } },
                   { label: "p99", stroke: "#c53030", width: 1.5, points: { show: true, size: 4 } }]
        };
      }
      plots.push(new window.uPlot(opts, series, el));
    });
  }

  function refreshCharts() {
    var hook = new URLSearchParams(window.location.search).get("hook") || "";
    var result = {};
    Promise.all(["1h", "24h"].map(function (w) {
      return fetch("/overview/charts?range=" + w + "&hook=" + encodeURIComponent(hook), {
        headers: { Accept: "application/json" }, credentials: "same-origin"
      }).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) { if (body) result[w] = body.data; });
    })).then(function () {
      if (result["1h"] && result["24h"]) { current = result; drawCharts(result); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var embedded = document.getElementById("chart-data");
    if (embedded) {
      current = JSON.parse(embedded.textContent);
      drawCharts(current);
      refreshCharts();  // the page leaves the day's latency out: fetch it now
      window.setInterval(refreshCharts, 30000);
      var resizing;
      window.addEventListener("resize", function () {
        window.clearTimeout(resizing);
        resizing = window.setTimeout(function () { drawCharts(current); }, 200);
      });
    }
  });
  document.addEventListener("htmx:load", function (event) { localTimes(event.target); });
  document.addEventListener("htmx:afterSwap", function (event) { localTimes(event.target); });
})();
