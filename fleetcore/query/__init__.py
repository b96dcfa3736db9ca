"""Reading the store for people: SQL mining (``mining``), coverage, trigger backtests and previews.

Every user query goes through the one read-only, bounded guard :mod:`fleetcore.queryguard`
(re-exported here); dataset selection uses the same guard.
"""

from fleetcore.queryguard import QueryLimits, QueryRefused, check_sql, collect_bounded

__all__ = ["QueryLimits", "QueryRefused", "check_sql", "collect_bounded"]
