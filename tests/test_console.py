"""The web console: its JSON API with confluent-kafka producing and consuming, its write
actions, and its pages in a real headless browser (Debian's chromium under Playwright:
the `browser` fixture of tests/conftest.py).

One broker for the module (disk storage, write actions allowed), seeded once: a topic
with records carrying keys, values and headers, a transactional topic with a committed
and an aborted transaction, and a group that consumed 10 records of 15 (lag 5).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from akfak.group_lag import GroupLag, group_lags
from akfak.testing.embedded import EmbeddedBroker

RECORDS = [  # (key, value, headers) produced to browse-0
    (b"k0", b'{"n": 0}', [("trace", b"t0")]),
    (None, b"plain text", []),
    (b"k2", bytes([0, 1, 2, 255]), [("bin", bytes([0xFE])), ("empty", b"")]),
    (b"k3", b"three", [("a", b"1"), ("b", b"2")]),
    (b"k4", None, []),
]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Seeded:
    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker
        self.url = broker.http_url

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}api/{path}", timeout=10) as response:
            return json.load(response)

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"{self.url}api/{path}", method="POST",
                                         data=json.dumps(body or {}).encode(),
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def producer(self, **config: Any) -> Producer:
        return Producer({"bootstrap.servers": self.broker.bootstrap_servers, "linger.ms": 0,
                         **config})


def consume(bootstrap: str, group: str, topic: str, count: int) -> None:
    """Consume `count` records of `topic` in `group`, commit them, leave the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "client.id": "lag-consumer"})
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < count and time.monotonic() < deadline:
        for message in consumer.consume(count - seen, timeout=1):
            if message.error() is None:
                seen += 1
    assert seen == count
    consumer.commit(asynchronous=False)
    consumer.close()


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with EmbeddedBroker(storage="disk", http=True,
                        overrides={"akfak.http.allow.writes": "true"}) as broker:
        s = Seeded(broker)
        broker.create_topic("browse", partitions=2, config={"retention.ms": 12345678})
        broker.create_topic("lagged", partitions=1)
        broker.create_topic("txns", partitions=1)
        broker.create_topic("watched", partitions=2)
        producer = s.producer(**{"client.id": "seeder"})
        for key, value, headers in RECORDS:
            producer.produce("browse", value=value, key=key, headers=headers, partition=0,
                             timestamp=1_700_000_000_000)
        producer.produce("browse", value=b"late", key=b"k5", partition=0, timestamp=1_700_000_060_000)
        for i in range(10):
            producer.produce("lagged", value=b"v%d" % i, partition=0)
        assert producer.flush(10) == 0
        consume(broker.bootstrap_servers, "lagging", "lagged", 10)
        for i in range(5):
            producer.produce("lagged", value=b"more%d" % i, partition=0)
        assert producer.flush(10) == 0
        txn = s.producer(**{"transactional.id": "console-txn"})
        txn.init_transactions(10)
        txn.begin_transaction()
        txn.produce("txns", value=b"kept", partition=0)
        txn.commit_transaction(10)
        txn.begin_transaction()
        txn.produce("txns", value=b"dropped", partition=0)
        assert txn.flush(10) == 0  # sent, so that the abort has something to abort
        txn.abort_transaction(10)
        yield s


# -- JSON API ---------------------------------------------------------------------------------


def test_topics_list_and_detail(seeded: Seeded) -> None:
    topics = {t["name"]: t for t in seeded.get("topics")}
    assert {"browse", "lagged", "txns", "__consumer_offsets"} <= set(topics)
    assert topics["browse"]["partitions"] == 2 and topics["browse"]["records"] == 6
    assert topics["__consumer_offsets"]["internal"] and not topics["browse"]["internal"]
    detail = seeded.get("topics/browse")
    assert [(p["partition"], p["log_start_offset"], p["end_offset"]) for p in detail["partitions"]] \
        == [(0, 0, 6), (1, 0, 0)]
    configs = {c["name"]: c for c in detail["configs"]}
    assert configs["retention.ms"]["value"] == "12345678"
    assert configs["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["cleanup.policy"] == {**configs["cleanup.policy"], "value": "delete",
                                         "source": "DEFAULT_CONFIG"}
    segments = seeded.get("topics/browse/partitions/0/segments")
    assert len(segments) == 1 and segments[0]["base_offset"] == 0 and segments[0]["next_offset"] == 6
    assert segments[0]["file"].endswith("browse-0/00000000000000000000.log")
    assert segments[0]["size"] == detail["partitions"][0]["size"]


def test_unknown_topic_is_404(seeded: Seeded) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        seeded.get("topics/nope")
    assert raised.value.code == 404 and "nope" in json.load(raised.value)["error"]


