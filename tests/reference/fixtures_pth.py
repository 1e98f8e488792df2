#!/usr/bin/python3
"""Fixtures for the .pth reader tests (tests/unit/test_pth.cpp), in <out>/pth/.

Good files are written by the real torch.save; for each, <name>.manifest lists
its tensors in order ("name<TAB>dtype<TAB>dim,dim,...") and <name>.<i>.f32 holds
tensor i's expected values as raw little-endian float32.
Bad files are built byte by byte (a small zip writer and pickle emitter below)
so that each differs from a loadable control file in one way only.
Nothing here unpickles or runs anything from a file.
"""
import argparse
import collections
import io
import pathlib
import shutil
import struct
import zipfile
import zlib

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Good files from torch.save


def expect(out, name, tensors):
    """Writes the manifest and expected float32 values for fixture `name`."""
    lines = []
    for i, (key, t) in enumerate(tensors.items()):
        dtype = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}[t.dtype]
        dims = ",".join(str(d) for d in t.shape)
        lines.append(f"{key}\t{dtype}\t{dims}\n")
        values = t.detach().to(torch.float32).contiguous().numpy().astype("<f4")
        (out / f"{name}.{i}.f32").write_bytes(values.tobytes())
    (out / f"{name}.manifest").write_text("".join(lines))


def save(out, name, obj, tensors=None, **kwargs):
    torch.save(obj, out / f"{name}.pth", **kwargs)
    if tensors is not None:
        expect(out, name, tensors)


def good_files(out):
    g = torch.Generator().manual_seed(1234)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g).to(dtype)

    f32 = {
        "emb.weight": randn(5, 4),
        "scalar": torch.tensor(3.25),
        "blocks.0.att.time_decay": randn(7),
        "cube": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
    }
    save(out, "f32", f32, f32)

    f16 = collections.OrderedDict()
    f16["z.last"] = randn(3, 2, dtype=torch.float16)  # not sorted: order must be kept
    f16["a.first"] = torch.tensor(-0.5, dtype=torch.float16)
    f16["m.mid"] = randn(2, 3, 5, dtype=torch.float16)
    save(out, "f16", f16, f16)

    bf16 = collections.OrderedDict()
    bf16["w"] = randn(4, 3, dtype=torch.bfloat16)
    bf16["v"] = randn(6, dtype=torch.bfloat16)
    bf16["s"] = torch.tensor(1e30, dtype=torch.bfloat16)
    save(out, "bf16", bf16, bf16)

    mixed = {
        "a": randn(3, 3),
        "b": randn(2, 2, dtype=torch.float16),
        "c": randn(8, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }
    save(out, "mixed", mixed, mixed)

    # Non-contiguous views are saved with their strides and whole storage.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    noncontig = {
        "transposed": base.t(),
        "every_other": base[:, ::2],
        "broadcast": torch.arange(3, dtype=torch.float32).reshape(3, 1).expand(3, 4),
        "bf16_t": randn(2, 5, dtype=torch.bfloat16).t(),
        "f16_3d": randn(2, 3, 4, dtype=torch.float16).permute(2, 0, 1),
    }
    save(out, "noncontig", noncontig, noncontig)

    # Several tensors over one storage, at different offsets.
    whole = torch.arange(20, dtype=torch.float32) * 0.5
    shared = {
        "whole": whole,
        "head": whole[2:7],
        "tail": whole[10:],
        "row": whole.view(4, 5)[1],
    }
    save(out, "shared", shared, shared)

    newzip = {"x": randn(4, 4), "y": randn(3, dtype=torch.float16)}
    save(out, "newzip", newzip, newzip, _use_new_zipfile_serialization=True)

    proto4 = collections.OrderedDict([("p", randn(2, 3)), ("q", randn(5, dtype=torch.bfloat16))])
    save(out, "proto4", proto4, proto4, pickle_protocol=4)

    # module.state_dict() carries a `_metadata` attribute (pickled with BUILD).
    torch.manual_seed(7)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    sd = module.state_dict()
    save(out, "module", sd, sd)

    # A Parameter pickles through torch._utils._rebuild_parameter.
    param = {"p": torch.nn.Parameter(randn(2, 2)), "t": randn(2)}
    save(out, "param", param, param)

    # Bad: real torch.save output that the reader must refuse.
    save(out, "int64", {"ok": torch.ones(2), "ids": torch.arange(4)})
    save(out, "list_top", [torch.ones(2)])
    save(out, "nested", {"outer": {"inner": torch.ones(2)}})
    # Legacy (torch < 1.6) format; its storage keys are memory addresses, so
    # keep only the deterministic head: magic number, version and system info.
    legacy = io.BytesIO()
    torch.save({"x": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    head = legacy.getvalue()
    (out / "legacy.pth").write_bytes(head[: head.index(b"uu.") + 3])
    return f32


# ---------------------------------------------------------------------------
# A small zip writer with full control over every field.


def pad_extra(offset_after_header, align, misalign):
    """An extra field (id 'FB', as torch uses) that puts the data at the wanted alignment."""
    if align <= 1 and misalign == 0:
        return b""
    pos = offset_after_header + 4
    pad = (-pos) % align + misalign
    return b"FB" + struct.pack("<H", pad) + b"Z" * pad


def make_zip(entries, align=64, misalign=0, zip64=False):
    """entries: list of (name, data, method), method 0 (stored) or 8 (deflate)."""
    out = bytearray()
    central = bytearray()
    for name, data, method in entries:
        name_b = name.encode()
        payload = data
        if method == 8:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(data) + c.flush()
        crc = zlib.crc32(data)
        offset = len(out)
        extra = pad_extra(offset + 30 + len(name_b), align, misalign)
        size32 = 0xFFFFFFFF if zip64 else len(payload)
        usize32 = 0xFFFFFFFF if zip64 else len(data)
        local_extra = extra
        if zip64:  # local ZIP64 field: uncompressed, compressed size
            local_extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload))
            local_extra += pad_extra(offset + 30 + len(name_b) + len(local_extra), align, misalign)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0x800, method, 0, 0x21,
                           crc, size32, usize32, len(name_b), len(local_extra))
        out += name_b + local_extra + payload
        cextra = b""
        off32 = offset
        if zip64:
            cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(payload), offset)
            off32 = 0xFFFFFFFF
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45 if zip64 else 20,
                               45 if zip64 else 20, 0x800, method, 0, 0x21, crc, size32, usize32,
                               len(name_b), len(cextra), 0, 0, 0, 0, off32)
        central += name_b + cextra
    cd_offset = len(out)
    out += central
    count = len(entries)
    if zip64:
        rec = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count,
                           len(central), cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, rec, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), cd_offset, 0)
    return bytes(out)


