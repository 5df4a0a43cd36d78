"""A gRPC client that is not nghttp2: Python's grpcio, on gRPC C-core's own HTTP/2 and HPACK.

usage: grpc_check.py <host:port> <path> <request hex> [--calls N] [--timeout S] [--metadata-bytes B]

Sends the request bytes as they are (no protobuf here: the caller wrote them)
N times, all at once on one channel, each with a grpc-timeout of S seconds and,
with --metadata-bytes, a custom header of B bytes (C-core's encoder then indexes
and evicts). One JSON line per call, in order:
  {"code": "OK", "response": "<hex>"}  or  {"code": "UNIMPLEMENTED", "details": "..."}
"""
import argparse
import json
import sys

import grpc

parser = argparse.ArgumentParser()
parser.add_argument("target")
parser.add_argument("path")
parser.add_argument("request")
parser.add_argument("--calls", type=int, default=1)
parser.add_argument("--timeout", type=float, default=5.0)
parser.add_argument("--metadata-bytes", type=int, default=0)
args = parser.parse_args()

request = bytes.fromhex(args.request)
with grpc.insecure_channel(args.target) as channel:
    call = channel.unary_unary(args.path)  # bytes in, bytes out
    futures = []
    for i in range(args.calls):
        metadata = [("x-call", str(i))]
        if args.metadata_bytes:
            metadata.append(("x-padding", chr(ord("a") + i % 26) * args.metadata_bytes))
        futures.append(call.future(request, timeout=args.timeout, metadata=metadata))
    for future in futures:
        try:
            print(json.dumps({"code": "OK", "response": future.result().hex()}))
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name, "details": err.details()}))
sys.stdout.flush()
