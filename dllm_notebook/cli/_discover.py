"""``dllm discover``: find LM Studio, Ollama, llama.cpp and exo servers on the user's networks."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Sequence

import click

from .._loop import run_sync
from ._app import EXIT_NONE
from ._probe import DISCOVER_PORTS, Found, scan
from ._table import table

__all__ = ["discover", "find_servers", "parse_networks", "parse_ports", "workers_json"]

MAX_ADDRESSES = 65536
"""A /16: the largest network ``discover`` scans (at a short timeout, a few minutes)."""
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NAMES = {"lm_studio": "LM Studio", "ollama": "Ollama", "exo": "exo", "llama_cpp": "llama.cpp"}


def parse_networks(texts: Sequence[str]) -> list[Network]:
    """Networks from ``192.168.1.0/24``, ``192.168.1.23/24`` or a single address."""
    networks: list[Network] = []
    for text in texts:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not a network; write it like 192.168.1.0/24, or one address "
                "like 192.168.1.20",
                param_hint="CIDR",
            ) from None
        if network.num_addresses > MAX_ADDRESSES:
            raise click.BadParameter(
                f"{network} has {network.num_addresses:,} addresses; discover scans at most "
                f"{MAX_ADDRESSES:,} (a /16). Name the lab's own subnet instead, e.g. "
                "192.168.1.0/24 (`ip addr` or System Settings > Network shows yours)",
                param_hint="CIDR",
            )
        networks.append(network)
    return networks


def parse_ports(text: str | None) -> list[int]:
    if not text:
        return list(DISCOVER_PORTS)
    ports: list[int] = []
    for part in text.split(","):
        try:
            port = int(part)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise click.BadParameter(
                f"{part.strip()!r} is not a port; give numbers from 1 to 65535 separated by "
                "commas, e.g. 1234,11434",
                param_hint="--ports",
            )
        ports.append(port)
    return ports


def _targets(networks: Sequence[Network], ports: Sequence[int]) -> Iterator[tuple[str, int]]:
    seen: set[str] = set()
    for network in networks:
        hosts = list(network.hosts()) or [network.network_address]
        for host in hosts:
            if str(host) in seen:
                continue
            seen.add(str(host))
            for port in ports:
                yield str(host), port


def find_servers(
    networks: Sequence[Network], ports: Sequence[int], *, timeout: float, concurrency: int
) -> list[Found]:
    """Scan the networks (blocking, Ctrl-C stops it); print what is being done to stderr."""
    count = len({str(h) for n in networks for h in (list(n.hosts()) or [n.network_address])})
    names = ", ".join(
        f"{p} ({NAMES[DISCOVER_PORTS[p]]})" if p in DISCOVER_PORTS else str(p) for p in ports
    )
    plural = "es" if count != 1 else ""
    click.echo(
        f"Scanning {count} address{plural} on ports {names}; timeout {timeout:g} s...", err=True
    )
    return run_sync(
        scan(_targets(networks, ports), timeout=timeout, concurrency=concurrency),
        what="discover",
    )


def workers_json(found: Sequence[Found]) -> str:
    return json.dumps({"workers": [f.entry() for f in found]}, indent=2)


def found_table(found: Sequence[Found]) -> str:
    rows = []
    for f in found:
        models = ", ".join(f"{m} (loaded)" if m in f.loaded else m for m in f.models) or "-"
        rows.append([f.address, f.type, models])
    return table(["address", "type", "models"], rows)


@click.command(
    short_help="Find LM Studio, Ollama, llama.cpp and exo servers on a network.",
    epilog="""\b
Find your network:
  Linux:   `ip addr` shows e.g. "inet 192.168.1.23/24": scan 192.168.1.0/24
  macOS:   System Settings > Network > Wi-Fi > Details > TCP/IP, or
           `ipconfig getifaddr en0` (the address; the subnet is usually /24)
  Windows: `ipconfig` ("IPv4 Address" and "Subnet Mask" 255.255.255.0 = /24)

\b
Servers must listen on the network, not only on localhost:
  LM Studio: Developer > Settings > "Serve on Local Network"
  Ollama:    OLLAMA_HOST=0.0.0.0 ollama serve
  llama.cpp: llama-server --host 0.0.0.0 ...
Exit code 4: no server found.""",
)
@click.argument("cidrs", metavar="CIDR [CIDR ...]", nargs=-1, required=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.05, max=30),
    default=0.5,
    show_default=True,
    help="Seconds to wait for each connection.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=1024),
    default=128,
    show_default=True,
    help="Connections tried at once.",
)
@click.option(
    "--ports",
    metavar="PORT,...",
    help="Ports to probe instead of the defaults 1234 (LM Studio), 11434 (Ollama), 52415 "
    "(exo) and 8080 (llama.cpp). A server on another port is identified by its API; an "
    "OpenAI-style one that is neither llama.cpp nor on 52415 is reported as openai.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the workers.json entries.")
@click.pass_context
def discover(
    ctx: click.Context,
    cidrs: Sequence[str],
    timeout: float,
    concurrency: int,
    ports: str | None,
    as_json: bool,
) -> None:
    """Find LM Studio, Ollama, llama.cpp and exo servers on the networks you name.

    There is no default network: name yours, e.g. `dllm discover 192.168.1.0/24` (at most
    a /16). Each address is probed on the servers' default ports with a short timeout;
    every server found is identified by its API and listed with its models, followed by
    ready-to-use worker entries for workers.json (`dllm init` can write the file).
    """
    networks = parse_networks(cidrs)
    found = find_servers(networks, parse_ports(ports), timeout=timeout, concurrency=concurrency)
    if as_json:
        click.echo(workers_json(found))
    elif found:
        click.echo(f"Found {len(found)} server{'s' if len(found) != 1 else ''}:")
        click.echo(found_table(found))
        click.echo("\nWorker entries for workers.json (or let `dllm init` write the file):")
        click.echo(workers_json(found))
    if not found:
        click.echo(
            "No LM Studio, Ollama, llama.cpp or exo server answered on "
            f"{', '.join(map(str, networks))}. "
            "Check that the servers listen on the network (see `dllm discover --help`) and "
            "that no firewall blocks their ports.",
            err=True,
        )
        ctx.exit(EXIT_NONE)
