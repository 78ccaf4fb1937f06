/* ddscope report: draws the plot specs in #ddscope-data with uPlot, and hands the embedded
 * trace to ui.perfetto.dev (Perfetto's postMessage protocol: open the window, PING until it
 * answers PONG, then post {perfetto: {buffer, title, fileName}}). No network: everything it
 * needs is in the page. window.ddscopePlots lists what was drawn (for the browser tests). */
(function () {
  "use strict";
  var PERFETTO = "https://ui.perfetto.dev";
  var data = JSON.parse(document.getElementById("ddscope-data").textContent);
  window.ddscopePlots = [];

  function fmtSeconds(v) {
    if (v == null) return "";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a < 0.001) return (v * 1e6).toPrecision(3) + " µs";
    if (a < 1) return (v * 1e3).toPrecision(3) + " ms";
    if (a < 120) return v.toPrecision(3) + " s";
    return (v / 60).toPrecision(3) + " min";
  }

  function bandsPlugin(bands) {
    // shaded time ranges (cooldowns, breaker, salvage) under the series
    return {
      hooks: {
        drawClear: [function (u) {
          var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
          bands.forEach(function (band) {
            ctx.fillStyle = band.color;
            band.ranges.forEach(function (r) {
              var x0 = u.valToPos(r[0], "x", true), x1 = u.valToPos(r[1], "x", true);
              ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
            });
          });
        }],
      },
    };
  }

  function seriesOptions(s) {
    var opts = { label: s.label, stroke: s.color, width: s.width || 1.5, scale: s.scale || "y",
                 spanGaps: !!s.span, points: { show: false } };
    if (s.style === "step") opts.paths = uPlot.paths.stepped({ align: 1 });
    if (s.style === "bars") {
      opts.paths = uPlot.paths.bars({ size: [0.8, 40], align: 0 });
      opts.fill = s.color + "99";
    }
    if (s.style === "points") {
      opts.paths = function () { return null; };
      opts.points = { show: true, size: 6, stroke: s.color, fill: s.color };
    }
    if (s.fill_to === -1) opts.fill = s.color;
    if (s.fill_to != null && s.fill_to >= 0) {
      // a stacked series holds the running sum: its legend shows its own part
      var below = s.fill_to + 1;
      opts.value = function (u, v, si, di) {
        if (v == null || di == null) return "--";
        return (v - (u.data[below][di] || 0)).toFixed(2);
      };
    }
    if (s.dash) opts.dash = s.dash;
    return opts;
  }

  function countPoints(spec) {
    var n = 0;
    spec.series.forEach(function (s) {
      s.y.forEach(function (v) { if (v != null && isFinite(v)) n += 1; });
    });
    return n;
  }

  function draw(spec, el) {
    var hist = spec.kind === "hist";
    var series = [{ label: hist ? "duration" : "time", value: function (u, v) { return fmtSeconds(v); } }];
    var bands = [];
    spec.series.forEach(function (s, i) {
      series.push(seriesOptions(s));
      if (s.fill_to != null && s.fill_to >= 0) {
        bands.push({ series: [i + 1, s.fill_to + 1], fill: s.color });
      }
    });
    var hasRight = spec.series.some(function (s) { return s.scale === "r"; });
    var axes = [
      { values: function (u, vals) { return vals.map(fmtSeconds); } },
      { size: 50 },
    ];
    if (hasRight) axes.push({ scale: "r", side: 1, grid: { show: false }, size: 40 });
    var opts = {
      width: Math.max(320, el.clientWidth || 900),
      height: 230,
      series: series,
      bands: bands,
      axes: axes,
      scales: {
        x: hist ? { time: false, distr: 3 } : { time: false },
        y: { range: function (u, lo, hi) { return [Math.min(0, lo), hi > 0 ? hi * 1.05 : 1]; } },
        r: { range: function (u, lo, hi) { return [0, hi > 0 ? hi * 1.1 : 1]; } },
      },
      cursor: hist ? {} : { sync: { key: "ddscope" } },
      plugins: spec.bands && spec.bands.length ? [bandsPlugin(spec.bands)] : [],
      legend: { live: true },
    };
    var columns = [spec.x].concat(spec.series.map(function (s) { return s.y; }));
    var chart = new uPlot(opts, columns, el);
    window.ddscopePlots.push({ id: spec.id, title: spec.title, points: countPoints(spec),
                               width: chart.width, height: chart.height });
    return chart;
  }

  var charts = [];
  document.querySelectorAll("[data-plot]").forEach(function (el) {
    charts.push(draw(data.plots[Number(el.getAttribute("data-plot"))], el));
  });
  window.addEventListener("resize", function () {
    charts.forEach(function (c) {
      var w = c.root.parentNode.clientWidth;
      if (w > 0) c.setSize({ width: Math.max(320, w), height: c.height });
    });
  });

  // -- the trace ------------------------------------------------------------------------------

  var status = document.getElementById("perfetto-status");
  function say(text) { if (status) status.textContent = text; }

  function embeddedTrace() {
    var el = document.getElementById("ddscope-trace");
    if (!el) return null;
    var binary = atob(el.textContent.trim());
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }

  var embedded = embeddedTrace();
  var picked = null;
  var traceEl = document.getElementById("ddscope-trace");
  var fileName = traceEl ? traceEl.getAttribute("data-name") : "trace.pftrace";
  var download = document.getElementById("download-trace");
  if (embedded && download) {
    embedded.then(function (buffer) {
      download.href = URL.createObjectURL(new Blob([buffer], { type: "application/octet-stream" }));
    });
  }
  var chooser = document.getElementById("trace-file");
  if (chooser) {
    chooser.addEventListener("change", function () {
      var file = chooser.files && chooser.files[0];
      if (file) { fileName = file.name; picked = file.arrayBuffer(); }
    });
  }

  function openInPerfetto() {
    var bytes = embedded || picked;
    if (!bytes) { say("Choose the .pftrace file first."); return; }
    // Open the window inside the click handler, or pop-up blockers refuse it.
    var win = window.open(PERFETTO + "/#!/", "_blank");
    if (!win) { say("The browser blocked the pop-up window for ui.perfetto.dev."); return; }
    var pings = 0, timer = null;
    function onMessage(evt) {
      if (evt.source !== win || evt.origin !== PERFETTO || evt.data !== "PONG") return;
      window.clearInterval(timer);
      window.removeEventListener("message", onMessage);
      bytes.then(function (buffer) {
        var title = data.title + " (" + fileName + ")";
        win.postMessage({ perfetto: { buffer: buffer, title: title, fileName: fileName } }, PERFETTO);
        say("Sent " + buffer.byteLength.toLocaleString() + " bytes to ui.perfetto.dev.");
      });
    }
    window.addEventListener("message", onMessage);
    say("Waiting for ui.perfetto.dev to load…");
    timer = window.setInterval(function () {
      pings += 1;
      if (pings > 600) {  // 30 s: give up rather than ping forever
        window.clearInterval(timer);
        window.removeEventListener("message", onMessage);
        say("ui.perfetto.dev did not answer within 30 s.");
        return;
      }
      win.postMessage("PING", PERFETTO);
    }, 50);
  }
  var button = document.getElementById("open-perfetto");
  if (button) button.addEventListener("click", openInPerfetto);
})();
