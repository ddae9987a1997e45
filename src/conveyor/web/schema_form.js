// A form generated from a pipeline's options JSON Schema (pydantic output).
// Simple types get real inputs; any shape it does not understand becomes a JSON textarea.
// Only values that differ from the schema's default are sent: the server owns the defaults.

import { h, humanKey, sentence } from "./dom.js";

let uid = 0;
const nextId = () => `opt-${++uid}`;

function resolve(schema, root, depth = 0) {
  if (!schema || typeof schema !== "object" || depth > 8) return schema || {};
  if (schema.$ref) {
    const name = schema.$ref.replace(/^#\/(\$defs|definitions)\//, "");
    const target = (root.$defs || root.definitions || {})[name] || {};
    const { $ref, ...rest } = schema;
    return resolve({ ...target, ...rest }, root, depth + 1);
  }
  return schema;
}

/** Describe a property: {kind, nullable, ...schema}. anyOf [X, null] is an optional X. */
export function describe(schema, root) {
  let s = resolve(schema, root);
  let nullable = false;
  const variants = s.anyOf || s.oneOf;
  if (variants) {
    const real = variants.filter((v) => resolve(v, root).type !== "null");
    nullable = real.length < variants.length;
    if (real.length !== 1) return { ...s, kind: "json", nullable };
    const { anyOf, oneOf, ...outer } = s;
    s = { ...resolve(real[0], root), ...outer };
  }
  if (Array.isArray(s.type)) {
    const types = s.type.filter((t) => t !== "null");
    nullable = nullable || types.length < s.type.length;
    s = { ...s, type: types.length === 1 ? types[0] : s.type };
  }
  let kind = "json";
  if (Array.isArray(s.enum) && s.enum.every((v) => typeof v === "string" || typeof v === "number")) {
    kind = "enum";
  } else if (s.type === "boolean") {
    kind = nullable ? "tristate" : "boolean";
  } else if (s.type === "integer" || s.type === "number") {
    kind = "number";
  } else if (s.type === "string") {
    kind = "string";
  } else if (s.type === "array") {
    const items = resolve(s.items, root);
    if (items && (items.type === "integer" || items.type === "number")) kind = "numberlist";
  } else if (s.type === "object" && s.properties) {
    kind = "object";
  }
  return { ...s, kind, nullable };
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** One field: returns {el, read()} where read() gives {value} or {skip} or {error}. */
function field(name, prop, root, path) {
  const d = describe(prop, root);
  const id = nextId();
  // A $ref'd model's title is its class name ("ImageOptions"): the property name reads better.
  const label = sentence((d.kind === "object" ? null : d.title) || humanKey(name));
  const hasDefault = Object.hasOwn(d, "default");
  const dflt = d.default;
  const hintText = [plain(d.description), rangeHint(d)].filter(Boolean).join(" ");
  const hintId = hintText ? `${id}-hint` : null;
  const hint = hintText ? h("small", { class: "hint", id: hintId }, hintText) : null;
  const errorEl = h("small", { class: "field-error", id: `${id}-err`, "aria-live": "polite" });
  const describedBy = [hintId, `${id}-err`].filter(Boolean).join(" ");
  const wrap = (control, cls = "field") =>
    h("div", { class: cls, dataset: { option: path } },
      h("label", { for: id }, label), control, hint, errorEl);
  const unchanged = (v) => (hasDefault ? same(v, dflt) : v === null || v === undefined);
  const result = (v) => (unchanged(v) ? { skip: true } : { value: v });
  const fail = (msg) => {
    errorEl.textContent = msg;
    return { error: `${label}: ${msg}` };
  };
  const clear = () => { errorEl.textContent = ""; };

  if (d.kind === "object") {
    const sub = objectFields(d, root, path);
    const el = h("details", { class: "field-group", dataset: { option: path } },
      h("summary", {}, label, d.nullable ? h("span", { class: "hint" }, " (optional)") : null),
      h("div", { class: "fields" }, sub.els));
    return {
      el,
      read: () => {
        const r = sub.read();
        if (r.error) return r;
        return Object.keys(r.value).length ? { value: r.value } : { skip: true };
      },
    };
  }
  if (d.kind === "boolean") {
    const input = h("input", { type: "checkbox", id, name: path, checked: dflt === true,
      "aria-describedby": describedBy });
    const el = h("div", { class: "field field-check", dataset: { option: path } },
      input, h("label", { for: id }, label), hint, errorEl);
    return { el, read: () => result(input.checked) };
  }
  if (d.kind === "tristate" || d.kind === "enum") {
    const choices = d.kind === "tristate" ? [true, false] : d.enum;
    const select = h("select", { id, name: path, "aria-describedby": describedBy },
      d.nullable || !hasDefault ? h("option", { value: "" }, "— not set —") : null,
      choices.map((v, i) => h("option", { value: String(i), selected: same(v, dflt) },
        v === true ? "yes" : v === false ? "no" : String(v))));
    return {
      el: wrap(select),
      read: () => result(select.value === "" ? null : choices[Number(select.value)]),
    };
  }
  if (d.kind === "number" || d.kind === "string") {
    const isNum = d.kind === "number";
    const input = h("input", {
      id, name: path, type: isNum ? "number" : "text", "aria-describedby": describedBy,
      value: dflt === null || dflt === undefined ? "" : String(dflt),
      min: isNum ? d.minimum : null, max: isNum ? d.maximum : null,
      step: isNum ? (d.type === "integer" ? "1" : "any") : null,
      maxlength: d.maxLength, placeholder: d.nullable ? "not set" : null,
      inputmode: isNum ? (d.type === "integer" ? "numeric" : "decimal") : null,
      autocomplete: "off",
    });
    return {
      el: wrap(input),
      read: () => {
        clear();
        const raw = input.value.trim();
        if (raw === "") return d.nullable || !hasDefault ? result(null) : { skip: true };
        if (!isNum) return result(input.value);
        const n = Number(raw);
        if (!Number.isFinite(n)) return fail("not a number");
        if (d.type === "integer" && !Number.isInteger(n)) return fail("a whole number, please");
        const bad = outOfRange(n, d);
        if (bad) return fail(bad);
        return result(n);
      },
    };
  }
  if (d.kind === "numberlist") {
    const input = h("input", {
      id, name: path, type: "text", "aria-describedby": describedBy, autocomplete: "off",
      value: Array.isArray(dflt) ? dflt.join(", ") : "", placeholder: "e.g. 1024, 256",
    });
    return {
      el: wrap(input),
      read: () => {
        clear();
        const raw = input.value.trim();
        if (raw === "") return d.nullable || !hasDefault ? result(null) : { skip: true };
        const nums = raw.split(/[\s,;]+/).filter(Boolean).map(Number);
        if (nums.some((n) => !Number.isFinite(n))) return fail("numbers separated by commas");
        const items = resolve(d.items, root) || {};
        for (const n of nums) {
          if (items.type === "integer" && !Number.isInteger(n)) return fail(`${n} is not a whole number`);
          const bad = outOfRange(n, items);
          if (bad) return fail(`${n}: ${bad}`);
        }
        if (d.maxItems !== undefined && nums.length > d.maxItems) return fail(`at most ${d.maxItems} values`);
        if (d.minItems !== undefined && nums.length < d.minItems) return fail(`at least ${d.minItems} value${d.minItems > 1 ? "s" : ""}`);
        return result(nums);
      },
    };
  }
  // Anything else: edit as JSON.
  const area = h("textarea", { id, name: path, rows: "2", class: "mono", spellcheck: "false",
    "aria-describedby": describedBy },
    hasDefault && dflt !== null ? JSON.stringify(dflt) : "");
  return {
    el: wrap(area, "field field-wide"),
    read: () => {
      clear();
      const raw = area.value.trim();
      if (raw === "") return { skip: true };
      try {
        return result(JSON.parse(raw));
      } catch {
        return fail("not valid JSON");
      }
    },
  };
}

/** Docstring-ish text from pydantic: drop reST ``literal`` markers. */
function plain(text) {
  return text ? String(text).replace(/``([^`]*)``/g, "$1") : "";
}

/** Why n is outside the schema's bounds, or "". */
function outOfRange(n, d) {
  if (d.minimum !== undefined && n < d.minimum) return `at least ${d.minimum}`;
  if (d.maximum !== undefined && n > d.maximum) return `at most ${d.maximum}`;
  if (d.exclusiveMinimum !== undefined && n <= d.exclusiveMinimum) return `more than ${d.exclusiveMinimum}`;
  if (d.exclusiveMaximum !== undefined && n >= d.exclusiveMaximum) return `less than ${d.exclusiveMaximum}`;
  return "";
}

function rangeHint(d) {
  if (d.kind === "numberlist") {
    const items = d.items || {};
    if (items.minimum !== undefined && items.maximum !== undefined) return `(each ${items.minimum}–${items.maximum})`;
    return "";
  }
  if (d.kind !== "number") return "";
  const lo = d.minimum ?? d.exclusiveMinimum;
  const hi = d.maximum ?? d.exclusiveMaximum;
  if (lo !== undefined && hi !== undefined) return `(${lo}–${hi})`;
  if (lo !== undefined) return `(≥ ${lo})`;
  if (hi !== undefined) return `(≤ ${hi})`;
  return "";
}

function objectFields(schema, root, prefix = "") {
  // Fields the server marks as not for people (readOnly, x-internal) are left out.
  const visible = Object.entries(schema.properties || {}).filter(([, prop]) =>
    !(prop.readOnly || prop["x-internal"]));
  const fields = visible.map(([name, prop]) =>
    [name, field(name, prop, root, prefix ? `${prefix}.${name}` : name)]);
  return {
    els: fields.map(([, f]) => f.el),
    read: () => {
      const value = {};
      const errors = [];
      for (const [name, f] of fields) {
        const r = f.read();
        if (r.error) errors.push(r.error);
        else if (!r.skip) value[name] = r.value;
      }
      return errors.length ? { error: errors.join("; ") } : { value };
    },
  };
}

/**
 * Build the options form for a schema. Returns {el, read()}; read() gives {value: {...}} (only
 * the changed options) or {error: "..."}.
 */
export function optionsForm(schema) {
  const root = schema || {};
  const s = resolve(root, root);
  if (s.type === "object" && s.properties && Object.keys(s.properties).length === 0) {
    return { el: h("p", { class: "muted" }, "This pipeline takes no options."),
      read: () => ({ value: {} }) };
  }
  if (s.type !== "object" || !s.properties) {
    // Not a plain object schema: one JSON textarea for all options.
    const f = field("options", { title: "Options (JSON object)" }, root, "options");
    return { el: f.el, read: () => {
      const r = f.read();
      return r.skip ? { value: {} } : r;
    } };
  }
  const fields = objectFields(s, root);
  return { el: h("div", { class: "fields" }, fields.els), read: fields.read };
}
