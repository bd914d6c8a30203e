"""The local DynamoDB + S3 emulator: moto's server, serving one request at a time.

moto's in-memory backends are not safe under concurrent writes (its TransactWriteItems
deep-copies the table while other threads change it, and fails with "dictionary changed size
during iteration"). Real DynamoDB has no such limit, so the emulator serialises requests
instead of the product working around it.

moto also takes a rollback copy of every table a transaction touches (a deep copy of every
item, once per item of the transaction), which made each transaction cost O(table). The
emulator rolls a failed transaction back from the pre-images of the items it touches instead:
the same result, O(items).
And moto answers a Query by sorting and scanning every item of the table; only the queried
partition can match, so only it is scanned (same results, without O(table) work per query,
which made large test data sets take hours). For a global index the partitions are grouped and
sorted by the index's sort key once, reused until the next write request; a key condition on
the sort key picks its range by bisection, and without a start key only the first Limit items
in scan order (plus one neighbour each side, so LastEvaluatedKey is the same) are handed to
moto, which checks every candidate again itself.

moto re-measures a whole item on every attribute it sets, to enforce the 400 KB item limit; a
running (over)estimate skips that until an item nears 300 KB, where the exact check runs as
before. And moto names ListParts' answer ListPartsResponse instead of S3's ListPartsResult,
which the AWS SDK rejects; the root element is renamed. DynamoDB reads (Query, GetItem,
BatchGetItem, Scan) are dumped as JSON directly instead of through moto's model-driven
serialiser (EMULATOR_VERIFY=1 compares both on every answer).

moto applies a ProjectionExpression by converting the whole item to plain JSON once per
projected attribute (21 times per snapshot header); a projection of top-level attributes only
picks them instead (the same answer; others go to moto's own).

The stored items are millions of Python objects, and each full collection of Python's cyclic
garbage collector walked them all: pauses of seconds, long enough for a request to time out
(the benchmark's exports answered 503). What a write request leaves behind is frozen out of
the collector (gc.freeze); garbage is still freed by reference counting.

moto reports a constant ConsumedCapacity. For reads that ask for it, the emulator computes it by
DynamoDB's documented rules instead, so the benchmark's read cost is meaningful: item sizes
(attribute names plus values), a Query or Scan page's items summed and rounded up to 4 KB, a
GetItem or each BatchGetItem item rounded up on its own, half a unit per 4 KB when eventually
consistent. It sees only the items returned, so a filter expression's discarded items are not
counted (DynamoDB counts them); a projected item counts whole, as in DynamoDB.

Usage: emulator.py PORT
"""

import base64
import bisect
import io
import json
import math
import os
import signal
import sys
import threading
import zlib

import copy
import gc

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict, bytesize
from moto.dynamodb.models.table import LocalSecondaryIndex, Table
from moto.core.serialize import BaseJSONSerializer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


