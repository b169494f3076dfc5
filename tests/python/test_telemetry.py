"""OpenTelemetry spans and metrics, checked with the SDK's in-memory exporters."""

import threading

import pytest

import peeklock
from conftest import completed, wait_for

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from peeklock import telemetry


@pytest.fixture
def otel():
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    telemetry.instrument(tracer_provider=tp, meter_provider=mp)
    try:
        yield spans, reader
    finally:
        telemetry.uninstrument()


def _metrics(reader):
    out = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m.data.data_points
    return out


def _by_name(spans, prefix):
    return [s for s in spans.get_finished_spans() if s.name.startswith(prefix)]


def test_send_receive_process_settle_spans_and_propagation(emu, otel, make_queue):
    spans, reader = otel
    q = make_queue(lock_duration=5)
    producer = peeklock.Client.from_connection_string(emu.connection_string)
    consumer = peeklock.Client.from_connection_string(emu.connection_string)
    try:
        producer.send(q, b"a", message_id="t-1")
        producer.send_batch(q, [peeklock.OutgoingMessage(b"b", message_id="t-2")])
        [send1, send2] = _by_name(spans, "send ")
        assert send1.kind == SpanKind.PRODUCER and send1.name == f"send {q}"
        assert send1.attributes["messaging.system"] == "servicebus"
        assert send1.attributes["messaging.destination.name"] == q
        assert send1.attributes["messaging.message.id"] == "t-1"
        assert send1.attributes["server.address"] == "127.0.0.1"
        assert send2.attributes["messaging.batch.message_count"] == 1

        tokens = []
        with consumer.lock(q, timeout=1) as msg:
            tokens.append(msg.lock_token)
            # Diagnostic-Id carries the W3C traceparent as an application property (the
            # HTTP traceparent header is the request's own trace context, not a property)
            assert msg.properties["Diagnostic-Id"].split("-")[2] == format(send1.context.span_id, "016x")
        [recv] = _by_name(spans, "receive ")
        [proc] = _by_name(spans, "process ")
        [comp] = _by_name(spans, "complete ")
        assert recv.kind == SpanKind.CLIENT and proc.kind == SpanKind.CONSUMER
        assert recv.attributes["messaging.message.id"] == "t-1"
        assert recv.attributes["messaging.servicebus.message.delivery_count"] == 1
        assert "messaging.servicebus.message.enqueued_time" in recv.attributes
        for s in (recv, proc):  # linked to the producer's span
            assert [lk.context.span_id for lk in s.links] == [send1.context.span_id]
            assert s.links[0].context.trace_id == send1.context.trace_id
        assert comp.parent.span_id == proc.context.span_id  # settled inside process
        assert comp.attributes["messaging.operation.type"] == "settle"

        with pytest.raises(RuntimeError):
            with consumer.lock(q, timeout=1) as msg:
                tokens.append(msg.lock_token)
                raise RuntimeError("boom")
        [_, proc2] = _by_name(spans, "process ")
        [aband] = _by_name(spans, "abandon ")
        assert proc2.attributes["error.type"] == "RuntimeError"
        assert aband.parent.span_id == proc2.context.span_id

        caller_tp = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        producer.send(q, b"c", properties={"Diagnostic-Id": caller_tp})  # the caller's wins
        m = consumer.receive_and_delete(q, timeout=1)
        assert m.body == b"b"
        m = consumer.receive_and_delete(q, timeout=1)
        assert m.properties["Diagnostic-Id"] == caller_tp

        pts = _metrics(reader)
        sent = {p.attributes["messaging.destination.name"]: p.value for p in pts["messaging.client.sent.messages"]}
        assert sent[q] == 3
        consumed = sum(p.value for p in pts["messaging.client.consumed.messages"])
        assert consumed == 4
        ops = {p.attributes["messaging.operation.name"] for p in pts["messaging.client.operation.duration"]}
        assert ops >= {"send", "peek_lock", "receive_and_delete", "complete", "abandon"}
        assert sum(p.count for p in pts["messaging.process.duration"]) == 2
    finally:
        producer.close()
        consumer.close()
    for s in spans.get_finished_spans():  # no lock token anywhere
        values = " ".join(str(v) for v in s.attributes.values())
        assert not any(t in values for t in tokens)


def test_renewals_are_spans_in_the_process_trace_and_a_lost_lock_is_an_error(emu, otel, make_queue):
    spans, reader = otel
    q = make_queue(lock_duration=5)
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        c.send(q, b"x", message_id="r-1")
        with pytest.raises(peeklock.LockLostError):
            with c.lock(q, timeout=1) as msg:
                wait_for(lambda: _by_name(spans, "renew_message_lock"))
                emu.advance(30)  # the server's lock runs out
                wait_for(lambda: msg.lock_lost)
        assert completed(emu, q) == {}
    [proc] = _by_name(spans, "process ")
    renew = _by_name(spans, "renew_message_lock")
    assert renew and all(r.parent.span_id == proc.context.span_id for r in renew)
    assert renew[0].attributes["messaging.message.id"] == "r-1"
    assert proc.attributes["error.type"] == "LockLostError"
    pts = _metrics(reader)
    assert sum(p.value for p in pts["peeklock.lock.renewals"]) == len(renew)
    assert sum(p.value for p in pts["peeklock.lock.lost"]) == 1


