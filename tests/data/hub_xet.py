"""The Xet storage formats, read back in pure Python for the stub Hub (tests/data/hub_stub.py).

`huggingface_hub` uploads large files through Xet whenever `hf_xet` is installed: the client
chunks each file, packs the chunks (LZ4 or byte-grouped LZ4 compressed) into "xorbs", uploads
them to the CAS server, then uploads a "shard" that lists each file as xorb chunk ranges plus
its sha256. The stub stores the xorbs and, from a shard, rebuilds every file byte for byte so
that the commit's `lfsFile` entries (by sha256) resolve to real content, exactly as the Hub's
pointer files do. Formats: https://huggingface.co/docs/xet (xorb.md, shard.md, api.md).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

BOOKEND = b"\xff" * 32
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
ENTRY = 48  # every shard record is 48 bytes


class XetFormatError(ValueError):
    pass


def hash_hex(raw: bytes) -> str:
    """A 32-byte Xet hash as the API writes it: each 8-byte word little-endian, in order."""
    if len(raw) != 32:
        raise XetFormatError(f"hash of {len(raw)} bytes")
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


def hex_to_raw(text: str) -> bytes:
    data = bytes.fromhex(text)
    return b"".join(data[i : i + 8][::-1] for i in range(0, 32, 8))


# ---------------------------------------------------------------------- CRC-64/NVME

_CRC64_POLY = 0x9A6C9329AC4BC9B5  # reflected


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc_table()


def crc64_nvme(data: bytes) -> int:
    """CRC-64/NVME, the checksum a client sends when it asks for a xorb upload grant."""
    crc = 0xFFFFFFFFFFFFFFFF
    table = _CRC64_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------------- LZ4 (frame format)


def lz4_block(src: bytes, out: bytearray) -> None:
    """Decode one LZ4 block, appending to `out` (which holds earlier blocks: linked blocks
    may copy from them)."""
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        length = token >> 4
        if length == 15:
            while True:
                extra = src[i]
                i += 1
                length += extra
                if extra != 255:
                    break
        out += src[i : i + length]
        i += length
        if i >= n:  # the last sequence has literals only
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out):
            raise XetFormatError("LZ4 match offset out of range")
        length = token & 15
        if length == 15:
            while True:
                extra = src[i]
                i += 1
                length += extra
                if extra != 255:
                    break
        length += 4
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # overlapping copy: repeats the last `offset` bytes
            for k in range(length):
                out.append(out[start + k])


def lz4_frame(data: bytes) -> bytes:
    if data[:4] != b"\x04\x22\x4d\x18":
        raise XetFormatError("not an LZ4 frame")
    flags = data[4]
    i = 6  # magic, FLG, BD
    if flags & 0x08:  # content size
        i += 8
    if flags & 0x01:  # dictionary id
        i += 4
    i += 1  # header checksum
    block_checksum = bool(flags & 0x10)
    out = bytearray()
    while True:
        (size,) = struct.unpack_from("<I", data, i)
        i += 4
        if size == 0:
            break
        raw = bool(size & 0x80000000)
        size &= 0x7FFFFFFF
        block = data[i : i + size]
        i += size + (4 if block_checksum else 0)
        if raw:
            out += block
        else:
            lz4_block(block, out)
    return bytes(out)


def byte_ungroup4(data: bytes) -> bytes:
    """Undo byte grouping: the data holds the bytes at position 0 of every 4-byte group, then
    position 1, 2 and 3; the first n % 4 groups hold one extra byte."""
    n = len(data)
    sizes = [n // 4 + (1 if g < n % 4 else 0) for g in range(4)]
    out = bytearray(n)
    pos = 0
    for g, size in enumerate(sizes):
        out[g::4] = data[pos : pos + size]
        pos += size
    return bytes(out)


# ---------------------------------------------------------------------- xorbs


@dataclass
class XorbChunk:
    offset: int  # byte offset of the chunk header in the serialized xorb
    end: int  # byte offset just past the chunk's data
    data: bytes  # decompressed


def xorb_chunks(xorb: bytes) -> list[XorbChunk]:
    """Every chunk of a serialized xorb, decompressed. A stored xorb may end with a metadata
    footer whose length is its last 4 bytes; an uploaded one is the chunks alone."""
    chunks = []
    i = 0
    while i + 8 <= len(xorb) and xorb[i] == 0:
        header = xorb[i : i + 8]
        compressed = int.from_bytes(header[1:4], "little")
        scheme = header[4]
        size = int.from_bytes(header[5:8], "little")
        if scheme > 2 or i + 8 + compressed > len(xorb):
            break  # not a chunk header: the footer starts here
        body = xorb[i + 8 : i + 8 + compressed]
        if scheme == 0:
            data = body
        elif scheme == 1:
            data = lz4_frame(body)
        else:
            data = byte_ungroup4(lz4_frame(body))
        if len(data) != size:
            raise XetFormatError(f"chunk at byte {i}: {len(data)} bytes, header says {size}")
        chunks.append(XorbChunk(i, i + 8 + compressed, data))
        i += 8 + compressed
    if i != len(xorb):
        (info_length,) = struct.unpack_from("<I", xorb, len(xorb) - 4)
        if info_length != len(xorb) - 4 - i:
            raise XetFormatError(f"bytes after chunk {len(chunks)} are neither a chunk nor the footer")
    if not chunks:
        raise XetFormatError("xorb holds no chunk")
    return chunks


# ---------------------------------------------------------------------- shards


@dataclass
class ShardTerm:
    xorb: str  # xorb hash, API hex form
    size: int  # unpacked bytes
    start: int  # chunk index range [start, end)
    end: int


@dataclass
class ShardFile:
    file_hash: str  # API hex form
    terms: list[ShardTerm]
    sha256: str | None  # hex of the file's sha256 (metadata extension), None if absent


def shard_files(shard: bytes) -> list[ShardFile]:
    """The files a shard upload registers (its File Info section)."""
    if len(shard) < 48:
        raise XetFormatError("shard too short")
    version, _footer_size = struct.unpack_from("<QQ", shard, 32)
    if version != 2:
        raise XetFormatError(f"shard header version {version}")
    files: list[ShardFile] = []
    i = 48
    while True:
        record = shard[i : i + ENTRY]
        if len(record) < ENTRY:
            raise XetFormatError("file info section has no bookend")
        i += ENTRY
        if record[:32] == BOOKEND:
            return files
        flags, count = struct.unpack_from("<II", record, 32)
        terms = []
        for _ in range(count):
            entry = shard[i : i + ENTRY]
            _cas_flags, size, start, end = struct.unpack_from("<IIII", entry, 32)
            terms.append(ShardTerm(hash_hex(entry[:32]), size, start, end))
            i += ENTRY
        if flags & FLAG_VERIFICATION:
            i += ENTRY * count
        sha256 = None
        if flags & FLAG_METADATA_EXT:
            sha256 = hash_hex(shard[i : i + 32])  # stored as four little-endian words too
            i += ENTRY
        files.append(ShardFile(hash_hex(record[:32]), terms, sha256))


def rebuild_file(entry: ShardFile, xorbs: dict[str, bytes]) -> bytes:
    """A file's bytes from its terms; checks each term's size and the file's sha256."""
    out = bytearray()
    for term in entry.terms:
        if term.xorb not in xorbs:
            raise XetFormatError(f"shard references xorb {term.xorb}, which was never uploaded")
        chunks = xorb_chunks(xorbs[term.xorb])
        if not 0 <= term.start < term.end <= len(chunks):
            raise XetFormatError(f"chunk range [{term.start}, {term.end}) outside xorb {term.xorb}")
        piece = b"".join(c.data for c in chunks[term.start : term.end])
        if len(piece) != term.size:
            raise XetFormatError(f"term of xorb {term.xorb}: {len(piece)} bytes, shard says {term.size}")
        out += piece
    data = bytes(out)
    if entry.sha256 is not None and hashlib.sha256(data).hexdigest() != entry.sha256:
        raise XetFormatError(f"file {entry.file_hash}: content does not match the shard's sha256")
    return data
