// retouch studio: open a photo, paint a mask, run any operation the server declares, compare
// and download. Wires the page's parts together: the viewport (view.js), the mask
// (mask.js), the operation panel (form.js), the runs and results (runs.js) and the style
// gallery (gallery.js), all over the HTTP API (api.js).

import { Api, ApiError } from "./api.js";
import { OperationForm, humanName } from "./form.js";
import { Gallery } from "./gallery.js";
import { MaskEditor, TINT, valuesFromImageData } from "./mask.js";
import { Runs } from "./runs.js";
import { $, $$, baseName, clamp, debounce, el, imageFromBlob, pixelsOf, saveBlob, toast, typing } from "./util.js";
import { Compare, Viewport } from "./view.js";

const SHORTCUTS = [
  ["B", "brush"],
  ["E", "eraser"],
  ["R / O", "rectangle / ellipse (Shift: square / circle)"],
  ["L / P", "lasso / polygon (Enter or a click on the first corner closes it)"],
  ["G", "fill the enclosed area you click"],
  ["K", "click select (when the server has a point-mask provider)"],
  ["Alt + a tool", "take away instead of add (brush erases, shapes and fill subtract)"],
  ["[ / ]", "brush smaller / bigger"],
  ["Shift + [ / ]", "brush softer / harder"],
  ["Ctrl + Z", "undo"],
  ["Ctrl + Shift + Z, Ctrl + Y", "redo"],
  ["I", "invert the mask"],
  ["Delete", "clear the mask"],
  ["H", "hide / show the mask overlay"],
  ["Wheel", "zoom at the pointer"],
  ["Space + drag, middle drag", "move the image"],
  ["Two fingers", "pinch to zoom, drag to move (touch screens)"],
  ["+ / − / 0 / 1", "zoom in / out / fit / actual pixels"],
  ["Ctrl + Enter", "run the operation (again to queue another run)"],
  ["C (hold)", "see the whole original while comparing"],
  ["Esc", "cancel a shape, leave the comparison, close a dialog"],
  ["Ctrl + O, Ctrl + V", "open a file, paste an image"],
  ["?", "this list"],
];
const TOOL_KEYS = { b: "brush", e: "eraser", r: "rect", o: "ellipse", l: "lasso", p: "polygon", g: "fill", k: "click" };
const SIZE_STEPS = (size) => (size < 10 ? 1 : size < 50 ? 5 : size < 200 ? 10 : 25);

const api = new Api();
const state = {
  image: null, // {blob, name, url, width, height}
  operations: [],
  tool: "brush",
  space: false,
  drag: null,
  pointer: null,
  polygon: null,
  clicks: [],
  clickNegative: false,
  maskVisible: true,
  refine: null,
};

let drawQueued = false; // one overlay repaint per frame
let refineController = null; // the grow/shrink/feather preview in flight

const viewportEl = $("#viewport");
const stageEl = $("#stage");
const imageLayer = $("#image-layer");
const maskLayer = $("#mask-layer");
const previewLayer = $("#preview-layer");
const toolLayer = $("#tool-layer");
const toolCtx = toolLayer.getContext("2d");

const view = new Viewport(viewportEl, stageEl);
const mask = new MaskEditor(maskLayer);
const compare = new Compare({
  layer: $("#compare-layer"),
  before: $("#before-image"),
  after: $("#after-image"),
  handle: $("#compare-handle"),
  slider: $("#compare-slider"),
});
let styleProviders = new Set();
const form = new OperationForm({
  select: $("#operation-select"),
  summary: $("#operation-summary"),
  providerSelect: $("#provider-select"),
  providerNote: $("#provider-note"),
  form: $("#operation-form"),
  hasStyles: (op) => op.providers.some((p) => styleProviders.has(p.name)),
});
const runs = new Runs({
  api,
  strip: $("#results-strip"),
  format: $("#download-format"),
  quality: $("#download-quality"),
});
const gallery = new Gallery({
  api,
  dialog: $("#gallery-dialog"),
  grid: $("#gallery-grid"),
  note: $("#gallery-note"),
  source: async () => {
    if (state.image) {
      const { image } = await imageFromBlob(state.image.blob);
      return { image, width: state.image.width, height: state.image.height, key: state.image.url, label: state.image.name };
    }
    const blob = await (await fetch("studio/sample.jpg")).blob();
    const { image, url } = await imageFromBlob(blob);
    return { image, width: image.naturalWidth, height: image.naturalHeight, key: "sample", label: "the sample photo" };
  },
});
window.studio = { api, state, view, mask, form, runs, gallery, compare };

// --- loading the operations ---------------------------------------------------------------------

async function loadOperations() {
  const message = $("#run-message");
  try {
    try {
      styleProviders = new Set((await api.styles()).map((s) => s.provider));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      styleProviders = new Set(); // an older server: no gallery
    }
    state.operations = await api.operations();
    form.setOperations(state.operations);
    message.textContent = "";
    message.classList.remove("error");
    updateMaskTools();
    document.body.dataset.ready = "true";
  } catch (error) {
    message.textContent = error.message;
    message.classList.add("error");
    if (error instanceof ApiError && error.status === 401) openKeyDialog(error.message);
  }
}

