// The clusterrpc web console (clusterrpc/console/__init__.py): everything on this page comes
// from the node's XML-RPC methods, and each plugin's form from its metadata alone.
"use strict";

const RPC_PATH = document.querySelector('meta[name="clusterrpc-rpc-path"]').content;

// -- XML-RPC ----------------------------------------------------------------------------------

function escapeXml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function encodeValue(value) {
  if (value === null || value === undefined) return "<nil/>";
  if (typeof value === "boolean") return `<boolean>${value ? 1 : 0}</boolean>`;
  if (typeof value === "number") {
    if (Number.isInteger(value)) {
      return Math.abs(value) < 2 ** 31 ? `<int>${value}</int>` : `<i8>${value}</i8>`;
    }
    return `<double>${value}</double>`;
  }
  if (typeof value === "string") return `<string>${escapeXml(value)}</string>`;
  if (Array.isArray(value)) {
    return `<array><data>${value.map((item) => `<value>${encodeValue(item)}</value>`).join("")}</data></array>`;
  }
  const members = Object.entries(value).map(
    ([name, item]) => `<member><name>${escapeXml(name)}</name><value>${encodeValue(item)}</value></member>`);
  return `<struct>${members.join("")}</struct>`;
}

function childElements(node) {
  return Array.from(node.childNodes).filter((child) => child.nodeType === Node.ELEMENT_NODE);
}

function decodeValue(valueNode) {
  const [typed] = childElements(valueNode);
  if (typed === undefined) return valueNode.textContent; // <value>text</value> is a string
  const text = typed.textContent;
  switch (typed.localName) {
    case "string": case "dateTime.iso8601": case "base64": return text;
    case "int": case "i4": case "i8": case "i1": case "i2": return Number.parseInt(text, 10);
    case "double": case "float": return Number.parseFloat(text);
    case "boolean": return text.trim() === "1";
    case "nil": return null;
    case "array": {
      const [data] = childElements(typed);
      return data === undefined ? [] : childElements(data).map(decodeValue);
    }
    case "struct": {
      const result = {};
      for (const member of childElements(typed)) {
        const name = childElements(member).find((node) => node.localName === "name");
        const value = childElements(member).find((node) => node.localName === "value");
        result[name.textContent] = decodeValue(value);
      }
      return result;
    }
    default: return text;
  }
}

class Fault extends Error {
  constructor(code, message) {
    super(`fault ${code}: ${message}`);
    this.code = code;
  }
}

async function call(method, ...params) {
  const body = `<?xml version="1.0"?><methodCall><methodName>${escapeXml(method)}</methodName>` +
    `<params>${params.map((param) => `<param><value>${encodeValue(param)}</value></param>`).join("")}</params></methodCall>`;
  const response = await fetch(RPC_PATH, {
    method: "POST", body, credentials: "same-origin",
    headers: { "Content-Type": "text/xml" },
  });
  if (!response.ok) throw new Error(`${method}: HTTP ${response.status}`);
  const doc = new DOMParser().parseFromString(await response.text(), "text/xml");
  const fault = doc.querySelector("methodResponse > fault > value");
  if (fault !== null) {
    const value = decodeValue(fault);
    throw new Fault(value.faultCode, value.faultString);
  }
  return decodeValue(doc.querySelector("methodResponse > params > param > value"));
}

const METHOD_NOT_FOUND = -32601;

// -- building the page --------------------------------------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === undefined || value === null) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

function showPageError(error) {
  const node = document.getElementById("page-error");
  node.textContent = String(error.message || error);
  node.hidden = false;
}

