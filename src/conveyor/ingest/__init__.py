"""Streaming ingest: multipart and raw-body uploads written straight to storage."""
