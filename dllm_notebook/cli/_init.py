"""``dllm init``: a wizard that writes a workers file, testing each worker as it goes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from .. import ConfigError, WorkerConfig
from .._config import DEFAULT_PORTS, WORKER_TYPES, parse_config
from .._loop import run_sync
from ._app import EXIT_ERROR
from ._discover import find_servers, found_table, parse_networks, parse_ports
from ._probe import Found, Inspection, inspect_worker

__all__ = ["init"]

DEFAULT_OUTPUT = Path("config/workers.json")
PROBE_TIMEOUT = 10.0


def _inspect(config: WorkerConfig, *, hello: bool) -> Inspection:
    what = "Sending a test prompt to" if hello else "Connecting to"
    click.echo(f"  {what} {config.base_url} ...")
    return run_sync(inspect_worker(config, timeout=PROBE_TIMEOUT, hello=hello), what="init")


def split_host(text: str) -> tuple[str, int | None]:
    """``192.168.1.5``, ``192.168.1.5:1234`` or ``http://mac.local:1234`` -> host, port."""
    if text.count(":") > 1 and "[" not in text and "://" not in text:
        return text, None  # a bare IPv6 address
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname or text, port


def _unique_id(wanted: str, taken: set[str]) -> str:
    candidate, n = wanted, 2
    while candidate in taken:
        candidate, n = f"{wanted}-{n}", n + 1
    return candidate


def _finish_worker(host: str, port: int, kind: str, taken: set[str]) -> dict[str, Any] | None:
    """Connect, ask model, id and concurrency, send a test prompt; the entry or None."""
    found = _inspect(WorkerConfig(id="new", host=host, port=port, type=kind), hello=False)
    if found.error:
        click.echo(f"  ✗ {found.error}")
        if not click.confirm("  Keep this worker anyway?", default=False):
            return None
    else:
        names = ", ".join(f"{m.id} (loaded)" if m.loaded else m.id for m in found.models)
        click.echo(f"  ✓ {kind} server; models: {names or 'none'}")
    model = click.prompt("  Model", default=found.default_model() or "").strip()
    wanted = click.prompt(
        "  Worker id", default=_unique_id(f"{kind.replace('_', '')}-{host}", taken)
    ).strip()
    worker_id = _unique_id(wanted, taken)
    if worker_id != wanted:
        click.echo(f"  That id is taken; using {worker_id!r}.")
    limit = click.prompt(
        "  Max concurrent requests (tune it later with `dllm bench`)",
        default=4,
        type=click.IntRange(1, 1024),
    )
    if not found.error:
        config = WorkerConfig(id=worker_id, host=host, port=port, type=kind, model=model or None)
        tested = _inspect(config, hello=True)
        if tested.hello_s is not None:
            click.echo(f"  ✓ answered in {tested.hello_s:.1f} s")
        else:
            why = tested.error or tested.hello_error or "the server has no model to ask"
            click.echo(f"  ✗ the test prompt failed: {why}")
            if not click.confirm("  Keep this worker anyway?", default=False):
                return None
    entry: dict[str, Any] = {"id": worker_id, "host": host, "port": port, "type": kind}
    if model:
        entry["model"] = model
    entry["max_concurrent_requests"] = limit
    taken.add(worker_id)
    return entry


def _from_discovery(cidrs: Sequence[str], taken: set[str]) -> list[dict[str, Any]]:
    found: list[Found] = find_servers(
        parse_networks(cidrs), parse_ports(None), timeout=0.5, concurrency=128
    )
    if not found:
        click.echo("No server found there.")
        return []
    click.echo(found_table(found))
    entries: list[dict[str, Any]] = []
    for server in found:
        if click.confirm(f"Add the {server.type} server at {server.address}?", default=True):
            entry = _finish_worker(server.host, server.port, server.type, taken)
            if entry is not None:
                entries.append(entry)
    return entries


def _by_hand(taken: set[str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while True:
        host = click.prompt(
            "Host of a worker (an address like 192.168.1.105; empty to finish)",
            default="",
            show_default=False,
        ).strip()
        if not host:
            return entries
        host, given_port = split_host(host)
        kind = click.prompt(
            "  Type", type=click.Choice(WORKER_TYPES), default="lm_studio", show_choices=True
        )
        port = click.prompt(
            "  Port",
            type=click.IntRange(1, 65535),
            default=given_port or DEFAULT_PORTS.get(kind, 8080),
        )
        entry = _finish_worker(host, port, kind, taken)
        if entry is not None:
            entries.append(entry)


@click.command(
    short_help="Write a workers file step by step, testing each worker.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"The workers file to write (asked if not given; default {DEFAULT_OUTPUT}).",
)
@click.option(
    "--discover",
    "cidrs",
    multiple=True,
    metavar="CIDR",
    help="Scan this network first and offer the servers found (repeatable), like "
    "`dllm discover CIDR`.",
)
@click.option("--force", is_flag=True, help="Overwrite the file without asking.")
@click.pass_context
def init(ctx: click.Context, output: Path | None, cidrs: Sequence[str], force: bool) -> None:
    """Write a workers file step by step, testing each worker as it is added.

    For each worker it asks the host, type (lm_studio, ollama, exo, openai), port, model,
    id and concurrency, then lists the server's models and sends it one tiny prompt. With
    --discover (or when asked), it first scans a network and offers what it found.
    Exit code 1: no worker was added, so nothing was written.
    """
    path = output or Path(
        click.prompt("Workers file to write", default=str(DEFAULT_OUTPUT)).strip()
    )
    if path.exists() and not force and not click.confirm(f"{path} exists. Overwrite it?"):
        click.echo("Nothing written.")
        return
    taken: set[str] = set()
    entries: list[dict[str, Any]] = []
    if not cidrs:
        answer = click.prompt(
            "Scan a network for servers? Type it like 192.168.1.0/24, or press Enter to skip",
            default="",
            show_default=False,
        ).strip()
        cidrs = answer.split() if answer else ()
    if cidrs:
        entries += _from_discovery(cidrs, taken)
    entries += _by_hand(taken)
    if not entries:
        click.echo("No workers added; nothing written. Run `dllm init` again to add some.")
        ctx.exit(EXIT_ERROR)
    document = {"workers": entries}
    try:
        parse_config(document, source=str(path))
    except ConfigError as exc:  # pragma: no cover - the wizard only builds valid entries
        raise click.ClickException(f"the wizard built an invalid file: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    click.echo(f"Wrote {path} ({len(entries)} worker{'s' if len(entries) != 1 else ''}).")
    click.echo(f"Next: `dllm check --config {path} --test`, then `dllm bench --config {path}`.")
