"""Small helpers shared by the bench scripts (speed.py, quality.py, ...).

* :func:`peak_rss_mb` / :func:`children_peak_rss_mb`: peak resident set size (resource, psutil fallback).
* :func:`timed_loop`: the timing loop of ``shared/tools/tf_anchor.py`` (warm-up, then at least ``n_min``
  calls and at least ``t_floor`` seconds, never more than ``t_cap`` seconds), with wall and CPU time.
* :func:`machine_info` / :func:`print_header`: the exact command line, CPU model, ISA flags that matter
  (AVX-512, AVX512-BF16, AMX), torch version and threads, printed at the top of every report.
* :func:`save_results`: atomic JSON under ``bench/results/`` (git-ignored).
* :func:`run_result_subprocess`: run a command that prints one ``RESULT {json}`` line and parse it
  (``env`` values of ``None`` remove a variable).
* :func:`md_table`: a markdown table.

Figures from these machines are noisy (2 cores, other work running): compare paths measured side by side
in one run, as ratios, and look at ``cpu_util`` (process CPU seconds / wall seconds): well below the
thread count means the process was starved and the figure is pessimistic.
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
#: the shared folder beside the checkout (tf_anchor.py, seed notes); may be absent
SHARED_DIR = REPO_ROOT.parent / "shared"

INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def ensure_src_on_path() -> None:
    """Make ``import flexunet`` work from a checkout without an installed package."""
    src = str(REPO_ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)


# --------------------------------------------------------------------------- memory


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this process's own address space.
    (``ru_maxrss`` is not used there: a child started from a big process inherits the parent's
    high-water mark in it, e.g. 4.9 GB for a 13 MB child of a 4.9 GB benchmark.)
    Elsewhere ``ru_maxrss`` (KB on Linux, bytes on macOS), then psutil.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0
    except Exception:  # pragma: no cover - platforms without resource
        try:
            import psutil

            info = psutil.Process().memory_info()
            return getattr(info, "peak_wset", info.rss) / (1024.0 * 1024.0)
        except Exception:
            return float("nan")


def current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / (1024.0 * 1024.0)
    except Exception:
        return float("nan")


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any waited-for child process (MB)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


# --------------------------------------------------------------------------- timing


def timed_loop(fn: Callable[[], object], n_min: int = 5, t_floor: float = 20.0, t_cap: float = 60.0,
               warmup: int = 1, items_per_call: int = 1, warmup_max_s: float | None = None) -> dict:
    """Time ``fn`` like tf_anchor.py: ``warmup`` untimed calls, then call until (n >= n_min and
    elapsed >= t_floor) or elapsed >= t_cap.  Returns calls, wall/CPU seconds, rate and CPU use.

    ``rate`` is items per wall second (``items_per_call`` items per call); ``cpu_util`` is process CPU
    seconds per wall second (about the thread count when the process had the cores to itself).
    ``warmup_max_s``: stop warming up (after the first call) once warm-up has taken this long.
    """
    first_s = None
    w0 = time.perf_counter()
    for i in range(max(0, warmup)):
        t0 = time.perf_counter()
        fn()
        if i == 0:
            first_s = time.perf_counter() - t0
        if warmup_max_s is not None and time.perf_counter() - w0 >= warmup_max_s:
            break
    n = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if (n >= n_min and el >= t_floor) or el >= t_cap:
            break
    cpu = time.process_time() - c0
    return {"calls": n, "wall_s": round(el, 3), "cpu_s": round(cpu, 3), "s_per_call": round(el / n, 4),
            "rate": round(n * items_per_call / el, 4), "cpu_util": round(cpu / el, 2),
            "cpu_s_per_item": round(cpu / (n * items_per_call), 4),
            "first_call_s": round(first_s, 3) if first_s is not None else None}


def merge_loops(parts: Sequence[dict]) -> dict:
    """Combine :func:`timed_loop` results of the same work measured in several rounds (interleaved with
    other paths, so that a change of machine load hits every path alike)."""
    parts = [p for p in parts if p and "calls" in p]
    if not parts:
        return {"error": "no measurement"}
    n = sum(p["calls"] for p in parts)
    wall = sum(p["wall_s"] for p in parts)
    cpu = sum(p["cpu_s"] for p in parts)
    items = sum(p["rate"] * p["wall_s"] for p in parts)
    return {"calls": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "s_per_call": round(wall / n, 4),
            "rate": round(items / wall, 4), "cpu_util": round(cpu / wall, 2),
            "cpu_s_per_item": round(cpu / items, 4) if items else None,
            "first_call_s": parts[0].get("first_call_s"), "rounds": len(parts),
            "round_rates": [p["rate"] for p in parts], "best_round_rate": max(p["rate"] for p in parts)}


# --------------------------------------------------------------------------- machine


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and val.strip():
            model = val.strip()
        elif key == "flags" and not flags:
            flags = set(val.split())
    return model, flags


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(threads: int | None = None) -> dict:
    """CPU model, the ISA flags that decide bf16 speed, cores, memory, torch and thread settings."""
    model, flags = _cpuinfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    info = {"cpu": model, "flags": [f for f in INTERESTING_FLAGS if f in flags], "cores": cores,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average": load_average()}
    try:
        import psutil

        info["mem_total_gb"] = round(psutil.virtual_memory().total / 2 ** 30, 1)
    except Exception:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
        try:
            info["mkldnn_bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            info["mkldnn_bf16"] = False
        info["cpu_capability"] = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
        # the ISA probes: oneDNN's check above is also True on AVX-512 CPUs that only emulate bf16
        for key, fn in (("isa_avx512_bf16", "_is_avx512_bf16_supported"), ("isa_amx_tile", "_is_amx_tile_supported")):
            try:
                info[key] = bool(getattr(torch.cpu, fn)())
            except Exception:
                info[key] = None
        info["cuda"] = torch.cuda.is_available()
    except ImportError:
        info["torch"] = None
    info["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                                              "KMP_BLOCKTIME", "GOMP_SPINCOUNT") if k in os.environ}
    if threads is not None:
        info["threads_requested"] = threads
    return info


def machine_line(info: dict) -> str:
    flags = ",".join(info.get("flags") or []) or "none of " + ",".join(INTERESTING_FLAGS)
    return (f"{info.get('cpu')} ({info.get('cores')} cores visible, {info.get('mem_total_gb', '?')} GB; "
            f"flags: {flags}; oneDNN bf16 check: {info.get('mkldnn_bf16')}, AVX512-BF16: "
            f"{info.get('isa_avx512_bf16')}, AMX: {info.get('isa_amx_tile')}); torch {info.get('torch')} "
            f"with {info.get('torch_threads')} threads"
            + "".join(f", {k}={v}" for k, v in (info.get("env") or {}).items())
            + f"; Python {info.get('python')}; "
            f"load average at start {info.get('load_average')}")


def command_line(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    script = argv[0] if argv else ""
    try:
        script = os.path.relpath(script, os.getcwd())
    except ValueError:
        pass
    return shlex.join([sys.executable, script, *argv[1:]])


def print_header(title: str, threads: int | None = None, argv: Sequence[str] | None = None) -> dict:
    """Print the command and the machine; return ``{"command", "machine"}`` for the results JSON."""
    info = machine_info(threads)
    cmd = command_line(argv)
    print(f"# {title}", flush=True)
    print(f"command: {cmd}")
    print(f"machine: {machine_line(info)}", flush=True)
    return {"command": cmd, "machine": info, "started": time.strftime("%Y-%m-%d %H:%M:%S")}


# --------------------------------------------------------------------------- results


def save_results(name: str, data: dict, path: str | os.PathLike | None = None) -> Path:
    """Write ``data`` as JSON to ``path`` or ``bench/results/<name>.json`` atomically; return the path."""
    ensure_src_on_path()
    from flexunet.io.atomic import atomic_save_text

    dst = Path(path) if path else RESULTS_DIR / f"{name}.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_text(dst, json.dumps(data, indent=2, default=_json_default) + "\n")
    return dst


def save_report(name: str, data: dict, text: str, *folders: str | os.PathLike | None) -> None:
    """Write ``<name>.json`` (``data``) and ``<name>.md`` (``text``) into each given folder (None skipped)."""
    for folder in folders:
        if folder is None:
            continue
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_results(name, data, folder / f"{name}.json")
        (folder / f"{name}.md").write_text(text + "\n")


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return repr(o)


#: started from the (big) benchmark process, it starts the real command from its own small address space,
#: so the command's ``ru_maxrss`` (what tf_anchor.py reports) is its own and not the benchmark's
_TRAMPOLINE = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


#: like :data:`_TRAMPOLINE`, and it also waits for the command with ``os.wait4`` and writes the command's
#: own ``ru_maxrss`` (KiB on Linux) to the file named by its first argument
_PEAK_TRAMPOLINE = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, s, u = os.wait4(p.pid, 0); "
                    "open(sys.argv[1], 'w').write(str(u.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(s))")


def run_peak_rss(cmd: Sequence[str], log: Path, env: dict | None = None,
                 cwd: Path | None = None) -> tuple[int, float]:
    """Run ``cmd`` with its stdout and stderr in ``log``; return its exit code and its own peak RSS in GB.

    ``ru_maxrss`` of a child started from this process would start at this process's high-water mark
    (the kernel carries it across fork and exec); the command is therefore started by a small trampoline
    (:data:`_PEAK_TRAMPOLINE`), whose own child's ``ru_maxrss`` is the command's alone."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak_file = Path(log).with_suffix(".maxrss")
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-c", _PEAK_TRAMPOLINE, str(peak_file), *cmd], stdout=f,
                             stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        peak = int(peak_file.read_text()) * scale / 1e9
        peak_file.unlink()
    except (OSError, ValueError):  # the trampoline itself failed
        peak = float("nan")
    return rc, peak


