// The dashboard's script: draws the section the address names from /dashboard/api. Hand-written, no framework.
// Every text from the server goes in with textContent (never innerHTML): job logs and names are user content.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const TERMINAL = ["completed", "failed", "cancelled"];
let cleanups = [];  // timers and streams of the section on screen

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value" || k === "checked") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

async function api(method, path, body) {
  const opts = {method, credentials: "same-origin", headers: {"X-CSRF-Token": CSRF}};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/dashboard/api" + path, opts);
  if (r.status === 401) {
    location.href = "/dashboard/login";
    throw new Error("signed out");
  }
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error((data && data.message) || r.status + " " + r.statusText);
  return data;
}

function toast(text, bad) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 6000);
}

function act(fn) {  // a button's action: errors become a toast, never an uncaught rejection
  return async (ev) => {
    if (ev) ev.preventDefault();
    try { await fn(ev); } catch (err) { toast(err.message, true); }
  };
}

const pct = (p) => Math.round((p || 0) * 100) + " %";
const when = (iso) => iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "") : "–";
const secs = (ms) => ms === null || ms === undefined ? "–" : (ms / 1000).toFixed(1) + " s";
const mb = (n) => n >= 1024 ? (n / 1024).toFixed(1) + " GiB" : n + " MiB";

function badge(status) { return h("span", {class: "badge " + status}, status); }

function bar(progress, id) {
  const fill = h("span", {class: "fill"});
  fill.style.width = pct(progress).replace(" ", "");
  return h("span", {class: "bar", id}, fill, h("span", {class: "pct"}, pct(progress)));
}

function setBar(el, progress) {
  if (!el) return;
  el.querySelector(".fill").style.width = pct(progress).replace(" ", "");
  el.querySelector(".pct").textContent = pct(progress);
}

