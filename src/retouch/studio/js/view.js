// The viewport: zoom and pan of the stage that holds the image, its mask and the compare view,
// mapping between screen and image pixels.

import { clamp } from "./util.js";

const MIN_SCALE = 0.02;
const MAX_SCALE = 32;
const FIT_MAX = 4; // a small picture is enlarged to paint on, up to this

export class Viewport extends EventTarget {
  constructor(viewport, stage) {
    super();
    this.viewport = viewport;
    this.stage = stage;
    this.scale = 1;
    this.x = 0;
    this.y = 0;
    this.width = 0;
    this.height = 0;
    new ResizeObserver(() => this.changed()).observe(viewport);
  }

  /** The size of what the stage shows, in image pixels; the view fits it. */
  setContent(width, height, { keepView = false } = {}) {
    const same = width === this.width && height === this.height;
    this.width = width;
    this.height = height;
    this.stage.style.width = `${width}px`;
    this.stage.style.height = `${height}px`;
    if (!(keepView && same)) this.fit();
  }

  fit() {
    const box = this.viewport.getBoundingClientRect();
    if (!this.width || !box.width) return;
    const margin = 24;
    const scale = Math.min(
      (box.width - margin) / this.width,
      (box.height - margin) / this.height,
      FIT_MAX,
    );
    this.scale = clamp(scale, MIN_SCALE, MAX_SCALE);
    this.x = (box.width - this.width * this.scale) / 2;
    this.y = (box.height - this.height * this.scale) / 2;
    this.apply();
  }

  /** Zoom to `scale` keeping the point under (cx, cy), in viewport pixels, where it is. */
  zoomTo(scale, cx = undefined, cy = undefined) {
    const box = this.viewport.getBoundingClientRect();
    const px = cx ?? box.width / 2;
    const py = cy ?? box.height / 2;
    const next = clamp(scale, MIN_SCALE, MAX_SCALE);
    this.x = px - ((px - this.x) * next) / this.scale;
    this.y = py - ((py - this.y) * next) / this.scale;
    this.scale = next;
    this.apply();
  }

  zoomBy(factor, cx = undefined, cy = undefined) {
    this.zoomTo(this.scale * factor, cx, cy);
  }

  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.apply();
  }

  apply() {
    this.stage.style.transform = `translate(${this.x}px, ${this.y}px) scale(${this.scale})`;
    this.stage.classList.toggle("pixelated", this.scale >= 2);
    this.stage.style.setProperty("--inverse-zoom", String(1 / this.scale));
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  /** Viewport coordinates (CSS pixels from its top-left) of a pointer event. */
  local(event) {
    const box = this.viewport.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  }

  /** Image coordinates (fractional pixels) of a pointer event. */
  toImage(event) {
    const { x, y } = this.local(event);
    return { x: (x - this.x) / this.scale, y: (y - this.y) / this.scale };
  }

  /** Viewport coordinates of an image point. */
  toScreen(point) {
    return { x: point.x * this.scale + this.x, y: point.y * this.scale + this.y };
  }
}

/** The before/after view of a result: the "before" image clipped at a position (0..100). */
export class Compare {
  constructor({ layer, before, after, handle, slider }) {
    Object.assign(this, { layer, before, after, handle, slider });
    this.position = 50;
    this.holding = false;
    slider.addEventListener("input", () => this.setPosition(Number(slider.value)));
  }

  show(beforeUrl, afterUrl, width, height) {
    for (const image of [this.before, this.after]) {
      image.style.width = `${width}px`;
      image.style.height = `${height}px`;
    }
    this.before.src = beforeUrl;
    this.after.src = afterUrl;
    this.layer.style.width = `${width}px`;
    this.layer.style.height = `${height}px`;
    this.layer.hidden = false;
    this.setPosition(this.position);
  }

  hide() {
    this.layer.hidden = true;
  }

  get visible() {
    return !this.layer.hidden;
  }

  setPosition(position) {
    this.position = clamp(position, 0, 100);
    this.slider.value = String(this.position);
    this.render();
  }

  hold(on) {
    this.holding = on;
    this.render();
  }

  render() {
    const shown = this.holding ? 100 : this.position;
    this.before.style.clipPath = `inset(0 ${100 - shown}% 0 0)`;
    this.handle.style.left = `${shown}%`;
    this.handle.hidden = this.holding;
  }
}
