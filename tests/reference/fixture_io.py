"""Write parity fixtures as safetensors (f32/i32 only), readable by tests/fixture_io.ts.

Used by every tests/reference/*.py script; run them with Debian's /usr/bin/python3
(python3-torch). The format is the public safetensors layout: an 8-byte little-endian
header length, a JSON header, then the raw little-endian tensor bytes.
"""
import json
import struct

import torch


def write_fixture(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (float -> F32, int -> I32)."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if t.is_floating_point():
            t = t.to(torch.float32)
            dtype = "F32"
        else:
            t = t.to(torch.int32)
            dtype = "I32"
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {k: json.dumps(v) for k, v in metadata.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)
