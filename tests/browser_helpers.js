// Page-side helpers of tests/test_browser.py, evaluated in the ComfyUI frontend (both 1.35 and 1.49).
// They only read what the frontend shows or call its public app API (app.loadGraphData,
// app.queuePrompt, widget values); they never patch the frontend.
window.__gpen = {
  ready() {
    return !!(window.app && app.graph && app.canvas && window.LiteGraph &&
              LiteGraph.registered_node_types && LiteGraph.registered_node_types.GPENFaceRestore);
  },

  visible(el) {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden";
  },

  // Text of every open dialog (PrimeVue dialogs: missing nodes / missing models in 1.35, templates...).
  dialogs() {
    return Array.from(document.querySelectorAll(".p-dialog")).filter((d) => this.visible(d)).map((d) => d.innerText);
  },

  closeDialogs() {
    for (const d of document.querySelectorAll(".p-dialog")) {
      const close = d.querySelector(".p-dialog-close-button, .p-dialog-header-close, button[aria-label='Close']");
      if (close) close.click();
    }
  },

  clickButton(pattern) {
    const b = this.buttonByText(pattern);
    if (b) b.click();
    return !!b;
  },

  buttonByText(pattern) {
    return Array.from(document.querySelectorAll("button")).find((b) => this.visible(b) && pattern.test(b.innerText.trim()));
  },

  // 1.49 shows load problems as an "N errors found" overlay whose "View details" opens the errors
  // panel (missing node packs, missing models with Download buttons). Returns that panel's text,
  // or "" when the frontend shows no such overlay.
  async errorsPanel(waitMs = 8000) {
    // The missing-model check runs after the load: wait for its overlay (1.49), or for the
    // "Missing Models" dialog, which is how 1.35 shows the same (then there is no panel to read).
    const dialogShown = () => this.dialogs().some((d) => /Missing Models/.test(d));
    let details = this.buttonByText(/^view details$/i);
    for (let t = 0; !details && !dialogShown() && t < waitMs; t += 250) {
      await new Promise((r) => setTimeout(r, 250));
      details = this.buttonByText(/^view details$/i);
    }
    if (!details) return "";
    details.click();
    await new Promise((r) => setTimeout(r, 1500));
    const panel = Array.from(document.querySelectorAll("*")).filter(
      (e) => this.visible(e) && /Errors? detected/.test(e.innerText || "") && e.innerText.length < 5000);
    panel.sort((a, b) => a.innerText.length - b.innerText.length);
    const smallest = panel.find((e) => /Missing|Resolve/.test(e.innerText)) || panel[0];
    // the panel body: walk up until it holds the sections, not just the summary line
    let el = smallest;
    while (el && el.parentElement && !/Missing (Models|Node)/.test(el.innerText)) el = el.parentElement;
    return el ? el.innerText : "";
  },

  // Whether the errors panel offers a Download button on the row of model file `name`.
  downloadOffered(name) {
    return Array.from(document.querySelectorAll("*")).some((e) => this.visible(e) &&
      e.children.length < 16 && (e.innerText || "").includes(name) && e.innerText.length < 400 &&
      Array.from(e.querySelectorAll("button")).some((b) => /^download$/i.test(b.innerText.trim())));
  },

  async load(workflow) {
    this.closeDialogs();
    await app.loadGraphData(workflow);
    await new Promise((r) => setTimeout(r, 1500));
    return true;
  },

  // What the frontend made of the graph: node types (registered or not), output types, and the
  // serialised widgets with the options the frontend took from the host's node definitions.
  nodes() {
    return app.graph.nodes.map((n) => ({
      id: n.id,
      type: n.type,
      registered: n.type in LiteGraph.registered_node_types,
      outputs: (n.outputs || []).map((o) => o.type),
      widgets: (n.widgets || [])
        .filter((w) => w.serialize !== false && !["button"].includes(w.type) && !String(w.name).startsWith("$$"))
        .map((w) => {
          let values = w.options?.values;
          if (typeof values === "function") values = values(w, n);
          return {name: w.name, type: w.type, value: w.value, values: Array.isArray(values) ? values : null,
                  min: w.options?.min ?? null, max: w.options?.max ?? null};
        }),
    }));
  },

  // Labels of the widget rows the first node of `type` shows in the Nodes 2.0 view (1.49's Vue
  // nodes, where the frontend folds advanced inputs away), our before/after view left out.
  shownWidgetRows(type) {
    const node = this.node(type);
    const el = node && document.querySelector(`[data-node-id="${node.id}"]`);
    if (!el) return null;
    return Array.from(el.querySelectorAll(".lg-node-widget"))
      .filter((w) => this.visible(w) && !w.querySelector(".gpen-compare"))
      .map((w) => w.innerText.trim().split("\n")[0]);
  },

  // Names of the widgets the classic canvas draws on the first node of `type` (our before/after
  // view left out).
  drawnWidgets(type) {
    const node = this.node(type);
    if (!node) return null;
    return (node.widgets || [])
      .filter((w) => w.serialize !== false && !w.hidden)
      .filter((w) => (typeof node.isWidgetVisible === "function" ? node.isWidgetVisible(w) : true))
      .map((w) => w.name);
  },

  // Where the first node of `type` is on the page (CSS pixels, a small margin around it), in the
  // Nodes 2.0 view.
  nodeRect(type, margin = 8) {
    const node = this.node(type);
    const el = node && document.querySelector(`[data-node-id="${node.id}"]`);
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return {x: Math.max(0, r.x - margin), y: Math.max(0, r.y - margin), width: r.width + 2 * margin,
            height: r.height + 2 * margin};
  },

  node(type) {
    return app.graph.nodes.find((n) => n.type === type);
  },

  // Set widget `name` of the first node of `type` as a user picking a value would.
  setWidget(type, name, value) {
    const node = this.node(type);
    const w = node?.widgets?.find((x) => x.name === name);
    if (!w) throw new Error(`no widget ${name} on ${type}`);
    w.value = value;
    w.callback?.(value, app.canvas, node);
    app.graph.setDirtyCanvas(true, true);
    return w.value;
  },

  // The before/after view of js/gpen_compare.js on the restore node.
  compare() {
    const view = this.node("GPENFaceRestore")?.gpenCompare;
    if (!view) return null;
    const imgs = Array.from(view.root.querySelectorAll("img"));
    const caption = view.root.querySelector(".gpen-compare-caption");
    return {
      images: imgs.map((i) => ({alt: i.alt, src: i.getAttribute("src") || "", width: i.naturalWidth,
                                complete: i.complete, shown: i.style.display !== "none"})),
      caption: caption ? caption.textContent : null,
    };
  },

  // Close what covers the canvas: dialogs, toasts, 1.49's error overlay and properties panel.
  async tidy() {
    this.closeDialogs();
    for (const b of document.querySelectorAll(".p-toast-close-button")) b.click();
    const overlays = Array.from(document.querySelectorAll("*")).filter((e) => this.visible(e) &&
      e.innerText && e.innerText.length < 300 && /(errors? found|is missing)/i.test(e.innerText));
    for (const o of overlays) {
      let el = o;
      for (let i = 0; el && i < 5; i++, el = el.parentElement) {
        const close = el.querySelector("button[aria-label='Close']");
        if (close && close.getBoundingClientRect().y > 40) { close.click(); break; }  // not a workflow tab's
      }
    }
    const panelOpen = Array.from(document.querySelectorAll("*")).some((e) => this.visible(e) &&
      e.children.length === 0 && (e.innerText || "").trim() === "Workflow Overview");
    if (panelOpen) document.querySelector("button[aria-label='Toggle properties panel']")?.click();
    await new Promise((r) => setTimeout(r, 500));
    return true;
  },

  // Zoom and pan the canvas so that the nodes (all, or those of `types`) fill `area` (CSS pixels
  // of the page) with a margin; returns the scale used.
  frameInto(area, types = null, maxScale = 1.25) {
    const canvas = app.canvas;
    const nodes = app.graph.nodes.filter((n) => !types || types.includes(n.type));
    const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - title));
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
    const margin = 24;
    const s = Math.min((area.width - 2 * margin) / (x1 - x0), (area.height - 2 * margin) / (y1 - y0), maxScale);
    const c = canvas.canvas.getBoundingClientRect();
    canvas.ds.scale = s;
    canvas.ds.offset = [(area.x - c.x + (area.width - (x1 - x0) * s) / 2) / s - x0,
                        (area.y - c.y + (area.height - (y1 - y0) * s) / 2) / s - y0];
    canvas.setDirty(true, true);
    return s;
  },
};
true;