def test_records_page_by_offset(seeded: Seeded) -> None:
    page = seeded.get("topics/browse/partitions/0/records?offset=0&limit=5")
    assert [r["offset"] for r in page["records"]] == [0, 1, 2, 3, 4] and page["next_offset"] == 5
    for record, (key, value, headers) in zip(page["records"], RECORDS, strict=True):
        assert record["timestamp"] == 1_700_000_000_000
        assert (record["key"] and bytes.fromhex(record["key"]["hex"])) == (key or None)
        assert (record["value"] and bytes.fromhex(record["value"]["hex"])) == (value or None)
        assert [(h["key"], bytes.fromhex(h["value"]["hex"])) for h in record["headers"]] == headers
    first, _, binary, *_ = page["records"]
    assert first["value"] == {"size": 8, "text": '{"n": 0}', "json": True, "hex": b'{"n": 0}'.hex(),
                              "truncated": False}
    assert binary["value"]["text"] is None and not binary["value"]["json"]
    rest = seeded.get(f"topics/browse/partitions/0/records?offset={page['next_offset']}")
    assert [r["offset"] for r in rest["records"]] == [5] and rest["next_offset"] == 6
    assert rest["prev_offset"] == 0


def test_records_page_by_timestamp(seeded: Seeded) -> None:
    page = seeded.get("topics/browse/partitions/0/records?timestamp=1700000030000")
    assert [(r["offset"], r["value"]["text"]) for r in page["records"]] == [(5, "late")]
    empty = seeded.get("topics/browse/partitions/0/records?timestamp=1800000000000")
    assert empty["records"] == [] and empty["start"] == 6


def test_records_of_transactions_are_marked(seeded: Seeded) -> None:
    records = seeded.get("topics/txns/partitions/0/records")["records"]
    shown = [(r.get("value") and r["value"]["text"], r.get("control"), bool(r.get("aborted")))
             for r in records]
    assert shown == [("kept", None, False), (None, "COMMIT", False), ("dropped", None, True),
                     (None, "ABORT", False)]


def test_group_lag(seeded: Seeded) -> None:
    lags = seeded.broker.call(lambda: group_lags(seeded.broker.broker, "lagging"))
    assert lags == [GroupLag("lagging", "lagged", 0, 10, 15, 5)]
    groups = {g["group"]: g for g in seeded.get("groups")}
    assert groups["lagging"]["lag"] == 5 and groups["lagging"]["state"] == "Empty"
    detail = seeded.get("groups/lagging")
    assert detail["protocol_type"] == "consumer" and detail["members"] == []
    assert [(p["topic"], p["partition"], p["committed"], p["end_offset"], p["lag"])
            for p in detail["partitions"]] == [("lagged", 0, 10, 15, 5)]
    # the sampler adds a point every 2 s
    history = wait_for(lambda: seeded.get("groups/lagging")["lag_history"], what="a lag sample")
    assert history[-1]["lag"] == 5 and history[-1]["partitions"] == {"lagged-0": 5}


def test_request_inspector(seeded: Seeded) -> None:
    since = seeded.get("requests?limit=1")["last"]
    producer = seeded.producer(**{"client.id": "inspected"})
    producer.produce("watched", value=b"watched", partition=1, headers=[("h", b"v")])
    assert producer.flush(10) == 0
    mine = seeded.get(f"requests?since={since}&client_id=inspected")["requests"]
    apis = [e["api"] for e in mine]
    assert "ApiVersions" in apis and "Metadata" in apis and "Produce" in apis
    assert all(e["seq"] > since and e["client_id"] == "inspected" for e in mine)
    produce = next(e for e in mine if e["api"] == "Produce")
    assert produce["errors"] == [] and produce["request_size"] > 0 and produce["latency_ms"] >= 0
    only = seeded.get(f"requests?since={since}&client_id=inspected&api=produce")["requests"]
    assert [e["seq"] for e in only] == [produce["seq"]]
    detail = seeded.get(f"requests/{produce['seq']}")
    topic_data = detail["request"]["topic_data"]
    assert [t["name"] for t in topic_data] == ["watched"]
    batches = topic_data[0]["partition_data"][0]["records"]["batches"]
    assert [(b["records"], b["base_offset"]) for b in batches] == [(1, 0)]
    response = detail["response"]["responses"][0]["partition_responses"][0]
    assert response["error_code"] == "none" and response["index"] == 1
    # an error code shows in the summary: an unknown topic's Metadata answer
    consumer = Consumer({"bootstrap.servers": seeded.broker.bootstrap_servers, "group.id": "x",
                         "client.id": "asks-unknown", "allow.auto.create.topics": False})
    try:
        consumer.list_topics("no-such-topic", timeout=5)
    finally:
        consumer.close()
    asked = seeded.get(f"requests?since={since}&client_id=asks-unknown&api=Metadata")["requests"]
    assert any("unknown_topic_or_partition" in e["errors"] for e in asked)