function table(headers, rows, attrs) {
  return h("table", attrs || {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
           h("tbody", {}, rows));
}

function select(name, options, value, blank, help) {  // help: option -> tooltip
  return h("select", {name}, blank !== undefined ? h("option", {value: ""}, blank) : null,
           options.map((o) => h("option", {value: o, selected: o === value, title: help && help[o]}, o)));
}

function later(fn, ms) { const t = setInterval(fn, ms); cleanups.push(() => clearInterval(t)); }

function follow(ids, onEvent, owned) {  // server-sent events of these jobs until each has ended
  if (!ids.length) return null;
  const es = new EventSource("/dashboard/api/live?ids=" + encodeURIComponent(ids.join(",")));
  es.addEventListener("job", (ev) => onEvent(JSON.parse(ev.data)));
  es.addEventListener("end", () => es.close());
  if (!owned) cleanups.push(() => es.close());  // owned: the caller closes it
  return es;
}

// ---- jobs ------------------------------------------------------------------------------------------------------
async function jobsPage(main) {
  const params = new URLSearchParams(location.search);
  const opts = await api("GET", "/filters");
  const help = (map) => Object.entries(map).map(([k, v]) => `${k}: ${v}`).join("\n");
  const form = h("form", {class: "filters", id: "filters"},
    h("label", {}, "Search ", h("input", {name: "q", type: "search", value: params.get("q") || "",
                                          placeholder: "id or title", size: 22})),
    h("label", {title: help(opts.dialectHelp)}, "Dialect ",
      select("dialect", opts.dialects, params.get("dialect"), "all", opts.dialectHelp)),
    h("label", {}, "Status ", select("status", opts.statuses, params.get("status"), "all")),
    h("label", {title: help(opts.kindHelp)}, "Kind ", select("kind", opts.kinds, params.get("kind"), "all",
                                                             opts.kindHelp)),
    h("label", {}, "User ", h("input", {name: "user", list: "user-names", value: params.get("user") || "",
                                        placeholder: "any"})),
    h("datalist", {id: "user-names"}, opts.users.map((u) => h("option", {value: u}))),
    h("button", {type: "submit"}, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
    location.search = q.toString();
  });
  const body = h("tbody");
  const pager = h("p", {class: "pager"});
  const legend = h("p", {class: "muted small", id: "filter-help"},
    h("strong", {}, "admin"), ` — ${opts.dialectHelp.admin}. `, h("strong", {}, "tasks"),
    ` — ${opts.kindHelp.tasks || "renderer tasks named directly"}. `, h("strong", {}, "hotfolder"),
    ` — ${opts.dialectHelp.hotfolder}.`);
  main.replaceChildren(h("h1", {}, "Jobs"), form, legend,
    h("table", {id: "jobs"}, h("thead", {}, h("tr", {}, ["", "Job", "Dialect", "Kind", "User", "Status",
      "Progress", "Created", "Took", "Length", "Cost"].map((t) => h("th", {}, t)))), body),
    pager);
  let stream = null;
  cleanups.push(() => { if (stream) stream.close(); });
  const load = async () => {
    const page = await api("GET", "/jobs?" + params.toString());
    body.replaceChildren(...page.jobs.map((j) => {
      const link = "/dashboard/jobs/" + encodeURIComponent(j.id);
      return h("tr", {"data-job": j.id},
        h("td", {class: "thumb"}, j.thumb ? h("a", {href: link, tabindex: -1}, j.thumbIsVideo
          ? h("video", {src: j.thumb + "#t=0.1", preload: "metadata", muted: true, playsinline: true})
          : h("img", {src: j.thumb, alt: "", loading: "lazy"})) : h("span", {class: "nothumb"})),
        h("td", {class: "job"}, h("a", {href: link, class: "title"}, j.title || j.id),
          j.title ? h("div", {class: "muted small id"}, j.id) : ""),
        h("td", {title: opts.dialectHelp[j.dialect] || null}, j.dialect),
        h("td", {title: opts.kindHelp[j.kind] || null}, j.kind), h("td", {class: "user"}, j.user),
        h("td", {class: "status"}, badge(j.status)), h("td", {}, bar(j.progress)), h("td", {}, when(j.createdAt)),
        h("td", {}, secs(j.durationMs)), h("td", {}, j.mediaS ? j.mediaS.toFixed(1) + " s" : "–"),
        h("td", {class: "cost"}, j.cost || "–"));
    }));
    if (!page.jobs.length) body.append(h("tr", {}, h("td", {colspan: 11, class: "muted"}, "No jobs match.")));
    pager.replaceChildren(
      params.get("cursor") ? h("a", {href: "?" + withParam(params, "cursor", null)}, "← Newest") : "",
      page.nextCursor ? h("a", {href: "?" + withParam(params, "cursor", page.nextCursor), id: "older"}, "Older →")
        : "");
    if (stream) stream.close();
    const active = page.jobs.filter((j) => !TERMINAL.includes(j.status)).map((j) => j.id);
    stream = follow(active, (ev) => {
      const row = body.querySelector(`tr[data-job="${CSS.escape(ev.job)}"]`);
      if (!row) return;
      setBar(row.querySelector(".bar"), ev.progress);
      row.querySelector(".status").replaceChildren(badge(ev.status));
    }, true);
  };
  await load();
  if (!params.get("cursor")) later(() => load().catch(() => {}), 5000);  // new jobs appear on the first page
}

function withParam(params, key, value) {
  const q = new URLSearchParams(params);
  if (value === null) q.delete(key); else q.set(key, value);
  return q.toString();
}

// ---- the live player: a growing HLS (fMP4) playlist through Media Source Extensions ---------------------------
// Chromium plays no HLS by itself: the playlist (api/dashboard/livestream.py) is read here, its init segment and
// each new media segment appended to one SourceBuffer, in order, polling for more each second until
// #EXT-X-ENDLIST. The playlist's comment line gives the codec the SourceBuffer needs.
function livePlayer(video, url, onUpdate) {
  const source = new MediaSource();
  video.muted = true;  // the attribute alone does not mute a scripted element, and only a muted one may autoplay
  video.src = URL.createObjectURL(source);
  let buffer = null, appended = 0, busy = false, ended = false;
  const append = (data) => new Promise((resolve, reject) => {
    buffer.addEventListener("updateend", resolve, {once: true});
    buffer.addEventListener("error", reject, {once: true});
    buffer.appendBuffer(data);
  });
  const bytes = async (u) => {
    const r = await fetch(u, {credentials: "same-origin", cache: "no-store"});
    if (!r.ok) throw new Error(`${u}: HTTP ${r.status}`);
    return r.arrayBuffer();
  };
  const poll = async () => {
    if (busy || ended || source.readyState !== "open") return;
    busy = true;
    try {
      const r = await fetch(url, {credentials: "same-origin", cache: "no-store"});
      if (r.status !== 200) return;  // no piece finished yet (404), or the job is over
      const text = await r.text();
      const segments = text.split("\n").filter((line) => line && !line.startsWith("#"));
      if (!buffer) {
        const codec = (text.match(/^# CODECS="([^"]+)"/m) || [])[1];
        const init = (text.match(/^#EXT-X-MAP:URI="([^"]+)"/m) || [])[1];
        const type = `video/mp4; codecs="${codec}"`;
        if (!codec || !init || !MediaSource.isTypeSupported(type)) { ended = true; return; }
        buffer = source.addSourceBuffer(type);
        await append(await bytes(init));
      }
      while (appended < segments.length) {
        await append(await bytes(segments[appended]));
        appended += 1;
        if (appended === 1 && video.buffered.length) {  // decoding times start a few frames in
          video.currentTime = video.buffered.start(0);
          video.play().catch(() => {});
        }
      }
      const done = /^#EXT-X-ENDLIST/m.test(text);
      onUpdate({segments: appended, done});
      if (done) { ended = true; source.endOfStream(); }
    } catch (err) {
      // a segment not served yet, or a failed append: the next poll tries again
    } finally {
      busy = false;
    }
  };
  source.addEventListener("sourceopen", poll, {once: true});
  later(poll, 1000);
}

// ---- one job ---------------------------------------------------------------------------------------------------
async function jobPage(main, jobId) {
  const path = "/jobs/" + encodeURIComponent(jobId);
  let data = await api("GET", path);
  let media = "";
  const head = h("div", {class: "jobhead"});
  const preview = h("section", {class: "preview", id: "preview"});
  const details = h("div", {id: "details"});
  const grid = h("div", {class: "jobgrid", id: "jobgrid"}, preview, head);  // the picture wide, the facts beside
  main.replaceChildren(h("p", {}, h("a", {href: "/dashboard/jobs"}, "← Jobs")), grid, details);

  const draw = () => {
    const j = data.job;
    const several = data.tasks.length > 1;
    head.replaceChildren(
      h("h1", {}, j.title || j.id, " ", badge(j.status)),
      j.title ? h("p", {class: "muted small", id: "job-id"}, j.id) : "",
      h("p", {class: "muted"}, `${j.dialect} · ${j.kind} · user ${j.user} · phase ${j.phase} · created ` +
        when(j.createdAt) + (j.durationMs !== null ? ` · took ${secs(j.durationMs)}` : "") +
        (j.mediaS ? ` · ${j.mediaS.toFixed(1)} s long` : "") + (j.cost ? ` · cost ${j.cost}` : "")),
      // one number: a one-task job's bar is its task's; a job of several tasks shows their mean, and says so
      h("div", {class: "progressline"}, bar(j.progress, "job-progress"),
        several ? h("div", {class: "muted small", id: "progress-note"}, `mean of ${data.tasks.length} tasks`) : ""),
      // learnt from this box's finished jobs (services/estimate.py); refreshed with each GET the live events cause
      j.eta ? h("p", {class: "muted small", id: "job-eta"}, `about ${secs(j.eta.secondsLeft * 1000)} left · ` +
        `done around ${new Date(j.eta.finishAt * 1000).toLocaleTimeString()} · ` +
        (j.eta.basis ? `from ${j.eta.basis} finished job${j.eta.basis === 1 ? "" : "s"} like it` :
          "extrapolated from its progress")) : "",
      // a Manim render that copied animations of the user's earlier render of the scene (renderers/manim_segments.py)
      j.reuse && j.reuse.reusedPieces ? h("p", {class: "muted small", id: "job-reuse"},
        `reused ${j.reuse.reusedPieces} of ${j.reuse.pieces} animations from an earlier render ` +
        `(${j.reuse.secondsSaved.toFixed(1)} s of drawing saved)`) : "",
      j.error ? h("p", {class: "error", id: "job-error"}, j.error) : "",
      j.expiredAt ? h("p", {class: "muted"}, "Outputs removed on " + when(j.expiredAt) + " (retention).") : "",
      h("div", {class: "actions"},
        data.actions.cancel ? h("button", {id: "cancel", onclick: act(async () => {
          data = await api("POST", path + "/cancel"); toast("Cancelled " + jobId); draw();
        })}, "Cancel") : "",
        data.actions.retry ? h("button", {id: "retry", onclick: act(async () => {
          const got = await api("POST", path + "/retry");
          location.href = "/dashboard/jobs/" + encodeURIComponent(got.id);
        })}, "Retry") : "",
        data.actions.delete ? h("button", {id: "delete", class: "danger", onclick: act(async () => {
          await api("DELETE", path); location.href = "/dashboard/jobs";
        })}, "Delete") : ""));
    drawMedia();
    details.replaceChildren(
      h("h2", {}, "Tasks"),
      table(["Task", "Renderer", "Status", "Progress", "Attempts", "Started", "Finished", "Error"],
        data.tasks.map((t) => h("tr", {}, h("td", {}, t.name), h("td", {}, t.renderer),
          h("td", {}, badge(t.status), t.cached ? " (cached)" : ""), h("td", {}, bar(t.progress)),
          h("td", {}, t.attempts), h("td", {}, when(t.startedAt)), h("td", {}, when(t.finishedAt)),
          h("td", {class: "error"}, t.error || ""))), {id: "tasks"}),
      h("h2", {}, "Log", data.log ? h("span", {class: "muted"}, " — " + data.log.task) : ""),
      h("pre", {class: "log", id: "log"}, data.log ? (data.log.text || "(empty)") : "(no task has started)"),
      h("h2", {}, "Webhook deliveries"),
      data.deliveries.length ? table(["Event", "URL", "Outcome", "Attempts", "Last answer", "Updated"],
        data.deliveries.map((d) => h("tr", {}, h("td", {}, d.event), h("td", {class: "url"}, d.url),
          h("td", {}, badge(d.status)), h("td", {}, d.attempts),
          h("td", {}, d.lastStatus ? "HTTP " + d.lastStatus : (d.lastError || "–")), h("td", {}, when(d.updatedAt)))),
        {id: "deliveries"}) : h("p", {class: "muted"}, "None."),
      h("h2", {}, "Outputs"),
      data.files.length ? h("ul", {id: "files"}, data.files.map((f) => h("li", {},
        h("a", {href: f.url}, f.name), ` (${(f.size / 1024).toFixed(1)} KiB)`))) : h("p", {class: "muted"}, "None yet."),
      h("details", {}, h("summary", {}, "Request"), h("pre", {class: "log"}, j.request)));
  };

  // a RenderCAD job's input pictures beside what became of them: each in a captioned figure, side by side
  const withInputs = (output) => {
    const inputs = data.inputs || [];
    if (!inputs.length) return [output];
    const figure = (caption, el) => h("figure", {}, el, h("figcaption", {class: "muted small"}, caption));
    return [h("div", {class: "compare", id: "compare"},
      inputs.map((u) => figure(inputs.length > 1 ? "Input · " + u.slot : "Input",
        h("img", {class: "input-image", src: u.url, alt: `input ${u.slot} of ${jobId}`}))),
      output ? figure("Output", output) : figure("Output", h("p", {class: "muted"}, "Not rendered yet.")))];
  };

  const drawMedia = () => {  // the finished output, or the live frame while it renders
    const m = data.media;
    const key = (m.video || m.image || (data.preview ? "live" : "none")) + " " + (data.inputs || []).length;
    if (key === media) return;
    media = key;
    if (m.video) {
      preview.replaceChildren(...withInputs(h("video", {id: "preview-video", controls: true, preload: "auto",
                                                        src: m.video, poster: m.poster, muted: true,
                                                        playsinline: true})));
    } else if (m.image) {
      preview.replaceChildren(...withInputs(h("img", {id: "preview-image", src: m.image,
                                                      alt: "output of " + jobId})));
    } else if ((data.inputs || []).length) {  // queued, running, failed: the input, and no output yet
      preview.replaceChildren(...withInputs(null));
    } else if (data.preview) {
      const img = h("img", {id: "live-frame", alt: "latest rendered frame", hidden: true});
      const note = h("p", {class: "muted", id: "live-note"}, "Waiting for the first frame…");
      const title = h("h2", {}, "Latest frame");
      // a Manim render's finished animations (a movie's scenes), playable while the rest renders (the frame until
      // the first is done)
      const video = data.live && window.MediaSource ? h("video", {id: "live-video", controls: true, muted: true,
        autoplay: true, playsinline: true, hidden: true}) : null;
      preview.replaceChildren(title, video || "", img, note);
      let playing = false;
      if (video) livePlayer(video, data.live, (state) => {
        if (!state.segments) return;
        playing = true;
        video.hidden = false;
        img.remove();  // the still frame gives way to the moving picture
        title.textContent = "Live";
        note.textContent = `${state.segments} ${data.liveUnit}${state.segments === 1 ? "" : "s"} rendered so far` +
          (state.done ? " · all rendered" : " · more to come");
      });
      let shown = null;
      later(async () => {
        if (TERMINAL.includes(data.job.status) || playing) return;
        const r = await fetch("/dashboard/api" + path + "/preview.jpg", {credentials: "same-origin"});
        if (r.status !== 200) return;
        const url = URL.createObjectURL(await r.blob());
        img.src = url;
        img.hidden = false;
        note.textContent = "Refreshed " + new Date().toLocaleTimeString();
        if (shown) URL.revokeObjectURL(shown);
        shown = url;
      }, 1000);
    } else {
      preview.replaceChildren();
    }
    grid.classList.toggle("nomedia", !preview.childElementCount);
  };

  draw();
  if (TERMINAL.includes(data.job.status)) return;
  let pending = false;
  const refresh = async () => {
    if (pending) return;
    pending = true;
    setTimeout(async () => {
      pending = false;
      try { data = await api("GET", path); draw(); } catch (err) { toast(err.message, true); }
    }, 700);
  };
  const es = follow([jobId], (ev) => {
    // Live events carry the job's progress; the task rows come from the last GET. A one-task job's progress is
    // its task's, so both bars take the event's number (they once showed 38 and 29 % until the next GET).
    data.job.progress = ev.progress;
    setBar(document.getElementById("job-progress"), ev.progress);
    if (data.tasks.length === 1) {
      data.tasks[0].progress = ev.progress;
      setBar(document.querySelector("#tasks tbody .bar"), ev.progress);
    }
    refresh();
    if (TERMINAL.includes(ev.status)) es.close();
  });
  es.addEventListener("open", refresh);  // anything that happened before the stream opened
  later(() => { if (!TERMINAL.includes(data.job.status)) refresh(); }, 5000);
}

// ---- capacity --------------------------------------------------------------------------------------------------
function meter(label, used, total, fmt) {
  const fraction = total ? used / total : 0;
  const f = fmt || ((n) => n);
  return h("div", {class: "meter"}, h("div", {class: "label"}, label),
    bar(fraction), h("div", {class: "muted"}, `${f(used)} of ${f(total)} in use`));
}

async function capacityPage(main) {
  const now = h("div", {id: "capacity-now"});  // redrawn every 2 s; the quote form below it is not
  main.replaceChildren(h("h1", {}, "Capacity"), now, quoteForm());
  const draw = async () => {
    const c = await api("GET", "/capacity");
    const cap = c.capacity;
    now.replaceChildren(
      h("div", {class: "meters", id: "meters"},
        meter("CPU slots", c.used.cpu, cap.cpu), meter("Memory", c.used.memMb, cap.memMb, mb),
        meter("GPU slots", c.used.gpu, cap.gpuSlots), meter("NVENC sessions", c.used.nvencSessions, cap.nvencSessions),
        meter("Disk", c.disk.totalMb - c.disk.freeMb, c.disk.totalMb, mb)),
      h("p", {class: "muted"}, `${mb(c.disk.freeMb)} free; renders are refused below ${mb(c.disk.minFreeMb)}.`,
        cap.gpus.length ? "" : " No GPU found."),
      cap.gpus.length ? table(["GPU", "Name", "Memory", "Compute slots in use", "NVENC sessions in use", "NVDEC"],
        cap.gpus.map((g) => h("tr", {}, h("td", {}, g.index, g.worker ? h("div", {class: "muted small"},
            `GPU ${g.localIndex} of worker ${g.worker}`) : ""), h("td", {}, g.name), h("td", {}, mb(g.memoryMb)),
          h("td", {}, `${g.computeUsed} of ${g.computeSlots ?? 1}`),
          h("td", {}, `${g.nvencUsed} of ${g.nvencSessions ?? 0}`, g.nvencReason ? h("div", {class: "muted small"},
            g.nvencReason) : ""),
          h("td", {}, g.nvdec === undefined ? "–" : g.nvdec ? "yes" : "no"))), {id: "gpus"}) : "",
      h("h2", {}, "Queue"),
      table(["Jobs", ...Object.keys(c.jobs), "Tasks queued", "Tasks running"],
        [h("tr", {}, h("td", {}, "count"), Object.values(c.jobs).map((n) => h("td", {}, n)),
          h("td", {}, c.tasks.queued), h("td", {}, c.tasks.running))], {id: "queue"}),
      h("h2", {}, "Models"),
      c.models.length ? table(["Name", "Kind", "Runtime", "Runs on", "Size", "SHA-256", "Licence", "Added"],
        c.models.map((m) => h("tr", {"data-model": m.name}, h("td", {}, m.name),
          h("td", {}, m.kind, m.pipeline ? h("div", {class: "muted small"}, m.pipeline) : ""),
          h("td", {}, m.runtime), h("td", {}, m.device === "gpu" ? "GPU only" : "CPU or GPU"),
          h("td", {}, mb(Math.round(m.size / 2 ** 20))), h("td", {}, h("code", {}, m.sha256.slice(0, 12))),
          h("td", {}, m.licence || "–"), h("td", {}, m.addedAt, h("div", {class: "muted small"}, m.addedBy || "")))),
        {id: "models"})
        : h("p", {class: "muted", id: "models"}, "No studio models: appliance models add FILE --kind matte|depth, "
          + "or DIR --kind img2img."),
      h("h2", {}, "Sandbox"), h("p", {}, c.sandbox.mechanism),
      table(["Layer", "Active", "Detail"], c.sandbox.layers.map((l) => h("tr", {},
        h("td", {}, l.name), h("td", {}, badge(l.active ? "active" : "missing")), h("td", {}, l.detail))),
        {id: "layers"}));
  };
  await draw();
  later(() => draw().catch(() => {}), 2000);
}

// What a render would take on this box, before it is submitted: the admin API's quote (services/estimate.py)
const QUALITIES = {low: [854, 480, 15], medium: [1280, 720, 30], high: [1920, 1080, 30]};  // Kodisc's

function quoteForm() {
  const out = h("p", {class: "muted", id: "quote"});
  const form = h("form", {id: "quote-form"},
    h("label", {}, "What ", select("what", ["Manim scene", "Movie JSON"], "Manim scene")),
    h("label", {}, " User ", h("input", {name: "user", value: "admin", size: 12})),
    h("label", {}, " Scene class ", h("input", {name: "className", size: 14, placeholder: "the first Scene"})),
    h("label", {}, " Quality ", select("quality", Object.keys(QUALITIES), "medium")),
    h("textarea", {name: "source", rows: 8, cols: 80, placeholder: "a Manim scene's code, or a Movie JSON document"}),
    h("button", {type: "submit"}, "Quote"));
  form.addEventListener("submit", act(async () => {
    const f = new FormData(form);
    const source = String(f.get("source") || "");
    let body = {user: String(f.get("user") || "admin")};
    if (f.get("what") === "Movie JSON") {
      let doc;
      try { doc = JSON.parse(source); } catch (err) { throw new Error("not valid JSON: " + err.message); }
      body.movie = doc && doc.movie ? doc.movie : doc;
    } else {
      const named = String(f.get("className") || "").trim();
      const found = source.match(/^class\s+(\w+)\s*\([^)]*Scene[^)]*\)\s*:/m);  // as `appliance render` picks it
      const [width, height, fps] = QUALITIES[f.get("quality")];
      body.scene = {code: source, className: named || (found ? found[1] : ""), width, height, fps};
    }
    const q = await api("POST", "/estimate", body);
    out.textContent = q.seconds === null ? "No quote yet: " + q.reason
      : `about ${q.seconds.toFixed(1)} s of rendering` + (q.credits === null ? "" : `, ${q.credits} credits`) +
        ` (from ${q.basis} finished ${q.family} jobs on this box, typically within ${Math.round(q.spread * 100)} %)`;
  }));
  return h("section", {}, h("h2", {}, "Quote a render"),
    h("p", {class: "muted small"}, "Nothing is submitted: the seconds and credits are learnt from the renders " +
      "this box finished."), form, out);
}

// ---- users and keys --------------------------------------------------------------------------------------------
async function usersPage(main) {
  const data = await api("GET", "/users");
  const reveal = h("div", {id: "reveal"});
  const create = h("form", {class: "inline", id: "new-user"},
    h("input", {name: "name", placeholder: "new user name", required: true}),
    select("plan", data.plans, "studio"), h("button", {type: "submit"}, "Create user"));
  create.addEventListener("submit", act(async () => {
    const f = new FormData(create);
    await api("POST", "/users", {name: f.get("name"), plan: f.get("plan")});
    usersPage(main);
  }));
  const cards = data.users.map((u) => {
    const keyForm = h("form", {class: "inline new-key", "data-user": u.name},
      select("dialect", data.dialects, "kodisc"), select("scope", data.scopes, "full-access"),
      h("input", {name: "name", placeholder: "label (optional)"}), h("button", {type: "submit"}, "Create key"));
    keyForm.addEventListener("submit", act(async () => {
      const f = new FormData(keyForm);
      const got = await api("POST", `/users/${encodeURIComponent(u.name)}/keys`,
                            {dialect: f.get("dialect"), scope: f.get("scope"), name: f.get("name")});
      await usersPage(main);
      document.getElementById("reveal").replaceChildren(h("div", {class: "card reveal"},
        h("strong", {}, `New ${f.get("dialect")} key for ${u.name} — copy it now, it is never shown again:`),
        h("pre", {id: "new-key"}, got.key)));
    }));
    const grant = h("form", {class: "inline"}, h("input", {name: "amount", type: "number", min: 1, placeholder: "credits"}),
      h("button", {type: "submit"}, "Grant"));
    grant.addEventListener("submit", act(async () => {
      await api("POST", `/users/${encodeURIComponent(u.name)}/credits`,
                {amount: parseInt(new FormData(grant).get("amount"), 10), bucket: "paid"});
      usersPage(main);
    }));
    const plan = select("plan", data.plans, u.plan);
    plan.addEventListener("change", act(async () => {
      await api("POST", `/users/${encodeURIComponent(u.name)}/plan`, {plan: plan.value});
      toast(`${u.name} is now on ${plan.value}`);
    }));
    return h("section", {class: "card user", "data-user": u.name},
      h("h2", {}, u.name, " ", h("span", {class: "muted small"}, u.id)),
      h("p", {}, "Plan ", plan, ` · credits ${u.credits.total} (free ${u.credits.free}, paid ${u.credits.paid}) `,
        ` · outputs on disk ${(u.diskBytes / 1e6).toFixed(1)} MB `, grant),
      table(["Key", "Dialect", "Scope", "Label", "Created", "State", ""], u.keys.map((k) => h("tr", {"data-key": k.id},
        h("td", {}, h("code", {}, k.prefix + "…")), h("td", {}, k.dialect), h("td", {}, k.scope), h("td", {}, k.name),
        h("td", {}, when(k.createdAt)), h("td", {}, k.revokedAt ? badge("revoked") : badge("live")),
        h("td", {}, k.revokedAt ? "" : h("button", {class: "danger revoke", onclick: act(async () => {
          await api("POST", `/keys/${encodeURIComponent(k.id)}/revoke`);
          await usersPage(main);
          toast("Revoked " + k.prefix + "…");
        })}, "Revoke"))))), keyForm);
  });
  main.replaceChildren(h("h1", {}, "Users"), create, reveal, ...cards);
}

// ---- RenderCAD device codes ------------------------------------------------------------------------------------
async function devicePage(main) {
  const data = await api("GET", "/users");
  const waiting = await api("GET", "/device");
  const code = new URLSearchParams(location.search).get("code") || "";
  const result = h("p", {id: "device-result"});
  const form = h("form", {class: "stack", id: "device"},
    h("label", {}, "Code ", h("input", {name: "code", value: code, required: true, autocomplete: "off"})),
    h("label", {}, "For user ", select("user", data.users.map((u) => u.name), "admin")),
    h("button", {type: "submit"}, "Approve"));
  form.addEventListener("submit", act(async () => {
    const f = new FormData(form);
    const got = await api("POST", "/device/approve", {code: f.get("code"), user: f.get("user")});
    result.textContent = `Approved ${got.approved} for ${got.user}: the app receives its token on its next poll.`;
  }));
  main.replaceChildren(h("h1", {}, "RenderCAD device codes"),
    h("p", {class: "muted"}, "An app signing in shows a six-letter code and opens the appliance's ",
      h("a", {href: "/auth_device.html?code=" + encodeURIComponent(code || "")}, "approval page"),
      ", where a person approves it with one of their full-access tokens. Here an operator approves it for any user."),
    form, result,
    h("h2", {}, "Waiting for approval"),
    waiting.pending.length ? table(["Code", "App", "Type", "Version", "Requested", "Expires in"],
      waiting.pending.map((p) => h("tr", {}, h("td", {}, h("a", {href: "?code=" + encodeURIComponent(p.code)},
        h("code", {}, p.code))), h("td", {}, p.appName || "–"), h("td", {}, p.appType || "–"),
        h("td", {}, p.appVersion || "–"), h("td", {}, when(p.createdAt)), h("td", {}, p.expiresIn + " s"))),
      {id: "pending"}) : h("p", {class: "muted"}, "No code is waiting."));
}

// ---- routing ---------------------------------------------------------------------------------------------------
async function route() {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  const main = document.getElementById("main");
  const parts = location.pathname.replace(/\/+$/, "").split("/").slice(2);  // after /dashboard
  const section = parts[0] || "jobs";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.section === section);
  try {
    if (section === "jobs" && parts[1]) await jobPage(main, decodeURIComponent(parts[1]));
    else if (section === "jobs") await jobsPage(main);
    else if (section === "capacity") await capacityPage(main);
    else if (section === "users") await usersPage(main);
    else if (section === "device") await devicePage(main);
  } catch (err) {
    main.replaceChildren(h("p", {class: "error"}, err.message));
  }
}

document.addEventListener("DOMContentLoaded", route);
