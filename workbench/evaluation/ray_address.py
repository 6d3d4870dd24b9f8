"""Ray cluster addresses: their form, whether anything answers there, and whether two
spellings name one cluster. Plain sockets; no Ray import.
"""

from __future__ import annotations

import socket
import threading

from workbench.errors import ArgumentTypeError, ExecutorError, InvalidArgumentError

# How long resolving and connecting to a cluster address may take before it counts as
# unreachable (ray.init itself retries an unreachable address for a minute or more).
PROBE_SECONDS = 5.0
ADDRESS_HELP = "e.g. 10.0.0.5:6379, [fd00::5]:6379, ray://10.0.0.5:10001, or auto"


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a cluster address; None for ``"auto"`` (this node's cluster).

    Example:
        >>> parse_address("ray://[fd00::5]:10001"), parse_address("auto")
        (('fd00::5', 10001), None)
        >>> parse_address("10.0.0.5:99999")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: Ray address '10.0.0.5:99999' is not HOST:PORT with a port in 1..65535 (e.g. 10.0.0.5:6379, [fd00::5]:6379, ray://10.0.0.5:10001, or auto)
    """
    if not isinstance(address, str):
        raise ArgumentTypeError(f"address must be a str or None, got {address!r}")
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ok = (
        sep
        and host
        and "/" not in host
        and port.isascii()
        and port.isdigit()
        and 0 < int(port) <= 65535
    )
    if not ok:
        raise InvalidArgumentError(
            f"Ray address {address!r} is not HOST:PORT with a port in 1..65535 ({ADDRESS_HELP})"
        )
    return host, int(port)


def check_address(address: str) -> None:
    """Refuse an address that is not HOST:PORT, or where nothing answers within
    `PROBE_SECONDS` (the name lookup included). Something else listening there passes;
    Ray's own connection then fails, after its timeout.

    Example:
        >>> check_address("nowhere")
        Traceback (most recent call last):
        ...
        workbench.errors.InvalidArgumentError: Ray address 'nowhere' is not HOST:PORT with a port in 1..65535 (e.g. 10.0.0.5:6379, [fd00::5]:6379, ray://10.0.0.5:10001, or auto)
    """
    target = parse_address(address)
    if target is None:
        return
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            with socket.create_connection(target, timeout=PROBE_SECONDS):
                outcome.append(None)
        except OSError as e:
            outcome.append(e)

    # In a thread, so that a slow name lookup is bounded too.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_SECONDS)
    error = outcome[0] if outcome else TimeoutError(f"no answer in {PROBE_SECONDS:g} s")
    if error is not None:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ExecutorError(
            f"no Ray cluster at {address!r}: {reason}; start one with `ray start --head` "
            "and pass the address it prints, or give no address for a local cluster"
        )


def _ips(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def _is_local(ip: str) -> bool:
    """Whether `ip` belongs to this machine: a socket can be bound to it."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


def same_cluster(address: str, current: str) -> bool:
    """Whether `address` names the cluster at `current` (GCS ``HOST:PORT``): the same
    port, and hosts that resolve to a common address or both to this machine.

    Example:
        >>> same_cluster("localhost:6379", "127.0.0.1:6379"), same_cluster("h:1", "h:2")
        (True, False)
    """
    target, now = parse_address(address), parse_address(current)
    if target is None or now is None:
        return True
    if target[1] != now[1]:
        return False
    a, b = _ips(target[0]), _ips(now[0])
    return bool(a & b) or (any(map(_is_local, a)) and any(map(_is_local, b)))
