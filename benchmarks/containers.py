"""What the benchmarks read from a running container (benchmarks.flavours, benchmarks.soak): its worker's memory,
its cgroup's peak, its logs. Each is one `docker` call, bounded by a timeout."""

from __future__ import annotations

import subprocess

# One line per process: "VmHWM: <kB> kB VmRSS: <kB> kB"
_PROCESS_MEMORY = ("for f in /proc/[0-9]*/status; do "
                   "grep -hE '^(VmRSS|VmHWM):' \"$f\" | tr '\\n' ' '; echo; done 2>/dev/null")
_CGROUP_PEAK = "cat /sys/fs/cgroup/memory.peak 2>/dev/null || cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes"


def docker_exec(name: str, *command: str, timeout: float = 30) -> str:
    return subprocess.run(["docker", "exec", name, *command], capture_output=True, text=True,
                          timeout=timeout).stdout


def worker_memory_kib(name: str) -> tuple[int, int]:
    """(peak, current) RSS in KiB (VmHWM, VmRSS) of the container's largest process: the worker."""
    processes = []
    for line in docker_exec(name, "sh", "-c", _PROCESS_MEMORY).splitlines():
        words = line.split()
        fields = dict(zip(words[0::3], words[1::3]))
        if "VmRSS:" in fields and "VmHWM:" in fields:
            processes.append((int(fields["VmHWM:"]), int(fields["VmRSS:"])))
    if not processes:
        raise RuntimeError(f"could not read the processes' memory in container {name}")
    return max(processes)


def cgroup_peak_bytes(name: str) -> int:
    """The container's own peak (cgroup v2 memory.peak, v1 memory.max_usage_in_bytes), page cache included."""
    words = docker_exec(name, "sh", "-c", _CGROUP_PEAK).split()
    if not words:
        raise RuntimeError(f"could not read the cgroup's peak memory in container {name}")
    return int(words[0])


def container_logs(name: str, tail: int = 30) -> str:
    """The last `tail` lines of the container's output, stdout and stderr (the service logs to stderr)."""
    result = subprocess.run(["docker", "logs", "--tail", str(tail), name], capture_output=True, text=True,
                            timeout=60)
    return (result.stdout + result.stderr)[-2000:]
