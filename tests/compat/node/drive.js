// Drives azure-sb (the legacy Node REST client, unchanged) against a peeklock emulator.
// Usage: node drive.js <http endpoint> <key name> <key> <queue> <topic>
// Prints one JSON object with what the client got back; the Python test asserts on it.
'use strict';
var azure = require('azure-sb');

var endpoint = process.argv[2], keyName = process.argv[3], key = process.argv[4];
var queue = process.argv[5], topic = process.argv[6];
var conn = 'Endpoint=' + endpoint + '/;SharedAccessKeyName=' + keyName + ';SharedAccessKey=' + key;
var sb = azure.createServiceBusService(conn);
var out = {};

function step(name, fn) {
  return function (next) {
    try {
      fn(function (err, value) {
        if (err) { out[name] = { error: String(err && (err.message || err)), code: err && err.code, statusCode: err && err.statusCode }; }
        else { out[name] = value === undefined ? true : value; }
        next();
      });
    } catch (ex) {
      out[name] = { exception: String(ex) };
      next();
    }
  };
}

function pick(msg) {
  if (!msg) { return null; }
  return { body: msg.body, brokerProperties: msg.brokerProperties, customProperties: msg.customProperties,
           location: msg.location, contentType: msg.contentType };
}

var held, again;
var steps = [
  step('createQueue', function (cb) { sb.createQueueIfNotExists(queue, function (e, created) { cb(e, created); }); }),
  step('send', function (cb) {
    sb.sendQueueMessage(queue, { body: 'hi there', brokerProperties: { Label: 'L1', CorrelationId: 'c-1' },
      customProperties: { propint: 1, propfloat: 2.22, propstring: 'hi there', propbool: true,
                          propdate: new Date(Date.UTC(2012, 2, 7, 22, 27, 0)) } }, function (e) { cb(e); });
  }),
  step('peekLock', function (cb) {
    sb.receiveQueueMessage(queue, { isPeekLock: true, timeoutIntervalInS: 5 }, function (e, m) { held = m; cb(e, pick(m)); });
  }),
  step('renew', function (cb) { sb.renewLockForMessage(held, function (e) { cb(e); }); }),
  step('unlock', function (cb) { sb.unlockMessage(held, function (e) { cb(e); }); }),
  step('redelivered', function (cb) {
    sb.receiveQueueMessage(queue, { isPeekLock: true, timeoutIntervalInS: 5 }, function (e, m) { again = m; cb(e, pick(m)); });
  }),
  step('complete', function (cb) { sb.deleteMessage(again, function (e) { cb(e); }); }),
  step('completeAgain', function (cb) { sb.deleteMessage(again, function (e) { cb(e); }); }),
  step('sendForDelete', function (cb) { sb.sendQueueMessage(queue, 'plain string body', function (e) { cb(e); }); }),
  step('receiveAndDelete', function (cb) {
    sb.receiveQueueMessage(queue, { timeoutIntervalInS: 5 }, function (e, m) { cb(e, pick(m)); });
  }),
  step('empty', function (cb) {
    sb.receiveQueueMessage(queue, { timeoutIntervalInS: 1 }, function (e, m) { cb(e, pick(m)); });
  }),
  step('createTopic', function (cb) { sb.createTopicIfNotExists(topic, function (e, c) { cb(e, c); }); }),
  step('createSubscription', function (cb) { sb.createSubscription(topic, 'Sub1', function (e) { cb(e); }); }),
  step('sendTopic', function (cb) { sb.sendTopicMessage(topic, { body: 'to topic', customProperties: { n: 7 } }, function (e) { cb(e); }); }),
  step('peekSubscription', function (cb) {
    sb.receiveSubscriptionMessage(topic, 'Sub1', { isPeekLock: true, timeoutIntervalInS: 5 }, function (e, m) {
      if (e) { return cb(e); }
      var got = pick(m);
      sb.deleteMessage(m, function (e2) { got.completed = !e2; cb(e2, got); });
    });
  }),
  step('listSubscriptions', function (cb) {
    sb.listSubscriptions(topic, function (e, subs) { cb(e, subs && subs.map(function (x) { return x.SubscriptionName; })); });
  }),
  step('createRule', function (cb) {
    sb.createRule(topic, 'Sub1', 'red', { sqlExpressionFilter: "color = 'red'" }, function (e) { cb(e); });
  }),
  step('listRules', function (cb) {
    sb.listRules(topic, 'Sub1', function (e, rules) { cb(e, rules && rules.map(function (x) { return x.RuleName; })); });
  }),
  step('getRule', function (cb) {
    sb.getRule(topic, 'Sub1', 'red', function (e, r) { cb(e, r && { name: r.RuleName, sql: r.Filter && r.Filter.SqlExpression }); });
  }),
  step('getQueue', function (cb) { sb.getQueue(queue, function (e, q) { cb(e, q && { LockDuration: q.LockDuration, MaxDeliveryCount: q.MaxDeliveryCount }); }); }),
  step('deleteQueue', function (cb) { sb.deleteQueue(queue, function (e) { cb(e); }); })
];

(function run(i) {
  if (i === steps.length) { process.stdout.write(JSON.stringify(out) + '\n'); return; }
  steps[i](function () { run(i + 1); });
})(0);
