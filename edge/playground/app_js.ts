/**
 * The playground's script (`GET /playground/app.js`), plain browser JavaScript with no build step. It talks
 * only to the public API with the pasted key: `fetch` with `Authorization` for everything, job streams read
 * from `fetch` bodies (an EventSource cannot send the key), images fetched with the key and shown as blob
 * URLs. The key stays in the tab (sessionStorage), never in a URL.
 */
export const PLAYGROUND_JS = String.raw`"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var key = sessionStorage.getItem("pfd_key") || "";
  var adapters = [];
  $("key").value = key;

  function status(msg) { $("status").textContent = msg || ""; }

  async function api(path, init) {
    init = init || {};
    var headers = new Headers(init.headers || {});
    headers.set("Authorization", "Bearer " + key);
    var res = await fetch(path, Object.assign({}, init, { headers: headers }));
    if (!res.ok) {
      var detail = res.statusText;
      try {
        var p = await res.json();
        detail = p.detail || p.title || JSON.stringify(p);
        if (p.invalid_fields) detail += " (" + p.invalid_fields.map(function (f) { return f.name; }).join(", ") + ")";
      } catch (_e) { /* not JSON */ }
      throw new Error(res.status + ": " + detail);
    }
    return res;
  }
  async function postJson(path, body, headers) {
    return await (await api(path, {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
      body: JSON.stringify(body),
    })).json();
  }

  // A job's event stream (text/event-stream over fetch) until "done"; on(event, data) for each event.
  async function follow(url, on) {
    var res = await api(url);
    var reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    var buf = "";
    for (;;) {
      var r = await reader.read();
      if (r.done) return;
      buf += r.value;
      var i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        var chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        var event = "message", data = "";
        chunk.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) event = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data += line.slice(5).trim();
        });
        if (data) on(event, JSON.parse(data));
        if (event === "done") { reader.cancel(); return; }
      }
    }
  }

  async function imageUrl(url) {
    return URL.createObjectURL(await (await api(url)).blob());
  }

  async function refreshAccount() {
    var a = await (await api("/v1/account")).json();
    $("tenant").textContent = a.tenant.name;
    $("balance").textContent = String(a.balance);
  }

  async function refreshAdapters() {
    var all = [], cursor = null;
    do {
      var page = await (await api("/v1/adapters" + (cursor ? "?cursor=" + encodeURIComponent(cursor) : ""))).json();
      all = all.concat(page.data);
      cursor = page.next;
    } while (cursor);
    adapters = all.filter(function (a) { return a.base_model === $("model").value; });
    var concepts = adapters.filter(function (a) { return a.kind === "concept"; });
    var sliders = adapters.filter(function (a) { return a.kind === "slider"; });
    // What the user set (checked adapters, scales, slider positions) survives the rebuild.
    var kept = {};
    document.querySelectorAll("[data-adapter],[data-scale],[data-slider]").forEach(function (el) {
      kept[Object.keys(el.dataset)[0] + ":" + Object.values(el.dataset)[0]] = el.type === "checkbox" ? el.checked : el.value;
    });
    var restore = function (el) {
      var v = kept[Object.keys(el.dataset)[0] + ":" + Object.values(el.dataset)[0]];
      if (v === undefined) return;
      if (el.type === "checkbox") el.checked = v; else el.value = v;
    };
    var box = $("adapters");
    box.textContent = "";
    if (!concepts.length) box.innerHTML = '<span class="muted">no adapters yet</span>';
    concepts.forEach(function (a) {
      var l = document.createElement("label");
      l.innerHTML = '<input type="checkbox" data-adapter="' + a.id + '"> ' + "<span></span> scale " +
        '<input type="number" step="0.1" value="1" data-scale="' + a.id + '">';
      l.querySelector("span").textContent = a.name;
      l.querySelectorAll("input").forEach(restore);
      box.appendChild(l);
    });
    var sbox = $("sliders");
    sbox.textContent = "";
    var select = $("grid-slider");
    select.textContent = "";
    sliders.forEach(function (a) {
      var l = document.createElement("label");
      l.className = "slider";
      l.innerHTML = "<span></span> " + '<input type="range" min="-5" max="5" step="0.5" value="0" data-slider="' +
        a.id + '"> <output>0</output>';
      l.querySelector("span").textContent = a.name;
      var range = l.querySelector("input"), out = l.querySelector("output");
      restore(range);
      out.textContent = range.value;
      range.addEventListener("input", function () { out.textContent = range.value; });
      sbox.appendChild(l);
      var o = document.createElement("option");
      o.value = a.id;
      o.textContent = a.name;
      select.appendChild(o);
    });
  }

  $("connect").addEventListener("click", async function () {
    key = $("key").value.trim();
    sessionStorage.setItem("pfd_key", key);
    status("");
    try {
      var models = await (await fetch("/v1/models")).json();
      var sel = $("model");
      sel.textContent = "";
      models.data.forEach(function (m) {
        var o = document.createElement("option");
        o.value = m.id;
        o.textContent = m.id;
        sel.appendChild(o);
      });
      await refreshAccount();
      await refreshAdapters();
    } catch (e) { status(e.message); }
  });
  $("model").addEventListener("change", function () { refreshAdapters().catch(function (e) { status(e.message); }); });
  $("method").addEventListener("change", function () {
    var slider = $("method").value === "concept_slider";
    $("dreambooth-fields").hidden = slider;
    $("slider-fields").hidden = !slider;
  });

  var losses = [];
  function drawLoss() {
    var c = $("loss"), g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    c.dataset.points = String(losses.length);
    if (losses.length < 2) return;
    var lo = Math.min.apply(null, losses), hi = Math.max.apply(null, losses), span = hi - lo || 1;
    g.strokeStyle = "#06c";
    g.beginPath();
    losses.forEach(function (v, i) {
      var x = (i / (losses.length - 1)) * (c.width - 8) + 4, y = c.height - 4 - ((v - lo) / span) * (c.height - 8);
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
    g.fillStyle = "#555";
    g.fillText("loss " + losses[losses.length - 1].toFixed(4), 6, 12);
  }
  function log(el, line) {
    el.textContent += line + "\n";
    el.scrollTop = el.scrollHeight;
  }

  $("train").addEventListener("click", async function () {
    status("");
    var method = $("method").value;
    var input = { steps: Number($("steps").value) };
    try {
      if (method === "dreambooth") {
        var files = Array.from($("images").files);
        if (!files.length) throw new Error("choose one or more photos first");
        var ids = [];
        for (var f of files) {
          var form = new FormData();
          form.append("content", f, f.name);
          $("train-status").textContent = "uploading " + f.name;
          ids.push((await (await api("/v1/files", { method: "POST", body: form })).json()).id);
        }
        input.images = ids;
        input.token = $("token").value;
        input.class_word = $("class_word").value;
        input.with_prior_preservation = $("prior").checked;
      } else {
        input.positive = $("positive").value;
        input.negative = $("negative").value;
        input.target = $("target").value;
      }
      var job = await postJson("/v1/trainings", {
        method: method,
        base_model: $("model").value,
        destination: $("destination").value,
        input: input,
      }, { "Idempotency-Key": crypto.randomUUID() });
      losses = [];
      drawLoss();
      $("train-log").textContent = "";
      $("train-status").textContent = job.status;
      await refreshAccount();
      var final = "";
      await follow(job.urls.stream, function (event, data) {
        if (event === "progress") {
          $("train-progress").max = data.total;
          $("train-progress").value = data.step;
          $("train-eta").textContent = "step " + data.step + "/" + data.total +
            (data.eta_s !== undefined ? ", eta " + Math.round(data.eta_s) + " s" : "");
          if (typeof data.loss === "number") { losses.push(data.loss); drawLoss(); }
        } else if (event === "preview") {
          $("train-preview").src = "data:image/png;base64," + data.png;
          $("train-preview").hidden = false;
        } else if (event === "log") log($("train-log"), data.message);
        else if (event === "status") $("train-status").textContent = data.status;
        else if (event === "error") log($("train-log"), "error: " + JSON.stringify(data.error));
        else if (event === "done") final = data.status;
      });
      await refreshAccount();
      await refreshAdapters();
      $("train-status").textContent = final || "ended";
    } catch (e) {
      $("train-status").textContent = "failed";
      status(e.message);
    }
  });

  function generationInput(seed) {
    var input = {
      prompt: $("prompt").value,
      seed: seed,
      steps: Number($("gen-steps").value),
      guidance_scale: Number($("guidance").value),
      adapters: [],
      sliders: [],
    };
    document.querySelectorAll("[data-adapter]").forEach(function (c) {
      if (c.checked) {
        input.adapters.push({
          id: c.dataset.adapter,
          scale: Number(document.querySelector('[data-scale="' + c.dataset.adapter + '"]').value),
        });
      }
    });
    document.querySelectorAll("[data-slider]").forEach(function (r) {
      if (Number(r.value) !== 0) input.sliders.push({ id: r.dataset.slider, scale: Number(r.value) });
    });
    return input;
  }

  function figure(src, caption, download) {
    var fig = document.createElement("figure");
    var img = document.createElement("img");
    img.src = src;
    img.alt = caption;
    fig.appendChild(img);
    var cap = document.createElement("figcaption");
    var a = document.createElement("a");
    a.href = src;
    a.download = download;
    a.textContent = caption;
    cap.appendChild(a);
    fig.appendChild(cap);
    return fig;
  }

  $("generate").addEventListener("click", async function () {
    status("");
    var out = $("outputs");
    out.textContent = "";
    try {
      var input = generationInput(Number($("seed").value));
      input.num_outputs = Number($("num").value);
      var job = await postJson("/v1/predictions", { base_model: $("model").value, input: input }, {
        "Idempotency-Key": crypto.randomUUID(),
      });
      $("gen-status").textContent = job.status;
      var preview = null, urls = [], final = "";
      await follow(job.urls.stream, function (event, data) {
        if (event === "preview") {
          if (!preview) { preview = document.createElement("img"); out.appendChild(preview); }
          preview.src = "data:image/png;base64," + data.png;
        } else if (event === "progress") $("gen-status").textContent = "step " + data.step + "/" + data.total;
        else if (event === "output") urls = data.output;
        else if (event === "done") final = data.status;
      });
      out.textContent = "";
      for (var i = 0; i < urls.length; i++) {
        out.appendChild(figure(await imageUrl(urls[i]), "image " + (i + 1), "image-" + (i + 1) + ".png"));
      }
      $("gen-status").textContent = final;
      await refreshAccount();
    } catch (e) { status(e.message); }
  });

  $("grid").addEventListener("click", async function () {
    status("");
    var row = $("grid-row");
    row.textContent = "";
    var slider = $("grid-slider").value;
    try {
      if (!slider) throw new Error("train a slider first");
      var scales = $("grid-scales").value.split(",").map(function (s) { return Number(s.trim()); });
      if (scales.some(function (s) { return !isFinite(s); })) throw new Error("scales: numbers separated by commas");
      for (var s of scales) {
        $("grid-status").textContent = "scale " + s;
        var input = generationInput(Number($("seed").value));
        input.sliders = input.sliders.filter(function (x) { return x.id !== slider; });
        if (s !== 0) input.sliders.push({ id: slider, scale: s });
        var p = await postJson("/v1/predictions", { base_model: $("model").value, input: input }, {
          Prefer: "wait=60",
          "Idempotency-Key": crypto.randomUUID(),
        });
        if (p.status !== "succeeded") throw new Error("scale " + s + ": " + p.status + " " + JSON.stringify(p.error));
        row.appendChild(figure(await imageUrl(p.output[0]), "scale " + s, "scale" + s + ".png"));
      }
      $("grid-status").textContent = "done";
      await refreshAccount();
    } catch (e) { status(e.message); }
  });
})();
`;