def torch_entries(path):
    """(name, bytes) of every entry of a zip written by torch.save."""
    with zipfile.ZipFile(path) as z:
        return [(i.filename, z.read(i.filename)) for i in z.infolist()]


def rezip(src, dst, method=0, drop=None, **kwargs):
    entries = [(n, d, method) for n, d in torch_entries(src) if drop is None or not n.endswith(drop)]
    dst.write_bytes(make_zip(entries, **kwargs))


# ---------------------------------------------------------------------------
# A pickle emitter for the torch.save shapes (protocol 2, as torch writes).


def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(n):
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"\x8a\x08" + struct.pack("<q", n)


def p_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tuple(items):
    return b"(" + b"".join(items) + b"t"


def p_tensor(stype, key, numel, offset, shape, stride, metadata=None):
    pid = p_tuple([p_str("storage"), p_global("torch", stype), p_str(key), p_str("cpu"), p_int(numel)])
    args = [pid + b"Q", p_int(offset), p_tuple([p_int(d) for d in shape]),
            p_tuple([p_int(s) for s in stride]), b"\x89", b"}"]
    if metadata is not None:
        args.append(b"}" + b"".join(p_str(k) + (b"\x88" if v else b"\x89") + b"s" for k, v in metadata.items()))
    return p_global("torch._utils", "_rebuild_tensor_v2") + p_tuple(args) + b"R"


def p_state_dict(items):
    return b"\x80\x02}(" + b"".join(p_str(k) + v for k, v in items) + b"u."


def crafted(out, name, pkl, storages):
    """A torch-like zip: `storages` maps key -> float32 values."""
    entries = [("archive/data.pkl", pkl, 0)]
    for key, values in storages.items():
        entries.append((f"archive/data/{key}", np.asarray(values, dtype="<f4").tobytes(), 0))
    entries.append(("archive/version", b"3\n", 0))
    (out / f"{name}.pth").write_bytes(make_zip(entries))


def bad_pickle_files(out):
    six = {"0": np.arange(6)}
    ok = p_tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1))
    # Control: loads, and every bad file below changes one thing in it.
    crafted(out, "crafted_ok", p_state_dict([("x", ok)]), six)
    crafted(out, "crafted_meta_ok", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 1, (5,), (1,), {"neg": False}))]), six)
    crafted(out, "meta_neg", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 0, (6,), (1,), {"neg": True}))]), six)
    crafted(out, "shape_exceeds", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 0, (3, 3), (3, 1)))]), six)
    crafted(out, "offset_exceeds", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 4, (2, 3), (3, 1)))]), six)
    crafted(out, "stride_exceeds", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 0, (2, 3), (4, 1)))]), six)
    crafted(out, "numel_lies", p_state_dict([("x", p_tensor("FloatStorage", "0", 7, 0, (7,), (1,)))]), six)
    crafted(out, "negative_dim", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 0, (-1, 3), (3, 1)))]), six)
    crafted(out, "numel_overflow", p_state_dict([("x", p_tensor("FloatStorage", "0", 6, 0, (2**40, 2**40), (0, 0)))]), six)
    crafted(out, "missing_key", p_state_dict([("x", p_tensor("FloatStorage", "1", 6, 0, (2, 3), (3, 1)))]), six)
    crafted(out, "int_storage", p_state_dict([("x", p_tensor("IntStorage", "0", 6, 0, (2, 3), (3, 1)))]), six)

    def body(ops):  # a state-dict-shaped stream with `ops` where a tensor would be
        return b"\x80\x02}(" + p_str("x") + ops + b"u."

    crafted(out, "global_os_system", body(p_global("os", "system") + p_str("echo pwned") + b"\x85R"), six)
    crafted(out, "global_eval", body(p_global("builtins", "eval") + p_str("1+1") + b"\x85R"), six)
    crafted(out, "global_stack", body(p_str("posix") + p_str("system") + b"\x93" + p_str("id") + b"\x85R"), six)
    crafted(out, "opcode_inst", body(b"(ios\nsystem\n"), six)
    crafted(out, "opcode_build", b"\x80\x02}(" + p_str("x") + ok + b"u}b.", six)  # BUILD on a plain dict
    crafted(out, "opcode_newobj", body(p_global("collections", "OrderedDict") + b")\x81"), six)
    crafted(out, "reduce_storage", body(p_global("torch", "FloatStorage") + b")R"), six)
    crafted(out, "memo_oob", body(b"h\x07"), six)
    crafted(out, "underflow", b"\x80\x02\x86.", six)
    crafted(out, "no_stop", p_state_dict([("x", ok)])[:-1], six)
    crafted(out, "long_string", b"\x80\x02X\xf0\xff\xff\xff" + b"abc", six)
    crafted(out, "unknown_opcode", body(b"\xff"), six)


