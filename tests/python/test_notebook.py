"""examples/explore.ipynb runs top to bottom (nbclient), and renders HTML."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "explore.ipynb")


def test_explore_notebook_executes():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}
    )
    client.execute()
    html = [
        o["data"]["text/html"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    assert any("peeklock-messages" in h and "4 messages" in h for h in html)
    assert any("peeklock-message'" in h for h in html)
    # the client and client.entities() render entity tables with counts
    assert any("peeklock-client" in h and "peeklock-entities" in h and "payments" in h for h in html)
    assert any("MaxDeliveryCountExceeded" in h for h in html)  # the dead-letter list
    assert any("<table" in h and "dataframe" in h and "p-1" in h for h in html)  # pandas
    texts = [
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    ]
    assert any("'reason': 'MaxDeliveryCountExceeded'" in t and "p-1" in t for t in texts)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_repr_html_escapes(client, queue):
    import peeklock

    client.send(queue, b"<script>alert(1)</script>", properties={"x": "<b>"})
    msg = client.peek_lock(queue, timeout=5)
    h = msg._repr_html_()
    assert "<script>" not in h and "&lt;script&gt;" in h
    assert "<script>" not in peeklock.MessageList([msg])._repr_html_()
    msg.abandon()
