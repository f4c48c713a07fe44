"""Thin HTTP and websocket layers over ingest and queries."""