function maskOperation() {
  return state.operations.find((op) => op.name === "mask") ?? null;
}

/** The mask kinds a ready provider makes now (each provider publishes the kinds it makes):
 * drives the subject, refine and click tools. */
function maskKinds() {
  const op = maskOperation();
  if (!op) return new Set();
  const declared = op.fields.find((f) => f.name === "kind")?.choices ?? [];
  const made = new Set();
  for (const provider of op.providers) {
    if (!provider.ready) continue;
    for (const kind of provider.choices?.kind ?? declared) made.add(kind);
  }
  return made;
}

function updateMaskTools() {
  const kinds = maskKinds();
  $("#select-subject").hidden = !kinds.has("subject");
  $("#select-background").hidden = !kinds.has("background");
  const refine = ["grow", "shrink", "feather"].filter((k) => kinds.has(k));
  $(".refine").hidden = refine.length === 0;
  for (const option of $$("#refine-kind option")) option.hidden = !kinds.has(option.value);
  const click = kinds.has("click");
  $("#click-tool").hidden = !click;
  $("#click-row").hidden = !click;
  const negative = maskOperation()?.fields.some((f) => f.name === "negative_points");
  $("#click-negative").hidden = !negative;
  if (!click && state.tool === "click") setTool("brush");
}

// --- the image ------------------------------------------------------------------------------------

async function setImage(blob, name, { keepMask = false } = {}) {
  let loaded;
  try {
    loaded = await imageFromBlob(blob);
  } catch (error) {
    toast(error.message, "error");
    return;
  }
  const { image, url } = loaded;
  const width = image.naturalWidth; // EXIF orientation applied, as the server applies it
  const height = image.naturalHeight;
  const sameSize = state.image && state.image.width === width && state.image.height === height;
  state.image = { blob, name: name || "image.png", url, width, height };
  imageLayer.src = url;
  imageLayer.style.width = `${width}px`;
  imageLayer.style.height = `${height}px`;
  imageLayer.hidden = false;
  if (!(keepMask && sameSize)) mask.reset(width, height);
  cancelRefine();
  state.clicks = [];
  state.polygon = null;
  view.setContent(width, height, { keepView: keepMask && sameSize });
  form.setImage(state.image.name, width, height);
  $("#refine-px").max = String(Math.round(Math.hypot(width, height) / 2));
  $("#empty-state").hidden = true;
  $("#image-info").textContent = `${state.image.name} — ${width} × ${height}`;
  $("#image-info").title = $("#image-info").textContent;
  leaveCompare();
  drawTools();
}

async function openFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    toast(`${file.name} is not an image`, "error");
    return;
  }
  await setImage(file, file.name);
}

async function openSample() {
  const response = await fetch("studio/sample.jpg");
  await setImage(await response.blob(), "astronaut.jpg");
}

$("#open-button").addEventListener("click", () => $("#open-file").click());
$("#empty-open").addEventListener("click", () => $("#open-file").click());
$("#open-file").addEventListener("change", async (event) => {
  await openFile(event.target.files[0]);
  event.target.value = "";
});
$("#sample-button").addEventListener("click", openSample);
$("#empty-sample").addEventListener("click", openSample);

