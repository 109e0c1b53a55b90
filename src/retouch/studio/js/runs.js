// Runs through the jobs API and this session's results: each run is a card in the strip with a
// progress bar fed by the job's server-sent events and a cancel button; a failed run shows
// the server's message in place; a finished one shows its provider, seed, time and
// parameters, and can be compared, downloaded (PNG as the server made it, or re-encoded to
// WebP or JPEG by the browser) or used as the next input.

import { ApiError } from "./api.js";
import { baseName, canvasToBlob, el, formatSeconds, imageFromBlob, saveBlob } from "./util.js";

const ENDED = ["succeeded", "failed", "cancelled"];
let counter = 0;

export class Runs extends EventTarget {
  constructor({ api, strip, format, quality }) {
    super();
    Object.assign(this, { api, strip, format, quality });
    this.runs = [];
    this.selected = null;
  }

  get active() {
    return this.runs.filter((run) => !ENDED.includes(run.status) && run.status !== "error");
  }

  /** Start a run: `form` is (a promise of) the multipart body, `input` what it was made from.
   * The card comes at once, so runs are numbered in the order they were asked for. */
  submit({ operation, form, input, sent }) {
    counter += 1;
    const run = {
      number: counter,
      operation,
      input,
      sent,
      status: "sending",
      started: performance.now(),
      controller: new AbortController(),
      job: null,
      results: [],
    };
    run.card = this.card(run);
    this.strip.prepend(run.card.root);
    this.runs.push(run);
    this.follow(run, form);
    return run;
  }

  async follow(run, form) {
    try {
      const body = await form;
      if (run.cancelRequested) throw new DOMException("cancelled before it was sent", "AbortError");
      const job = await this.api.createJob(body, {
        signal: run.controller.signal,
        onWait: (seconds) => this.update(run, { status: "waiting", note: `server busy: retrying in ${seconds} s` }),
      });
      run.job = job;
      run.card.root.dataset.job = job.id;
      this.update(run, { status: job.status });
      if (run.cancelRequested) await this.cancel(run);
      let last = job;
      for await (const state of this.api.events(job.id, run.controller.signal)) {
        last = state;
        // The final state is applied below, once its result is in hand.
        const status = ENDED.includes(state.status) ? undefined : state.status;
        this.update(run, { status, progress: state.progress });
      }
      if (last.status === "succeeded") await this.collect(run, last);
      else if (last.status === "failed") this.update(run, { status: "failed", error: last.error?.message ?? "failed" });
      else this.update(run, { status: "cancelled" });
    } catch (error) {
      if (error.name === "AbortError") {
        this.update(run, { status: "cancelled" });
        return;
      }
      const message = error instanceof ApiError || error instanceof Error ? error.message : String(error);
      this.update(run, { status: "failed", error: message });
      if (error instanceof ApiError && error.param) {
        this.dispatchEvent(new CustomEvent("invalid", { detail: { param: error.param, message } }));
      }
    } finally {
      this.dispatchEvent(new Event("change"));
    }
  }

  async collect(run, state) {
    const result = state.result;
    const seconds = (performance.now() - run.started) / 1000;
    for (const [index, image] of result.images.entries()) {
      const blob = await this.api.blob(image.url);
      const { url } = await imageFromBlob(blob);
      run.results.push({
        index,
        blob,
        url,
        width: image.width,
        height: image.height,
        seed: image.seed,
        provider: result.provider,
        model: result.model,
        parameters: result.parameters,
        warnings: result.warnings,
        seconds,
      });
    }
    run.seconds = seconds;
    this.update(run, { status: "succeeded" });
    this.select(run, 0, { auto: true });
  }

  async cancel(run) {
    run.cancelRequested = true;
    if (!run.job) {
      if (run.status === "waiting") run.controller.abort();
      return;
    }
    try {
      // The event stream reports the end; the reply only settles a job that never started.
      const state = await this.api.cancelJob(run.job.id);
      if (state.status === "cancelled") this.update(run, { status: "cancelled" });
    } catch (error) {
      this.update(run, { note: error.message });
    }
  }

  /** Show a result; `auto` (a run that just finished) defers to the user's own work. */
  select(run, index = 0, { auto = false } = {}) {
    const result = run.results[index];
    if (!result) return;
    const event = new CustomEvent("select", { detail: { run, result, auto }, cancelable: true });
    if (!this.dispatchEvent(event)) return;
    for (const other of this.runs) other.card.root.classList.toggle("selected", other === run);
    this.selected = { run, result };
  }

  update(run, { status, progress, error, note } = {}) {
    // An ended run stays ended: answers can arrive out of order (a cancel's reply, taken
    // while the work still ran, may come after the event stream's final state).
    if (status && !ENDED.includes(run.status)) run.status = status;
    const card = run.card;
    card.root.dataset.status = run.status;
    const active = !ENDED.includes(run.status);
    card.progress.hidden = !active;
    card.cancel.hidden = !active;
    if (progress && progress.total) {
      card.progress.max = progress.total;
      card.progress.value = progress.step;
      card.progress.title = `${progress.stage}: ${progress.step} of ${progress.total}`;
    } else if (run.status === "running" && !progress) {
      card.progress.removeAttribute("value"); // a provider that reports no steps
    }
    const words = {
      sending: "sending…",
      waiting: "waiting for the server",
      queued: "queued",
      running: "running",
      succeeded: "done",
      failed: "failed",
      cancelled: "cancelled",
    };
    card.state.textContent = note ?? (progress?.stage && active ? `${words[run.status]}: ${progress.stage}` : words[run.status] ?? run.status);
    if (error) {
      card.error.textContent = error;
      card.error.hidden = false;
    }
    if (run.status === "succeeded") this.fill(run);
  }