def bad_zip_files(out, f32):
    src = out / "f32.pth"
    data = src.read_bytes()
    (out / "wrong_magic.pth").write_bytes(b"GIF89a" + data[6:])
    rezip(src, out / "deflate.pth", method=8)
    expect(out, "deflate", f32)
    rezip(src, out / "unaligned.pth", align=4, misalign=1)
    expect(out, "unaligned", f32)
    rezip(src, out / "zip64.pth", zip64=True)
    expect(out, "zip64", f32)
    rezip(src, out / "missing_storage.pth", drop="/data/1")

    # Field patches on a copy made by make_zip, whose layout is known exactly.
    base = make_zip([(n, d, 0) for n, d in torch_entries(src)])
    eocd = len(base) - 22
    cd_size, cd_offset = struct.unpack_from("<II", base, eocd + 12)

    def patched(name, offset, fmt, value, blob=base):
        b = bytearray(blob)
        struct.pack_into(fmt, b, offset, *(value if isinstance(value, tuple) else (value,)))
        (out / name).write_bytes(bytes(b))

    patched("cd_size_absurd.pth", eocd + 12, "<I", 0x7FFFFFF0)
    patched("cd_offset_absurd.pth", eocd + 16, "<I", 0xFFFFFF00)
    patched("count_absurd.pth", eocd + 10, "<H", 0xFFFE)
    patched("count_zip64_no_locator.pth", eocd + 10, "<H", 0xFFFF)
    first = cd_offset  # central header of the first entry (data.pkl)
    patched("entry_size_absurd.pth", first + 20, "<Q", 0xFFFFFFF0FFFFFFF0)  # both sizes
    patched("local_offset_absurd.pth", first + 42, "<I", 0x7FFFFFFF)
    patched("encrypted.pth", first + 8, "<H", 0x801)
    patched("method_bzip2.pth", first + 10, "<H", 12)
    patched("name_len_absurd.pth", first + 28, "<H", 0xFFFF)

    z64 = (out / "zip64.pth").read_bytes()
    z64_cd = struct.unpack_from("<Q", z64, len(z64) - 22 - 20 - 56 + 48)[0]
    # ZIP64 extra of the first entry: uncompressed size, compressed size, offset.
    patched("zip64_size_absurd.pth", z64_cd + 46 + len("f32/data.pkl") + 4, "<QQ", (2**63 - 1, 2**63 - 1), z64)

    # DEFLATE entries that inflate to a size other than the declared one.
    d = make_zip([(n, dd, 8) for n, dd in torch_entries(src)])
    d_cd = struct.unpack_from("<I", d, len(d) - 22 + 16)[0]
    usize = struct.unpack_from("<I", d, d_cd + 24)[0]
    patched("deflate_longer.pth", d_cd + 24, "<I", usize - 1, d)
    patched("deflate_shorter.pth", d_cd + 24, "<I", usize + 1, d)
    patched("deflate_bad_crc.pth", d_cd + 16, "<I", 0x12345678, d)
    patched("deflate_bomb_claim.pth", d_cd + 24, "<I", 0xFFFFFF00, d)
    # Corrupt the compressed bytes of data.pkl (first entry's data).
    lname, lextra = struct.unpack_from("<HH", d, 26)
    b = bytearray(d)
    for i in range(30 + lname + lextra, 30 + lname + lextra + 8):
        b[i] ^= 0xFF
    (out / "deflate_corrupt.pth").write_bytes(bytes(b))
    patched("stored_bad_crc.pth", cd_offset + 16, "<I", 0x12345678)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args, _ = ap.parse_known_args()
    out = pathlib.Path(args.out) / "pth"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.set_num_threads(1)
    f32 = good_files(out)
    bad_pickle_files(out)
    bad_zip_files(out, f32)


if __name__ == "__main__":
    main()
