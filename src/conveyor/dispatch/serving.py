"""The scale-out engine inside ``conveyor serve``: the publisher and a reconciler thread."""

from __future__ import annotations

import threading

from conveyor.dispatch.broker import BrokerDispatcher
from conveyor.dispatch.reconciler import Reconciler, start_thread
from conveyor.runner.retry import RetryPolicy
from conveyor.settings import Settings
from conveyor.store import Store


class ServeEngine:
    """Made before the store (the store takes :attr:`dispatcher`), started after it."""

    def __init__(self, settings: Settings) -> None:
        from conveyor.celery_app import make_app

        self.settings = settings
        self.dispatcher = BrokerDispatcher(settings, make_app(settings))
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None

    def start(self, store: Store) -> None:
        self.dispatcher.bind(store.dispatching)
        policy = RetryPolicy(self.settings.retry_base_s, self.settings.retry_max_s)
        self._thread, self._stop = start_thread(Reconciler(store, self.dispatcher, policy,
                                                            self.settings.lease_s))

    def stop(self) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
