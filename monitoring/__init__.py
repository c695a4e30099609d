"""Monitoring as code: the Prometheus rules, and the tools that run and apply them.

- rules/*.rules.yml: recording rules (the indicators) and alerts; tests/: their promtool tests.
- prometheus.yml: a local Prometheus scraping the service with those rules.
- run-monitoring.yaml: the Cloud Run sidecar's scrape config (Managed Service for Prometheus).
- cloud/: the Cloud Monitoring alert policies and dashboard, generated from the rules.
- rules.py (load, compress, inline), cloud.py (`make monitoring`), local.py (`make monitor`).
"""