document.addEventListener("dragover", (event) => {
  if (![...(event.dataTransfer?.types ?? [])].includes("Files")) return;
  event.preventDefault();
  $("#drop-hint").hidden = false;
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) $("#drop-hint").hidden = true;
});
document.addEventListener("drop", async (event) => {
  event.preventDefault();
  $("#drop-hint").hidden = true;
  const file = [...(event.dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (file) await openFile(file);
  else toast("drop an image file", "error");
});
document.addEventListener("paste", async (event) => {
  if (typing(event)) return;
  const item = [...(event.clipboardData?.items ?? [])].find((i) => i.type.startsWith("image/"));
  if (!item) return;
  event.preventDefault();
  const file = item.getAsFile();
  await setImage(file, file.name && file.name !== "image.png" ? file.name : "pasted.png");
});

// --- tools ----------------------------------------------------------------------------------------

function setTool(tool) {
  if (tool === "click" && $("#click-tool").hidden) return;
  state.tool = tool;
  state.polygon = null;
  for (const button of $$(".tool")) button.setAttribute("aria-pressed", String(button.dataset.tool === tool));
  if (compare.visible && tool !== "pan") leaveCompare();
  updateCursor();
  drawTools();
}

for (const button of $$(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));

function updateCursor() {
  let cursor = "crosshair";
  if (state.drag?.type === "pan") cursor = "grabbing";
  else if (state.space || state.tool === "pan") cursor = "grab";
  else if (compare.visible) cursor = "ew";
  else if (["brush", "eraser"].includes(state.tool)) cursor = "none";
  else if (state.tool === "click") cursor = "pointer";
  viewportEl.dataset.cursor = cursor;
}

function bindPair(range, number, apply) {
  range.addEventListener("input", () => {
    number.value = range.value;
    apply(Number(range.value));
  });
  number.addEventListener("input", () => {
    if (number.value === "") return;
    const value = clamp(Number(number.value), Number(number.min), Number(number.max));
    range.value = String(value);
    apply(value);
  });
}

function setBrushSize(size) {
  mask.size = clamp(Math.round(size), 1, 500);
  $("#brush-size").value = String(mask.size);
  $("#brush-size-number").value = String(mask.size);
  drawTools();
}

function setHardness(percent) {
  const value = clamp(Math.round(percent), 0, 100);
  mask.hardness = value / 100;
  $("#brush-hardness").value = String(value);
  $("#brush-hardness-number").value = String(value);
  drawTools();
}

bindPair($("#brush-size"), $("#brush-size-number"), setBrushSize);
bindPair($("#brush-hardness"), $("#brush-hardness-number"), setHardness);
setBrushSize(40);
setHardness(80);

function setOverlay(percent) {
  $("#mask-opacity").value = String(percent);
  $("#mask-opacity-value").value = `${percent}%`;
  $("#mask-opacity-value").textContent = `${percent}%`;
  const opacity = state.maskVisible ? percent / 100 : 0;
  maskLayer.style.opacity = String(opacity);
  previewLayer.style.opacity = String(Math.max(opacity, 0.35));
}
$("#mask-opacity").addEventListener("input", (event) => setOverlay(Number(event.target.value)));
setOverlay(55);

// --- pointer --------------------------------------------------------------------------------------

viewportEl.addEventListener("contextmenu", (event) => event.preventDefault());

// Two fingers on a touch screen pinch to zoom and move the picture (a stroke begun by the
// first finger is taken back).
const touches = new Map();

function pinchState() {
  const [a, b] = [...touches.values()];
  return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, distance: Math.hypot(a.x - b.x, a.y - b.y) || 1 };
}

function trackTouch(event) {
  if (event.pointerType !== "touch") return false;
  if (event.type === "pointerdown") touches.set(event.pointerId, view.local(event));
  else if (touches.has(event.pointerId)) touches.set(event.pointerId, view.local(event));
  if (touches.size === 2 && event.type === "pointerdown") {
    if (state.drag?.type === "stroke") mask.cancelStroke();
    state.drag = { type: "pinch", ...pinchState() };
    return true;
  }
  if (state.drag?.type === "pinch" && touches.size === 2 && event.type === "pointermove") {
    const now = pinchState();
    view.zoomTo(view.scale * (now.distance / state.drag.distance), now.x, now.y);
    view.panBy(now.x - state.drag.x, now.y - state.drag.y);
    state.drag = { type: "pinch", ...now };
    return true;
  }
  return state.drag?.type === "pinch";
}

function untrackTouch(event) {
  touches.delete(event.pointerId);
  if (state.drag?.type === "pinch" && touches.size < 2) {
    state.drag = touches.size ? { type: "pinch-end" } : null;
  } else if (state.drag?.type === "pinch-end" && !touches.size) {
    state.drag = null;
  }
}

viewportEl.addEventListener("pointerdown", (event) => {
  if (!state.image) return;
  if (trackTouch(event)) return;
  viewportEl.focus({ preventScroll: true });
  const point = view.toImage(event);
  state.pointer = { ...view.local(event), image: point };
  if (state.space || event.button === 1 || state.tool === "pan") {
    state.drag = { type: "pan", x: event.clientX, y: event.clientY };
  } else if (event.button !== 0) {
    return;
  } else if (compare.visible) {
    state.drag = { type: "compare" };
    moveCompare(point);
  } else {
    const subtract = event.altKey;
    switch (state.tool) {
      case "brush":
      case "eraser":
        cancelRefine();
        mask.beginStroke(point, (state.tool === "eraser") !== subtract);
        state.drag = { type: "stroke" };
        break;
      case "rect":
      case "ellipse":
        state.drag = { type: "shape", start: point, end: point, subtract };
        break;
      case "lasso":
        state.drag = { type: "lasso", points: [point], subtract };
        break;
      case "polygon":
        addPolygonPoint(point, subtract);
        break;
      case "fill":
        cancelRefine();
        mask.floodFill(point.x, point.y, subtract);
        break;
      case "click":
        clickSelect(point, subtract || state.clickNegative);
        break;
      default:
        break;
    }
  }
  if (state.drag) viewportEl.setPointerCapture(event.pointerId);
  updateCursor();
  drawTools();
});

viewportEl.addEventListener("pointermove", (event) => {
  if (!state.image) return;
  if (trackTouch(event)) return;
  const events = event.getCoalescedEvents?.() ?? [event];
  const drag = state.drag;
  if (drag?.type === "pan") {
    view.panBy(event.clientX - drag.x, event.clientY - drag.y);
    drag.x = event.clientX;
    drag.y = event.clientY;
  } else if (drag?.type === "stroke") {
    for (const e of events.length ? events : [event]) mask.extendStroke(view.toImage(e));
  } else if (drag?.type === "shape") {
    drag.end = view.toImage(event);
    drag.square = event.shiftKey;
  } else if (drag?.type === "lasso") {
    for (const e of events.length ? events : [event]) drag.points.push(view.toImage(e));
  } else if (drag?.type === "compare") {
    moveCompare(view.toImage(event));
  }
  state.pointer = { ...view.local(event), image: view.toImage(event) };
  drawTools();
});

function endDrag(event) {
  if (event.pointerType === "touch") {
    const pinching = state.drag?.type?.startsWith("pinch");
    untrackTouch(event);
    if (pinching) return;
  }
  const drag = state.drag;
  state.drag = null;
  if (!drag) return;
  if (drag.type === "stroke") {
    if (event.type === "pointercancel") mask.cancelStroke();
    else mask.endStroke();
  } else if (drag.type === "shape") {
    commitShape(drag);
  } else if (drag.type === "lasso" && drag.points.length > 2) {
    fillPolygon(drag.points, drag.subtract);
  }
  updateCursor();
  drawTools();
}
viewportEl.addEventListener("pointerup", endDrag);
viewportEl.addEventListener("pointercancel", endDrag);
viewportEl.addEventListener("pointerleave", () => {
  if (!state.drag) state.pointer = null;
  drawTools();
});

viewportEl.addEventListener(
  "wheel",
  (event) => {
    if (!state.image) return;
    event.preventDefault();
    const { x, y } = view.local(event);
    const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
    view.zoomBy(Math.exp(-delta * 0.0015), x, y);
  },
  { passive: false },
);

function shapeBox(drag) {
  let { x: x0, y: y0 } = drag.start;
  let { x: x1, y: y1 } = drag.end;
  if (drag.square) {
    const side = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0));
    x1 = x0 + Math.sign(x1 - x0 || 1) * side;
    y1 = y0 + Math.sign(y1 - y0 || 1) * side;
  }
  return { x: Math.min(x0, x1), y: Math.min(y0, y1), w: Math.abs(x1 - x0), h: Math.abs(y1 - y0) };
}

