"""Linux network namespaces, veth links, a bridge and tc shaping, through iproute2.

Network safety: the root namespace never gets an address of an emulated cluster. Before any
namespace exists, an ``unreachable`` route for the cluster's subnet goes into the root namespace, so
a root-namespace process that tries a cluster address fails locally instead of sending the packet
out of the machine; the route is removed last on teardown. Every client of a cluster address runs
inside a namespace (``enter_command``).

Only qdiscs built into this kernel are used for shaping: tbf (bandwidth). Delay needs netem, which
is probed and refused when missing.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from trainscale.scaling.spec import SpecError

NETNS_DIR = "/run/netns"
TBF_LATENCY = "50ms"  # how long a packet may wait in the tbf queue before it is dropped
MIN_BURST_BYTES = 16 * 1024
MIN_RATE_BPS = 8_000  # 8 kbit/s: 1 kB/s
_RATE = re.compile(r"^(\d+(?:\.\d+)?)([kmgt]?)bit$")
_RATE_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_DELAY_SCALE = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class NetnsError(RuntimeError):
    """An iproute2 command failed (the message holds the command and its error)."""


CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21


def has_net_admin() -> bool:
    """Root with the capabilities namespaces need (a root process may have lost them in a container)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return os.geteuid() == 0 and all(caps >> c & 1 for c in (CAP_NET_ADMIN, CAP_SYS_ADMIN))
    except OSError:
        pass
    return os.geteuid() == 0


def require_root_and_tools(what: str) -> None:
    if not has_net_admin():
        raise SpecError(f"{what} needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN (it creates and enters network "
                        "namespaces); run it as root")
    missing = [t for t in ("ip", "tc", "nsenter", "unshare") if shutil.which(t) is None]
    if missing:
        raise SpecError(f"{what} needs iproute2 and util-linux; missing: {', '.join(missing)} "
                        "(apt-get install iproute2 util-linux)")


def parse_rate(text: str) -> int:
    """'1gbit' -> 1_000_000_000 bits/s (tc's units; 'kbit', 'mbit', 'gbit', 'tbit')."""
    m = _RATE.match(text.strip().lower())
    if not m:
        raise SpecError(f"--bandwidth must look like 100mbit or 1gbit, got {text!r}")
    rate = int(float(m.group(1)) * _RATE_SCALE[m.group(2)])
    if rate < MIN_RATE_BPS:  # tbf cannot shape below this (and 0 would be no link at all)
        raise SpecError(f"--bandwidth must be at least {MIN_RATE_BPS // 1000}kbit, got {text!r}")
    return rate


def parse_delay(text: str) -> float:
    """'1ms' -> 0.001 s."""
    m = _DELAY.match(text.strip().lower())
    if not m:
        raise SpecError(f"--latency must look like 500us or 1ms, got {text!r}")
    return float(m.group(1)) * _DELAY_SCALE[m.group(2)]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def list_netns() -> list[str]:
    out = run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_path(ns: str) -> str:
    return f"{NETNS_DIR}/{ns}"


