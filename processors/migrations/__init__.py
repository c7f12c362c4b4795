"""ClickHouse migrations (package data): `NNNN_name.sql`, `{db}` is the target database."""