def run_result_subprocess(cmd: Sequence[str], timeout: float, prefix: str = "RESULT ",
                          env: dict | None = None, echo: bool = False, fresh_rusage: bool = True) -> dict:
    """Run ``cmd``; return the JSON of its last ``prefix`` line, plus ``wall_s`` and ``returncode``.

    On a timeout, a crash or a missing line: ``{"error": ..., "stderr_tail": ...}`` (never raises);
    on a timeout the whole process group is killed.  Lines starting with ``PARTIAL`` are kept under
    ``partial`` (tf_anchor prints one after training).  ``fresh_rusage``: start ``cmd`` through a small
    trampoline process (see :data:`_TRAMPOLINE`).
    """
    import signal

    t0 = time.perf_counter()
    full_env = dict(os.environ)
    for k, v in (env or {}).items():  # a value of None removes the variable
        if v is None:
            full_env.pop(k, None)
        else:
            full_env[k] = str(v)
    argv = [sys.executable, "-c", _TRAMPOLINE, *cmd] if fresh_rusage else list(cmd)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                                start_new_session=True)
    except OSError as exc:
        return {"error": f"could not start {cmd[0]}: {exc}"}
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        stdout, _ = proc.communicate()
        res = {"error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - t0, 1)}
        res.update(_parse_partial(stdout))
        return res
    wall = round(time.perf_counter() - t0, 1)
    if echo and stdout:
        print(stdout, end="")
    result = None
    for line in stdout.splitlines():
        if line.startswith(prefix):
            try:
                result = json.loads(line[len(prefix):])
            except json.JSONDecodeError:
                pass
    if result is None:
        tail = (stderr or stdout or "").strip().splitlines()[-8:]
        res = {"error": f"exit {proc.returncode}, no {prefix.strip()} line", "stderr_tail": tail, "wall_s": wall}
        res.update(_parse_partial(stdout))
        return res
    result.setdefault("wall_s", wall)
    result["returncode"] = proc.returncode
    return result


def _parse_partial(out: str) -> dict:
    for line in reversed((out or "").splitlines()):
        if line.startswith("PARTIAL"):
            try:
                return {"partial": json.loads(line.split(" ", 1)[1])}
            except (IndexError, json.JSONDecodeError):
                pass
    return {}


def fmt_num(v, nd: int = 3, signed: bool = False, missing: str = "–") -> str:
    """``v`` with ``nd`` decimals (and its sign with ``signed``), or ``missing`` for None and non-finite values."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return missing
    return f"{v:+.{nd}f}" if signed else f"{v:.{nd}f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            if v != v:
                return "–"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def ratio(a, b) -> float | None:
    try:
        if a is None or b is None or b == 0:
            return None
        return float(a) / float(b)
    except (TypeError, ValueError):
        return None
