"""Compile the kernel versions in csrc/ with nvcc, and read what ptxas says about registers and spills.

    python csrc/build.py --check          # CI: every version for sm_80 and sm_90; fail on any warning or spill
    python csrc/build.py --out DIR        # write DIR/flash_attention{,_v2,_v3}.fatbin (sm_80, sm_90 SASS + PTX)
    python csrc/build.py --check --installed tinyvision/kernels/_bin
                                          # CI: the same check on what `pip install` compiled, when current

One fatbin per source file: flash_attention.cu (v1), flash_attention_v2.cu (v2), flash_attention_v3.cu
(v3: its tensor-core forward; it includes v2's file for the shared helpers, not for its kernels, which
stay in v2's fatbin). The nvcc runs go side by side. setup.py calls build() when it installs the
package, so the binaries ship inside it (tinyvision/kernels/_bin/); without nvcc the install goes on
and the loader compiles the sources with NVRTC at run time instead, with NVRTC_OPTIONS: the same
language standard and include directory as the nvcc command (test_flash_cuda_c.py checks that they
agree), while the architecture is then the GPU's own. Standard library only: this runs before anything
is installed.

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

CSRC = Path(__file__).resolve().parent
SOURCES = ("flash_attention.cu", "flash_attention_v2.cu", "flash_attention_v3.cu")
INCLUDES = {"flash_attention_v3.cu": ("flash_attention_v2.cu",)}   # what each file #includes from csrc/
# (the same tables are in tinyvision/kernels/attention_cuda_c_layout.py; this script cannot import the package)
SOURCE = CSRC / SOURCES[0]
BINARY_NAME = "flash_attention.fatbin"
ARCHS = ("80", "90")                     # A100 and H100 SASS, plus PTX of the newest for later GPUs
STD = "-std=c++17"
NVRTC_OPTIONS = (STD,)                   # + "--include-path=<the sources' folder>", added by the loader


def fatbin_name(source: str) -> str:
    return Path(source).stem + ".fatbin"


def nvcc_command(nvcc: str, source: Path, output: Path, archs=ARCHS, check: bool = False) -> list[str]:
    """The nvcc command line: one fatbin with SASS for each arch and PTX for the last."""
    cmd = [nvcc, "-O3", STD, "-I", str(Path(source).parent), "--fatbin", "-o", str(output)]
    for arch in archs:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    cmd += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}", "-Xptxas", "-v", "-Xptxas", "-warn-spills"]
    if check:
        cmd += ["-Werror", "all-warnings"]
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
    """sha256 of a source file and of the csrc/ files it includes: a fatbin is current when this matches."""
    source = Path(source)
    digest = hashlib.sha256(source.read_bytes())
    for name in INCLUDES.get(source.name, ()):
        digest.update((source.parent / name).read_bytes())
    return digest.hexdigest()


def file_problems(name: str, records: list[dict], text: str) -> list[str]:
    """The check's rule for one source file's nvcc output: problems() plus v3's file carrying v2's kernels."""
    found = [f"{name}: {p}" for p in problems(records, text)]
    foreign = sorted({r["name"] for r in records if name in INCLUDES and r["name"].startswith("v2_")})
    return found + [f"{name}: carries {k} (define TV2_HELPERS_ONLY before the include)" for k in foreign]


def installed_report(bin_dir: Path) -> dict | None:
    """The check's report from what `pip install` already compiled (BUILD.json + BUILD_LOG.txt in bin_dir, the
    same nvcc command but for -Werror), or None when that build is missing, failed or is older than a source."""
    try:
        info = json.loads((bin_dir / "BUILD.json").read_text())
        log = (bin_dir / "BUILD_LOG.txt").read_text()
    except (OSError, ValueError):
        return None
    sources = info.get("sources", {})
    if any(sources.get(name, {}).get("sha256") != source_digest(CSRC / name) or not sources[name].get("binary")
           for name in SOURCES):
        return None
    report = dict(records=[], problems=[], output=f"the fatbins in {bin_dir}")
    for part in log.split("== ")[1:]:
        name, _, text = part.partition("\n")
        records = [dict(r, file=name) for r in parse_ptxas(text)]
        report["records"] += records
        report["problems"] += file_problems(name, records, text)
    if {r["file"] for r in report["records"]} != set(SOURCES):
        return None
    return report


def compile_fatbin(out_dir: Path, check: bool = False, nvcc: str | None = None, sources=SOURCES) -> dict:
    """Run nvcc on every source, side by side; returns one report (commands, records, problems, returncode).
    Raises FileNotFoundError without nvcc."""
    nvcc = nvcc or shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH (install the CUDA toolkit to build csrc/)")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in sources:
        cmd = nvcc_command(nvcc, CSRC / name, out_dir / fatbin_name(name), check=check)
        runs[name] = (cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    report = dict(commands={}, returncode=0, returncodes={}, records=[], problems=[], outputs={}, log="")
    for name, (cmd, proc) in runs.items():
        out, err = proc.communicate()
        text = out + err
        records = [dict(r, file=name) for r in parse_ptxas(text)]
        report["commands"][name] = cmd
        report["returncodes"][name] = proc.returncode
        report["returncode"] = report["returncode"] or proc.returncode
        report["records"] += records
        report["log"] += f"== {name}\n{text}"
        if check:
            report["problems"] += file_problems(name, records, text)
        if proc.returncode != 0:
            report["problems"].insert(0, f"{name}: nvcc exited with {proc.returncode}")
        else:
            report["outputs"][name] = str(out_dir / fatbin_name(name))
    report["command"] = report["commands"][sources[0]]
    report["output"] = ", ".join(report["outputs"].values())
    return report


def nvcc_version(nvcc: str) -> str | None:
    """"13.0" from `nvcc --version` (its "release 13.0, V13.0.88" line), or None."""
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def build(out_dir: Path) -> dict:
    """What setup.py runs: the fatbins and copies of the sources into out_dir, plus BUILD.json saying what
    happened. Never raises: an install without nvcc (or with a failing nvcc) still succeeds, and the
    loader reads BUILD.json to explain why it compiles with NVRTC instead."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        shutil.copyfile(CSRC / name, out_dir / name)     # NVRTC needs the sources at run time
    info = dict(sources={name: dict(sha256=source_digest(CSRC / name), binary=None) for name in SOURCES},
                binary=None, reason=None)
    try:
        report = compile_fatbin(out_dir)
    except (FileNotFoundError, OSError) as err:
        info["reason"] = f"not built at install time: {err}"
    else:
        for name, rc in report["returncodes"].items():
            if rc == 0:
                info["sources"][name]["binary"] = fatbin_name(name)
            else:
                info["sources"][name]["reason"] = f"nvcc failed at install time (exit {rc})"
        info["binary"] = info["sources"][SOURCES[0]]["binary"]          # v1's, as BUILD.json always said
        (out_dir / "BUILD_LOG.txt").write_text(report["log"])           # ptxas -v of every kernel, for --installed
        info["nvcc"] = report["command"][0]
        info["nvcc_version"] = nvcc_version(report["command"][0])
        if report["returncode"]:
            info["reason"] = f"nvcc failed at install time for some sources: {report['log'][-500:]}"
    (out_dir / "BUILD.json").write_text(json.dumps(info, indent=1))
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on warnings and register spills")
    parser.add_argument("--out", type=Path, default=None, help="directory for the fatbin (default: a temp dir)")
    parser.add_argument("--installed", type=Path, default=None,
                        help="with --check: read the nvcc report `pip install` left in this folder (kernels/_bin) "
                             "instead of compiling again, when it is current; else compile")
    args = parser.parse_args(argv)
    import tempfile  # noqa: PLC0415
    report = installed_report(args.installed) if args.check and args.installed else None
    if report is not None:
        print(f"csrc: checking the nvcc report of the install ({args.installed}/BUILD_LOG.txt, sources unchanged)")
    else:
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
