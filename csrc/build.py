"""Compile csrc/flash_attention.cu with nvcc, and read what ptxas says about registers and spills.

    python csrc/build.py --check          # CI: compile for sm_80 and sm_90; fail on any warning or spill
    python csrc/build.py --out DIR        # write DIR/flash_attention.fatbin (sm_80, sm_90 SASS + PTX)

setup.py calls build() when it installs the package, so the binary ships inside it
(tinyvision/kernels/_bin/); without nvcc the install goes on and the loader compiles the source with
NVRTC at run time instead. Standard library only: this runs before anything is installed.

Why spills fail the check: a register spill moves a kernel's per-thread tile (the accumulators of
O~, dK, dV) into local memory, which lives in DRAM behind the caches; a kernel that spills is quietly
several times slower. `ptxas -v` prints, for every kernel and architecture,
    ptxas info    : Compiling entry function 'flash_forward_d64' for 'sm_90'
    ptxas info    : Function properties for flash_forward_d64
        0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 64 registers, used 1 barriers
and parse_ptxas() turns that into one record per (kernel, architecture).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "flash_attention.cu"
BINARY_NAME = "flash_attention.fatbin"
ARCHS = ("80", "90")                     # A100 and H100 SASS, plus PTX of the newest for later GPUs


def nvcc_command(nvcc: str, source: Path, output: Path, archs=ARCHS, check: bool = False) -> list[str]:
    """The nvcc command line: one fatbin with SASS for each arch and PTX for the last."""
    cmd = [nvcc, "-O3", "-std=c++17", "--fatbin", "-o", str(output)]
    for arch in archs:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    cmd += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}", "-Xptxas", "-v"]
    if check:
        cmd += ["-Werror", "all-warnings", "-Xptxas", "-warn-spills"]
    return cmd + [str(source)]


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def parse_ptxas(text: str) -> list[dict]:
    """One record per compiled kernel: name, arch, registers, stack, spill_stores, spill_loads."""
    records, current = [], None
    for line in text.splitlines():
        if match := _ENTRY.search(line):
            current = dict(name=match.group(1), arch=match.group(2), registers=None, stack=0,
                           spill_stores=0, spill_loads=0)
            records.append(current)
        elif current is not None and (match := _SPILLS.search(line)):
            current.update(stack=int(match.group(1)), spill_stores=int(match.group(2)),
                           spill_loads=int(match.group(3)))
        elif current is not None and (match := _REGISTERS.search(line)):
            current["registers"] = int(match.group(1))
    return records


def problems(records: list[dict], stderr: str, archs=ARCHS) -> list[str]:
    """Everything that fails the check: warnings, spills, a kernel missing for an arch, no output at all."""
    found = [line.strip() for line in stderr.splitlines() if "warning" in line.lower() or "error" in line.lower()]
    for r in records:
        if r["spill_stores"] or r["spill_loads"]:
            found.append(f"{r['name']} ({r['arch']}) spills: {r['spill_stores']} bytes stored, "
                         f"{r['spill_loads']} bytes loaded to local memory ({r['registers']} registers)")
    if not records:
        found.append("ptxas -v reported no kernels (was -Xptxas -v dropped?)")
    names = {r["name"] for r in records}
    for arch in archs:
        missing = names - {r["name"] for r in records if r["arch"] == f"sm_{arch}"}
        found += [f"{name} was not compiled for sm_{arch}" for name in sorted(missing)]
    return found


def source_digest(source: Path = SOURCE) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def compile_fatbin(out_dir: Path, check: bool = False, nvcc: str | None = None) -> dict:
    """Run nvcc; returns a report (command, records, problems, returncode). Raises FileNotFoundError without nvcc."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH (install the CUDA toolkit to build csrc/)")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / BINARY_NAME
    cmd = nvcc_command(nvcc, SOURCE, output, check=check)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    records = parse_ptxas(text)
    found = problems(records, text) if check else []
    if proc.returncode != 0:
        found.insert(0, f"nvcc exited with {proc.returncode}")
    return dict(command=cmd, returncode=proc.returncode, records=records, problems=found, output=str(output),
                log=text)


def build(out_dir: Path) -> dict:
    """What setup.py runs: the fatbin and a copy of the source into out_dir, plus BUILD.json saying what
    happened. Never raises: an install without nvcc (or with a failing nvcc) still succeeds, and the
    loader reads BUILD.json to explain why it compiles with NVRTC instead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, out_dir / SOURCE.name)        # NVRTC needs the source at run time
    info = dict(source_sha256=source_digest(), binary=None, reason=None)
    try:
        report = compile_fatbin(out_dir)
    except (FileNotFoundError, OSError) as err:
        info["reason"] = f"not built at install time: {err}"
    else:
        if report["returncode"] == 0:
            info["binary"] = BINARY_NAME
            info["nvcc"] = report["command"][0]
        else:
            info["reason"] = f"nvcc failed at install time (exit {report['returncode']}): {report['log'][-500:]}"
    (out_dir / "BUILD.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on warnings and register spills")
    parser.add_argument("--out", type=Path, default=None, help="directory for the fatbin (default: a temp dir)")
    args = parser.parse_args(argv)
    import tempfile  # noqa: PLC0415
    out = args.out or Path(tempfile.mkdtemp(prefix="tinyvision-csrc-"))
    try:
        report = compile_fatbin(out, check=args.check)
    except FileNotFoundError as err:
        print(f"csrc: {err}", file=sys.stderr)
        return 1
    print(f"{'kernel':<28}{'arch':<7}{'registers':>10}{'stack B':>9}{'spill st B':>12}{'spill ld B':>12}")
    for r in report["records"]:
        print(f"{r['name']:<28}{r['arch']:<7}{r['registers']!s:>10}{r['stack']:>9}{r['spill_stores']:>12}"
              f"{r['spill_loads']:>12}")
    if report["problems"]:
        print("csrc check FAILED:\n  " + "\n  ".join(report["problems"]), file=sys.stderr)
        return 1
    print(f"csrc: {len(report['records'])} kernels built, no warnings, no spills -> {report['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
