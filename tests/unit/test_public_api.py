"""The public API is a deliberate, tested list (as httpx does it)."""

from __future__ import annotations

import conveyor


def test_all_lists_exactly_the_public_names() -> None:
    public = sorted(name for name in dir(conveyor) if not name.startswith("_")
                    and not isinstance(getattr(conveyor, name), type(conveyor)))
    assert sorted(conveyor.__all__) == sorted(
        ["AsyncClient", "Client", "ClientError", "Context", "ConveyorError", "ProcessorError",
         "Settings", "__version__", "processor"]
    )
    assert set(public) <= set(conveyor.__all__)