class _RequestScopedTableCopy:
    """Stands in for the `copy` module inside moto's DynamoDB backend."""

    def __init__(self) -> None:
        self.tables: dict[int, Table] = {}
        # Inside a transaction with an undo log, the "backup" is the table itself.
        self.undo_logged = False

    def deepcopy(self, x, memo=None):
        if isinstance(x, Table):
            if self.undo_logged:
                return x
            if id(x) not in self.tables:
                self.tables[id(x)] = copy.deepcopy(x, memo)
            return self.tables[id(x)]
        return copy.deepcopy(x, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


table_copies = _RequestScopedTableCopy()
_moto_transact = dynamodb_models.DynamoDBBackend.transact_write_items


def _transact_with_undo(self, transact_items):
    """moto's TransactWriteItems, rolled back from the pre-images of the items it touches
    instead of from a copy of every table it touches (O(items) instead of O(table))."""
    undo = []
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = self.tables[op["TableName"]]
            hash_key, range_key = self.get_keys_value(table, op["Item"] if op_type == "Put" else op["Key"])
            before = table.get_item(hash_key, range_key)
        except Exception:
            continue  # moto refuses this entry itself, before writing anything
        undo.append((table, hash_key, range_key, copy.deepcopy(before)))
    table_copies.undo_logged = True
    try:
        return _moto_transact(self, transact_items)
    except Exception:
        for table, hash_key, range_key, before in reversed(undo):
            if range_key is None:
                if before is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = before
            elif before is None:
                table.items[hash_key].pop(range_key, None)
            else:
                table.items[hash_key][range_key] = before
        raise
    finally:
        table_copies.undo_logged = False


_moto_query = Table.query


# (table id, index name) -> {(type, value) of the index's hash key -> items}; cleared by writes.
_global_partitions: dict = {}

READ_ACTIONS = {"Query", "GetItem", "BatchGetItem", "Scan", "DescribeTable", "ListTables", "DescribeTimeToLive"}


def _global_partition(table, index_name, hash_key, comparison, bounds, limit, start_key, forward):
    index = next((i for i in table.global_indexes if i.name == index_name), None)
    if index is None or hash_key is None:
        return None
    hash_attrs = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
    range_attrs = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
    if len(hash_attrs) != 1 or len(range_attrs) != 1:
        return None
    key = (id(table), index_name)
    groups = _global_partitions.get(key)
    if groups is None:
        groups = {}
        for item in Table.all_items(table):
            value = item.attrs.get(hash_attrs[0])
            sort = item.attrs.get(range_attrs[0])
            if value is not None and sort is not None:
                groups.setdefault((value.type, str(value.value)), []).append((sort.type, str(sort.value), item))
        for entries in groups.values():
            entries.sort(key=lambda e: (e[0], e[1]))
        _global_partitions[key] = groups
    entries = groups.get((hash_key.type, str(hash_key.value)), [])
    if not entries or any(e[0] != "S" for e in (entries[0], entries[-1])) or not all(b.type == "S" for b in bounds):
        return [e[2] for e in entries]
    keys = [e[1] for e in entries]
    values = [str(b.value) for b in bounds]
    lo, hi = 0, len(entries)
    if comparison == "BETWEEN" and len(values) == 2:
        lo, hi = bisect.bisect_left(keys, values[0]), bisect.bisect_right(keys, values[1])
    elif comparison == "<" and values:
        hi = bisect.bisect_left(keys, values[0])
    elif comparison == "<=" and values:
        hi = bisect.bisect_right(keys, values[0])
    elif comparison == ">" and values:
        lo = bisect.bisect_right(keys, values[0])
    elif comparison == ">=" and values:
        lo = bisect.bisect_left(keys, values[0])
    # One neighbour past each bound: moto answers a LastEvaluatedKey when Limit is reached and
    # any item follows in the partition, in range or not, as DynamoDB may.
    lo, hi = max(lo - 1, 0), min(hi + 1, len(entries))
    if limit and start_key is None:
        # Without a start key only the first Limit items in scan order (and the ones around
        # them) can be read; moto sorts what it gets, so give it no more.
        if forward is False:
            lo = max(lo, hi - (limit + 2))
        else:
            hi = min(hi, lo + limit + 2)
    return [e[2] for e in entries[lo:hi]]


def _partition_query(self, hash_key, *args, **kwargs):
    # moto's backend passes index_name positionally (after projection_expressions).
    index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
    local = index_name is None or any(
        isinstance(i, LocalSecondaryIndex) and i.name == index_name for i in self.indexes
    )
    if not local:
        def arg(i, name):
            return args[i] if len(args) > i else kwargs.get(name)

        partition = _global_partition(
            self,
            index_name,
            hash_key,
            arg(0, "range_comparison"),
            arg(1, "range_objs") or [],
            arg(2, "limit"),
            arg(3, "exclusive_start_key"),
            arg(4, "scan_index_forward"),
        )
        if partition is None:
            return _moto_query(self, hash_key, *args, **kwargs)
        self.all_items = lambda: iter(partition)
        try:
            return _moto_query(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items
    if hash_key is None or not self.range_key_attr:
        return _moto_query(self, hash_key, *args, **kwargs)
    partition = list(self.items[hash_key].values()) if hash_key in self.items else []
    self.all_items = lambda: sorted(partition, key=lambda item: item.range_key)
    try:
        return _moto_query(self, hash_key, *args, **kwargs)
    finally:
        del self.all_items


_moto_project = Item.project
# The sizes of the whole items that the current request projected, when it asked for its
# consumed capacity (requests run one at a time).
_projected_sizes: list[int] = []
_capacity_wanted = False


def _type_size(value: DynamoType) -> int:
    v = value.value
    if value.type == "B":
        return len(v) if isinstance(v, bytes) else len(base64.b64decode(v))
    if value.type == "M":
        return 3 + sum(1 + len(k.encode()) + _type_size(x) for k, x in v.items())
    if value.type == "L":
        return 3 + sum(1 + _type_size(x) for x in v)
    return _value_size({value.type: v})


def _fast_project(self, projection_expressions):
    names = [e[0] for e in projection_expressions if len(e) == 1 and "[" not in e[0]]
    if _capacity_wanted:
        _projected_sizes.append(sum(len(k.encode()) + _type_size(v) for k, v in self.attrs.items()))
    if len(names) != len(projection_expressions):
        return _moto_project(self, projection_expressions)
    # The query deep-copied its results already, so the values can be shared.
    projected = Item.__new__(Item)
    projected.hash_key, projected.range_key = self.hash_key, self.range_key
    projected.attrs = LimitedSizeDict()
    for name in names:
        if name in self.attrs:
            projected.attrs[name] = self.attrs[name]
    return projected


_exact_setitem = LimitedSizeDict.__setitem__


def _estimated_setitem(self, key, value):
    size = self.__dict__.get("_estimate")
    if size is None and len(self) == 0:
        size = 0
    added = bytesize(key) + (value.size() if type(value) is DynamoType else bytesize(str(value)))
    if size is None or size + added > 300_000:
        _exact_setitem(self, key, value)
    else:
        dict.__setitem__(self, key, value)
    # Replacing a value only adds: the estimate never falls below the real size.
    self.__dict__["_estimate"] = (size or 0) + added if size is not None else None


# DynamoDB reads answer plain JSON: moto's model-driven serialiser walks every attribute of every
# item through the service model, which dominated large exports. Items are already JSON-shaped,
# so they are dumped directly; anything not JSON-native takes moto's own path.
FAST_READS = {"Query", "GetItem", "BatchGetItem", "Scan"}
_moto_serialize_result = BaseJSONSerializer._serialize_result


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _fast_serialize_result(self, resp, result):
    op = self.operation_model
    if op.service_model.service_name != "dynamodb" or op.name not in FAST_READS or not isinstance(result, dict):
        return _moto_serialize_result(self, resp, result)
    try:
        body = json.dumps(_without_none(result))
    except (TypeError, ValueError):
        return _moto_serialize_result(self, resp, result)
    if os.environ.get("EMULATOR_VERIFY"):
        slow = _moto_serialize_result(self, {"status_code": 200, "headers": {}, "body": ""}, result)
        if json.loads(slow["body"]) != json.loads(body):
            print(f"EMULATOR_VERIFY mismatch in {op.name}", file=sys.stderr, flush=True)
    resp["body"] = body
    resp["headers"]["Content-Type"] = self._get_protocol_specific_content_type()
    return resp


CAPACITY_READS = {"Query", "Scan", "GetItem", "BatchGetItem"}


def _value_size(value: dict) -> int:
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        digits = v.lstrip("-").replace(".", "").strip("0") or "0"
        return 1 + math.ceil(len(digits) / 2)
    if kind == "B":
        return len(base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(x.encode()) for x in v)
    if kind == "NS":
        return sum(_value_size({"N": x}) for x in v)
    if kind == "BS":
        return sum(len(base64.b64decode(x)) for x in v)
    if kind == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_size(x) for k, x in v.items())
    return 0


def _item_size(item: dict) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def _units(size: int, consistent: bool) -> float:
    blocks = max(1, math.ceil(size / 4096))
    return float(blocks) if consistent else blocks / 2


def _with_read_capacity(action: str, request: dict, body: bytes, projected: list[int]) -> bytes:
    """Replaces moto's constant ConsumedCapacity of a read by DynamoDB's rules; `projected`:
    the whole sizes of the items a Query, Scan or GetItem projected."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if "ConsumedCapacity" not in answer:
        return body
    if action == "BatchGetItem":
        per_table = []
        for table, items in answer.get("Responses", {}).items():
            consistent = bool(request.get("RequestItems", {}).get(table, {}).get("ConsistentRead"))
            units = sum(_units(_item_size(item), consistent) for item in items)
            per_table.append({"TableName": table, "CapacityUnits": units})
        answer["ConsumedCapacity"] = per_table
    else:
        consistent = bool(request.get("ConsistentRead"))
        if action == "GetItem":
            item = answer.get("Item")
            size = sum(projected) if projected else _item_size(item) if item else 0
            units = _units(size, consistent) if item else 0.5
        elif projected:
            units = _units(sum(projected), consistent)
        else:
            units = _units(sum(_item_size(i) for i in answer.get("Items", [])), consistent)
        answer["ConsumedCapacity"] = {"TableName": request.get("TableName"), "CapacityUnits": units}
    return json.dumps(answer).encode()


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()
    dynamodb_models.copy = table_copies
    dynamodb_models.DynamoDBBackend.transact_write_items = _transact_with_undo
    Table.query = _partition_query
    LimitedSizeDict.__setitem__ = _estimated_setitem
    Item.project = _fast_project
    BaseJSONSerializer._serialize_result = _fast_serialize_result

    def serialised(environ, start_response):
        answer = {}

        def capture(status, headers, exc_info=None):
            answer.update(status=status, headers=headers, exc_info=exc_info)
            return lambda data: None

        action = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
        capacity_request = None
        if action in CAPACITY_READS:
            raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(raw)
            if b'"ReturnConsumedCapacity"' in raw:
                try:
                    capacity_request = json.loads(raw)
                except ValueError:
                    capacity_request = None
                if capacity_request and capacity_request.get("ReturnConsumedCapacity", "NONE") == "NONE":
                    capacity_request = None
        global _capacity_wanted
        with lock:
            table_copies.tables.clear()
            _projected_sizes.clear()
            _capacity_wanted = capacity_request is not None
            if action and action not in READ_ACTIONS:
                _global_partitions.clear()
            # Consume the response inside the lock: the body may still read backend state.
            body = b"".join(app(environ, capture))
            projected = list(_projected_sizes)
            if action not in READ_ACTIONS:
                gc.freeze()
        headers = answer["headers"]
        if capacity_request is not None and answer["status"].startswith("200"):
            body = _with_read_capacity(action, capacity_request, body, projected)
            fixed = {"content-length": str(len(body)), "x-amz-crc32": str(zlib.crc32(body))}
            headers = [(k, fixed.get(k.lower(), v)) for k, v in headers]
        # moto names ListParts' root element ListPartsResponse; S3 (and so the SDK) says ListPartsResult.
        listing_parts = environ.get("REQUEST_METHOD") == "GET" and "uploadId=" in environ.get("QUERY_STRING", "")
        if listing_parts and b"<ListPartsResponse" in body[:300]:
            body = body.replace(b"<ListPartsResponse", b"<ListPartsResult", 1).replace(b"</ListPartsResponse>", b"</ListPartsResult>", 1)
            headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(answer["status"], headers, answer["exc_info"])
        return [body]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    run_simple("127.0.0.1", port, serialised, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