def test_write_actions(seeded: Seeded) -> None:
    assert seeded.post("topics", {"name": "made-here", "partitions": 2,
                                  "configs": {"retention.ms": "60000"}})[0] == 200
    status, body = seeded.post("topics", {"name": "made-here"})
    assert status == 400 and "TOPIC_ALREADY_EXISTS" in body["error"]
    assert seeded.get("topics/made-here")["partitions"][1]["end_offset"] == 0
    for value in ("one", "two", "three"):
        status, body = seeded.post("topics/made-here/partitions/1/produce",
                                   {"key": "k", "value": value, "headers": {"via": "console"}})
        assert status == 200, body
    records = seeded.get("topics/made-here/partitions/1/records")["records"]
    assert [(r["key"]["text"], r["value"]["text"], r["headers"][0]["key"], r["headers"][0]["value"]["text"])
            for r in records] == [("k", v, "via", "console") for v in ("one", "two", "three")]
    # the records are there for a Kafka client too
    consumer = Consumer({"bootstrap.servers": seeded.broker.bootstrap_servers, "group.id": "reader",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["made-here"])
    got = wait_for(lambda: consumer.poll(1), what="a record from made-here")
    assert got.value() == b"one" and got.headers() == [("via", b"console")]
    consumer.close()
    status, body = seeded.post("topics/made-here/partitions/1/delete-records", {"offset": 2})
    assert status == 200
    assert seeded.get("topics/made-here")["partitions"][1]["log_start_offset"] == 2
    status, _ = seeded.post("groups/lagging/reset-offsets", {"topic": "lagged", "to": "earliest"})
    assert status == 200
    assert seeded.get("groups/lagging")["partitions"][0]["committed"] == 0
    assert seeded.post("groups/lagging/reset-offsets", {"topic": "lagged", "to": "10"})[0] == 200
    assert seeded.get("groups/lagging")["partitions"][0]["lag"] == 5
    assert seeded.post("topics/made-here/delete")[0] == 200
    assert "made-here" not in {t["name"] for t in seeded.get("topics")}
    status, body = seeded.post("topics/made-here/delete")
    assert status == 400 and "UNKNOWN_TOPIC_OR_PARTITION" in body["error"]


def test_writes_refuse_what_another_site_can_send(seeded: Seeded) -> None:
    def post(headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"{seeded.url}api/topics", method="POST",
                                         data=b'{"name": "cross-site"}', headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    # a form or plain-text POST (no CORS preflight) and another page's origin
    assert post({"content-type": "text/plain"}) == 415
    assert post({"content-type": "application/json", "origin": "http://evil.example"}) == 403
    assert "cross-site" not in {t["name"] for t in seeded.get("topics")}


@pytest.mark.akfak(http=True)
def test_read_only_unless_allowed(akfak_broker: EmbeddedBroker) -> None:
    request = urllib.request.Request(f"{akfak_broker.http_url}api/topics", method="POST",
                                     data=b'{"name": "refused"}',
                                     headers={"content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 403
    assert akfak_broker.call(lambda: akfak_broker.broker.image.topic("refused")) is None


# -- in a browser ----------------------------------------------------------------------------


def test_pages_in_a_browser(seeded: Seeded, browser: Any, tmp_path: Path) -> None:
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def show(fragment: str, name: str, ready: str) -> None:
        page.goto(seeded.url + fragment)
        page.wait_for_selector(ready, state="attached")
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)

    # the inspector shows a client's Metadata and Produce as they happen
    show("#/requests", "requests-empty", "#requests")
    page.fill("#filter-client", "from-the-browser-test")
    producer = seeded.producer(**{"client.id": "from-the-browser-test"})
    producer.produce("watched", value=b"live", partition=0)
    assert producer.flush(10) == 0
    row = 'tr.request[data-client="from-the-browser-test"]'
    page.wait_for_selector(f'{row}[data-api="Metadata"]')
    page.wait_for_selector(f'{row}[data-api="Produce"]')
    page.click(f'{row}[data-api="Produce"]')
    decoded = page.wait_for_selector("tr.detail pre.decoded")
    assert '"name": "watched"' in decoded.text_content()
    page.screenshot(path=str(tmp_path / "requests.png"), full_page=True)
    page.click("#pause")
    assert page.text_content("#pause") == "Resume"
    # paused: a new Produce is not listed (the page polls every second) until resumed
    produced = f'{row}[data-api="Produce"]'
    shown_before = len(page.query_selector_all(produced))
    producer.produce("watched", value=b"while paused", partition=0)
    assert producer.flush(10) == 0
    page.wait_for_timeout(2500)
    assert len(page.query_selector_all(produced)) == shown_before
    page.click("#pause")
    page.wait_for_function(f"document.querySelectorAll('{produced}').length > {shown_before}")

    show("#/", "overview", "#chart-bytes svg path")
    topics = len(seeded.get("topics"))
    page.wait_for_function(f"document.querySelector('#card-topics .value').textContent === '{topics}'")

    show("#/topics", "topics", '#topics tr[data-topic="browse"]')
    assert page.text_content('#topics tr[data-topic="browse"] td:nth-child(2)') == "2"

    show("#/topics/browse", "topic", "#partitions tr[data-partition='1']")
    assert "12345678" in page.text_content('#configs tr[data-config="retention.ms"]')
    page.click("#partitions tr[data-partition='0'] button.segments")
    page.wait_for_selector("tr.detail td.mono")

    # a write action from the page (the broker allows them): produce one record
    show("#/topics/watched", "topic-watched", "#partitions tr[data-partition='0']")
    form = page.locator("form", has_text="Produce")
    form.locator("input[name=key]").fill("page-key")
    form.locator("input[name=value]").fill("from the page")
    form.locator("input[name=headers]").fill("via=browser")
    form.locator("button[type=submit]").click()
    form.get_by_text("done").wait_for()
    last = seeded.get("topics/watched/partitions/0/records")["records"][-1]
    assert (last["key"]["text"], last["value"]["text"],
            [(h["key"], h["value"]["text"]) for h in last["headers"]]) \
        == ("page-key", "from the page", [("via", "browser")])

    show("#/browse/browse/0?limit=5", "messages", "#records tr.record")
    rows = page.query_selector_all("#records tr.record")
    assert [r.get_attribute("data-offset") for r in rows] == ["0", "1", "2", "3", "4"]
    first = rows[0]
    assert first.query_selector("td.key").text_content() == "k0"
    assert first.query_selector("td.value").text_content() == '{"n": 0}'
    assert first.query_selector("td.headers").text_content() == "trace=t0"
    assert rows[3].query_selector("td.headers").text_content() == "a=1b=2"
    page.click("#browse-next")
    page.wait_for_selector('#records tr.record[data-offset="5"]')
    assert page.text_content('#records tr.record[data-offset="5"] td.value') == "late"

    # the same records as hex and as JSON
    show("#/browse/browse/0?limit=5&format=hex", "messages-hex", "#records tr.record")
    assert page.text_content('#records tr.record[data-offset="0"] td.value') == b'{"n": 0}'.hex()
    assert page.text_content('#records tr.record[data-offset="2"] td.value') == "000102ff"
    show("#/browse/browse/0?limit=5&format=json", "messages-json", "#records tr.record")
    assert page.text_content('#records tr.record[data-offset="0"] td.value') == '{\n  "n": 0\n}'

    show("#/browse/txns/0", "messages-txns", "#records tr.record")
    assert page.query_selector_all("#records tr.control") and page.query_selector_all("#records tr.aborted")

    show("#/groups", "groups", '#groups tr[data-group="lagging"]')
    assert page.text_content('#groups tr[data-group="lagging"] td.lag') == "5"
    show("#/groups/lagging", "group", '#group-partitions tr[data-tp="lagged-0"]')
    assert page.text_content('#group-partitions tr[data-tp="lagged-0"] td.lag') == "5"
    page.wait_for_selector("#chart-lag svg path", state="attached")
    page.screenshot(path=str(tmp_path / "group.png"), full_page=True)
    page.close()
    assert errors == []


def test_inspector_keeps_few_large_objects() -> None:
    from kio.schema.metadata.v12.request import MetadataRequest

    from akfak.request_events import RequestEvent
    from akfak.web.api.inspector import DETAILED_BYTES, LARGEST_DETAILED, RequestLog

    log = RequestLog()
    request = MetadataRequest(topics=None, allow_auto_topic_creation=False,
                              include_topic_authorized_operations=False)
    big = LARGEST_DETAILED - 100
    for _ in range(DETAILED_BYTES // big + 2):
        log.observe(RequestEvent(1, "peer", "PLAINTEXT", "c", 3, 12, 0, big, 100, 0.0, 0.0, 0.0,
                                 request, None))
    log.observe(RequestEvent(1, "peer", "PLAINTEXT", "c", 3, 12, 0, LARGEST_DETAILED + 1, 1,
                             0.0, 0.0, 0.0, request, None))
    kept = [e["seq"] for e in log.since(0) if e["detailed"]]
    assert kept == list(range(log.seq - DETAILED_BYTES // LARGEST_DETAILED, log.seq))
    assert log.detail(log.seq)["expired"] and not log.detail(kept[-1])["expired"]
    assert log.detail(kept[-1])["request"]["topics"] is None