def test_uninstrument_restores_the_methods_and_ends_open_spans(emu, make_queue):
    names = [
        (peeklock.Client, n) for n in ("send", "send_batch", "peek_lock", "receive_and_delete", "_on_event", "__init__")
    ] + [(peeklock.Message, n) for n in ("complete", "abandon", "unlock", "__enter__")]
    before = {(c, n): c.__dict__[n] for c, n in names}
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    telemetry.instrument(tracer_provider=tp, meter_provider=MeterProvider())
    assert all(c.__dict__[n] is not before[(c, n)] for c, n in names if n != "unlock")
    q = make_queue()
    from opentelemetry import trace

    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        c.send(q, b"x")
        with c.lock(q, timeout=1):
            telemetry.uninstrument()  # while a block is open
        assert not trace.get_current_span().get_span_context().is_valid
    assert [s.name for s in spans.get_finished_spans() if s.name.startswith("process")] == [f"process {q}"]
    assert {(c, n): c.__dict__[n] for c, n in names} == before


def test_processor_handlers_run_inside_process_spans(emu, otel, make_queue):
    spans, _ = otel
    q = make_queue()
    seen = []
    lock = threading.Lock()
    from opentelemetry import trace

    def handler(msg):
        with lock:
            seen.append(trace.get_current_span().get_span_context().span_id)

    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for i in range(3):
            c.send(q, b"x", message_id=f"p{i}")
        s = c.process(q, handler, concurrency=2, max_messages=3, poll_timeout=1, handle_signals=False)
    assert s.processed == 3
    procs = _by_name(spans, "process ")
    assert sorted(p.context.span_id for p in procs) == sorted(seen)


def test_prometheus_example_serves_peeklock_metrics():
    import os
    import subprocess
    import sys

    ex = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "telemetry_prometheus.py")
    r = subprocess.run([sys.executable, ex, "--once", "--port", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(x.startswith("messaging_client_sent_messages_total{") and x.endswith(" 6.0") for x in lines)
    assert any(x.startswith("messaging_process_duration_seconds_count{") for x in lines)
    # one handler sleeps 3 s on a 5 s lock: the renewer renews it before half the lock is left
    assert any(x.startswith("peeklock_lock_renewals_total{") for x in lines)
    # the semantic conventions' bounds for durations (5 ms .. 10 s), Lua's too, not the SDK's
    # default (0, 5, 10, 25, ...: every operation under 5 s in one bucket)
    conventions = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0"]
    conventions += ["7.5", "10.0", "+Inf"]
    for family in ("messaging_client_operation_duration_seconds", "messaging_process_duration_seconds"):
        assert _le(lines, family) == conventions, family
    slack = ["0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "15.0", "30.0", "60.0", "120.0", "300.0", "+Inf"]
    assert _le(lines, "peeklock_lock_renewal_slack_seconds") == slack


def _le(lines, family):
    """The ``le`` bounds of the first series of a Prometheus histogram family, as served."""
    import re

    def series(line):
        return re.sub(r'le="[^"]*",?', "", line.split(" ")[0])

    rows = [x for x in lines if x.startswith(family + "_bucket{")]
    assert rows, family
    return [re.search(r'le="([^"]*)"', x).group(1) for x in rows if series(x) == series(rows[0])]


def test_batch_process_spans_do_not_nest(emu, otel, make_queue):
    spans, _ = otel
    q = make_queue()
    from opentelemetry import trace

    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        for i in range(3):
            c.send(q, b"x", message_id=f"n{i}")
        c.process(
            q,
            lambda msgs: None,
            batch=3,
            max_wait=1,
            concurrency=1,
            poll_timeout=1,
            max_messages=3,
            handle_signals=False,
        )
        assert not trace.get_current_span().get_span_context().is_valid
    procs = {s.context.span_id for s in _by_name(spans, "process ")}
    assert len(procs) == 3
    for s in _by_name(spans, "receive ") + _by_name(spans, "process "):
        assert s.parent is None or s.parent.span_id not in procs


def test_renewal_failures_and_slack_are_metrics(emu, otel, make_queue):
    spans, reader = otel
    q = make_queue(lock_duration=5)
    emu.fault(operation="renew", entity=q, status=503, count=1)
    with peeklock.Client.from_connection_string(emu.connection_string) as c:
        c.send(q, b"x")
        with c.lock(q, timeout=1):
            wait_for(lambda: _by_name(spans, "renew_message_lock"))  # after the failure
        s = c.stats()
    pts = _metrics(reader)
    [fail] = pts["peeklock.lock.renewal_failures"]
    assert fail.value == 1 == s["renewer"]["failures"]
    assert fail.attributes["error.type"] == "PL_ETHROTTLED"
    assert fail.attributes["messaging.destination.name"] == q
    [slack] = pts["peeklock.lock.renewal_slack"]
    assert slack.count == s["renewer"]["renewals"] >= 1
    assert 0 < slack.sum / slack.count < 5  # seconds left of a 5 s lock
    assert slack.max < 5


def test_a_subscription_path_in_any_case_labels_its_topic_and_subscription(emu, otel):
    # The service's entity paths are case-insensitive; the split is the core's
    # (pl_entity_destination), the same rule as Lua's peeklock.metrics labels.
    spans, _reader = otel
    topic = "t-otel-case"
    emu.create_topic(topic)
    emu.create_subscription(topic, "Sub1", lock_duration=5)
    c = peeklock.Client.from_connection_string(emu.connection_string)
    try:
        c.send(topic, b"x")
        with c.peek_lock(f"{topic}/SUBSCRIPTIONS/Sub1", timeout=5) as msg:
            assert msg.body == b"x"
        [recv] = _by_name(spans, "receive ")
        assert recv.attributes["messaging.destination.name"] == topic
        assert recv.attributes["messaging.destination.subscription.name"] == "Sub1"
        [send] = _by_name(spans, "send ")
        assert send.attributes["messaging.destination.name"] == topic
        assert "messaging.destination.subscription.name" not in send.attributes
    finally:
        c.close()
        emu.delete_entity(topic)
