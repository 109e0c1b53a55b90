// The mask: one canvas the size of the image whose alpha is the mask (255 = change, 0 = keep,
// grey = partly), shown tinted over the photo. Brush and eraser strokes, shapes, flood fill,
// invert, clear and masks from the server all go through here, each one undoable.
//
// Undo keeps, per step, the mask values of the rectangle the step changed (one byte a pixel),
// so a brush stroke costs its own area, not the image's: at least 100 steps within a budget
// of 512 MB (a full-image step on a 12 MP photo is 12 MB).

import { canvasToBlob } from "./util.js";

export const TINT = [255, 45, 111];
const TINT_CSS = `rgb(${TINT.join(",")})`;
const MAX_STEPS = 100;
const UNDO_BUDGET = 512 * 2 ** 20;

const rectOf = (x0, y0, x1, y1) => ({ x: x0, y: y0, w: x1 - x0, h: y1 - y0 });

export class MaskEditor extends EventTarget {
  constructor(canvas) {
    super();
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.backup = document.createElement("canvas");
    this.backupCtx = this.backup.getContext("2d", { willReadFrequently: true });
    this.strokeCanvas = document.createElement("canvas");
    this.strokeCtx = this.strokeCanvas.getContext("2d");
    this.undoStack = [];
    this.redoStack = [];
    this.size = 40;
    this.hardness = 0.8;
    this.current = null;
  }

  get width() {
    return this.canvas.width;
  }

  get height() {
    return this.canvas.height;
  }

