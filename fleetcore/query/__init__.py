"""Reading the store for people: SQL mining (``mining``), coverage, trigger backtests and previews."""