function formatSeconds(seconds) {
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function renderStatus(status) {
  document.getElementById("node-name").textContent = status.name;
  document.title = `clusterrpc ${status.name}`;
  document.getElementById("summary").textContent =
    `node ${status.name} of cluster ${status.cluster}, clusterrpc ${status.version}, ` +
    `up ${formatSeconds(status.uptime)}, pid ${status.pid}, on ${status.addresses.join(", ")}`;
  const election = status.election;
  document.getElementById("leader").textContent =
    election === null ? "no election runs" : (election.leader || "none yet");
  document.getElementById("term").textContent = election === null ? "–" : String(election.term);
  const local = status.local;
  document.getElementById("local").textContent = local === null
    ? "the local API does not run"
    : `${local.clients} client(s) connected; services: ${local.services.join(", ")}`;
  const rows = Object.entries(status.counters).sort(([a], [b]) => a.localeCompare(b))
    .map(([name, value]) => element("tr", {}, element("td", { text: name }),
                                         element("td", { text: String(value) })));
  document.querySelector("#counters tbody").replaceChildren(...rows);
}

async function renderMembers() {
  const body = document.querySelector("#members tbody");
  const note = document.getElementById("members-note");
  let members;
  try {
    members = await call("membership.members");
  } catch (error) {
    if (!(error instanceof Fault) || error.code !== METHOD_NOT_FOUND) throw error;
    body.replaceChildren();
    note.textContent = "membership does not run on this node";
    note.hidden = false;
    return;
  }
  note.hidden = true;
  body.replaceChildren(...members.map((member) => element("tr", { "data-member": member.name },
    element("td", { text: member.self ? `${member.name} (this node)` : member.name }),
    element("td", { class: `state-${member.state}`, text: member.state }),
    element("td", { text: String(member.incarnation) }),
    element("td", { text: member.addresses.join(", ") }),
    element("td", { text: member.last_heard === null ? "–" : member.last_heard.toFixed(1) }))));
}

// -- plugin forms, from metadata ----------------------------------------------------------------

function fieldId(path) {
  return `field-${path.replace(/[^A-Za-z0-9_-]/g, "-")}`;
}

function inputFor(field, value, path, secretsSet) {
  const attributes = { id: fieldId(path), name: path, "data-path": path };
  switch (field.basictype) {
    case "boolean":
      return element("input", { ...attributes, type: "checkbox", checked: value === true });
    case "integer": case "double":
      if (field.specialtype === "duration") {
        return element("input", { ...attributes, type: "text", value: value ?? "" });
      }
      return element("input", {
        ...attributes, type: "number", step: field.basictype === "integer" ? "1" : "any",
        min: field.minimum, max: field.maximum, value: value ?? "",
      });
    case "array": {
      const items = Array.isArray(value) ? value : [];
      const scalar = field.items.basictype !== "struct" && field.items.basictype !== "array";
      const text = scalar ? items.join("\n") : (items.length ? JSON.stringify(items, null, 1) : "");
      const area = element("textarea", { ...attributes, rows: 3 });
      area.value = text;
      area.dataset.items = scalar ? "lines" : "json";
      return area;
    }
    default:
      if (field.secret) {
        const set = secretsSet.includes(field.fieldname);
        return element("input", {
          ...attributes, type: "password", autocomplete: "new-password",
          placeholder: set ? "set (leave empty to keep)" : "not set",
        });
      }
      return element("input", { ...attributes, type: "text", value: value ?? "" });
  }
}

function renderField(field, value, path, secretsSet) {
  const wrapper = element("div", { class: "field", "data-field": path });
  const label = field.label || field.fieldname;
  if (field.basictype === "struct") {
    const set = element("fieldset", {}, element("legend", { text: label }));
    for (const sub of field.fields) {
      set.append(renderField(sub, value ? value[sub.fieldname] : undefined,
                             `${path}.${sub.fieldname}`, []));
    }
    wrapper.append(set);
  } else {
    wrapper.append(element("label", { for: fieldId(path),
                                      text: field.required ? `${label} *` : label }));
    wrapper.append(inputFor(field, value, path, secretsSet));
  }
  const help = [field.short_text, field.specialtype ? `(${field.specialtype})` : ""]
    .filter(Boolean).join(" ");
  if (help) wrapper.append(element("p", { class: "help", text: help }));
  wrapper.append(element("p", { class: "error", "data-error-for": path, role: "alert" }));
  return wrapper;
}

function convertScalar(field, text) {
  if (field.basictype === "integer" || field.basictype === "double") {
    const number = Number(text);
    // Not a number: sent as the text, so the node's validation names the problem.
    if (text.trim() === "" || Number.isNaN(number)) return text;
    if (field.basictype === "integer" && !Number.isInteger(number)) return text;
    return number;
  }
  if (field.basictype === "boolean") return text === "true";
  return text;
}

function readField(field, path, form) {
  if (field.basictype === "struct") {
    const result = {};
    for (const sub of field.fields) {
      const value = readField(sub, `${path}.${sub.fieldname}`, form);
      if (value !== undefined) result[sub.fieldname] = value;
    }
    return Object.keys(result).length ? result : undefined;
  }
  const input = form.querySelector(`[data-path="${CSS.escape(path)}"]`);
  if (field.basictype === "boolean") return input.checked;
  const text = input.value;
  if (text.trim() === "") return undefined; // empty: the default applies, a secret is kept
  if (field.basictype === "array") {
    if (input.dataset.items === "json") {
      try { return JSON.parse(text); } catch { return text; }
    }
    return text.split("\n").map((line) => line.trim()).filter(Boolean)
      .map((line) => convertScalar(field.items, line));
  }
  if (field.specialtype === "duration" && !Number.isNaN(Number(text))) return Number(text);
  return convertScalar(field, text);
}

function clearErrors(form) {
  for (const node of form.querySelectorAll("[data-error-for]")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  form.querySelector(".form-status").textContent = "";
}

function showProblems(form, prefix, problems) {
  const general = [];
  for (const problem of problems) {
    const text = `${problem.message} (expected ${problem.expected})`;
    const slot = form.querySelector(`[data-error-for="${CSS.escape(problem.path)}"]`);
    if (slot === null) {
      general.push(`${problem.path.slice(prefix.length + 1) || "configuration"}: ${text}`);
      continue;
    }
    slot.textContent = text;
    const input = form.querySelector(`[data-path="${CSS.escape(problem.path)}"]`);
    if (input !== null) input.setAttribute("aria-invalid", "true");
  }
  const status = form.querySelector(".form-status");
  status.className = "form-status error";
  status.textContent = general.length ? general.join("; ") : "not applied: see the fields above";
}

async function renderPlugin(row) {
  const [meta, current] = await Promise.all([
    call("system.describePlugin", row.name, "service"),
    call("plugins.configuration", row.name),
  ]);
  const prefix = `plugins.${row.name}`;
  const form = element("form", { class: "plugin", "data-plugin": row.name, novalidate: true },
    element("h3", { text: `${meta.name} ${meta.version}` }),
    element("p", { class: "help", text: meta.short_text }));
  if (meta.fields.length === 0) form.append(element("p", { text: "(takes no configuration)" }));
  for (const field of meta.fields) {
    form.append(renderField(field, current.values[field.fieldname],
                            `${prefix}.${field.fieldname}`, current.secrets_set));
  }
  form.append(element("button", { type: "submit", text: "Apply" }),
              element("p", { class: "form-status", role: "status" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const config = {};
    for (const field of meta.fields) {
      const value = readField(field, `${prefix}.${field.fieldname}`, form);
      if (value !== undefined) config[field.fieldname] = value;
    }
    try {
      const answer = await call("plugins.configure", row.name, config);
      if (!answer.applied) {
        showProblems(form, prefix, answer.problems);
        return;
      }
      const status = form.querySelector(".form-status");
      status.className = "form-status applied";
      status.textContent = answer.changed ? "applied" : "applied (nothing changed)";
      for (const node of form.querySelectorAll('input[type="password"]')) node.value = "";
    } catch (error) {
      showPageError(error);
    }
  });
  return form;
}

async function renderPlugins() {
  const container = document.getElementById("plugins");
  let rows;
  try {
    rows = await call("plugins.list");
  } catch (error) {
    if (!(error instanceof Fault) || error.code !== METHOD_NOT_FOUND) throw error;
    container.replaceChildren(element("p", { text: "this node runs no service plugins" }));
    return;
  }
  const forms = await Promise.all(rows.map(renderPlugin));
  container.replaceChildren(...forms);
  if (forms.length === 0) container.append(element("p", { text: "no service plugin runs" }));
}

async function refreshStatus() {
  renderStatus(await call("node.status"));
  await renderMembers();
}

async function load() {
  try {
    await refreshStatus();
    await renderPlugins();
    document.body.dataset.loaded = "true";
  } catch (error) {
    showPageError(error);
  }
}

document.getElementById("refresh").addEventListener("click", () => {
  refreshStatus().catch(showPageError);
});
load();