  /** An empty mask of this size; the undo history starts over. */
  reset(width, height) {
    for (const canvas of [this.canvas, this.backup, this.strokeCanvas]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.undoStack = [];
    this.redoStack = [];
    this.current = null;
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  // --- reading and writing mask values -------------------------------------------------------

  full() {
    return rectOf(0, 0, this.width, this.height);
  }

  clip(rect) {
    const x0 = Math.max(0, Math.floor(rect.x));
    const y0 = Math.max(0, Math.floor(rect.y));
    const x1 = Math.min(this.width, Math.ceil(rect.x + rect.w));
    const y1 = Math.min(this.height, Math.ceil(rect.y + rect.h));
    return x1 > x0 && y1 > y0 ? rectOf(x0, y0, x1, y1) : null;
  }

  /** The mask values (0..255) of a rectangle, row by row. */
  values(rect = this.full(), ctx = this.ctx) {
    const data = ctx.getImageData(rect.x, rect.y, rect.w, rect.h).data;
    const out = new Uint8Array(rect.w * rect.h);
    for (let i = 0; i < out.length; i += 1) out[i] = data[i * 4 + 3];
    return out;
  }

  write(rect, values) {
    const image = new ImageData(rect.w, rect.h);
    const data = image.data;
    for (let i = 0; i < values.length; i += 1) {
      const j = i * 4;
      data[j] = TINT[0];
      data[j + 1] = TINT[1];
      data[j + 2] = TINT[2];
      data[j + 3] = values[i];
    }
    this.ctx.putImageData(image, rect.x, rect.y);
  }

  // --- undo ----------------------------------------------------------------------------------

  /** Record a step: the values `rect` held before it (read from `ctx`). */
  record(rect, ctx = this.ctx) {
    this.push(rect, this.values(rect, ctx));
  }

  push(rect, values) {
    this.undoStack.push({ rect, values });
    this.redoStack = [];
    let bytes = this.undoStack.reduce((sum, step) => sum + step.values.length, 0);
    while (this.undoStack.length > MAX_STEPS || (bytes > UNDO_BUDGET && this.undoStack.length > 1)) {
      bytes -= this.undoStack.shift().values.length;
    }
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  undo() {
    this.swap(this.undoStack, this.redoStack);
  }

  redo() {
    this.swap(this.redoStack, this.undoStack);
  }

  swap(from, to) {
    const step = from.pop();
    if (!step) return;
    to.push({ rect: step.rect, values: this.values(step.rect) });
    this.write(step.rect, step.values);
    this.changed();
  }

  // --- brush and eraser ----------------------------------------------------------------------

  /** Width of the hard core and the blur (standard deviation) for the brush's hardness. */
  brushShape() {
    const softness = 1 - this.hardness;
    return {
      core: Math.max(1, this.size * (1 - 0.6 * softness)),
      sigma: this.size * 0.2 * softness,
    };
  }

  beginStroke(point, erase) {
    const { core, sigma } = this.brushShape();
    this.backupCtx.clearRect(0, 0, this.width, this.height);
    this.backupCtx.drawImage(this.canvas, 0, 0);
    const ctx = this.strokeCtx;
    ctx.clearRect(0, 0, this.width, this.height);
    ctx.strokeStyle = TINT_CSS;
    ctx.fillStyle = TINT_CSS;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = core;
    this.current = { erase, core, sigma, last: point, pad: core / 2 + 3 * sigma + 2, bounds: null };
    ctx.beginPath();
    ctx.arc(point.x, point.y, core / 2, 0, Math.PI * 2);
    ctx.fill();
    this.touch(point, point);
  }

  extendStroke(point) {
    const stroke = this.current;
    if (!stroke) return;
    const ctx = this.strokeCtx;
    ctx.beginPath();
    ctx.moveTo(stroke.last.x, stroke.last.y);
    ctx.lineTo(point.x, point.y);
    ctx.stroke();
    this.touch(stroke.last, point);
    stroke.last = point;
  }

  /** Redraw the mask where a segment from a to b changed it. */
  touch(a, b) {
    const stroke = this.current;
    const pad = stroke.pad;
    const rect = this.clip(
      rectOf(
        Math.min(a.x, b.x) - pad,
        Math.min(a.y, b.y) - pad,
        Math.max(a.x, b.x) + pad,
        Math.max(a.y, b.y) + pad,
      ),
    );
    if (!rect) return;
    const bounds = stroke.bounds;
    stroke.bounds = bounds
      ? rectOf(
          Math.min(bounds.x, rect.x),
          Math.min(bounds.y, rect.y),
          Math.max(bounds.x + bounds.w, rect.x + rect.w),
          Math.max(bounds.y + bounds.h, rect.y + rect.h),
        )
      : rect;
    this.composite(rect);
  }

  composite(rect) {
    const { erase, sigma } = this.current;
    const margin = Math.ceil(sigma * 3) + 1;
    const source = this.clip(
      rectOf(rect.x - margin, rect.y - margin, rect.x + rect.w + margin, rect.y + rect.h + margin),
    );
    const ctx = this.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(rect.x, rect.y, rect.w, rect.h);
    ctx.clip();
    ctx.clearRect(rect.x, rect.y, rect.w, rect.h);
    ctx.drawImage(this.backup, rect.x, rect.y, rect.w, rect.h, rect.x, rect.y, rect.w, rect.h);
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    if (sigma > 0.3) ctx.filter = `blur(${sigma}px)`;
    ctx.drawImage(this.strokeCanvas, source.x, source.y, source.w, source.h, source.x, source.y, source.w, source.h);
    ctx.restore();
  }

  endStroke() {
    const stroke = this.current;
    this.current = null;
    if (!stroke?.bounds) return;
    this.record(stroke.bounds, this.backupCtx);
    this.changed();
  }

  cancelStroke() {
    const stroke = this.current;
    this.current = null;
    if (!stroke?.bounds) return;
    const rect = stroke.bounds;
    this.ctx.clearRect(rect.x, rect.y, rect.w, rect.h);
    this.ctx.drawImage(this.backup, rect.x, rect.y, rect.w, rect.h, rect.x, rect.y, rect.w, rect.h);
  }

  // --- shapes, fill, invert, clear -----------------------------------------------------------

  /** Fill a shape (a function that adds its path to a context), or take it away. */
  fillShape(addPath, bounds, subtract) {
    const rect = this.clip(rectOf(bounds.x - 2, bounds.y - 2, bounds.x + bounds.w + 2, bounds.y + bounds.h + 2));
    if (!rect) return;
    this.record(rect);
    const ctx = this.ctx;
    ctx.save();
    ctx.globalCompositeOperation = subtract ? "destination-out" : "source-over";
    ctx.fillStyle = TINT_CSS;
    ctx.beginPath();
    addPath(ctx);
    ctx.fill("evenodd");
    ctx.restore();
    this.changed();
  }

  /** Fill the area connected to (x, y) that is on the same side of 50% as it (Alt: empty it). */
  floodFill(x, y, subtract) {
    const width = this.width;
    const height = this.height;
    const px = Math.floor(x);
    const py = Math.floor(y);
    if (px < 0 || py < 0 || px >= width || py >= height) return;
    const values = this.values();
    const inside = values[py * width + px] >= 128;
    const target = subtract ? 0 : 255;
    if (inside !== Boolean(subtract)) return; // nothing to fill (or to empty) there
    const seen = new Uint8Array(width * height);
    const stack = [px, py];
    let x0 = px;
    let x1 = px;
    let y0 = py;
    let y1 = py;
    const same = (i) => !seen[i] && values[i] >= 128 === inside;
    while (stack.length) {
      const sy = stack.pop();
      const sx = stack.pop();
      let left = sx;
      const row = sy * width;
      if (!same(row + sx)) continue;
      while (left > 0 && same(row + left - 1)) left -= 1;
      let right = sx;
      while (right < width - 1 && same(row + right + 1)) right += 1;
      for (let i = left; i <= right; i += 1) seen[row + i] = 1;
      x0 = Math.min(x0, left);
      x1 = Math.max(x1, right);
      y0 = Math.min(y0, sy);
      y1 = Math.max(y1, sy);
      for (const ny of [sy - 1, sy + 1]) {
        if (ny < 0 || ny >= height) continue;
        const nrow = ny * width;
        let i = left;
        while (i <= right) {
          if (same(nrow + i)) {
            stack.push(i, ny);
            while (i <= right && same(nrow + i)) i += 1;
          } else {
            i += 1;
          }
        }
      }
    }
    const rect = rectOf(x0, y0, x1 + 1, y1 + 1);
    const before = new Uint8Array(rect.w * rect.h);
    const after = new Uint8Array(rect.w * rect.h);
    for (let yy = 0; yy < rect.h; yy += 1) {
      for (let xx = 0; xx < rect.w; xx += 1) {
        const i = (rect.y + yy) * width + rect.x + xx;
        before[yy * rect.w + xx] = values[i];
        after[yy * rect.w + xx] = seen[i] ? target : values[i];
      }
    }
    this.push(rect, before);
    this.write(rect, after);
    this.changed();
  }

  /** Replace every value (a mask from the server, an upload, invert, clear): one step. */
  setValues(values) {
    const rect = this.full();
    this.record(rect);
    this.write(rect, values);
    this.changed();
  }

  invert() {
    const values = this.values();
    for (let i = 0; i < values.length; i += 1) values[i] = 255 - values[i];
    this.setValues(values);
  }

  clear() {
    if (this.isEmpty()) return;
    this.setValues(new Uint8Array(this.width * this.height));
  }

  // --- reading it out ------------------------------------------------------------------------

  stats() {
    const values = this.values();
    let selected = 0;
    let sum = 0;
    for (let i = 0; i < values.length; i += 1) {
      sum += values[i];
      if (values[i] >= 128) selected += 1;
    }
    return { selected, total: values.length, mean: values.length ? sum / values.length / 255 : 0 };
  }

  isEmpty() {
    if (!this.width) return true;
    const values = this.values();
    for (let i = 0; i < values.length; i += 1) if (values[i]) return false;
    return true;
  }

  /** The box holding every non-zero value: [left, top, right, bottom) or null. */
  bounds() {
    const values = this.values();
    const width = this.width;
    let x0 = Infinity;
    let y0 = Infinity;
    let x1 = -1;
    let y1 = -1;
    for (let i = 0; i < values.length; i += 1) {
      if (!values[i]) continue;
      const x = i % width;
      const y = (i - x) / width;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    return x1 < 0 ? null : [x0, y0, x1 + 1, y1 + 1];
  }

  /** The mask as an opaque greyscale PNG (white = change): what the API reads. */
  toBlob(values = this.values()) {
    const canvas = document.createElement("canvas");
    canvas.width = this.width;
    canvas.height = this.height;
    const image = new ImageData(this.width, this.height);
    const data = image.data;
    for (let i = 0; i < values.length; i += 1) {
      const j = i * 4;
      data[j] = data[j + 1] = data[j + 2] = values[i];
      data[j + 3] = 255;
    }
    canvas.getContext("2d").putImageData(image, 0, 0);
    return canvasToBlob(canvas);
  }
}

/** Mask values from a decoded image of the mask's size: white = change, or, when it has any
 * transparency, transparent = change (the server's `mask_from=auto`). */
export function valuesFromImageData(image, { alphaMeansKeep = false } = {}) {
  const data = image.data;
  const out = new Uint8Array(image.width * image.height);
  let transparent = false;
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] < 255) {
      transparent = true;
      break;
    }
  }
  for (let i = 0; i < out.length; i += 1) {
    const j = i * 4;
    if (transparent) {
      out[i] = alphaMeansKeep ? data[j + 3] : 255 - data[j + 3];
    } else {
      out[i] = Math.round(0.299 * data[j] + 0.587 * data[j + 1] + 0.114 * data[j + 2]);
    }
  }
  return { values: out, transparent };
}
