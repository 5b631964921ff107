"""Extract the Python names a TensorRT bindings wheel exports, and trtexec's documented flags, for the contract tests.

    python tools/trt_api_names.py bindings 10.3.0 11.4.0.106 --out tests/data/tensorrt
    python tools/trt_api_names.py trtexec PATH/TO/TensorRT v10.3.0 v11.1 --out tests/data/tensorrt

``trtexec``: from a git clone of NVIDIA/TensorRT, the flags that ``trtexec --help`` prints at each tag (the help
text of ``samples/common/sampleOptions.cpp``, without the safety-certified trtexec's section), one a line in
``trtexec-TAG.flags``, with `` deprecated`` after those the help marks [Deprecated].

``bindings``:
For each version: ``pip download --no-deps tensorrt-cu12-bindings==VERSION`` into a temporary folder, then read
``tensorrt_bindings/tensorrt.so`` (the pybind11 module; it cannot be imported without libnvinfer) and
``tensorrt_bindings/__init__.py``. Writes ``tensorrt-VERSION.names`` (sorted, one identifier a line) and the wheels'
names and sha256 to ``SOURCES.md``.

Why not ``strings``: the linker merges a string into the tail of a longer one, so ``Builder`` is stored only inside
``IExprBuilder`` and ``INT8`` inside ``UINT8``, and ``strings`` never shows them alone; it also lists the symbol
table's C++ names, which are not Python names. The names pybind11 registers are string literals that the module's
code passes by address, so this reads, from the ELF file:

1. every identifier-like NUL-terminated string in ``.rodata`` that starts after a NUL;
2. every identifier-like string that an x86-64 RIP-relative ``lea`` in ``.text`` points at, wherever it starts
   inside ``.rodata`` (this recovers the merged tails);
3. the names ``__init__.py`` defines at module level (``__version__``, ``nptype``, ``volume``, attributes it sets
   on classes).

The reader is x86-64 only; the 10.3.0 wheel on the index is x86-64 (JetPack 6's aarch64 bindings are built from the
same sources and have the same Python names).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "tensorrt-cu12-bindings"
IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
# REX.W (48 or 4C) + 8D (lea) + a ModRM with mod=00, rm=101: a 32-bit displacement from the next instruction.
LEA_RIP = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]")


def elf_sections(data: bytes) -> dict[str, tuple[int, int, int]]:
    """Section name -> (virtual address, file offset, size) of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize) for i in range(count)]
    names_offset = headers[names_index][4]
    sections = {}
    for name, _type, _flags, addr, offset, size, *_ in headers:
        start = names_offset + name
        sections[data[start : data.index(b"\0", start)].decode()] = (addr, offset, size)
    return sections


def so_names(data: bytes) -> set[str]:
    """Identifier-like strings of ``.rodata``: whole strings, and tails that ``.text`` addresses with ``lea``."""
    sections = elf_sections(data)
    ro_addr, ro_offset, ro_size = sections[".rodata"]
    rodata = data[ro_offset : ro_offset + ro_size]
    names = {piece.decode() for piece in rodata.split(b"\0") if IDENT.fullmatch(piece)}
    text_addr, text_offset, text_size = sections[".text"]
    text = data[text_offset : text_offset + text_size]
    for match in LEA_RIP.finditer(text):
        (disp,) = struct.unpack_from("<i", text, match.start() + 3)
        target = text_addr + match.start() + 7 + disp - ro_addr
        if 0 <= target < ro_size:
            piece = rodata[target : rodata.index(b"\0", target)]
            if IDENT.fullmatch(piece):
                names.add(piece.decode())
    return names


def init_names(source: str) -> set[str]:
    """Names ``__init__.py`` defines at module level, and attributes it sets on the compiled classes."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.col_offset == 0:
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and t.col_offset == 0:
                    names.add(t.id)
                elif isinstance(t, ast.Attribute):
                    names.add(t.attr)
    return names


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        so = z.read("tensorrt_bindings/tensorrt.so")
        init = z.read("tensorrt_bindings/__init__.py").decode()
    return so_names(so) | init_names(init)


def download(version: str, folder: Path) -> Path:
    spec = f"{PACKAGE}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", str(folder)]
    subprocess.run(cmd, check=True, capture_output=True)
    (wheel,) = folder.glob(f"{PACKAGE.replace('-', '_')}-{version}-*.whl")
    return wheel


HELP_FLAG = re.compile(r'^\s*(?:os\s*<<\s*)?R?"\(?\s{2}(--[A-Za-z][A-Za-z0-9]*)(.*)$')


def trtexec_flags(options_cpp: str) -> dict[str, bool]:
    """Flag -> deprecated?, from the help text of a ``sampleOptions.cpp`` (what ``trtexec --help`` prints)."""
    start = options_cpp.index("void BaseModelOptions::help")
    end = options_cpp.index("void SafeBuilderOptions::printHelp")  # trtexec_safe's flags are another tool's
    flags: dict[str, bool] = {}
    for line in options_cpp[start:end].splitlines():
        if match := HELP_FLAG.match(line):
            flags[match.group(1)] = flags.get(match.group(1), False) or "[Deprecated]" in match.group(2)
    return flags


def trtexec_main(repo: Path, tags: list[str], out: Path) -> None:
    for tag in tags:
        cmd = ["git", "-C", str(repo), "show", f"{tag}:samples/common/sampleOptions.cpp"]
        flags = trtexec_flags(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        lines = [f"{f} deprecated" if dep else f for f, dep in sorted(flags.items())]
        (out / f"trtexec-{tag}.flags").write_text("\n".join(lines) + "\n")
        print(f"{tag}: {len(flags)} flags, {sum(flags.values())} deprecated")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    bindings = sub.add_parser("bindings", help="names of tensorrt-cu12-bindings wheels")
    bindings.add_argument("versions", nargs="+", help="e.g. 10.3.0 11.4.0.106")
    trtexec = sub.add_parser("trtexec", help="trtexec's documented flags at tags of NVIDIA/TensorRT")
    trtexec.add_argument("repo", type=Path, help="a git clone of NVIDIA/TensorRT")
    trtexec.add_argument("tags", nargs="+", help="e.g. v10.3.0 v11.1")
    for p in (bindings, trtexec):
        p.add_argument("--out", type=Path, default=Path("tests/data/tensorrt"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "trtexec":
        trtexec_main(args.repo, args.tags, args.out)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for version in args.versions:
            wheel = download(version, Path(tmp))
            names = sorted(wheel_names(wheel))
            (args.out / f"tensorrt-{version}.names").write_text("\n".join(names) + "\n")
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            rows.append(f"| `tensorrt-{version}.names` | `{wheel.name}` | `{digest}` | {len(names)} |")
            print(f"{wheel.name}: {len(names)} names")
    _write_sources(args.out / "SOURCES.md", rows)


def _write_sources(path: Path, rows: list[str]) -> None:
    """Replace the wheel table of SOURCES.md, keeping the rest of the file."""
    table = ["| file | wheel (PyPI) | sha256 | names |", "|---|---|---|---|", *rows]
    begin, end = "<!-- wheels: begin (tools/trt_api_names.py) -->", "<!-- wheels: end -->"
    text = path.read_text() if path.exists() else f"# Sources\n\n{begin}\n{end}\n"
    head, rest = text.split(begin)
    path.write_text(head + begin + "\n" + "\n".join(table) + "\n" + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
