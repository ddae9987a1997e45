"""Whether ``conveyor serve`` may start on an address: never open on a network by accident."""

from __future__ import annotations

import ipaddress

from conveyor.settings import Settings
from conveyor.store import Store


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: treat it as a network address


def refusal(settings: Settings, host: str) -> str | None:
    """Why serving on ``host`` is refused (a network address, no key, auth not ``none``)."""
    if settings.auth == "none" or is_loopback(host):
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_url, run_dir=settings.run_dir)
    try:
        store.migrate()
        if store.keys.any_exist():
            return None
    finally:
        store.close()
    return (f"refusing to serve on {host} with no API key: make one first "
            "(`conveyor keys create --tenant default --scope admin`), or set CONVEYOR_AUTH=none "
            "to run open on purpose")
