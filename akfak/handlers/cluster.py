"""DescribeCluster (key 60) v0-v2.

Behavior (as Kafka 4's KafkaApis.handleDescribeCluster on a broker):
- The cluster id, this node as the controller, and the brokers: this node, at the
  address advertised for the listener the request came through, never fenced; in a
  cluster over PostgreSQL (akfak/cluster.py) the live brokers and the controller's id.
- endpoint_type (v1+) must be 1 (brokers): 2 (controllers) answers MISMATCHED_ENDPOINT_TYPE,
  anything else UNSUPPORTED_ENDPOINT_TYPE (INVALID_REQUEST for both in v0).
- cluster_authorized_operations only when asked: the principal's (0 without DESCRIBE on
  the cluster; everything without an authorizer).  DescribeCluster itself needs no ACL.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32

from akfak.handlers.base import NO_THROTTLE, OPERATIONS_NOT_REQUESTED, Handler
from akfak.handlers.metadata import cluster_operations
from akfak.protocol import RequestContext
from akfak.security.checks import access

ENDPOINT_BROKER, ENDPOINT_CONTROLLER = 1, 2
ENDPOINT_NAMES = {ENDPOINT_BROKER: "BROKER", ENDPOINT_CONTROLLER: "CONTROLLER"}
UNSUPPORTED_ENDPOINT_TYPE = 115


class DescribeClusterHandler(Handler):
    api_key = 60
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        endpoint_type = int(request.endpoint_type) if version >= 1 else ENDPOINT_BROKER
        fields: dict[str, Any] = {"throttle_time": NO_THROTTLE}
        if endpoint_type not in ENDPOINT_NAMES:
            return self.response_type(version)(
                **fields, error_code=ErrorCode.invalid_request if version == 0
                else ErrorCode(UNSUPPORTED_ENDPOINT_TYPE),
                error_message=f"Unsupported endpoint type {endpoint_type}", cluster_id="",
                brokers=())
        if endpoint_type != ENDPOINT_BROKER:
            return self.response_type(version)(
                **fields, error_code=ErrorCode.invalid_request if version == 0
                else ErrorCode.mismatched_endpoint_type,
                error_message=("The request was sent to an endpoint of type BROKER, but we "
                               f"wanted an endpoint of type {ENDPOINT_NAMES[endpoint_type]}"),
                cluster_id="", brokers=())
        broker = self.broker
        nodes = []
        for node_id, host, port, rack in broker.brokers(context.listener):
            node: dict[str, Any] = {"broker_id": i32(node_id), "host": host, "port": i32(port),
                                    "rack": rack}
            if version >= 2:
                node["is_fenced"] = False
            nodes.append(module.DescribeClusterBroker(**node))
        if version >= 1:
            fields["endpoint_type"] = i8(ENDPOINT_BROKER)
        return self.response_type(version)(
            **fields, error_code=ErrorCode.none, error_message=None, cluster_id=broker.cluster_id,
            controller_id=i32(broker.controller_id), brokers=tuple(nodes),
            cluster_authorized_operations=i32(
                cluster_operations(access(context)) if request.include_cluster_authorized_operations
                else OPERATIONS_NOT_REQUESTED))


HANDLERS = (DescribeClusterHandler,)