function commitShape(drag) {
  const box = shapeBox(drag);
  if (box.w < 1 || box.h < 1) return;
  cancelRefine();
  const ellipse = state.tool === "ellipse";
  mask.fillShape(
    (ctx) => {
      if (ellipse) ctx.ellipse(box.x + box.w / 2, box.y + box.h / 2, box.w / 2, box.h / 2, 0, 0, Math.PI * 2);
      else ctx.rect(Math.round(box.x), Math.round(box.y), Math.round(box.w), Math.round(box.h));
    },
    box,
    drag.subtract,
  );
}

function fillPolygon(points, subtract) {
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const box = { x: Math.min(...xs), y: Math.min(...ys), w: Math.max(...xs) - Math.min(...xs), h: Math.max(...ys) - Math.min(...ys) };
  cancelRefine();
  mask.fillShape(
    (ctx) => {
      ctx.moveTo(points[0].x, points[0].y);
      for (const p of points.slice(1)) ctx.lineTo(p.x, p.y);
      ctx.closePath();
    },
    box,
    subtract,
  );
}

function addPolygonPoint(point, subtract) {
  if (!state.polygon) {
    state.polygon = { points: [point], subtract };
    return;
  }
  const first = view.toScreen(state.polygon.points[0]);
  const here = view.toScreen(point);
  if (state.polygon.points.length > 2 && Math.hypot(first.x - here.x, first.y - here.y) < 10) {
    closePolygon();
    return;
  }
  state.polygon.points.push(point);
}

function closePolygon() {
  const polygon = state.polygon;
  state.polygon = null;
  if (polygon && polygon.points.length > 2) fillPolygon(polygon.points, polygon.subtract);
  drawTools();
}

viewportEl.addEventListener("dblclick", () => {
  if (state.tool === "polygon") closePolygon();
});

function moveCompare(point) {
  const width = view.width || 1;
  compare.setPosition((point.x / width) * 100);
}

// --- the screen-space overlay: brush ring, shapes in progress, clicked points ---------------------

function drawTools() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    paintTools();
  });
}

