"""Seeded random bad input (reproducible): headers, BrokerProperties, batch and Atom bodies.
The emulator never answers 500, never stops serving, and stores exactly the messages it
acknowledged with 201."""

import json
import random

from conftest import SB

ALPHABET = [
    '"',
    "\\",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "'",
    " ",
    "\t",
    "a",
    "Z",
    "0",
    "9",
    ".",
    "-",
    "e",
    "true",
    "false",
    "null",
    "\u00e9",
    "\x7f",
    "%",
    "&",
    "<",
    ">",
    "=",
    ";",
]


def junk(rng, n):
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, n)))


def test_random_send_headers_and_properties(fresh_emulator, queue):
    rng = random.Random(20261122)
    sb = SB(fresh_emulator)
    accepted = 0
    for i in range(300):
        headers = {}
        kind = i % 3
        if kind == 0:
            headers["BrokerProperties"] = junk(rng, 30)
        elif kind == 1:
            headers["p%d" % rng.randint(0, 5)] = junk(rng, 20).replace("\n", "")
        else:
            headers["BrokerProperties"] = json.dumps(
                {
                    rng.choice(
                        [
                            "Label",
                            "TimeToLive",
                            "MessageId",
                            "SessionId",
                            "PartitionKey",
                            "ScheduledEnqueueTimeUtc",
                            "ForcePersistence",
                        ]
                    ): rng.choice([junk(rng, 10), rng.randint(-5, 5), None, True, [1], {"a": 1}, 1e308])
                }
            )
        try:
            status, _, body = sb.send(queue, b"m%d" % i, headers=headers)
        except UnicodeEncodeError:
            continue  # http.client cannot send that header at all
        assert status in (201, 400), (status, headers, body[:200])
        if status == 400:  # our <Error> body, or aiohttp's parser refusing a control character
            assert body.startswith(b"<Error><Code>400</Code>") or body.startswith(b"Invalid header value char")
        accepted += status == 201
    assert accepted > 0
    assert len(fresh_emulator.messages(queue)) == accepted
    assert sb.receive_and_delete(queue).status == 200


def test_random_batch_and_atom_bodies(fresh_emulator, queue):
    rng = random.Random(7)
    emu = fresh_emulator
    acked = 0
    for i in range(150):
        if i % 2:
            items = [
                rng.choice(
                    [
                        {"Body": junk(rng, 10)},
                        {"Body": rng.randint(0, 9)},
                        junk(rng, 5),
                        {"Body": "x", "BrokerProperties": rng.choice([{}, {"TimeToLive": junk(rng, 4)}, "s", None])},
                        {"Body": "x", "UserProperties": rng.choice([{"k": junk(rng, 5)}, {"k": [1]}, [], {"": 1}])},
                        {"Body": junk(rng, 8), "IsBodyBase64": True},
                    ]
                )
                for _ in range(rng.randint(0, 4))
            ]
            body = json.dumps(items).encode() if rng.random() < 0.8 else junk(rng, 40).encode()
            status, _, data = emu.request(
                "POST", "/%s/messages" % queue, body, {"Content-Type": "application/vnd.microsoft.servicebus.json"}
            )
            assert status in (201, 400), (status, body, data[:200])
            if status == 201:
                acked += len(items)
        else:
            body = (
                '<entry xmlns="http://www.w3.org/2005/Atom"><content type="application/xml"><QueueDescription '
                'xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect">%s</QueueDescription>'
                "</content></entry>"
                % rng.choice(
                    [
                        "<LockDuration>%s</LockDuration>",
                        "<MaxDeliveryCount>%s</MaxDeliveryCount>",
                        "<DefaultMessageTimeToLive>%s</DefaultMessageTimeToLive>",
                        "%s",
                    ]
                )
                % junk(rng, 12)
            ).encode("utf-8")
            status, _, data = emu.request(
                "PUT", "/fz%d" % i, body, {"Content-Type": "application/atom+xml;type=entry;charset=utf-8"}
            )
            assert status in (201, 400), (status, body, data[:200])
            emu.delete_entity("fz%d" % i)
    assert len(emu.messages(queue)) == acked
