"""Metrics and logs of every conveyor process (API server, supervisor, workers).

:func:`conveyor.telemetry.multiproc.prepare` must run before anything imports
``prometheus_client`` (it picks its storage when first imported): ``conveyor serve`` and
``conveyor worker`` call it first thing, and the spawned workers inherit its environment.
"""