function paintTools() {
  const box = viewportEl.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(box.width * ratio);
  const height = Math.round(box.height * ratio);
  if (toolLayer.width !== width || toolLayer.height !== height) {
    toolLayer.width = width;
    toolLayer.height = height;
  }
  const ctx = toolCtx;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, box.width, box.height);
  if (!state.image) return;
  const screen = (p) => view.toScreen(p);
  ctx.lineWidth = 1.5;
  const outline = (draw) => {
    ctx.strokeStyle = "rgba(0,0,0,0.8)";
    ctx.lineWidth = 3;
    draw();
    ctx.stroke();
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1.3;
    draw();
    ctx.stroke();
  };
  const drag = state.drag;
  if (drag?.type === "shape") {
    const b = shapeBox(drag);
    const a = screen({ x: b.x, y: b.y });
    const w = b.w * view.scale;
    const h = b.h * view.scale;
    outline(() => {
      ctx.beginPath();
      if (state.tool === "ellipse") ctx.ellipse(a.x + w / 2, a.y + h / 2, w / 2, h / 2, 0, 0, Math.PI * 2);
      else ctx.rect(a.x, a.y, w, h);
    });
  }
  const path = drag?.type === "lasso" ? drag.points : state.polygon?.points;
  if (path?.length) {
    outline(() => {
      ctx.beginPath();
      const first = screen(path[0]);
      ctx.moveTo(first.x, first.y);
      for (const p of path.slice(1)) {
        const s = screen(p);
        ctx.lineTo(s.x, s.y);
      }
      if (state.polygon && state.pointer) ctx.lineTo(state.pointer.x, state.pointer.y);
    });
    if (state.polygon) {
      for (const p of state.polygon.points) {
        const s = screen(p);
        ctx.fillStyle = "#fff";
        ctx.fillRect(s.x - 3, s.y - 3, 6, 6);
      }
    }
  }
  for (const click of state.clicks) {
    const s = screen(click);
    ctx.beginPath();
    ctx.arc(s.x, s.y, 7, 0, Math.PI * 2);
    ctx.fillStyle = click.negative ? "#ff5a5a" : "#4cd38a";
    ctx.fill();
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.fillStyle = "#000";
    ctx.fillRect(s.x - 4, s.y - 1, 8, 2);
    if (!click.negative) ctx.fillRect(s.x - 1, s.y - 4, 2, 8);
  }
  const pointer = state.pointer;
  if (pointer && !compare.visible && ["brush", "eraser"].includes(state.tool) && !state.space && drag?.type !== "pan") {
    const radius = Math.max(1, (mask.size / 2) * view.scale);
    outline(() => {
      ctx.beginPath();
      ctx.arc(pointer.x, pointer.y, radius, 0, Math.PI * 2);
    });
    if (mask.hardness < 1) {
      const inner = (mask.brushShape().core / 2) * view.scale;
      ctx.setLineDash([3, 3]);
      ctx.strokeStyle = "rgba(255,255,255,0.7)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.arc(pointer.x, pointer.y, Math.max(1, inner), 0, Math.PI * 2);
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }
}

view.addEventListener("change", () => {
  $("#zoom-level").textContent = `${Math.round(view.scale * 100)}%`;
  drawTools();
});

// --- mask actions ---------------------------------------------------------------------------------

const refreshStats = debounce(() => {
  if (!state.image) return;
  const { selected, total, mean } = mask.stats();
  $("#mask-stats").textContent = selected || mean
    ? `Mask: ${((100 * selected) / total).toFixed(1)}% (${selected.toLocaleString()} px)`
    : "Mask: empty";
  form.setMaskAvailable(selected > 0 || mean > 0);
}, 120);

mask.addEventListener("change", () => {
  $("#undo-button").disabled = !mask.canUndo;
  $("#redo-button").disabled = !mask.canRedo;
  refreshStats();
});

function undo() {
  cancelRefine();
  mask.undo();
}

function redo() {
  cancelRefine();
  mask.redo();
}

$("#undo-button").addEventListener("click", undo);
$("#redo-button").addEventListener("click", redo);
$("#invert-button").addEventListener("click", () => {
  if (!state.image) return;
  cancelRefine();
  mask.invert();
});
$("#clear-button").addEventListener("click", () => {
  if (!state.image) return;
  cancelRefine();
  mask.clear();
  state.clicks = [];
  drawTools();
});

/** Mask values at the image's size from a mask image (stretched if it has another size). */
async function maskValuesFrom(blob, { alphaMeansKeep = false } = {}) {
  const { image, url } = await imageFromBlob(blob);
  URL.revokeObjectURL(url);
  const { width, height } = state.image;
  const resized = image.naturalWidth !== width || image.naturalHeight !== height;
  const data = pixelsOf(image, width, height);
  return { ...valuesFromImageData(data, { alphaMeansKeep }), resized, size: [image.naturalWidth, image.naturalHeight] };
}

