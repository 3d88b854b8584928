#!/usr/bin/env python3
"""kernel-resources.py: registers, spills and static shared memory of each kernel.

Compiles kernels/<file>.cu with NVRTC (ctypes; the library of $ENCDEC_NVRTC, else
the pip wheel `nvidia-cuda-nvrtc`) for sm_80 and sm_90 with the backend's options
plus `--ptxas-options=-v`, and prints ptxas's per-kernel summary:
    attention_tc_f16_d64  sm_80  158 registers  0 B spill stores  0 B spill loads  0 B smem
Dynamic shared memory (set by the launcher) is not included. Exit 1 if a kernel
spills, 2 if a file does not compile, 3 if no NVRTC was found.
Usage: scripts/kernel-resources.py [FILE.cu ...]   (default: every kernels/*.cu)
"""
import ctypes
import glob
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def nvrtc_path():
    if os.environ.get("ENCDEC_NVRTC"):
        return os.environ["ENCDEC_NVRTC"]
    try:
        import nvidia
    except ImportError:
        return None
    found = []
    for base in list(nvidia.__path__):
        found += glob.glob(os.path.join(base, "*", "lib", "libnvrtc.so*"))
    found = sorted(p for p in found if "builtins" not in os.path.basename(p))
    return found[-1] if found else None


def main():
    lib = nvrtc_path()
    if not lib:
        print("kernel-resources: no NVRTC library (pip install nvidia-cuda-nvrtc)", file=sys.stderr)
        return 3
    nv = ctypes.CDLL(lib)
    common = open(os.path.join(root, "kernels", "common.cuh"), "rb").read()
    files = sys.argv[1:] or sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "kernels", "*.cu")))
    rc = 0
    for f in files:
        src = open(os.path.join(root, "kernels", os.path.basename(f)), "rb").read()
        for arch in ("sm_80", "sm_90"):
            prog = ctypes.c_void_p()
            hdrs = (ctypes.c_char_p * 1)(common)
            names = (ctypes.c_char_p * 1)(b"common.cuh")
            nv.nvrtcCreateProgram(ctypes.byref(prog), src, ("kernels/" + f).encode(), 1, hdrs, names)
            opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-lineinfo", b"--ptxas-options=-v"]
            status = nv.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            n = ctypes.c_size_t()
            nv.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
            buf = ctypes.create_string_buffer(n.value)
            nv.nvrtcGetProgramLog(prog, buf)
            nv.nvrtcDestroyProgram(ctypes.byref(prog))
            log = buf.value.decode(errors="replace")
            if status != 0:
                print(log)
                return 2
            name = None
            spill = (0, 0)
            for line in log.splitlines():
                m = re.search(r"Compiling entry function '(\w+)'", line)
                if m:
                    name = m.group(1)
                m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m:
                    spill = (int(m.group(1)), int(m.group(2)))
                m = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", line)
                if m and name:
                    smem = m.group(2) or "0"
                    print(f"{name:<28} {arch}  {m.group(1):>3} registers  {spill[0]} B spill stores  "
                          f"{spill[1]} B spill loads  {smem} B smem")
                    if spill != (0, 0):
                        rc = 1
                    name, spill = None, (0, 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
