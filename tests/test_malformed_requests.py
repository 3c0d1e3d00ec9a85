"""Structurally invalid requests over raw sockets: each closes only its own connection with
one WARN line (peer, API key, version, reason) and no traceback; unknown tagged fields
are skipped.  The broker is a subprocess, so an abort in the native decoder (what a
40-byte request with a huge count did) shows as a death instead of killing pytest.
"""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator

import pytest
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from tests import requests
from tests.brokers import BrokerProcess
from tests.fuzzing import TOPIC, Target
from tests.recordbatch import make_batch
from tests.wire import WireClient, decode_response, encode_body, encode_request

# Metadata v9 (flexible): a topics array claiming 4294967294 elements in a 5-byte varint.
# kio's native decoder allocates 32 GiB for it and aborts the process.
KILLER = encode_request(3, 9, 1, b"\xff\xff\xff\xff\x0f")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    # Target creates the topic the fuzz seeds (and these tests) name.
    target = Target(tmp_path_factory.mktemp("malformed") / "data")
    yield target.broker
    target.close()


def _closed_with_one_warning(broker: BrokerProcess, frame: bytes) -> str:
    """Send `frame` on a fresh connection; the broker must close it and log one WARN line
    naming this peer.  Returns that line."""
    before = len(broker.log())
    with WireClient(broker.port) as client:
        host, port = client.sock.getsockname()
        peer = f"{host}:{port}"
        client.send(frame)
        assert client.is_closed_by_peer(), "the connection stayed open"
    assert broker.proc.poll() is None, f"the broker died:\n{broker.log()[before:]}"
    _still_serving(broker)
    new = broker.log()[before:]
    lines = [line for line in new.splitlines() if peer in line]
    assert len(lines) == 1, new
    assert "#warn]" in lines[0] and "Traceback" not in new and "#critical]" not in new, new
    return lines[0]


def _still_serving(broker: BrokerProcess) -> None:
    with WireClient(broker.port, timeout=5) as client:
        client.send(encode_request(18, 0, 7, b""))
        correlation_id, response = decode_response(18, 0, client.recv_frame())
        assert correlation_id == 7 and response.error_code == ErrorCode.none


def test_the_40_byte_killer_closes_only_its_connection(broker: BrokerProcess) -> None:
    assert len(KILLER) <= 40
    with WireClient(broker.port) as bystander:  # an open connection, kept through it all
        line = _closed_with_one_warning(broker, KILLER)
        assert "malformed request (API key 3 v9)" in line
        assert "MetadataRequest.topics: 4294967294 elements but only 0 bytes remain" in line
        bystander.send(encode_request(18, 0, 3, b""))
        assert decode_response(18, 0, bystander.recv_frame())[0] == 3


def _metadata_v1(topics: bytes) -> bytes:
    return encode_request(3, 1, 1, topics)


@pytest.mark.parametrize(("frame", "reason"), [
    # legacy int32 counts
    (_metadata_v1(b"\x7f\xff\xff\xff"), "MetadataRequest.topics: 2147483647 elements"),
    (_metadata_v1(b"\x80\x00\x00\x00"), "MetadataRequest.topics: count -2147483648"),
    # a string length past the frame, and the widest compact string
    (_metadata_v1(b"\x00\x00\x00\x01\x7f\xff"), "MetadataRequest.topics.name: 32767 bytes but only 0"),
    (encode_request(3, 9, 1, b"\x02\xff\xff\x03"), "exceeds 32767"),
    # Produce v3: a records length of 2 GiB
    (encode_request(0, 3, 1, b"\xff\xff\x00\x01\x00\x00\x13\x88\x00\x00\x00\x01\x00\x04fuzz"
                    b"\x00\x00\x00\x01\x00\x00\x00\x00\x7f\xff\xff\xff"),
     "ProduceRequest.topic_data.partition_data.records: 2147483647 bytes but only 0 remain"),
    # a tagged-field count far beyond the bytes left
    (encode_request(3, 9, 1, b"\x01\x00\x00\x00\xff\xff\xff\xff\x0f"), "tagged fields but only"),
])
def test_huge_counts_and_lengths(broker: BrokerProcess, frame: bytes, reason: str) -> None:
    assert reason in _closed_with_one_warning(broker, frame)


@pytest.mark.parametrize(("frame", "reason"), [
    # Metadata v0: a null topics array (nullable only from v1)
    (encode_request(3, 0, 1, b"\xff\xff\xff\xff"),
     "MetadataRequest.topics: non-nullable array was serialized as null"),
    # CreateTopics v5 (flexible): null topics
    (encode_request(19, 5, 1, b"\x00" + b"\x00\x00\x13\x88" + b"\x00" + b"\x00"),
     "CreateTopicsRequest.topics: non-nullable array was serialized as null"),
    # FindCoordinator v0: a null key
    (encode_request(10, 0, 1, b"\xff\xff"), "non-nullable field was serialized as null"),
])
def test_null_where_not_nullable(broker: BrokerProcess, frame: bytes, reason: str) -> None:
    assert reason in _closed_with_one_warning(broker, frame)


