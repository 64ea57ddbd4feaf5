// clipseek web page: plain JavaScript, no build step, no third-party code.
// It talks only to the JSON API under /v1 (docs/api.md). Record data (ids, captions, metadata,
// error messages) is only ever put into the page as text (textContent, attributes set through
// the DOM, never innerHTML), and images come only from the records' thumbnail route.
"use strict";

(() => {
  // ---------------------------------------------------------------- texts
  const TEXTS = {
    en: {
      tab_search: "Search",
      tab_index: "Index",
      collection: "Collection",
      no_collections: "no collections",
      info: "{count} records · {model}",
      search_placeholder: "Describe what you are looking for, e.g. “a red car at night”",
      search: "Search",
      upload: "Image",
      upload_title: "Search with an image: choose a file, drop it on the page or paste it (Ctrl+V)",
      hint: "Type words in English or 中文, or drop or paste an image anywhere on the page.",
      threshold: "Minimum score",
      threshold_off: "off",
      threshold_help: "Calibrated score: 0.5 means “probably a real match” for text and image queries alike.",
      top: "Results",
      filters: "Filters",
      add_filter: "+ Add filter",
      filters_none: "This collection has no metadata fields to filter on.",
      field: "Field",
      value: "Value",
      value_in: "a, b, c",
      op_eq: "is",
      op_in: "is any of",
      op_gte: "≥",
      op_lte: "≤",
      remove: "Remove",
      clear: "Clear",
      query_text: "Text: “{q}”",
      query_image: "Image: {name}",
      query_like: "More like: {label}",
      pasted_image: "pasted image",
      searching: "Searching…",
      results: "{n} results in {ms} ms",
      results_one: "1 result in {ms} ms",
      no_results: "No results. Lower the minimum score or remove a filter.",
      like: "More like this",
      details: "Details",
      score: "score",
      cosine: "cosine",
      no_preview: "no preview",
      empty_title: "Search your photos",
      empty_body: "Describe a picture in English or Chinese, search with an image, or pick “More like this” on any result.",
      drop: "Drop an image to search",
      not_image: "That file is not an image.",
      key_needed: "This server needs an API key.",
      key_refused: "That API key was refused.",
      key_label: "API key",
      key_save: "Use key",
      key_forget: "Forget key",
      read_only: "This API key is read-only: it cannot start indexing.",
      index_title: "Index a folder or manifest",
      index_source: "Source",
      index_source_ph: "/data/photos  or  /data/photos.csv  or  https://…/manifest.csv",
      index_help: "A folder or a manifest (CSV, Parquet, JSON Lines …) inside one of the server's roots (clipseek serve --root).",
      index_collection: "Into collection",
      index_collection_help: "A new name creates the collection.",
      index_labels: "Zero-shot labels (optional)",
      index_labels_ph: "cat, dog, car, person",
      index_prune: "Remove records whose files are gone",
      index_dedup: "Skip exact duplicates",
      index_start: "Start indexing",
      jobs: "Jobs",
      jobs_none: "No jobs yet.",
      state_queued: "queued",
      state_running: "running",
      state_done: "done",
      state_failed: "failed",
      job_progress: "{done} of {total}",
      job_progress_open: "{done} done",
      job_rate: "{rate} images/s",
      job_eta: "about {eta} left",
      job_failed: "{n} failed",
      job_started: "started {t}",
      job_open: "Open",
      state_cancelled: "cancelled",
      job_report: "{added} added · {updated} updated · {unchanged} unchanged · {failed} failed · {seconds}",
      job_failures: "Items that failed",
      collections: "Collections",
      col_name: "Name",
      col_count: "Records",
      col_model: "Model",
      col_size: "On disk",
      col_last: "Last indexed",
      vectors_only: "vectors only (dim {dim})",
      unavailable: "{name} (unavailable)",
      unavailable_why: "unavailable: {error}",
    },
    zh: {
      tab_search: "搜索",
      tab_index: "建立索引",
      collection: "图库",
      no_collections: "还没有图库",
      info: "{count} 条记录 · {model}",
      search_placeholder: "描述您要找的图片，例如“夜晚的红色汽车”",
      search: "搜索",
      upload: "以图搜图",
      upload_title: "用图片搜索：选择文件、拖放到页面上或粘贴（Ctrl+V）",
      hint: "输入中文或 English 描述，或把图片拖放、粘贴到页面任意位置。",
      threshold: "最低得分",
      threshold_off: "关闭",
      threshold_help: "校准后的得分：0.5 表示“很可能是真正的匹配”，文字和图片查询含义相同。",
      top: "结果数",
      filters: "筛选",
      add_filter: "+ 添加筛选条件",
      filters_none: "此图库没有可筛选的元数据字段。",
      field: "字段",
      value: "值",
      value_in: "甲, 乙, 丙",
      op_eq: "等于",
      op_in: "属于",
      op_gte: "≥",
      op_lte: "≤",
      remove: "删除",
      clear: "清除",
      query_text: "文字：“{q}”",
      query_image: "图片：{name}",
      query_like: "相似图片：{label}",
      pasted_image: "粘贴的图片",
      searching: "正在搜索…",
      results: "{n} 个结果，用时 {ms} 毫秒",
      results_one: "1 个结果，用时 {ms} 毫秒",
      no_results: "没有结果。请降低最低得分或删除筛选条件。",
      like: "查找相似",
      details: "详细信息",
      score: "得分",
      cosine: "余弦",
      no_preview: "无预览",
      empty_title: "搜索您的照片",
      empty_body: "用中文或英文描述图片，用图片搜索，或在任一结果上点击“查找相似”。",
      drop: "松开鼠标，用这张图片搜索",
      not_image: "该文件不是图片。",
      key_needed: "此服务器需要 API 密钥。",
      key_refused: "API 密钥被拒绝。",
      key_label: "API 密钥",
      key_save: "使用密钥",
      key_forget: "清除密钥",
      read_only: "此 API 密钥为只读，不能建立索引。",
      index_title: "为文件夹或清单建立索引",
      index_source: "来源",
      index_source_ph: "/data/photos 或 /data/photos.csv 或 https://…/manifest.csv",
      index_help: "服务器根目录（clipseek serve --root）内的文件夹或清单（CSV、Parquet、JSON Lines …）。",
      index_collection: "存入图库",
      index_collection_help: "输入新名称即创建新图库。",
      index_labels: "零样本标签（可选）",
      index_labels_ph: "猫, 狗, 汽车, 人",
      index_prune: "删除文件已不存在的记录",
      index_dedup: "跳过完全相同的图片",
      index_start: "开始建立索引",
      jobs: "任务",
      jobs_none: "还没有任务。",
      state_queued: "排队中",
      state_running: "进行中",
      state_done: "已完成",
      state_failed: "失败",
      job_progress: "{done} / {total}",
      job_progress_open: "已完成 {done}",
      job_rate: "每秒 {rate} 张",
      job_eta: "约剩 {eta}",
      job_failed: "{n} 张失败",
      job_started: "开始于 {t}",
      job_open: "打开",
      state_cancelled: "已取消",
      job_report: "新增 {added} · 更新 {updated} · 未变 {unchanged} · 失败 {failed} · {seconds}",
      job_failures: "失败的条目",
      collections: "图库",
      col_name: "名称",
      col_count: "记录数",
      col_model: "模型",
      col_size: "磁盘占用",
      col_last: "上次索引",
      vectors_only: "仅向量（{dim} 维）",
      unavailable: "{name}（不可用）",
      unavailable_why: "不可用：{error}",
    },
  };

  // ---------------------------------------------------------------- state
  const store = {
    get(k) { try { return window.localStorage.getItem(k); } catch (_) { return null; } },
    set(k, v) { try { if (v === null) window.localStorage.removeItem(k); else window.localStorage.setItem(k, v); } catch (_) { /* private mode */ } },
  };

  const S = {
    lang: pickLanguage(),
    key: store.get("clipseek.key"),
    collections: [],
    unavailable: [], // [{name, error}] collections the server lists but cannot open
    collection: null, // name
    info: null, // Info of the current collection
    query: null, // {kind: "text", text} | {kind: "image", file, name, url} | {kind: "id", id, label}
    filters: [], // {field, op, value}
    seen: new Map(), // field -> Set of values seen in results (datalists)
    last: null, // last search answer
    seq: 0, // search sequence: answers of older searches are dropped
    blobs: [], // object URLs of thumbnails fetched with a key
    chipBlob: null, // the object URL of the "more like" record's thumbnail
    jobs: new Map(), // id -> Job
    polling: null,
  };

  function pickLanguage() {
    const saved = store.get("clipseek.lang");
    if (saved === "en" || saved === "zh") return saved;
    const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    return String(langs[0] || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  }

  function t(key, vars) {
    let s = (TEXTS[S.lang] && TEXTS[S.lang][key]) || TEXTS.en[key] || key;
    if (vars) for (const [k, v] of Object.entries(vars)) s = s.split("{" + k + "}").join(String(v));
    return s;
  }

  // ---------------------------------------------------------------- DOM helpers
  const $ = (id) => document.getElementById(id);

  // el("div", {class: "x", text: "..."}, child, ...): every string becomes a text node.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const enc = encodeURIComponent;

  // ---------------------------------------------------------------- API
  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, opts) {
    const headers = { Accept: "application/json" };
    if (S.key) headers.Authorization = "Bearer " + S.key;
    let body;
    if (opts && opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts && opts.form) {
      body = opts.form;
    }
    let r;
    try {
      r = await fetch(path, { method, headers, body, credentials: "same-origin" });
    } catch (e) {
      throw new ApiFailure(0, "network", String(e && e.message ? e.message : e));
    }
    let data = null;
    const type = r.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      try { data = await r.json(); } catch (_) { data = null; }
    }
    if (!r.ok) {
      const err = (data && data.error) || {};
      const failure = new ApiFailure(r.status, err.code || "http_" + r.status, err.message || r.status + " " + r.statusText);
      if (r.status === 401) askForKey(S.key ? t("key_refused") : t("key_needed"));
      throw failure;
    }
    return data;
  }

  const colPath = (name) => "/v1/collections/" + enc(name);
  const thumbPath = (name, id) => colPath(name) + "/records/" + enc(id) + "/thumbnail?size=384";

  // ---------------------------------------------------------------- notices and the key bar
  function notify(message) {
    $("notice-text").textContent = message;
    $("notice").hidden = false;
  }
  function clearNotice() {
    $("notice").hidden = true;
  }
  function report(e) {
    if (e instanceof ApiFailure && e.status === 401) return; // the key bar says it
    if (e instanceof ApiFailure && e.status === 403) notify(t("read_only") + " (" + e.message + ")");
    else notify(e && e.message ? e.message : String(e));
  }

  function askForKey(message) {
    $("key-message").textContent = message;
    $("keybar").hidden = false;
    $("api-key").value = "";
    $("api-key").focus();
  }

  $("keybar").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    S.key = key;
    store.set("clipseek.key", key);
    $("keybar").hidden = true;
    clearNotice();
    loadCollections().then(() => { if (S.query) runSearch(); });
    loadJobs();
  });
  $("key-forget").addEventListener("click", () => {
    S.key = null;
    store.set("clipseek.key", null);
    $("api-key").value = "";
  });
  $("notice-close").addEventListener("click", clearNotice);

  // ---------------------------------------------------------------- language
  function applyLanguage() {
    document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
    for (const node of document.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
    for (const b of document.querySelectorAll(".lang button")) b.classList.toggle("active", b.dataset.lang === S.lang);
    updateThreshold();
    renderInfo();
    renderFilters();
    renderQueryChip();
    if (S.last) renderResults(S.last, false);
    renderJobs();
    renderCollectionTable();
  }
  for (const b of document.querySelectorAll(".lang button")) {
    b.addEventListener("click", () => {
      S.lang = b.dataset.lang;
      store.set("clipseek.lang", S.lang);
      applyLanguage();
    });
  }

  // ---------------------------------------------------------------- views
  function showView() {
    const view = location.hash === "#index" ? "index" : "search";
    $("view-search").hidden = view !== "search";
    $("view-index").hidden = view !== "index";
    $("tab-search").classList.toggle("active", view === "search");
    $("tab-index").classList.toggle("active", view === "index");
    $("tab-search").setAttribute("aria-selected", String(view === "search"));
    $("tab-index").setAttribute("aria-selected", String(view === "index"));
    if (view === "index") {
      if (!$("index-collection").value && S.collection) $("index-collection").value = S.collection;
      loadJobs();
    }
  }
  window.addEventListener("hashchange", showView);

  // ---------------------------------------------------------------- collections
  async function loadCollections(prefer) {
    let data;
    try {
      data = await api("GET", "/v1/collections");
    } catch (e) {
      report(e);
      return;
    }
    S.collections = (data && data.collections) || [];
    S.unavailable = (data && Array.isArray(data.unavailable) && data.unavailable) || [];
    const names = S.collections.map((c) => c.name);
    const wanted = prefer || S.collection || store.get("clipseek.collection");
    const pick = names.includes(wanted) ? wanted : names[0] || null;
    const sel = $("collection");
    sel.replaceChildren(...S.collections.map((c) => el("option", { value: c.name, text: c.name })));
    if (!names.length) sel.append(el("option", { value: "", text: t("no_collections") }));
    // collections the server could not open (damaged, or locked by another process): named, not chosen
    for (const u of S.unavailable) {
      sel.append(el("option", { value: "", disabled: true, title: String(u.error || ""), text: t("unavailable", { name: u.name }) }));
    }
    sel.disabled = !names.length;
    $("collection-names").replaceChildren(...names.map((n) => el("option", { value: n })));
    renderCollectionTable();
    if (pick !== S.collection) setCollection(pick);
    else if (pick) { sel.value = pick; S.info = S.collections.find((c) => c.name === pick) || S.info; renderInfo(); renderFilters(); }
  }

  function setCollection(name) {
    S.collection = name;
    S.info = S.collections.find((c) => c.name === name) || null;
    if (name) store.set("clipseek.collection", name);
    $("collection").value = name || "";
    S.filters = [];
    S.seen = new Map();
    if (S.query && S.query.kind === "id") S.query = null; // an id belongs to the old collection
    renderInfo();
    renderFilters();
    renderQueryChip();
    if (name) refreshInfo();
    if (S.query) runSearch();
    else clearResults();
  }

  async function refreshInfo() {
    const name = S.collection;
    try {
      const info = await api("GET", colPath(name));
      if (name !== S.collection) return;
      S.info = info;
      renderInfo();
      renderFilters();
    } catch (e) {
      report(e);
    }
  }

  $("collection").addEventListener("change", (ev) => setCollection(ev.target.value));

  function renderInfo() {
    const info = S.info;
    const box = $("collection-info");
    if (!info) { box.textContent = ""; return; }
    const model = info.vector_only ? "vectors" : (info.model && (info.model.name || info.model.model_id)) || "";
    box.textContent = t("info", { count: Number(info.count || 0).toLocaleString(S.lang === "zh" ? "zh-CN" : "en"), model });
  }

  function fields() {
    return (S.info && Array.isArray(S.info.fields) ? S.info.fields : []).filter((f) => typeof f === "string" && !f.startsWith("_"));
  }

  // ---------------------------------------------------------------- filters
  function renderFilters() {
    const list = $("filter-list");
    const names = fields();
    $("filters-empty").hidden = names.length > 0;
    $("add-filter").hidden = names.length === 0;
    list.replaceChildren(...S.filters.map((f, i) => filterRow(f, i, names)));
  }

  function filterRow(f, i, names) {
    const fieldSel = el("select", { class: "filter-field", "aria-label": t("field") },
      ...names.map((n) => el("option", { value: n, text: n })));
    fieldSel.value = f.field;
    const opSel = el("select", { class: "filter-op", "aria-label": "op" },
      ...["eq", "in", "gte", "lte"].map((op) => el("option", { value: op, text: t("op_" + op) })));
    opSel.value = f.op;
    const listId = "values-" + i;
    const values = [...(S.seen.get(f.field) || [])].slice(0, 100).sort();
    const datalist = el("datalist", { id: listId }, ...values.map((v) => el("option", { value: v })));
    const input = el("input", {
      class: "filter-value", type: "text", list: listId, value: f.value, spellcheck: "false",
      placeholder: f.op === "in" ? t("value_in") : t("value"), "aria-label": t("value"),
    });
    const remove = el("button", { type: "button", class: "ghost small icon", title: t("remove"), "aria-label": t("remove"), text: "×" });
    fieldSel.addEventListener("change", () => { f.field = fieldSel.value; renderFilters(); searchSoon(); });
    opSel.addEventListener("change", () => { f.op = opSel.value; renderFilters(); searchSoon(); });
    input.addEventListener("change", () => { f.value = input.value; searchSoon(); });
    input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); f.value = input.value; searchSoon(0); } });
    remove.addEventListener("click", () => { S.filters.splice(i, 1); renderFilters(); searchSoon(0); });
    return el("div", { class: "filter-row", dataset: { field: f.field } },
      el("div", { class: "filter-line" }, fieldSel, opSel, remove), input, datalist);
  }

  $("add-filter").addEventListener("click", () => {
    const names = fields();
    if (!names.length) return;
    const used = new Set(S.filters.map((f) => f.field));
    S.filters.push({ field: names.find((n) => !used.has(n)) || names[0], op: "eq", value: "" });
    renderFilters();
    const inputs = $("filter-list").querySelectorAll(".filter-value");
    if (inputs.length) inputs[inputs.length - 1].focus();
  });

  // The filter as JSON (docs/api.md "Filter"): conditions on one field merge into one object.
  function whereJson() {
    const where = {};
    for (const f of S.filters) {
      const raw = String(f.value || "").trim();
      if (!f.field || !raw) continue;
      let cond;
      if (f.op === "in") {
        const items = raw.split(/[,，]/).map((s) => s.trim()).filter(Boolean);
        if (!items.length) continue;
        cond = { in: items };
      } else if (f.op === "eq") {
        cond = { eq: raw };
      } else {
        cond = { [f.op]: raw };
      }
      where[f.field] = Object.assign(where[f.field] || {}, cond);
    }
    return Object.keys(where).length ? where : null;
  }

  // ---------------------------------------------------------------- threshold and top
  function threshold() {
    return Number($("threshold").value);
  }
  function updateThreshold() {
    const v = threshold();
    $("threshold-value").textContent = v > 0 ? v.toFixed(2) : t("threshold_off");
  }
  $("threshold").addEventListener("input", updateThreshold);
  $("threshold").addEventListener("change", () => searchSoon(0));
  $("top").addEventListener("change", () => searchSoon(0));

  // ---------------------------------------------------------------- the query
  function setQuery(q) {
    if (S.query && S.query.kind === "image" && S.query.url && (!q || q.url !== S.query.url)) URL.revokeObjectURL(S.query.url);
    S.query = q;
    if (!q || q.kind !== "text") $("q").value = q && q.kind === "text" ? q.text : "";
    renderQueryChip();
  }

  function renderQueryChip() {
    const q = S.query;
    const chip = $("query-chip");
    chip.hidden = !q || q.kind === "text";
    if (chip.hidden) return;
    const thumb = $("query-thumb");
    if (q.kind === "image") {
      thumb.hidden = false;
      thumb.dataset.id = "";
      thumb.src = q.url;
      $("query-label").textContent = t("query_image", { name: q.name || t("pasted_image") });
    } else {
      thumb.hidden = false;
      if (thumb.dataset.id !== q.id) {
        thumb.removeAttribute("src");
        thumb.dataset.id = q.id;
        loadThumb(thumb, S.collection, q.id, false);
      }
      $("query-label").textContent = t("query_like", { label: q.label || q.id });
    }
  }

  $("query-thumb").addEventListener("error", () => { $("query-thumb").hidden = true; });

  $("query-clear").addEventListener("click", () => {
    setQuery(null);
    clearResults();
    $("q").focus();
  });

  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("q").value.trim();
    if (text) setQuery({ kind: "text", text });
    if (S.query) runSearch();
  });

  function searchWithFile(file) {
    if (!file) return;
    if (!String(file.type || "").startsWith("image/")) {
      notify(t("not_image"));
      return;
    }
    setQuery({ kind: "image", file, name: file.name && file.name !== "image.png" ? file.name : "", url: URL.createObjectURL(file) });
    if (location.hash === "#index") location.hash = "#search";
    runSearch();
  }

  $("upload").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (ev) => {
    const file = ev.target.files && ev.target.files[0];
    ev.target.value = "";
    searchWithFile(file);
  });

  document.addEventListener("paste", (ev) => {
    const items = (ev.clipboardData && ev.clipboardData.files) || [];
    const file = [...items].find((f) => String(f.type).startsWith("image/"));
    if (file) {
      ev.preventDefault();
      searchWithFile(file);
    }
  });

  let dragDepth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...(ev.dataTransfer.types || [])].includes("Files");
  document.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    dragDepth += 1;
    $("drop-overlay").hidden = false;
  });
  document.addEventListener("dragleave", (ev) => {
    if (!hasFiles(ev)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop-overlay").hidden = true;
  });
  document.addEventListener("dragover", (ev) => {
    if (hasFiles(ev)) ev.preventDefault();
  });
  document.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth = 0;
    $("drop-overlay").hidden = true;
    searchWithFile(ev.dataTransfer.files && ev.dataTransfer.files[0]);
  });

  let soon = null;
  function searchSoon(ms) {
    if (!S.query) return;
    clearTimeout(soon);
    soon = setTimeout(runSearch, ms === undefined ? 250 : ms);
  }

  // ---------------------------------------------------------------- search
  async function runSearch() {
    const q = S.query;
    const name = S.collection;
    if (!q || !name) return;
    const seq = ++S.seq;
    const top = Number($("top").value);
    const where = whereJson();
    const thr = threshold();
    $("results").dataset.state = "loading";
    $("status").textContent = t("searching");
    $("status").classList.remove("error");
    clearNotice();
    let answer;
    try {
      if (q.kind === "image") {
        const form = new FormData();
        form.append("file", q.file, q.file.name || "query.png");
        form.append("top", String(top));
        if (where) form.append("where", JSON.stringify(where));
        if (thr > 0) form.append("threshold", String(thr));
        answer = await api("POST", colPath(name) + "/search/image", { form });
      } else {
        const body = { top };
        if (q.kind === "text") body.text = q.text;
        else body.id = q.id;
        if (where) body.where = where;
        if (thr > 0) body.threshold = thr;
        answer = await api("POST", colPath(name) + "/search", { json: body });
      }
    } catch (e) {
      if (seq !== S.seq) return;
      $("results").dataset.state = "error";
      $("status").textContent = e.status === 401 ? t("key_needed") : e.message;
      $("status").classList.add("error");
      return;
    }
    if (seq !== S.seq) return;
    S.last = answer;
    rememberValues(answer.hits || []);
    renderResults(answer, true);
    renderFilters();
  }

  function rememberValues(hits) {
    for (const h of hits) {
      for (const [k, v] of Object.entries(h.metadata || {})) {
        const vals = Array.isArray(v) ? v : [v];
        for (const x of vals) {
          if (typeof x !== "string" && typeof x !== "number" && typeof x !== "boolean") continue;
          const s = String(x);
          if (s.length > 80) continue;
          if (!S.seen.has(k)) S.seen.set(k, new Set());
          const set = S.seen.get(k);
          if (set.size < 200) set.add(s);
        }
      }
    }
  }

  function clearResults() {
    S.last = null;
    S.seq += 1;
    releaseBlobs();
    $("results").replaceChildren();
    $("results").dataset.state = "idle";
    $("status").textContent = "";
    $("empty").hidden = false;
  }

  function releaseBlobs() {
    for (const u of S.blobs) URL.revokeObjectURL(u);
    S.blobs = [];
  }

  function renderResults(answer, fresh) {
    const hits = answer.hits || [];
    releaseBlobs();
    const grid = $("results");
    grid.replaceChildren(...hits.map((h, i) => card(h, i + 1)));
    $("empty").hidden = true;
    const ms = Math.round(Number(answer.took_ms || 0));
    $("status").textContent = hits.length === 0 ? t("no_results") : hits.length === 1 ? t("results_one", { ms }) : t("results", { n: hits.length, ms });
    grid.dataset.state = "done";
    if (fresh) grid.dataset.rendered = String(Number(grid.dataset.rendered || 0) + 1);
  }

  function caption(h) {
    const m = h.metadata || {};
    for (const k of ["caption", "title", "file_name", "name"]) {
      if (typeof m[k] === "string" && m[k].trim()) return m[k];
    }
    const id = String(h.id);
    return id.split(/[\\/]/).pop() || id;
  }

  // bookkeeping-like fields that make poor tags (still listed under Details)
  const PLAIN_FIELDS = new Set(["caption", "title", "name", "file_name", "path", "url", "width", "height", "indexed_at", "sha256", "duplicates", "mtime", "size"]);

  function fmtValue(v) {
    if (v === null || v === undefined) return "";
    if (Array.isArray(v)) return v.map(fmtValue).join(", ");
    if (typeof v === "object") return JSON.stringify(v);
    if (typeof v === "number" && !Number.isInteger(v)) return String(Math.round(v * 10000) / 10000);
    return String(v);
  }

  function card(h, rank) {
    const name = S.collection;
    const img = el("img", { alt: caption(h), loading: "lazy", decoding: "async" });
    const frame = el("div", { class: "thumb" }, img, el("span", { class: "rank", text: "#" + rank }));
    img.addEventListener("error", () => {
      img.remove();
      frame.classList.add("missing");
      frame.prepend(el("span", { class: "missing-text", text: t("no_preview") }));
    });
    loadThumb(img, name, h.id);

    const score = Number(h.score);
    const scoreBadge = el("span", {
      class: "score" + (score >= 0.5 ? " good" : ""),
      title: t("score") + " " + score.toFixed(4) + " · " + t("cosine") + " " + Number(h.cosine).toFixed(4),
      text: score.toFixed(2),
    });

    const meta = Object.entries(h.metadata || {}).filter(([k]) => !k.startsWith("_"));
    // a few short fields as tags on the card; everything is in the details table
    const tags = meta
      .filter(([k, v]) => !PLAIN_FIELDS.has(k) && fmtValue(v).length > 0 && fmtValue(v).length <= 32 && typeof v !== "object")
      .slice(0, 3)
      .map(([k, v]) => el("span", { class: "tag", dataset: { field: k }, title: k + ": " + fmtValue(v) }, el("span", { class: "tag-key", text: k + ":" }), fmtValue(v)));
    const rows = meta.map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: fmtValue(v) })));
    const details = el("details", { class: "meta" },
      el("summary", { text: t("details") }),
      el("table", {}, el("tbody", {}, el("tr", {}, el("th", { text: "id" }), el("td", { class: "mono", text: h.id })), ...rows)));

    const like = el("button", { type: "button", class: "like secondary small", text: t("like") });
    like.addEventListener("click", () => {
      setQuery({ kind: "id", id: h.id, label: caption(h) });
      window.scrollTo({ top: 0, behavior: "smooth" });
      runSearch();
    });

    return el("article", { class: "card", dataset: { id: h.id, rank: String(rank), score: String(h.score) } },
      frame,
      el("div", { class: "card-body" },
        el("div", { class: "card-head" },
          el("h3", { class: "caption", title: caption(h), text: caption(h) }),
          scoreBadge),
        tags.length ? el("div", { class: "tags" }, ...tags) : null,
        details,
        el("div", { class: "card-foot" },
          like,
          el("span", { class: "cosine muted", text: t("cosine") + " " + Number(h.cosine).toFixed(3) }))));
  }

  // Thumbnails come from the record's own route only. Without a key the browser loads them
  // itself (lazily); with a key they are fetched with the Authorization header into blob: URLs.
  function loadThumb(img, name, id, withResults = true) {
    const url = thumbPath(name, id);
    if (!S.key) {
      img.src = url;
      return;
    }
    fetch(url, { headers: { Authorization: "Bearer " + S.key } })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
      .then((b) => {
        if (!String(b.type).startsWith("image/")) throw new Error("not an image");
        const u = URL.createObjectURL(b);
        if (withResults) S.blobs.push(u);
        else {
          if (S.chipBlob) URL.revokeObjectURL(S.chipBlob);
          S.chipBlob = u;
        }
        img.src = u;
      })
      .catch(() => img.dispatchEvent(new Event("error")));
  }

  // ---------------------------------------------------------------- indexing
  $("index-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("index-collection").value.trim();
    const source = $("index-source").value.trim();
    if (!name || !source) return;
    const options = {};
    const labels = $("index-labels").value.split(/[,，]/).map((s) => s.trim()).filter(Boolean);
    if (labels.length) options.labels = labels;
    if ($("index-prune").checked) options.prune = true;
    if ($("index-dedup").checked) options.dedup = "skip";
    const button = $("index-start");
    button.disabled = true;
    clearNotice();
    try {
      const job = await api("POST", colPath(name) + "/index", { json: { source, options } });
      S.jobs.set(job.id, job);
      renderJobs();
      pollJobs();
      if (!S.collections.some((c) => c.name === name)) loadCollections(S.collection || name);
    } catch (e) {
      report(e);
    } finally {
      button.disabled = false;
    }
  });

  async function loadJobs() {
    try {
      const data = await api("GET", "/v1/jobs");
      for (const j of (data && data.jobs) || []) S.jobs.set(j.id, j);
      renderJobs();
      pollJobs();
    } catch (e) {
      if (!(e instanceof ApiFailure && e.status === 404)) report(e);
    }
  }

  const active = (j) => j.state === "queued" || j.state === "running";

  function pollJobs() {
    if (S.polling) return;
    S.polling = setInterval(async () => {
      const running = [...S.jobs.values()].filter(active);
      if (!running.length) {
        clearInterval(S.polling);
        S.polling = null;
        return;
      }
      for (const j of running) {
        try {
          const now = await api("GET", "/v1/jobs/" + enc(j.id));
          S.jobs.set(now.id, now);
          if (!active(now)) jobFinished(now);
        } catch (e) {
          if (e instanceof ApiFailure && e.status === 404) S.jobs.delete(j.id);
        }
      }
      renderJobs();
    }, 700);
  }

  function jobFinished(job) {
    if (job.state !== "done") return;
    loadCollections().then(() => { if (job.collection === S.collection) refreshInfo(); });
  }

  function fmtSeconds(s) {
    s = Math.max(0, Number(s) || 0);
    if (s < 10) return s.toFixed(1) + (S.lang === "zh" ? " 秒" : " s");
    s = Math.round(s);
    if (s < 90) return s + (S.lang === "zh" ? " 秒" : " s");
    const m = Math.round(s / 60);
    return m + (S.lang === "zh" ? " 分钟" : " min");
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString(S.lang === "zh" ? "zh-CN" : "en");
  }

  function renderJobs() {
    const jobs = [...S.jobs.values()].sort((a, b) => String(b.started_at || "").localeCompare(String(a.started_at || "")));
    $("jobs-empty").hidden = jobs.length > 0;
    $("jobs").replaceChildren(...jobs.map(jobCard));
  }

  function jobCard(j) {
    const done = Number(j.done || 0);
    const total = j.total === null || j.total === undefined ? null : Number(j.total);
    const pct = total ? Math.min(100, (done / total) * 100) : j.state === "done" ? 100 : 0;
    const bar = el("div", { class: "progress" + (total === null && active(j) ? " indeterminate" : "") }, el("div", { class: "progress-fill" }));
    bar.firstChild.style.width = pct.toFixed(1) + "%";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", String(total || 0));
    bar.setAttribute("aria-valuenow", String(done));
    const rep = j.report;
    const facts = [total !== null ? t("job_progress", { done, total }) : t("job_progress_open", { done })];
    const summary = !rep || active(j) ? null : el("div", {
      class: "job-report", text: t("job_report", {
        added: rep.added || 0, updated: rep.updated || 0, unchanged: rep.unchanged || 0,
        failed: Array.isArray(rep.failed) ? Number(j.failed || rep.failed.length) : Number(j.failed || 0),
        seconds: fmtSeconds(rep.seconds || 0),
      }),
    });
    if (active(j) && j.rate) facts.push(t("job_rate", { rate: Number(j.rate).toFixed(1) }));
    if (active(j) && j.eta_s !== null && j.eta_s !== undefined) facts.push(t("job_eta", { eta: fmtSeconds(j.eta_s) }));
    if (Number(j.failed || 0) > 0 && !summary) facts.push(t("job_failed", { n: j.failed }));
    const failures = rep && Array.isArray(rep.failed) && rep.failed.length
      ? el("details", { class: "job-failures" },
        el("summary", { text: t("job_failures") + " (" + rep.failed.length + ")" }),
        el("ul", {}, ...rep.failed.slice(0, 100).map((f) =>
          el("li", {}, el("span", { class: "mono", text: String(f.id || f.source || "") }), " ",
            el("span", { class: "badge reason", text: String(f.reason || "") }), " ", String(f.message || "")))))
      : null;
    const open = el("button", { type: "button", class: "ghost small", text: t("job_open") });
    open.addEventListener("click", () => {
      location.hash = "#search";
      if (j.collection !== S.collection) loadCollections(j.collection);
    });
    return el("article", { class: "job", dataset: { id: j.id, state: j.state } },
      el("div", { class: "job-head" },
        el("span", { class: "job-collection", text: j.collection }),
        el("span", { class: "badge state state-" + j.state, text: t("state_" + j.state) }),
        j.state === "done" ? open : null),
      el("div", { class: "job-source mono", title: j.source, text: j.source }),
      bar,
      el("div", { class: "job-facts muted" },
        el("span", { class: "job-progress", text: facts.join(" · ") }),
        j.started_at ? el("span", { text: t("job_started", { t: fmtTime(j.started_at) }) }) : null),
      summary,
      j.error ? el("div", { class: "job-error", text: j.error }) : null,
      failures);
  }

  function fmtBytes(n) {
    n = Number(n || 0);
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : String(n)) + " " + units[i];
  }

  function fmtDate(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString(S.lang === "zh" ? "zh-CN" : "en");
  }

  // The collections overview on the indexing view (a row per collection; a click opens it).
  function renderCollectionTable() {
    const head = el("tr", {}, ...["col_name", "col_count", "col_model", "col_size", "col_last"].map((k) => el("th", { text: t(k) })));
    const rows = S.collections.map((c) => {
      const model = c.vector_only ? t("vectors_only", { dim: c.model && c.model.dim }) : (c.model && (c.model.name || c.model.model_id)) || "";
      const open = el("a", { href: "#search", text: c.name });
      open.addEventListener("click", () => setCollection(c.name));
      return el("tr", { dataset: { name: c.name } },
        el("td", {}, open),
        el("td", { class: "num", text: Number(c.count || 0).toLocaleString(S.lang === "zh" ? "zh-CN" : "en") }),
        el("td", { text: model }),
        el("td", { class: "num", text: fmtBytes(c.disk_bytes) }),
        el("td", { text: fmtDate(c.last_run && c.last_run.finished_at) }));
    });
    for (const u of S.unavailable || []) {
      rows.push(el("tr", { class: "unavailable", dataset: { name: u.name } },
        el("td", { text: u.name }),
        el("td", { colspan: "4", class: "job-error", text: t("unavailable_why", { error: u.error || "" }) })));
    }
    $("collections-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    $("collections-pane").hidden = !rows.length;
  }

  // ---------------------------------------------------------------- start
  applyLanguage();
  showView();
  loadCollections();
  if (location.hash !== "#index") $("q").focus();
})();
