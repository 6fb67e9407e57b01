// The LB's page: what nginx routes to, next to Consul's health, refreshed every second,
// and a "send requests" control that shows which instance answered each request.
//
// It reads two files the LB publishes under /_lab/ (templates/lb):
//   lb.json      written by lb-publish from the configuration nginx runs (an accepted
//                render only): {"upstreams": {service: ["address:port", ...]}, "reloads",
//                "rejected", "reload_failures", "latest_render_refused",
//                "latest_reload_failed", "published"}
//   health.json  consul-template's render of health.ctmpl: {"services": [{"name", "tags",
//                "lb", "instances": [{"id", "node", "address", "port", "status"}]}]}
// and what the spec says of each service (role lb): spec/registration.json, {service:
// "lab" | "registrator"}, who registers its instances;
// and, on a lab with several LBs sharing one address, the answering LB's keepalived state:
//   vrrp.json    {"host", "address", "state", "priority", "since", "lbs": [{"name",
//                "address"}]} (templates/keepalived/vrrp-notify); absent with one LB
"use strict";

const REFRESH_MS = 1000;

const $ = (id) => document.getElementById(id);

async function readJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) {
    const error = new Error(`${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// The services to show: those the LB proxies (Consul's view), and any nginx routes.
function servicesOf(lb, health) {
  const byName = new Map();
  for (const service of (health && health.services) || []) {
    if (service.lb) byName.set(service.name, service);
  }
  for (const name of Object.keys(lb.upstreams)) {
    if (!byName.has(name)) byName.set(name, { name, tags: [], instances: [] });
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderService(service, routed, healthKnown, registration) {
  const card = $("service-card").content.firstElementChild.cloneNode(true);
  card.dataset.service = service.name;
  // Not in the spec (a service registered by hand): nobody the lab names registers it.
  card.dataset.registration = registration || "not in the spec";
  const link = card.querySelector(".service-link");
  link.href = `/${service.name}`;
  link.textContent = `/${service.name}`;
  const members = new Set(routed);
  const rows = new Map(); // address:port -> instance
  for (const instance of service.instances) {
    rows.set(`${instance.address}:${instance.port}`, instance);
  }
  for (const where of members) {
    if (!rows.has(where)) rows.set(where, { id: "?", node: "", status: "not registered" });
  }
  const tags = (service.tags || []).join(", ");
  card.querySelector(".service-summary").textContent =
    `${members.size} of ${rows.size} in nginx's upstream` + (tags ? ` · tags ${tags}` : "") +
    ` · registered by ${card.dataset.registration}`;
  const body = card.querySelector("tbody");
  for (const [where, instance] of [...rows].sort((a, b) => a[1].id.localeCompare(b[1].id))) {
    const row = body.insertRow();
    const status = healthKnown ? instance.status : "unknown";
    const inUpstream = members.has(where);
    Object.assign(row.dataset, {
      instance: instance.id,
      address: where,
      status,
      routed: inUpstream ? "yes" : "no",
    });
    cell(row, instance.id);
    cell(row, where);
    cell(row, instance.node);
    cell(row, status, status === "passing" ? "ok" : "bad");
    cell(row, inUpstream ? "yes" : "no", inUpstream ? "ok" : "off");
  }
  card.querySelector(".empty").hidden = members.size > 0;
  return card;
}

function renderServiceChoice(names) {
  const select = $("send-service");
  const chosen = select.value;
  if ([...select.options].map((o) => o.value).join() === names.join()) return;
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  if (names.includes(chosen)) select.value = chosen;
}

function showProblem(text) {
  const problem = $("problem");
  problem.textContent = text;
  problem.hidden = !text;
}

async function refresh() {
  let lb;
  try {
    lb = await readJson("/_lab/lb.json");
  } catch (error) {
    showProblem(
      error.status === 403
        ? "The LB serves its state to the lab's own network only (HTTP 403 from /_lab/)."
        : `Cannot read the LB's state (${error.message}).`,
    );
    return;
  }
  // health.json appears with consul-template's first render after the LB starts.
  const health = await readJson("/_lab/health.json").catch(() => null);
  const registration = await readJson("/_lab/spec/registration.json").catch(() => ({}));
  showProblem(
    health ? "" : "No Consul health yet: consul-template has not rendered since the LB started.",
  );
  const services = servicesOf(lb, health);
  $("services").replaceChildren(
    ...services.map((s) =>
      renderService(s, lb.upstreams[s.name] || [], health !== null, registration[s.name]),
    ),
  );
  renderServiceChoice(services.map((s) => s.name));
  const refused =
    (lb.latest_render_refused ? " · the latest render was refused by nginx -t" : "") +
    (lb.latest_reload_failed ? " · nginx did not take the latest render (its reload failed)" : "");
  renderVrrp(await readJson("/_lab/vrrp.json").catch(() => null));
  const counters = $("counters");
  counters.dataset.reloads = lb.reloads;
  counters.dataset.rejected = lb.rejected;
  counters.textContent =
    `${lb.reloads} reloads · ${lb.rejected} rejected renders${refused} · ` +
    `updated ${new Date().toLocaleTimeString()}`;
}

// Which LB answered and holds the shared address, and every LB of the lab.
function renderVrrp(vrrp) {
  const line = $("vrrp");
  line.hidden = !vrrp;
  if (!vrrp) return;
  const holds = vrrp.state === "MASTER" ? `holds ${vrrp.address}` : `does not hold ${vrrp.address}`;
  const since = new Date(vrrp.since * 1000).toLocaleTimeString();
  const lbs = (vrrp.lbs || []).map((lb) => `${lb.name} ${lb.address}`).join(", ");
  line.dataset.host = vrrp.host;
  line.dataset.state = vrrp.state;
  line.textContent =
    `LB ${vrrp.host} answered: ${vrrp.state} (priority ${vrrp.priority}), ${holds} since ` +
    `${since} · the LBs sharing it, in priority order: ${lbs}`;
}

// The text of an instance's answer (its <h1> line), never as HTML.
function answerText(body) {
  return new DOMParser().parseFromString(body, "text/html").body.textContent.trim();
}

async function sendRequests(event) {
  event.preventDefault();
  const service = $("send-service").value;
  const count = Math.max(1, Math.min(200, Number($("send-count").value) || 1));
  const answers = $("answers");
  const button = $("send-button");
  const tally = new Map();
  answers.replaceChildren();
  button.disabled = true;
  try {
    for (let n = 1; n <= count; n++) {
      const item = document.createElement("li");
      try {
        const response = await fetch(`/${service}`, { cache: "no-store" });
        const instance = response.headers.get("X-Instance") || `HTTP ${response.status}`;
        const text = answerText(await response.text());
        item.dataset.instance = instance;
        item.dataset.status = response.status;
        item.textContent = `${instance}: ${text}`;
        item.className = response.ok ? "ok" : "bad";
        tally.set(instance, (tally.get(instance) || 0) + 1);
      } catch (error) {
        item.dataset.status = "error";
        item.textContent = `failed: ${error.message}`;
        item.className = "bad";
        tally.set("failed", (tally.get("failed") || 0) + 1);
      }
      answers.append(item);
      $("tally").textContent = [...tally].map(([who, k]) => `${who} ×${k}`).join(" · ");
    }
  } finally {
    button.disabled = false;
    answers.dataset.done = String(count);
  }
}

$("send-form").addEventListener("submit", sendRequests);
refresh();
setInterval(refresh, REFRESH_MS);