  card(run) {
    const title = el("p", { class: "run-title" }, `${run.number}. ${run.operation}`);
    const state = el("p", { class: "run-meta run-state" }, "sending…");
    const progress = el("progress", { "aria-label": `Progress of run ${run.number}` });
    const thumb = el("button", {
      type: "button",
      class: "run-thumb",
      "aria-label": `Compare run ${run.number} with its input`,
      disabled: true,
    });
    const inputThumb = el("img", { src: run.input.url, alt: "" });
    thumb.append(inputThumb);
    const error = el("p", { class: "run-error", role: "alert", hidden: true });
    const cancel = el("button", { type: "button", class: "run-cancel", "aria-label": `Cancel run ${run.number}` }, "Cancel");
    cancel.addEventListener("click", () => this.cancel(run));
    const actions = el("div", { class: "run-actions" }, cancel);
    const root = el(
      "li",
      { class: "run", dataset: { status: "sending", operation: run.operation }, "aria-label": `Run ${run.number}: ${run.operation}` },
      thumb,
      title,
      state,
      progress,
      error,
      actions,
    );
    thumb.addEventListener("click", () => this.select(run, 0));
    return { root, title, state, progress, thumb, error, cancel, actions };
  }

  /** A finished run's card: its first image, what made it, and what can be done with it. */
  fill(run) {
    const card = run.card;
    const first = run.results[0];
    if (card.filled || !first) return;
    card.filled = true;
    card.thumb.disabled = false;
    card.thumb.replaceChildren(el("img", { src: first.url, alt: `Result of run ${run.number}` }));
    const seeds = run.results.map((r) => r.seed).filter((s) => s !== null && s !== undefined);
    card.state.textContent = [
      first.provider,
      seeds.length ? `seed ${seeds.join(", ")}` : null,
      formatSeconds(first.seconds),
      `${first.width}×${first.height}`,
    ]
      .filter(Boolean)
      .join(" · ");
    card.state.title = card.state.textContent;
    const actions = card.actions;
    actions.replaceChildren();
    for (const result of run.results) {
      const suffix = run.results.length > 1 ? ` ${result.index + 1}` : "";
      const buttons = [
        run.results.length > 1
          ? el("button", { type: "button", class: "run-compare", onclick: () => this.select(run, result.index) }, `Compare${suffix}`)
          : null,
        el(
          "button",
          { type: "button", class: "run-use", title: "Continue editing from this result", onclick: () => this.dispatchEvent(new CustomEvent("use", { detail: { run, result } })) },
          `Use as input${suffix}`,
        ),
        el(
          "button",
          { type: "button", class: "run-mask", title: "Take this result as the mask (a cut-out: its transparency; otherwise white = change)", onclick: () => this.dispatchEvent(new CustomEvent("usemask", { detail: { run, result } })) },
          `Use as mask${suffix}`,
        ),
        el("button", { type: "button", class: "run-download", onclick: () => this.download(run, result) }, `Download${suffix}`),
      ];
      actions.append(...buttons.filter(Boolean));
    }
    const parameters = { ...first.parameters, provider: first.provider, model: first.model };
    const rows = Object.entries(parameters)
      .filter(([, value]) => value !== null && value !== undefined && value !== "")
      .flatMap(([key, value]) => [el("dt", {}, key), el("dd", {}, typeof value === "object" ? JSON.stringify(value) : String(value))]);
    if (first.warnings?.length) rows.push(el("dt", {}, "warnings"), el("dd", {}, first.warnings.join("; ")));
    actions.append(el("details", {}, el("summary", { title: "What made this result" }, "Parameters"), el("dl", {}, ...rows)));
  }

  /** PNG as the server made it; WebP or JPEG re-encoded here at the chosen quality. */
  async download(run, result) {
    const format = this.format.value;
    const name = `${baseName(run.input.name)}-${run.operation}${result.seed !== null && result.seed !== undefined ? `-seed${result.seed}` : ""}${run.results.length > 1 ? `-${result.index + 1}` : ""}`;
    if (format === "png") {
      saveBlob(result.blob, `${name}.png`);
      return;
    }
    const { image } = await imageFromBlob(result.blob);
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const ctx = canvas.getContext("2d");
    if (format === "jpeg") {
      ctx.fillStyle = "#fff"; // JPEG has no transparency: a cut-out goes on white
      ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    ctx.drawImage(image, 0, 0);
    const quality = Math.min(100, Math.max(1, Number(this.quality.value) || 92)) / 100;
    const blob = await canvasToBlob(canvas, `image/${format}`, quality);
    saveBlob(blob, `${name}.${format === "jpeg" ? "jpg" : format}`);
  }
}