def root_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace routes or has an address in (default route excluded)."""
    nets = []
    for line in run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[1] if words[0] in ("unreachable", "blackhole", "prohibit", "local", "broadcast", "unicast") \
            and len(words) > 1 else words[0]
        if dest == "default":
            continue
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            nets.append(net)
    for line in run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        if len(words) > 3:
            nets.append(ipaddress.ip_interface(words[3]).network)
    return nets


def add_guard_route(subnet: ipaddress.IPv4Network) -> bool:
    """Reserve subnet for a cluster: add the unreachable route unless the root namespace already
    routes or uses any part of it. False when taken (the route add is atomic, so two clusters never
    get the same subnet)."""
    if any(subnet.overlaps(n) for n in root_networks()):
        return False
    proc = run("ip", "route", "add", "unreachable", str(subnet), check=False)
    if proc.returncode != 0:
        if "File exists" in proc.stderr:
            return False
        raise NetnsError(f"ip route add unreachable {subnet}: {proc.stderr.strip()}")
    return True


def remove_guard_route(subnet: str) -> None:
    run("ip", "route", "del", "unreachable", subnet, check=False)


def guard_route_present(subnet: str) -> bool:
    return bool(run("ip", "route", "show", "type", "unreachable", subnet, check=False).stdout.strip())


def add_netns(ns: str) -> None:
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")


def processes_in(ns: str) -> list[int]:
    """Pids of the processes inside network namespace ns (the daemons a user started on an emulated
    node, a run's agents): the namespace is theirs when /proc/PID/ns/net is the same nsfs inode."""
    try:
        target = os.stat(netns_path(ns))
    except OSError:
        return []
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                st = os.stat(proc / "ns" / "net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                pids.append(int(proc.name))
    return pids


def delete_netns(ns: str) -> None:
    """Deleting a namespace destroys its veth ends (and so their peers)."""
    run("ip", "netns", "del", ns, check=False)


def add_bridge(ns: str, bridge: str) -> None:
    run("ip", "-n", ns, "link", "add", bridge, "type", "bridge")
    run("ip", "-n", ns, "link", "set", bridge, "up")


def add_link(node_ns: str, node_if: str, address: str, prefixlen: int, switch_ns: str, port: str,
             bridge: str) -> None:
    """A veth pair made directly inside the two namespaces (no name ever exists in the root
    namespace): node_if with the address in node_ns, port on the bridge in switch_ns."""
    run("ip", "-n", node_ns, "link", "add", node_if, "type", "veth", "peer", "name", port, "netns", switch_ns)
    run("ip", "-n", node_ns, "addr", "add", f"{address}/{prefixlen}", "dev", node_if)
    run("ip", "-n", node_ns, "link", "set", node_if, "up")
    run("ip", "-n", switch_ns, "link", "set", port, "master", bridge)
    run("ip", "-n", switch_ns, "link", "set", port, "up")


def add_address(ns: str, dev: str, address: str, prefixlen: int) -> None:
    run("ip", "-n", ns, "addr", "replace", f"{address}/{prefixlen}", "dev", dev)


def remove_address(ns: str, dev: str, address: str, prefixlen: int) -> None:
    run("ip", "-n", ns, "addr", "del", f"{address}/{prefixlen}", "dev", dev, check=False)


def link_up(ns: str, dev: str) -> None:
    """Bring a link up (after a partition drill, whatever ended it)."""
    run("ip", "-n", ns, "link", "set", dev, "up", check=False)


def burst_bytes(rate_bps: int) -> int:
    """tbf bucket: 2 ms worth of the rate, at least 16 KiB (1 Gbit/s -> 250 kB, as tested here)."""
    return max(MIN_BURST_BYTES, rate_bps // 8 // 500)


def shape(ns: str, dev: str, rate_bps: int | None, delay_s: float | None) -> None:
    """Egress of dev limited to rate_bps (tbf) and/or delayed by delay_s (netem)."""
    if delay_s:
        cmd = ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{delay_s * 1e6:.0f}us"]
        if rate_bps:
            cmd += ["rate", f"{rate_bps}bit"]
        run(*cmd)
    elif rate_bps:
        run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_bps}bit",
            "burst", str(burst_bytes(rate_bps)), "latency", TBF_LATENCY)


def qdisc(ns: str, dev: str) -> str:
    return run("tc", "-n", ns, "qdisc", "show", "dev", dev, check=False).stdout.strip()


def netem_available(ns: str) -> bool:
    """Whether the kernel has the netem qdisc (probed on the loopback of a scratch namespace)."""
    proc = run("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
    if proc.returncode == 0:
        run("tc", "-n", ns, "qdisc", "del", "dev", "lo", "root", check=False)
        return True
    return False


def enter_command(ns: str, hostname: str | None = None) -> list[str]:
    """Prefix that runs a command inside ns (nsenter, not 'ip netns exec', which remounts /sys),
    optionally in a new UTS namespace with its own hostname (so each emulated node has one)."""
    cmd = ["nsenter", f"--net={netns_path(ns)}", "--"]
    if hostname:
        cmd += ["unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", hostname]
    return cmd


def link_bytes(ns: str, dev: str) -> tuple[int, int]:
    """(bytes sent, bytes received) by dev since it was created, from the kernel's counters."""
    out = run("ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])
