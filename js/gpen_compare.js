// ComfyUI-GPEN frontend extension: a before/after comparison on the "GPEN Face Restore" node.
//
// The node returns, besides its outputs, a ui dict (see nodes/preview.py):
//   gpen_before / gpen_after: [{filename, subfolder, type}] temp PNGs of one frame
//   gpen_faces: faces found per frame, gpen_frame: [index of the previewed frame], gpen_mode: [mode]
// The frontend passes that dict to onExecuted. We show it in a DOM widget (plain HTML, no canvas
// drawing): the restored frame over the original, split by a handle that follows the pointer.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_TYPE = "GPENFaceRestore";
const WIDGET_NAME = "gpen_compare";

function viewUrl(file) {
  const params = new URLSearchParams({
    filename: file.filename,
    subfolder: file.subfolder ?? "",
    type: file.type ?? "temp",
  });
  const extra = (app.getPreviewFormatParam?.() ?? "") + (app.getRandParam?.() ?? "");
  return api.apiURL(`/view?${params.toString()}${extra}`);
}

export function describeFaces(counts, mode, frame) {
  if (!counts || counts.length === 0) return "";
  const total = counts.reduce((a, b) => a + b, 0);
  if (mode === "aligned") {
    return `${counts.length} aligned face crop${counts.length === 1 ? "" : "s"} restored`;
  }
  const plural = (n) => `${n} face${n === 1 ? "" : "s"}`;
  if (counts.length === 1) return `${plural(total)} found`;
  const none = counts.filter((n) => n === 0).length;
  let text = `${plural(total)} in ${counts.length} frames`;
  if (none > 0) text += `, ${none} frame${none === 1 ? "" : "s"} without a face`;
  if (frame > 0) text += ` (preview: frame ${frame + 1})`;
  return text;
}

function makeCompareElement() {
  const root = document.createElement("div");
  root.className = "gpen-compare";
  Object.assign(root.style, {
    display: "flex", flexDirection: "column", width: "100%", height: "100%",
    boxSizing: "border-box", gap: "4px", fontSize: "12px", color: "var(--input-text, #ddd)",
  });

  const stage = document.createElement("div");
  Object.assign(stage.style, {
    position: "relative", flex: "1 1 auto", minHeight: "0", overflow: "hidden",
    cursor: "ew-resize", background: "rgba(0,0,0,0.25)", borderRadius: "4px",
  });
  const imgStyle = {
    position: "absolute", inset: "0", width: "100%", height: "100%",
    objectFit: "contain", pointerEvents: "none", userSelect: "none",
  };
  const before = document.createElement("img");
  const after = document.createElement("img");
  before.alt = "before";
  after.alt = "after (GPEN)";
  Object.assign(before.style, imgStyle);
  Object.assign(after.style, imgStyle);
  const divider = document.createElement("div");
  Object.assign(divider.style, {
    position: "absolute", top: "0", bottom: "0", width: "2px", marginLeft: "-1px",
    background: "rgba(255,255,255,0.85)", boxShadow: "0 0 3px rgba(0,0,0,0.8)", pointerEvents: "none",
  });
  const label = (text, side) => {
    const el = document.createElement("span");
    el.textContent = text;
    Object.assign(el.style, {
      position: "absolute", top: "4px", [side]: "6px", padding: "1px 5px", borderRadius: "3px",
      background: "rgba(0,0,0,0.55)", color: "#fff", pointerEvents: "none",
    });
    return el;
  };
  const placeholder = document.createElement("div");
  placeholder.textContent = "Run the workflow to compare before / after.";
  Object.assign(placeholder.style, {
    position: "absolute", inset: "0", display: "flex", alignItems: "center",
    justifyContent: "center", opacity: "0.7", textAlign: "center", padding: "8px",
  });
  stage.append(before, after, divider, label("before", "left"), label("after", "right"), placeholder);

  const caption = document.createElement("div");
  caption.className = "gpen-compare-caption";
  Object.assign(caption.style, { flex: "0 0 auto", textAlign: "center", minHeight: "16px" });

  root.append(stage, caption);

  const setSplit = (fraction) => {
    const pct = Math.min(100, Math.max(0, fraction * 100));
    after.style.clipPath = `inset(0 0 0 ${pct}%)`;
    divider.style.left = `${pct}%`;
  };
  setSplit(0.5);
  stage.addEventListener("pointermove", (e) => {
    const r = stage.getBoundingClientRect();
    if (r.width > 0) setSplit((e.clientX - r.left) / r.width);
  });
  stage.addEventListener("pointerleave", () => setSplit(0.5));

  const show = (output) => {
    const b = output?.gpen_before?.[0];
    const a = output?.gpen_after?.[0];
    const hasImages = Boolean(b && a);
    placeholder.style.display = hasImages ? "none" : "flex";
    before.style.display = after.style.display = divider.style.display = hasImages ? "" : "none";
    if (hasImages) {
      before.src = viewUrl(b);
      after.src = viewUrl(a);
    }
    caption.textContent = describeFaces(output?.gpen_faces, output?.gpen_mode?.[0], output?.gpen_frame?.[0] ?? 0);
  };
  show(null);
  return { root, show };
}

app.registerExtension({
  name: "ComfyUI-GPEN.Compare",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_TYPE) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const view = makeCompareElement();
      const widget = this.addDOMWidget(WIDGET_NAME, "gpen-compare", view.root, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => 180,
      });
      widget.serialize = false; // never part of widgets_values or the API prompt
      this.gpenCompare = view;
      this.setSize([Math.max(this.size[0], 340), this.size[1]]);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      this.gpenCompare?.show(output);
    };
  },
});
