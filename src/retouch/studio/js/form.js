// The operation panel, generated from GET /v1/operations: one control per declared field (and
// per provider option), chosen by the field's type, range and choices, with the declared
// default. Nothing here names an operation or a field of one: a field added to the
// declaration appears with no edit to the page.
//
// Fields a provider must declare support for (`needs_support`) show only when the chosen
// provider honours them (or, with the automatic choice, when a ready provider does); provider
// options only for the providers that take them. Only values the user changed are sent, so
// the server's defaults and checks stay the single source of truth.

import { el } from "./util.js";

const SLIDER_SPAN = 10_000; // past this a slider cannot pick a value: a number box only
let uid = 0;

function niceStep(span) {
  return 10 ** Math.floor(Math.log10(span / 100));
}

function displayDefault(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.length ? JSON.stringify(value) : "";
  return String(value);
}

export function humanName(name) {
  const text = name.replace(/[_-]/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The readiness and support of one operation's providers for a provider choice. */
export function providerScope(operation, providerName) {
  const ready = operation.providers.filter((p) => p.ready);
  const chosen = providerName ? operation.providers.filter((p) => p.name === providerName) : ready;
  return {
    ready,
    chosen,
    honours: new Set(chosen.flatMap((p) => p.honours)),
    options: new Set(chosen.flatMap((p) => p.options)),
  };
}

export class OperationForm extends EventTarget {
  constructor({ select, summary, providerSelect, providerNote, form, hasStyles }) {
    super();
    Object.assign(this, { select, summary, providerSelect, providerNote, form, hasStyles });
    this.operations = [];
    this.controls = new Map(); // field name -> {spec, wrap, get(), set(), changed(), input}
    this.diagonal = 2000;
    this.imageLabel = "the picture on the canvas (open one first)";
    this.maskAvailable = false;
    select.addEventListener("change", () => this.render());
    providerSelect.addEventListener("change", () => this.updateVisibility());
  }

  setOperations(operations) {
    const previous = this.select.value;
    this.operations = operations;
    this.select.replaceChildren(
      ...operations.map((op) =>
        el("option", { value: op.name }, `${humanName(op.name)}${op.ready.length ? "" : " (no provider ready)"}`),
      ),
    );
    if (operations.some((op) => op.name === previous)) this.select.value = previous;
    this.render();
  }

  get operation() {
    return this.operations.find((op) => op.name === this.select.value) ?? null;
  }

  choose(name) {
    if (!this.operations.some((op) => op.name === name)) return false;
    this.select.value = name;
    this.render();
    return true;
  }

  /** Every field of the chosen operation as a control. */
  render() {
    const op = this.operation;
    this.controls.clear();
    this.form.replaceChildren();
    if (!op) return;
    this.summary.textContent = op.summary;
    this.renderProviders(op);
    const own = new Set(op.fields.map((spec) => spec.name));
    const specs = [
      ...op.fields.map((spec) => ({ spec, option: false })),
      // an option named as a field of the request is not offered flat (the server does the same)
      ...op.provider_options.filter((spec) => !own.has(spec.name)).map((spec) => ({ spec, option: true })),
    ];
    let optionsTitle = false;
    for (const { spec, option } of specs) {
      if (spec.name === "provider") {
        this.controls.set("provider", this.providerControl(spec));
        continue;
      }
      if (option && !optionsTitle) {
        this.form.append(el("p", { class: "field-group-title" }, "Provider settings"));
        optionsTitle = true;
      }
      const control = this.control(op, spec, option);
      this.controls.set(spec.name, control);
      this.form.append(control.wrap);
    }
    this.updateVisibility();
    this.dispatchEvent(new Event("render"));
  }

  renderProviders(op) {
    const previous = this.providerSelect.value;
    const ready = op.providers.filter((p) => p.ready);
    const auto = ready.length ? `Automatic (${ready.map((p) => p.name).join(", ")})` : "Automatic (none ready)";
    this.providerSelect.replaceChildren(
      el("option", { value: "" }, auto),
      ...op.providers.map((p) =>
        el(
          "option",
          { value: p.name, disabled: !p.ready, title: p.detail || undefined },
          p.ready ? `${p.name} (${p.kind})` : `${p.name}: not ready`,
        ),
      ),
    );
    const keep = op.providers.find((p) => p.name === previous && p.ready);
    this.providerSelect.value = keep ? previous : "";
  }

  providerControl(spec) {
    const input = this.providerSelect;
    input.dataset.field = spec.name;
    input.dataset.kind = spec.type;
    input.title = spec.help;
    return {
      spec,
      wrap: input.closest(".control-row"),
      input,
      get: () => input.value,
      set: (value) => {
        input.value = value ?? "";
      },
      changed: () => input.value !== "",
    };
  }

  renderProviderNote(op) {
    const scope = providerScope(op, this.providerSelect.value);
    const notReady = op.providers.filter((p) => !p.ready);
    const note = this.providerNote;
    note.replaceChildren();
    if (this.providerSelect.value) {
      const chosen = scope.chosen[0];
      note.append(chosen?.detail || "");
    } else if (!scope.ready.length) {
      note.append("No provider can run this now. ");
    }
    if (notReady.length) {
      note.append(
        el(
          "details",
          {},
          el("summary", {}, `${notReady.length} more provider${notReady.length > 1 ? "s" : ""} not ready`),
          el("ul", {}, ...notReady.map((p) => el("li", {}, el("strong", {}, p.name), `: ${p.detail}`))),
        ),
      );
    }
  }

  /** One field's control, by its declared type. */
  control(op, spec, option) {
    const id = `field-${op.name}-${spec.name}-${(uid += 1)}`;
    const helpId = `${id}-help`;
    const fallback = displayDefault(spec.default);
    const wrap = el("div", {
      class: `field kind-${spec.type}${option ? " option" : ""}`,
      dataset: { field: spec.name, kind: spec.type },
      "data-providers": option && spec.providers ? ` ${spec.providers.join(", ")}` : undefined,
    });
    const label = el(
      "label",
      { for: id },
      el("span", {}, humanName(spec.name), spec.required ? " *" : ""),
      fallback && spec.type !== "bool" ? el("span", { class: "field-default" }, `default ${fallback}`) : null,
    );
    const help = el("small", { class: "help", id: helpId }, spec.help);
    const common = { id, "aria-describedby": helpId, dataset: { field: spec.name } };
    let control;
    if (spec.type === "image" && spec.name === "image") {
      const output = el("output", { ...common, class: "current-image" }, this.imageLabel);
      control = { input: output, get: () => null, set: () => {}, changed: () => false };
      wrap.append(label, output, help);
    } else if (spec.type === "image") {
      const input = el("input", { ...common, type: "file", accept: "image/*" });
      control = {
        input,
        get: () => input.files?.[0] ?? null,
        set: (value) => {
          if (!value) input.value = "";
        },
        changed: () => Boolean(input.files?.length),
      };
      wrap.append(label, input, help);
    } else if (spec.type === "mask") {
      const input = el(
        "select",
        common,
        el("option", { value: "painted" }, "The painted mask"),
        el("option", { value: "subject" }, "The subject (made on the server)"),
        el("option", { value: "background" }, "The background (made on the server)"),
        spec.required ? null : el("option", { value: "none" }, "No mask: the whole image"),
      );
      input.value = spec.required || this.maskAvailable ? "painted" : "none";
      input.dataset.auto = "true";
      input.addEventListener("change", () => delete input.dataset.auto);
      control = {
        input,
        get: () => input.value,
        set: (value) => {
          input.value = value ?? (spec.required ? "painted" : "none");
        },
        changed: () => true,
      };
      wrap.append(label, input, help);
    } else if (spec.type === "bool") {
      wrap.classList.add("bool");
      const input = el("input", { ...common, type: "checkbox" });
      input.checked = spec.default === true;
      control = {
        input,
        get: () => input.checked,
        set: (value) => {
          input.checked = value ?? spec.default === true;
        },
        changed: () => input.checked !== (spec.default === true),
      };
      wrap.append(input, label, help);
    } else if (spec.choices?.length) {
      const input = el(
        "select",
        common,
        spec.default === null || spec.default === undefined ? el("option", { value: "" }, "default") : null,
        ...spec.choices.map((choice) => el("option", { value: choice }, choice)),
      );
      input.value = fallback;
      control = this.textual(input, fallback);
      wrap.append(label, input, help);
    } else if (["int", "float"].includes(spec.type)) {
      control = this.numeric(spec, common, label, help, wrap);
    } else {
      const long = spec.type === "options" || /prompt/.test(spec.name);
      const input = long
        ? el("textarea", { ...common, rows: spec.type === "options" ? 2 : 3, maxlength: spec.max_length })
        : el("input", { ...common, type: "text", maxlength: spec.max_length, spellcheck: "false" });
      input.value = fallback;
      if (spec.type === "options") input.placeholder = '{"option": value}';
      else if (spec.type === "ratio") input.placeholder = "16:9 or 1.5";
      else if (spec.type === "box") input.placeholder = "left,top,right,bottom";
      else if (spec.type === "points") input.placeholder = "x,y x,y x,y";
      else if (!spec.required && !fallback) input.placeholder = "default";
      control = this.textual(input, fallback);
      if (spec.type === "box") {
        const pair = el("div", { class: "pair with-button" }, input);
        pair.append(
          el(
            "button",
            {
              type: "button",
              "aria-label": `${humanName(spec.name)}: the box around the painted mask`,
              onclick: () => this.dispatchEvent(new CustomEvent("maskbox", { detail: { input } })),
            },
            "From mask",
          ),
        );
        wrap.append(label, pair, help);
      } else if (spec.name === "style" && this.hasStyles(op)) {
        const pair = el("div", { class: "pair with-button" }, input);
        pair.append(
          el(
            "button",
            {
              type: "button",
              class: "gallery-button",
              onclick: () => this.dispatchEvent(new CustomEvent("gallery", { detail: { input } })),
            },
            "Browse styles",
          ),
        );
        wrap.append(label, pair, help);
      } else {
        wrap.append(label, input, help);
      }
    }
    return { spec, option, wrap, ...control };
  }

  textual(input, fallback) {
    return {
      input,
      get: () => input.value.trim(),
      set: (value) => {
        input.value = value ?? fallback;
      },
      changed: () => input.value.trim() !== fallback,
    };
  }

  /** A number: a slider and a box over the declared range, a box alone otherwise; seed gets a die. */
  numeric(spec, common, label, help, wrap) {
    const integer = spec.type === "int";
    const fallback = displayDefault(spec.default);
    const low = spec.minimum ?? spec.exclusive_minimum;
    const byImage = spec.maximum_by_image === "diagonal";
    const high = byImage ? this.diagonal : spec.maximum;
    const number = el("input", {
      ...common,
      type: "number",
      inputmode: integer ? "numeric" : "decimal",
      min: spec.minimum,
      max: spec.maximum,
      step: integer ? 1 : "any",
      placeholder: fallback ? undefined : spec.name === "seed" ? "random" : "default",
    });
    number.value = fallback;
    let slider = null;
    const ranged = low !== undefined && high !== undefined && high - low <= SLIDER_SPAN && spec.name !== "seed";
    if (ranged) {
      const step = integer ? 1 : niceStep(high - low);
      const sliderLow = spec.exclusive_minimum !== undefined ? low + step : low;
      slider = el("input", {
        type: "range",
        min: sliderLow,
        max: high,
        step,
        "aria-label": `${humanName(spec.name)} slider`,
        dataset: { role: "slider" },
      });
      slider.value = fallback || String(sliderLow);
      slider.classList.toggle("unset", !fallback);
      slider.addEventListener("input", () => {
        number.value = slider.value;
        slider.classList.remove("unset");
      });
      number.addEventListener("input", () => {
        if (number.value !== "") slider.value = number.value;
        slider.classList.toggle("unset", number.value === "");
      });
      if (byImage) wrap.dataset.byImage = "diagonal";
    }
    let row;
    if (spec.name === "seed") {
      const die = el(
        "button",
        {
          type: "button",
          class: "dice",
          "aria-label": "Random seed",
          title: "A random seed (empty: a new one each run)",
          onclick: () => {
            const values = new Uint32Array(1);
            crypto.getRandomValues(values);
            number.value = String(Math.min(values[0], spec.maximum ?? values[0]));
          },
        },
        "🎲",
      );
      row = el("div", { class: "pair with-button" }, number, die);
    } else if (slider) {
      row = el("div", { class: "pair" }, slider, number);
    } else {
      row = number;
    }
    wrap.append(label, row, help);
    return {
      input: number,
      slider,
      get: () => number.value.trim(),
      set: (value) => {
        number.value = value ?? fallback;
        if (slider) slider.value = number.value || slider.min;
      },
      changed: () => number.value.trim() !== "" && Number(number.value) !== Number(fallback === "" ? NaN : fallback),
    };
  }

  /** Field ceilings that scale with the image (feather, grow) follow the open image. */
  setImage(name, width, height) {
    this.imageLabel = `the picture on the canvas: ${name}, ${width} × ${height}`;
    for (const output of this.form.querySelectorAll("output.current-image")) output.textContent = this.imageLabel;
    this.diagonal = Math.max(1, Math.round(Math.hypot(width, height)));
    for (const control of this.controls.values()) {
      if (control.wrap?.dataset?.byImage && control.slider) {
        control.slider.max = String(this.diagonal);
      }
    }
  }

  /** Whether a painted mask exists: masks that are optional default to it then. */
  setMaskAvailable(available) {
    this.maskAvailable = available;
    for (const control of this.controls.values()) {
      if (control.spec.type === "mask" && !control.spec.required && control.input.dataset.auto) {
        control.input.value = available ? "painted" : "none";
      }
    }
  }

  updateVisibility() {
    const op = this.operation;
    if (!op) return;
    const scope = providerScope(op, this.providerSelect.value);
    for (const control of this.controls.values()) {
      if (control.spec.name === "provider") continue;
      const { spec, option } = control;
      const shown = option
        ? scope.options.has(spec.name)
        : spec.required || !spec.needs_support || scope.honours.has(spec.name);
      control.wrap.hidden = !shown;
      control.wrap.dataset.applies = shown ? "true" : "false";
    }
    this.renderProviderNote(op);
    this.dispatchEvent(new Event("visibility"));
  }

  /** The values to send: only fields shown and changed; images and the mask apart. */
  collect() {
    const op = this.operation;
    const fields = [];
    const files = [];
    let mask = null;
    for (const [name, control] of this.controls) {
      if (name === "provider") continue;
      if (control.wrap.hidden) continue;
      const { spec } = control;
      if (spec.type === "image" && name === "image") continue;
      if (spec.type === "mask") {
        mask = { name, source: control.get(), required: spec.required };
        continue;
      }
      if (!control.changed()) continue;
      if (spec.type === "image") files.push([name, control.get()]);
      else fields.push([name, String(control.get())]);
    }
    let provider = this.providerSelect.value;
    if (!provider) {
      // Automatic, but a provider option is set: the first ready provider that takes every
      // option and honours every field set, so the server's choice cannot refuse them.
      const set = new Set(fields.map(([name]) => name));
      const options = op.provider_options.filter((spec) => set.has(spec.name)).map((spec) => spec.name);
      if (options.length) {
        const needs = op.fields.filter((spec) => spec.needs_support && set.has(spec.name)).map((spec) => spec.name);
        const fit = op.providers.find(
          (p) => p.ready && options.every((o) => p.options.includes(o)) && needs.every((n) => p.honours.includes(n)),
        );
        if (fit) provider = fit.name;
      }
    }
    if (provider) fields.push(["provider", provider]);
    return { operation: op.name, fields, files, mask };
  }

  reset() {
    for (const control of this.controls.values()) {
      if (control.spec.name === "provider") continue;
      control.set(null);
      control.input?.classList?.remove("invalid");
    }
    this.providerSelect.value = "";
    this.updateVisibility();
  }

  setValue(name, value) {
    const control = this.controls.get(name);
    if (!control) return false;
    control.set(value);
    control.input.dispatchEvent(new Event("input", { bubbles: true }));
    return true;
  }

  /** Point at the field an error names (`param` of the server's answer). */
  markInvalid(name) {
    for (const control of this.controls.values()) control.input?.classList?.remove("invalid");
    const control = this.controls.get(name);
    if (!control || control.wrap.hidden) return;
    control.input.classList.add("invalid");
    control.input.focus({ preventScroll: false });
  }
}
