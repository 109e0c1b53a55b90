// The style gallery: every built-in style (GET /v1/styles) shown on a small copy of the
// current image, or of the sample photo, so a style is picked by eye. Thumbnails are made by
// the stylize route, two at a time (the server queues the rest), and kept per image.

import { ApiError } from "./api.js";
import { canvasToBlob, el, imageFromBlob, scaledCanvas } from "./util.js";

const THUMB_SIDE = 192;
const PARALLEL = 2;

export class Gallery {
  constructor({ api, dialog, grid, note, source }) {
    Object.assign(this, { api, dialog, grid, note, source });
    this.styles = null;
    this.cache = new Map(); // image key + style -> object URL
    this.generation = 0;
    dialog.addEventListener("close", () => {
      this.generation += 1; // stop making thumbnails nobody looks at
    });
  }

  async list() {
    if (!this.styles) this.styles = await this.api.styles();
    return this.styles;
  }

  /** Open the gallery; `choose(style)` is called with the style picked. */
  async open({ current, choose }) {
    this.dialog.showModal();
    const generation = (this.generation += 1);
    let styles;
    try {
      styles = await this.list();
    } catch (error) {
      this.note.textContent = error.message;
      return;
    }
    if (!styles.length) {
      this.note.textContent = "No provider with built-in styles is installed on the server.";
      this.grid.replaceChildren();
      return;
    }
    const { image, width, height, key, label } = await this.source();
    this.note.textContent = `${styles.length} styles on ${label}; click one to use it.`;
    const tiles = styles.map((style) => {
      const swatch = el("span", { class: "swatch" }, "…");
      const button = el(
        "button",
        {
          type: "button",
          "aria-pressed": String(current === style.style || current === style.name),
          "aria-label": `Style ${style.index}: ${style.name}`,
          dataset: { style: style.style },
          onclick: () => {
            choose(style);
            this.dialog.close();
          },
        },
        swatch,
        el("span", { class: "style-name" }, `${style.index} · ${style.name}`),
      );
      return { style, swatch, item: el("li", {}, button) };
    });
    this.grid.replaceChildren(...tiles.map((t) => t.item));
    const small = await canvasToBlob(scaledCanvas(image, width, height, THUMB_SIDE));
    const queue = [...tiles];
    const worker = async () => {
      while (queue.length && generation === this.generation) {
        const tile = queue.shift();
        await this.thumbnail(tile, small, key);
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
  }

  async thumbnail({ style, swatch }, small, key) {
    const id = `${key}|${style.provider}|${style.style}`;
    let url = this.cache.get(id);
    if (!url) {
      const form = new FormData();
      form.append("image", small, "thumbnail.png");
      form.append("style", style.style);
      form.append("provider", style.provider);
      try {
        const blob = await this.api.image("/v1/stylize", form);
        ({ url } = await imageFromBlob(blob));
        this.cache.set(id, url);
      } catch (error) {
        swatch.textContent = error instanceof ApiError ? error.message : "failed";
        return;
      }
    }
    swatch.replaceChildren(el("img", { src: url, alt: "" }));
  }
}