function imageForm(extra = {}) {
  const body = new FormData();
  body.append("image", state.image.blob, state.image.name);
  for (const [key, value] of Object.entries(extra)) body.append(key, value);
  return body;
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    toast(error.message, "error");
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

for (const kind of ["subject", "background"]) {
  const button = $(`#select-${kind}`);
  button.addEventListener("click", () => {
    if (!state.image) return toast("open an image first", "error");
    return busy(button, async () => {
      const blob = await api.image(`/v1/masks/${kind}`, imageForm());
      const { values } = await maskValuesFrom(blob);
      cancelRefine();
      mask.setValues(values);
    });
  });
}

// Grow, shrink and feather with a live preview made by the server's mask routes.

async function previewRefine() {
  if (!state.image) return;
  if (mask.isEmpty()) {
    toast("paint or select a mask first", "error");
    return;
  }
  refineController?.abort();
  const controller = new AbortController();
  refineController = controller;
  const kind = $("#refine-kind").value;
  const px = $("#refine-px-number").value;
  const body = new FormData();
  body.append("image", state.refine?.source ?? (await mask.toBlob()), "mask.png");
  body.append("px", px);
  try {
    const source = body.get("image");
    const blob = await api.image(`/v1/masks/${kind}`, body, controller.signal);
    if (controller.signal.aborted) return;
    const { values } = await maskValuesFrom(blob);
    showPreview(values, source);
  } catch (error) {
    if (error.name !== "AbortError") toast(error.message, "error");
  }
}

function showPreview(values, source) {
  const { width, height } = state.image;
  previewLayer.width = width;
  previewLayer.height = height;
  previewLayer.style.width = `${width}px`;
  previewLayer.style.height = `${height}px`;
  const image = new ImageData(width, height);
  for (let i = 0; i < values.length; i += 1) {
    const j = i * 4;
    image.data[j] = TINT[0];
    image.data[j + 1] = TINT[1];
    image.data[j + 2] = TINT[2];
    image.data[j + 3] = values[i];
  }
  previewLayer.getContext("2d").putImageData(image, 0, 0);
  previewLayer.hidden = false;
  maskLayer.style.visibility = "hidden";
  state.refine = { values, source };
  $("#refine-apply").disabled = false;
  $("#refine-cancel").disabled = false;
}

function cancelRefine() {
  refineController?.abort();
  refineController = null;
  state.refine = null;
  previewLayer.hidden = true;
  maskLayer.style.visibility = "";
  $("#refine-apply").disabled = true;
  $("#refine-cancel").disabled = true;
}

const livePreview = debounce(() => {
  if (state.refine) previewRefine();
}, 200);
bindPair($("#refine-px"), $("#refine-px-number"), livePreview);
$("#refine-kind").addEventListener("change", livePreview);
$("#refine-preview").addEventListener("click", previewRefine);
$("#refine-cancel").addEventListener("click", cancelRefine);
$("#refine-apply").addEventListener("click", () => {
  const refine = state.refine;
  if (!refine) return;
  cancelRefine();
  mask.setValues(refine.values);
});

// Upload and download of the mask itself.
$("#mask-upload-button").addEventListener("click", () => {
  if (!state.image) return toast("open an image first", "error");
  $("#mask-upload").click();
});
$("#mask-upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file || !state.image) return;
  try {
    const { values, transparent, resized, size } = await maskValuesFrom(file);
    cancelRefine();
    mask.setValues(values);
    const notes = [];
    if (transparent) notes.push("it has transparency, so transparent = change (as OpenAI masks)");
    if (resized) notes.push(`stretched from ${size[0]}×${size[1]} to the image`);
    toast(`Mask loaded${notes.length ? `: ${notes.join("; ")}` : ""}`);
  } catch (error) {
    toast(error.message, "error");
  }
});
$("#mask-download").addEventListener("click", async () => {
  if (!state.image) return toast("open an image first", "error");
  saveBlob(await mask.toBlob(), `${baseName(state.image.name)}-mask.png`);
});

// Click to select, when the server can make a mask from points.
async function clickSelect(point, negative) {
  state.clicks.push({ x: Math.round(point.x), y: Math.round(point.y), negative });
  drawTools();
  const op = maskOperation();
  const list = (clicks) => clicks.map((p) => `${p.x},${p.y}`).join(" ");
  const values = { kind: "click", points: list(state.clicks.filter((p) => !p.negative)) };
  const away = state.clicks.filter((p) => p.negative);
  if (away.length && op.fields.some((f) => f.name === "negative_points")) {
    values.negative_points = list(away);
  }
  const body = imageForm(values);
  try {
    const blob = await api.image("/v1/mask", body);
    const { values } = await maskValuesFrom(blob);
    cancelRefine();
    mask.setValues(values);
  } catch (error) {
    state.clicks.pop();
    drawTools();
    toast(error.message, "error");
  }
}
$("#click-positive").addEventListener("click", () => setClickMode(false));
$("#click-negative").addEventListener("click", () => setClickMode(true));
$("#click-reset").addEventListener("click", () => {
  state.clicks = [];
  drawTools();
});
function setClickMode(negative) {
  state.clickNegative = negative;
  $("#click-positive").setAttribute("aria-pressed", String(!negative));
  $("#click-negative").setAttribute("aria-pressed", String(negative));
  setTool("click");
}

// --- running ----------------------------------------------------------------------------------------

