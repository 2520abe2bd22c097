"""Leaderboards: one folder each with spec.toml, entries/*.json, README.md and index.html."""
