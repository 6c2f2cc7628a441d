#!/usr/bin/env python3
"""Compiles every kernels/cuda/*.cu with NVRTC, as the `cuda` feature does at run time, for the
architectures given (default compute_80 and compute_90); optionally assembles the PTX with ptxas.
No GPU needed: CI runs this (scripts/check_cuda.sh) so a broken kernel fails before it reaches
a GPU machine.

Each program is what kernels/src/cuda/nvrtc.rs builds: the prelude common.cuh, a `#line 1`
directive, then the file; the options are read from the NVRTC_OPTIONS constant in that Rust file
so the two cannot drift. Every .cu file must be embedded by nvrtc.rs, and every embedded file
must exist.

libnvrtc: $NVRTC_LIB, else PyPI's nvidia-cuda-nvrtc-cu12 wheel, else the system library.
ptxas: --ptxas PATH, else PyPI's nvidia-cuda-nvcc-cu12 wheel if installed, else skipped.
Exit status 1 with the NVRTC log (or the ptxas output) when anything fails.
"""

import argparse
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "kernels", "cuda")
RUST_SRC = os.path.join(ROOT, "kernels", "src", "cuda", "nvrtc.rs")
PRELUDE = "common.cuh"


def wheel_dirs(package):
    """Folders of an installed `nvidia.<package>` wheel (namespace package), if any."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [
        os.path.join(p, package)
        for p in spec.submodule_search_locations
        if os.path.isdir(os.path.join(p, package))
    ]


def load_nvrtc():
    candidates = []
    if os.environ.get("NVRTC_LIB"):
        candidates.append(os.environ["NVRTC_LIB"])
    for d in wheel_dirs("cuda_nvrtc"):
        candidates += sorted(glob.glob(os.path.join(d, "lib", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for c in candidates:
        try:
            return ctypes.CDLL(c), c
        except OSError:
            continue
    sys.exit(
        "nvrtc_check: libnvrtc not found; `pip install nvidia-cuda-nvrtc-cu12` or set NVRTC_LIB"
    )


def find_ptxas(explicit):
    if explicit:
        return explicit
    for d in wheel_dirs("cuda_nvcc"):
        p = os.path.join(d, "bin", "ptxas")
        if os.access(p, os.X_OK):
            return p
    return None


def rust_options():
    """The NVRTC_OPTIONS string list of kernels/src/cuda/nvrtc.rs."""
    text = open(RUST_SRC, encoding="utf-8").read()
    m = re.search(r"NVRTC_OPTIONS:\s*&\[&str\]\s*=\s*&\[(.*?)\];", text, re.S)
    if not m:
        sys.exit(f"nvrtc_check: no NVRTC_OPTIONS constant in {RUST_SRC}")
    return re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)), text


def program(name):
    """The source NVRTC compiles for kernels/cuda/<name>, as nvrtc.rs assembles it."""
    prelude = open(os.path.join(CUDA_DIR, PRELUDE), encoding="utf-8").read()
    src = open(os.path.join(CUDA_DIR, name), encoding="utf-8").read()
    return f'#line 1 "{PRELUDE}"\n{prelude}\n#line 1 "{name}"\n{src}'


def compile_one(lib, name, options):
    """(ok, log, ptx bytes) for one program."""
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(
        ctypes.byref(prog), program(name).encode(), name.encode(), 0, None, None
    )
    if rc != 0:
        return False, f"nvrtcCreateProgram failed with {rc}", b""
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx = b""
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace").strip(), ptx


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="compute capability, e.g. 90 (repeatable)")
    ap.add_argument("--ptxas", help="path to ptxas (default: the nvidia-cuda-nvcc-cu12 wheel's)")
    ap.add_argument("--no-ptxas", action="store_true", help="skip assembling the PTX")
    args = ap.parse_args()
    archs = args.arch or ["80", "90"]

    lib, lib_path = load_nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    options, rust_text = rust_options()
    ptxas = None if args.no_ptxas else find_ptxas(args.ptxas)
    print(f"nvrtc_check: NVRTC {major.value}.{minor.value} ({lib_path}); options {options}")
    print(f"nvrtc_check: ptxas {ptxas or 'not found: PTX is not assembled'}")

    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CUDA_DIR, "*.cu")))
    embedded = set(re.findall(r'include_str!\("\.\./\.\./cuda/([^"]+)"\)', rust_text))
    failed = False
    for f in sorted(set(files) ^ (embedded - {PRELUDE})):
        where = "not embedded by nvrtc.rs" if f in files else "embedded but missing"
        print(f"FAIL {f}: {where}")
        failed = True

    with tempfile.TemporaryDirectory() as tmp:
        for name in files:
            for arch in archs:
                opts = [f"--gpu-architecture=compute_{arch}"] + options
                ok, log, ptx = compile_one(lib, name, opts)
                if not ok:
                    print(f"FAIL {name} compute_{arch}:\n{log}")
                    failed = True
                    continue
                if log:
                    # Warnings fail too: they are bugs more often than not in this code.
                    print(f"FAIL {name} compute_{arch}: warnings\n{log}")
                    failed = True
                    continue
                note = f"{len(ptx)} bytes of PTX"
                if ptxas:
                    ptx_file = os.path.join(tmp, f"{name}.{arch}.ptx")
                    with open(ptx_file, "wb") as fh:
                        fh.write(ptx)
                    run = subprocess.run(
                        [ptxas, f"-arch=sm_{arch}", "-o", os.devnull, ptx_file],
                        capture_output=True,
                        text=True,
                    )
                    if run.returncode != 0:
                        print(f"FAIL {name} sm_{arch} (ptxas):\n{run.stdout}{run.stderr}")
                        failed = True
                        continue
                    note += f", assembled for sm_{arch}"
                print(f"ok   {name} compute_{arch}: {note}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