async function run() {
  const message = $("#run-message");
  message.classList.remove("error");
  const fail = (text) => {
    message.textContent = text;
    message.classList.add("error");
  };
  if (!state.image) return fail("Open an image first.");
  const op = form.operation;
  if (!op) return fail("The server lists no operations.");
  if (!op.ready.length) return fail(`No provider can ${op.name} on this server now: see the provider list.`);
  const { operation, fields, files, mask: maskField } = form.collect();
  const painted = maskField?.source === "painted";
  if (painted && mask.isEmpty()) {
    return fail("Paint over the area to change first (or choose the subject as the mask).");
  }
  const image = state.image;
  const maskBlob = painted ? mask.toBlob() : null; // read now: later strokes belong to later runs
  const body = (async () => {
    const data = new FormData();
    data.append("operation", operation);
    data.append("image", image.blob, image.name);
    if (painted) data.append(maskField.name, await maskBlob, "mask.png");
    else if (maskField && maskField.source !== "none") data.append(maskField.name, maskField.source);
    for (const [name, value] of fields) data.append(name, value);
    for (const [name, file] of files) data.append(name, file, file.name);
    return data;
  })();
  message.textContent = "";
  runs.submit({ operation, form: body, input: { ...image }, sent: fields });
}

$("#run-button").addEventListener("click", run);
$("#reset-fields").addEventListener("click", () => form.reset());
form.addEventListener("render", () => {
  const op = form.operation;
  $("#run-button").disabled = !op?.ready.length;
  $("#run-button").textContent = op ? `Run ${humanName(op.name).toLowerCase()}` : "Run";
  $("#run-message").textContent = op && !op.ready.length ? "No provider is ready for this operation." : "";
});
form.addEventListener("maskbox", (event) => {
  const box = state.image ? mask.bounds() : null;
  if (!box) return toast("paint a mask first: its bounding box fills this field", "error");
  event.detail.input.value = box.join(",");
});
form.addEventListener("gallery", (event) => {
  const input = event.detail.input;
  gallery.open({
    current: input.value,
    choose: (style) => {
      input.value = style.style;
      input.title = style.name;
      toast(`Style ${style.index}: ${style.name}`);
    },
  });
});
runs.addEventListener("invalid", (event) => form.markInvalid(event.detail.param));
runs.addEventListener("select", (event) => {
  const { run: chosen, result, auto } = event.detail;
  if (auto && (state.drag || state.polygon || state.refine || runs.active.length)) {
    event.preventDefault(); // painting, or more runs coming: the finished one waits in the strip
    return;
  }
  enterCompare(chosen.input, result);
});
runs.addEventListener("use", async (event) => {
  const { run: chosen, result } = event.detail;
  const name = `${baseName(chosen.input.name)}-${chosen.operation}.png`;
  await setImage(result.blob, name, { keepMask: true });
  toast(`Now editing the result of run ${chosen.number}`);
});
runs.addEventListener("usemask", async (event) => {
  const { result } = event.detail;
  if (!state.image) return;
  const { values, resized } = await maskValuesFrom(result.blob, { alphaMeansKeep: true });
  leaveCompare();
  cancelRefine();
  mask.setValues(values);
  if (resized) toast("the result had another size: stretched to the image", "info");
});

// --- compare ------------------------------------------------------------------------------------------

function enterCompare(input, result) {
  cancelRefine();
  state.polygon = null;
  imageLayer.hidden = true;
  maskLayer.hidden = true;
  compare.show(input.url, result.url, result.width, result.height);
  view.setContent(result.width, result.height, { keepView: true });
  $("#compare-bar").hidden = false;
  $(".optionsbar").classList.add("comparing");
  updateCursor();
  drawTools();
}

function leaveCompare() {
  if (!compare.visible && $("#compare-bar").hidden) return;
  compare.hide();
  compare.hold(false);
  $("#compare-bar").hidden = true;
  $(".optionsbar").classList.remove("comparing");
  imageLayer.hidden = !state.image;
  maskLayer.hidden = false;
  for (const item of $$(".run.selected")) item.classList.remove("selected");
  if (state.image) view.setContent(state.image.width, state.image.height, { keepView: true });
  updateCursor();
  drawTools();
}

$("#compare-close").addEventListener("click", leaveCompare);
const hold = $("#hold-original");
hold.addEventListener("pointerdown", () => compare.hold(true));
for (const type of ["pointerup", "pointerleave", "pointercancel", "blur"]) hold.addEventListener(type, () => compare.hold(false));
hold.addEventListener("keydown", (event) => {
  if (event.key === " " || event.key === "Enter") {
    event.preventDefault();
    compare.hold(true);
  }
});
hold.addEventListener("keyup", () => compare.hold(false));

// --- zoom buttons, panels, dialogs ----------------------------------------------------------------

$("#zoom-in").addEventListener("click", () => view.zoomBy(1.25));
$("#zoom-out").addEventListener("click", () => view.zoomBy(0.8));
$("#zoom-fit").addEventListener("click", () => view.fit());
$("#zoom-actual").addEventListener("click", () => view.zoomTo(1));