def test_null_topic_name_before_v12_is_an_invalid_request(broker: BrokerProcess) -> None:
    # Metadata v10: one topic (zero id, null name, no tags), three false flags, no tags.
    body = b"\x02" + b"\x00" * 16 + b"\x00\x00" + b"\x00\x00\x00" + b"\x00"
    line = _closed_with_one_warning(broker, encode_request(3, 10, 1, body))
    assert "invalid request (API key 3 v10): Topic name can not be null for version 10" in line


def _unknown_tags(*tags: int) -> bytes:
    fields = b"".join(bytes([tag, 3]) + b"xyz" for tag in tags)
    return bytes([len(tags)]) + fields


def test_unknown_tagged_fields_in_the_header_are_skipped(broker: BrokerProcess) -> None:
    body = encode_body(ApiVersionsRequest(client_software_name="akfak-tests",
                                          client_software_version="1"))
    with WireClient(broker.port) as client:
        client.send(encode_request(18, 3, 5, body, tagged=_unknown_tags(42, 43)))
        correlation_id, response = decode_response(18, 3, client.recv_frame())
    assert correlation_id == 5 and response.error_code == ErrorCode.none


def test_unknown_tagged_fields_in_the_body_are_skipped(broker: BrokerProcess) -> None:
    # Metadata v9 naming TOPIC, with unknown tags in the topic struct and at the top level.
    name = TOPIC.encode()
    topic = bytes([len(name) + 1]) + name + _unknown_tags(42)
    body = b"\x02" + topic + b"\x00\x00\x00" + _unknown_tags(7, 42)
    with WireClient(broker.port) as client:
        client.send(encode_request(3, 9, 9, body))
        correlation_id, response = decode_response(3, 9, client.recv_frame())
    assert correlation_id == 9
    assert [(t.name, t.error_code) for t in response.topics] == [(TOPIC, ErrorCode.none)]


def test_unknown_tags_beside_a_known_one_inside_a_tagged_struct(broker: BrokerProcess) -> None:
    # Fetch v15: tagged replica_state (tag 1) holding an unknown tag of its own, then tag 42.
    request = requests.fetch({uuid.UUID(int=0): {0: 0}}, version=15)
    body = bytearray(encode_body(request))
    assert body[-1] == 0  # no tagged fields at the top level
    replica_state = struct.pack(">iq", -1, -1) + _unknown_tags(42)
    body[-1:] = b"\x02" + bytes([1, len(replica_state)]) + replica_state + bytes([42, 1]) + b"z"
    with WireClient(broker.port) as client:
        client.send(encode_request(1, 15, 4, bytes(body)))
        correlation_id, response = decode_response(1, 15, client.recv_frame())
    assert correlation_id == 4 and response.error_code == ErrorCode.none
    assert [p.error_code for p in response.responses[0].partitions] == [ErrorCode.unknown_topic_id]


def test_zero_topic_id_in_fetch_is_unknown(broker: BrokerProcess) -> None:
    with WireClient(broker.port) as client:
        response = client.request(requests.fetch({uuid.UUID(int=0): {0: 0}}, version=13))
    [topic] = response.responses
    assert [p.error_code for p in topic.partitions] == [ErrorCode.unknown_topic_id]


def test_every_truncation_of_a_produce_request(broker: BrokerProcess) -> None:
    body = encode_body(requests.produce(TOPIC, {0: make_batch([(b"k", b"v")])}, version=9))
    frame = encode_request(0, 9, 1, body)
    header = len(frame) - len(body)
    before = len(broker.log())
    for cut in range(len(body)):
        payload = frame[4:header + cut]
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            assert sock.recv(1) == b"", f"cut at {cut}: the connection stayed open"
    assert broker.proc.poll() is None
    _still_serving(broker)
    new = broker.log()[before:]
    assert new.count("malformed request (API key 0 v9)") == len(body), new
    assert "Traceback" not in new and "#critical]" not in new


def test_oversized_frame_is_refused_before_it_is_read(broker: BrokerProcess) -> None:
    # socket.request.max.bytes (100 MiB): the length alone closes the connection.
    line = _closed_with_one_warning(broker, struct.pack(">i", 200 << 20) + b"\x00" * 16)
    assert "exceeds socket.request.max.bytes" in line



def test_a_batch_length_below_any_record_overhead_is_corrupt(broker: BrokerProcess) -> None:
    # Found by the fuzzer: 12 bytes of records claiming a 0-byte batch (Kafka's batch
    # iterator throws CorruptRecordException before reading the magic).
    before = len(broker.log())
    with WireClient(broker.port) as client:
        response = client.request(requests.produce(TOPIC, {0: struct.pack(">qi", 0, 0)}, version=9))
    [partition] = response.responses[0].partition_responses
    assert partition.error_code == ErrorCode.corrupt_message
    assert partition.error_message == "Record size 0 is less than the minimum record overhead (14)"
    assert "Traceback" not in broker.log()[before:]
