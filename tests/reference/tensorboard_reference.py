"""Reference TensorBoard event file for tests/metric_tensorboard_test.ts.

Regenerate the fixture (needs Debian's python3-protobuf: apt-get install -y python3-protobuf):

    /usr/bin/python3 tests/reference/tensorboard_reference.py write tests/fixtures/tensorboard_reference.tfevents

Check any events file (CRCs, protobuf parse) and print its scalars:

    /usr/bin/python3 tests/reference/tensorboard_reference.py check path/to/events.out.tfevents.*

Independent of tune's writer: the Event/Summary messages are built with google.protobuf from
a descriptor written out here (the public tensorflow/core/util/event.proto and
tensorflow/core/framework/summary.proto fields we use, with their real numbers, types and
oneofs), and CRC32C is a plain bitwise loop over the Castagnoli polynomial. The TFRecord
framing is the public one: u64le length, masked CRC32C of those 8 bytes, data, masked CRC32C
of data. One Event per scalar, as torch.utils.tensorboard's SummaryWriter.add_scalar writes.

CALLS must stay equal to the list in tests/metric_tensorboard_test.ts.
"""
import math
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FILE_VERSION = "brain.Event:2"
# Wall time of the file_version record (the writer's construction).
START_WALL = 1700000000.25
# One entry per logDict call: (wall_time, step, [(tag, value), ...]).
CALLS = [
    (1700000001.5, 0, [("loss", 2.5), ("lr", 3e-4)]),
    (1700000002.75, 1, [("loss", 2.25), ("rewards/chosen", -1.75), ("rewards/rejected", 0.0)]),
    (1700000003.125, 2, [("train/tiny", 1e-30), ("train/subnormal", 1e-40), ("train/large", 3.0e38)]),
    (1700000004.0625, 7, [("grad_norm", 123456.789), ("nan_loss", math.nan), ("inf", math.inf)]),
    (1700000005.5, 2**40 + 3, [("tokens_per_second_per_gpu", 4321.0), ("ünï/ß", -0.125)]),
]


def _message_classes():
    f = descriptor_pb2.FileDescriptorProto()
    f.name = "tune_tensorboard_reference.proto"
    f.package = "tensorboard_ref"
    f.syntax = "proto3"
    FD = descriptor_pb2.FieldDescriptorProto

    def field(msg, name, number, ftype, label=FD.LABEL_OPTIONAL, type_name=None, oneof=None):
        fd = msg.field.add()
        fd.name, fd.number, fd.type, fd.label = name, number, ftype, label
        if type_name:
            fd.type_name = type_name
        if oneof is not None:
            fd.oneof_index = oneof

    value = f.message_type.add()
    value.name = "Value"
    value.oneof_decl.add().name = "value"
    field(value, "tag", 1, FD.TYPE_STRING)
    field(value, "simple_value", 2, FD.TYPE_FLOAT, oneof=0)

    summary = f.message_type.add()
    summary.name = "Summary"
    field(summary, "value", 1, FD.TYPE_MESSAGE, FD.LABEL_REPEATED, ".tensorboard_ref.Value")

    event = f.message_type.add()
    event.name = "Event"
    event.oneof_decl.add().name = "what"
    field(event, "wall_time", 1, FD.TYPE_DOUBLE)
    field(event, "step", 2, FD.TYPE_INT64)
    field(event, "file_version", 3, FD.TYPE_STRING, oneof=0)
    field(event, "summary", 5, FD.TYPE_MESSAGE, type_name=".tensorboard_ref.Summary", oneof=0)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    get = getattr(message_factory, "GetMessageClass", None)
    if get is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get = lambda d: factory.GetPrototype(d)  # noqa: E731
    return get(pool.FindMessageTypeByName("tensorboard_ref.Event"))


def crc32c(data):
    """CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, bit by bit."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked_crc(data):
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def record(data):
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))


def write(path):
    Event = _message_classes()
    assert crc32c(b"123456789") == 0xE3069283
    out = [record(Event(wall_time=START_WALL, file_version=FILE_VERSION).SerializeToString())]
    for wall, step, scalars in CALLS:
        for tag, value in scalars:
            ev = Event(wall_time=wall, step=step)
            v = ev.summary.value.add()
            v.tag = tag
            v.simple_value = value
            out.append(record(ev.SerializeToString()))
    blob = b"".join(out)
    with open(path, "wb") as fh:
        fh.write(blob)
    print(f"wrote {path}: {len(out)} records, {len(blob)} bytes")


def check(path):
    Event = _message_classes()
    blob = open(path, "rb").read()
    off = n = 0
    while off < len(blob):
        header = blob[off:off + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", blob[off + 8:off + 12])
        assert hcrc == masked_crc(header), f"record {n}: bad length CRC"
        data = blob[off + 12:off + 12 + length]
        (dcrc,) = struct.unpack("<I", blob[off + 12 + length:off + 16 + length])
        assert dcrc == masked_crc(data), f"record {n}: bad data CRC"
        ev = Event()
        ev.ParseFromString(data)
        if ev.WhichOneof("what") == "file_version":
            print(f"wall_time={ev.wall_time!r} file_version={ev.file_version}")
        for v in ev.summary.value:
            print(f"wall_time={ev.wall_time!r} step={ev.step} {v.tag}={v.simple_value!r}")
        off += 16 + length
        n += 1
    print(f"{path}: {n} records, all CRCs good")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit("usage: tensorboard_reference.py write|check FILE")
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