for (const toggle of $$(".panel-toggle")) {
  toggle.addEventListener("click", () => {
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    document.getElementById(toggle.getAttribute("aria-controls")).hidden = !open;
  });
}
function showPanels(open) {
  $("#side-panel").classList.toggle("open", open);
  $("#panels-button").setAttribute("aria-expanded", String(open));
  if (open) $("#panels-close").focus();
}
$("#panels-button").addEventListener("click", () => showPanels(!$("#side-panel").classList.contains("open")));
$("#panels-close").addEventListener("click", () => {
  showPanels(false);
  $("#panels-button").focus();
});

$("#shortcut-list").replaceChildren(
  ...SHORTCUTS.flatMap(([keys, what]) => [
    el("dt", {}, ...keys.split(/( \/ |, | \+ )/).map((part) => (/^( \/ |, | \+ )$/.test(part) ? part : el("kbd", {}, part)))),
    el("dd", {}, what),
  ]),
);
$("#help-button").addEventListener("click", () => $("#help-dialog").showModal());

function openKeyDialog(reason = "") {
  $("#api-key").value = api.key;
  $("#api-base").value = api.base === location.origin ? "" : api.base;
  const dialog = $("#key-dialog");
  dialog.dataset.reason = reason;
  if (!dialog.open) dialog.showModal();
  $("#api-key").focus();
}
$("#key-button").addEventListener("click", () => openKeyDialog());
$("#key-dialog").addEventListener("close", () => {
  const choice = $("#key-dialog").returnValue;
  if (choice === "save") {
    api.setBase($("#api-base").value);
    api.setKey($("#api-key").value);
    loadOperations();
  } else if (choice === "forget") {
    api.setKey("");
    loadOperations();
  }
});

// --- keyboard -----------------------------------------------------------------------------------------

function onCanvas(event) {
  const target = event.target;
  return target === document.body || target === viewportEl || target === document.documentElement;
}

document.addEventListener("keydown", (event) => {
  if ($$("dialog[open]").length) return; // the dialog's own keys (Esc closes it)
  const ctrl = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (ctrl && event.key === "Enter") {
    event.preventDefault();
    run();
    return;
  }
  if (typing(event)) return;
  if (ctrl && key === "z") {
    event.preventDefault();
    if (event.shiftKey) redo();
    else undo();
    return;
  }
  if (ctrl && key === "y") {
    event.preventDefault();
    redo();
    return;
  }
  if (ctrl && key === "o") {
    event.preventDefault();
    $("#open-file").click();
    return;
  }
  if (ctrl || event.altKey) return;
  if (event.code === "Space" && (onCanvas(event) || state.pointer)) {
    // over the canvas, Space is for moving the picture (elsewhere it presses buttons)
    event.preventDefault();
    if (!state.space) {
      state.space = true;
      updateCursor();
      drawTools();
    }
    return;
  }
  if (event.code === "BracketLeft" || event.code === "BracketRight") {
    event.preventDefault();
    const sign = event.code === "BracketRight" ? 1 : -1;
    if (event.shiftKey) setHardness(mask.hardness * 100 + sign * 10);
    else setBrushSize(mask.size + sign * SIZE_STEPS(mask.size + (sign < 0 ? -1 : 0)));
    return;
  }
  if (event.key === "?") {
    $("#help-dialog").showModal();
    return;
  }
  if (event.key === "Escape") {
    if (state.polygon) {
      state.polygon = null;
      drawTools();
    } else if (state.refine) {
      cancelRefine();
    } else if (compare.visible) {
      leaveCompare();
    }
    return;
  }
  if (event.key === "Enter" && state.polygon) {
    closePolygon();
    return;
  }
  if (event.key === "Backspace" && state.polygon) {
    state.polygon.points.pop();
    if (!state.polygon.points.length) state.polygon = null;
    drawTools();
    return;
  }
  if (!state.image) return;
  if (TOOL_KEYS[key] && !event.shiftKey) {
    setTool(TOOL_KEYS[key]);
    return;
  }
  switch (event.key) {
    case "i":
    case "I":
      cancelRefine();
      mask.invert();
      break;
    case "Delete":
    case "Backspace":
      cancelRefine();
      mask.clear();
      break;
    case "h":
    case "H":
      state.maskVisible = !state.maskVisible;
      setOverlay(Number($("#mask-opacity").value));
      break;
    case "c":
    case "C":
      if (compare.visible) compare.hold(true);
      break;
    case "+":
    case "=":
      view.zoomBy(1.25);
      break;
    case "-":
    case "_":
      view.zoomBy(0.8);
      break;
    case "0":
      view.fit();
      break;
    case "1":
      view.zoomTo(1);
      break;
    default:
      return;
  }
  event.preventDefault();
});

document.addEventListener("keyup", (event) => {
  if (event.code === "Space" && state.space) {
    state.space = false;
    updateCursor();
    drawTools();
  }
  if (event.key.toLowerCase() === "c") compare.hold(false);
});
window.addEventListener("blur", () => {
  state.space = false;
  compare.hold(false);
  updateCursor();
});

updateCursor();
loadOperations();
