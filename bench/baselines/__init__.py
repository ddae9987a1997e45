"""Baseline servers the benchmark compares conveyor against (see bench/README.md)."""
