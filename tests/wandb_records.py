"""Reads the records of an offline W&B run (``offline-run-*/run-*.wandb``) so tests can check what a
dashboard will show after ``wandb sync``: the run's group and job type, its artifacts, its tables.

The file is a W&B header (":W&B", magic, version: 7 bytes) followed by LevelDB-style log blocks of
32 KiB; each chunk has a 7-byte header (crc32, length, type: full/first/middle/last) and chunks of
one record are joined. Each record is a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER, FILE_HEADER = 32768, 7, 7


def records(path: Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, pending = [], FILE_HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def summary(run_dir: Path) -> dict:
    """Group, job type, artifact (name, type) pairs and history keys of one offline run dir."""
    recs = records(next(Path(run_dir).glob("run-*.wandb")))
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    artifacts = [(r.artifact.name, r.artifact.type) for r in recs if r.WhichOneof("record_type") == "artifact"]
    keys = {item.key or "/".join(item.nested_key) for r in recs if r.WhichOneof("record_type") == "history"
            for item in r.history.item}
    return {"group": run.run_group, "job_type": run.job_type, "artifacts": artifacts, "history_keys": keys}
