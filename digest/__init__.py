"""papers digest: a self-hostable daily email of new and trending papers, per topic.

Pipeline stages, one module each: `ingest` (with parsers in `sources/`),
`select`, `render`, `deliver`, `schedule`; `db` is the only database access,
`cli` the only place that wires config, database and clock together.
"""

__version__ = "0.1.0"
