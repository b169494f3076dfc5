// Drives @azure/service-bus's ServiceBusAdministrationClient through a full scenario against a
// peeklock emulator served over HTTPS: node drive_admin.js CONNECTION_STRING
// The emulator's certificate is trusted through NODE_EXTRA_CA_CERTS (set by the test).
// Messages are put in place with plain REST calls (the SDK's data plane speaks AMQP).
// Prints a JSON summary; any mismatch throws (exit status 1).
"use strict";
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { ServiceBusAdministrationClient } = require("@azure/service-bus");

const conn = process.argv[2];
const fields = Object.fromEntries(conn.split(";").filter((p) => p.includes("=")).map((p) => {
  const i = p.indexOf("=");
  return [p.slice(0, i), p.slice(i + 1)];
}));
const base = "https://" + fields.Endpoint.split("://")[1].replace(/\/$/, "");

function sas(uri) {
  const se = Math.floor(Date.now() / 1000) + 600;
  const sr = encodeURIComponent(uri);
  const sig = crypto.createHmac("sha256", fields.SharedAccessKey).update(sr + "\n" + se).digest("base64");
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${fields.SharedAccessKeyName}`;
}

async function rest(method, path, body, headers, expect) {
  const url = base + path;
  const res = await fetch(url, { method, body, headers: { Authorization: sas(url), ...(headers || {}) } });
  const text = await res.text();
  if (expect !== undefined) assert.equal(res.status, expect, `${method} ${path}: ${text.slice(0, 300)}`);
  return { status: res.status, headers: res.headers, text };
}

async function send(entity, body, props, custom) {
  const h = { "Content-Type": "text/plain", ...(custom || {}) };
  if (props) h.BrokerProperties = JSON.stringify(props);
  await rest("POST", `/${entity}/messages`, body, h, 201);
}

async function emulatorNow() {
  const res = await fetch(base + "/$admin/clock");
  return new Date((await res.json()).now * 1000);
}

async function collect(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}

async function main() {
  const c = new ServiceBusAdministrationClient(conn);
  const out = {};

  const ns = await c.getNamespaceProperties();
  assert.equal(ns.messagingSku, "Standard");
  assert.ok(ns.createdAt instanceof Date && !isNaN(ns.createdAt));
  out.namespace = ns.name;

  // queue
  const qn = "js-adm-q";
  const q = await c.createQueue(qn, { lockDuration: "PT30S", maxDeliveryCount: 1, userMetadata: "first",
    requiresDuplicateDetection: true, duplicateDetectionHistoryTimeWindow: "PT2M",
    defaultMessageTimeToLive: "PT1H", deadLetteringOnMessageExpiration: true, autoDeleteOnIdle: "P2D" });
  assert.equal(q.name, qn);
  assert.equal(q.lockDuration, "PT30S");
  assert.equal(q.enablePartitioning, false);
  assert.equal(q.enableExpress, false);
  assert.equal(q.userMetadata, "first");
  assert.equal(await c.queueExists(qn), true);
  assert.equal(await c.queueExists("js-no-such-queue"), false);
  await assert.rejects(c.createQueue(qn), (e) => e.code === "MessageEntityAlreadyExistsError");
  const got = await c.getQueue(qn);
  got.lockDuration = "PT45S";
  got.userMetadata = "second";
  await c.updateQueue(got);
  const again = await c.getQueue(qn);
  assert.equal(again.lockDuration, "PT45S");
  assert.equal(again.userMetadata, "second");

  await send(qn, "to-dlq", { MessageId: "m-dlq" });
  const locked = await rest("POST", `/${qn}/messages/head?timeout=5`, undefined, {}, 201);
  await rest("PUT", new URL(locked.headers.get("location")).pathname, undefined, {}, 200);
  await send(qn, "active", { MessageId: "m-active" });
  await send(qn, "active again", { MessageId: "m-active" });
  const later = new Date((await emulatorNow()).getTime() + 30 * 60 * 1000);
  await send(qn, "later", { MessageId: "m-sched", ScheduledEnqueueTimeUtc: later.toUTCString() });
  const rt = await c.getQueueRuntimeProperties(qn);
  out.queueCounts = [rt.activeMessageCount, rt.deadLetterMessageCount, rt.scheduledMessageCount, rt.totalMessageCount,
    rt.transferMessageCount, rt.transferDeadLetterMessageCount];
  for (const d of [rt.createdAt, rt.modifiedAt, rt.accessedAt]) assert.ok(d instanceof Date && !isNaN(d));

  // forwarding
  await c.createQueue("js-adm-dest");
  const src = await c.createQueue("js-adm-src", { forwardTo: "js-adm-dest" });
  assert.ok(src.forwardTo.endsWith("/js-adm-dest"), src.forwardTo);
  await send("js-adm-src", "forwarded");
  out.forwarded = (await c.getQueueRuntimeProperties("js-adm-dest")).activeMessageCount;

  // list past 100
  const bulk = Array.from({ length: 101 }, (_, i) => `js-bulk-${String(i).padStart(3, "0")}`);
  for (const n of bulk) await c.createQueue(n);
  const names = (await collect(c.listQueues())).map((x) => x.name);
  assert.ok(bulk.every((n) => names.includes(n)), `listed ${names.length}`);
  assert.equal(new Set(names).size, names.length);
  const pages = [];
  for await (const page of c.listQueues().byPage({ maxPageSize: 40 })) pages.push(page.length);
  out.listedQueues = names.filter((n) => n.startsWith("js-bulk-")).length;
  out.pages = pages;
  const rts = await collect(c.listQueuesRuntimeProperties());
  assert.equal(rts.find((x) => x.name === qn).totalMessageCount, 3);
  for (const n of bulk) await c.deleteQueue(n);

  // topic, subscriptions, rules
  const tn = "js-adm-t";
  const t = await c.createTopic(tn, { defaultMessageTimeToLive: "PT2H", userMetadata: "topic meta" });
  assert.equal(t.name, tn);
  assert.equal(t.enablePartitioning, false);
  assert.equal(await c.topicExists(tn), true);
  const t2 = await c.getTopic(tn);
  t2.defaultMessageTimeToLive = "PT3H";
  await c.updateTopic(t2);
  assert.equal((await c.getTopic(tn)).defaultMessageTimeToLive, "PT3H");
  const sub = await c.createSubscription(tn, "Sub1", { maxDeliveryCount: 5, userMetadata: "sub meta" });
  assert.equal(sub.subscriptionName, "Sub1");
  assert.equal(sub.topicName, tn);
  assert.equal(await c.subscriptionExists(tn, "Sub1"), true);
  await c.createSubscription(tn, "Sub2", { defaultRuleOptions: { name: "first",
    filter: { sqlExpression: "color = 'red'" } } });
  const s1 = await c.getSubscription(tn, "Sub1");
  s1.maxDeliveryCount = 7;
  await c.updateSubscription(s1);
  assert.equal((await c.getSubscription(tn, "Sub1")).maxDeliveryCount, 7);
  out.subscriptions = (await collect(c.listSubscriptions(tn))).map((x) => x.subscriptionName);

  await c.createRule(tn, "Sub2", "sql", { sqlExpression: "color = @c", sqlParameters: { "@c": "blue" } },
    { sqlExpression: "SET sys.Label = 'was-blue'" });
  await c.createRule(tn, "Sub2", "corr", { correlationId: "cid", subject: "L",
    applicationProperties: { kind: "green", n: 7, ok: true } });
  await c.createRule(tn, "Sub2", "none", { sqlExpression: "1=0" });
  const r = await c.getRule(tn, "Sub2", "sql");
  assert.equal(r.name, "sql");
  assert.equal(r.filter.sqlExpression, "color = @c");
  assert.deepEqual(r.filter.sqlParameters, { "@c": "blue" });
  assert.equal(r.action.sqlExpression, "SET sys.Label = 'was-blue'");
  const corr = await c.getRule(tn, "Sub2", "corr");
  assert.equal(corr.filter.correlationId, "cid");
  assert.equal(corr.filter.subject, "L");
  assert.deepEqual(corr.filter.applicationProperties, { kind: "green", n: 7, ok: true });
  corr.filter.applicationProperties.kind = "teal";
  await c.updateRule(tn, "Sub2", corr);
  assert.equal((await c.getRule(tn, "Sub2", "corr")).filter.applicationProperties.kind, "teal");
  assert.equal(await c.ruleExists(tn, "Sub2", "none"), true);
  const rulePages = [];
  for await (const page of c.listRules(tn, "Sub2").byPage({ maxPageSize: 2 })) rulePages.push(page.map((x) => x.name));
  out.rulePages = rulePages;

  await send(tn, "blue one", { Label: "orig" }, { color: '"blue"' });
  const rec = await rest("DELETE", `/${tn}/subscriptions/Sub2/messages/head?timeout=5`, undefined, {}, 200);
  out.actionLabel = JSON.parse(rec.headers.get("brokerproperties")).Label;

  const due = new Date((await emulatorNow()).getTime() + 3600 * 1000);
  await send(tn, "scheduled", { ScheduledEnqueueTimeUtc: due.toUTCString() });
  const trt = await c.getTopicRuntimeProperties(tn);
  out.topic = { scheduled: trt.scheduledMessageCount, subscriptionCount: trt.subscriptionCount,
    sub1Before: (await c.getSubscriptionRuntimeProperties(tn, "Sub1")).activeMessageCount };
  await fetch(base + "/$admin/clock/advance", { method: "POST", body: JSON.stringify({ seconds: 3700 }) });
  out.topic.scheduledAfter = (await c.getTopicRuntimeProperties(tn)).scheduledMessageCount;
  out.topic.sub1After = (await c.getSubscriptionRuntimeProperties(tn, "Sub1")).activeMessageCount;
  const subRts = await collect(c.listSubscriptionsRuntimeProperties(tn));
  assert.equal(subRts.length, 2);
  assert.equal((await collect(c.listTopicsRuntimeProperties())).find((x) => x.name === tn).subscriptionCount, 2);

  // delete
  await c.deleteRule(tn, "Sub2", "none");
  assert.equal(await c.ruleExists(tn, "Sub2", "none"), false);
  await c.deleteSubscription(tn, "Sub2");
  assert.equal(await c.subscriptionExists(tn, "Sub2"), false);
  await c.deleteTopic(tn);
  for (const n of [qn, "js-adm-src", "js-adm-dest"]) await c.deleteQueue(n);
  assert.equal(await c.queueExists(qn), false);
  assert.equal(await c.topicExists(tn), false);
  out.done = true;
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
