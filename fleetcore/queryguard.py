"""The one guard in front of every user SQL query: read-only and bounded (see ``docs/mining.md``).

Used by ``fleet mine`` (:class:`fleetcore.query.mining.MiningSession`) and by dataset selection
(a spec's ``where`` / ``sql``, :mod:`fleetcore.datasets.selection`). It lives beside
``fleetcore.errors`` so both wings can import it (they may not import each other).

:func:`check_sql` refuses a query before it runs, in this order:

1. size: more than ``max_chars`` characters (checked on the raw text);
2. shape, on the tokens (a linear scan, so the SQL parser never recurses deeply): nesting deeper
   than ``max_nesting`` (parentheses and brackets, ``CASE ... END`` and runs of prefix ``NOT`` /
   ``-`` / ``+`` add up) and more than ``max_terms`` operators (``AND``/``OR``/``NOT`` and
   arithmetic; comparisons do not count, nor do the values of an ``IN (...)`` list);
3. read-only: exactly one ``SELECT`` (``WITH``, set operations) over the registered tables or the
   query's CTEs; no other statement, no table function, no function whose name reads or writes
   files (``read_parquet``, ``read_csv``, ``scan_*`` ...), no ``SELECT ... INTO``;
4. joins: a cross join (``CROSS JOIN``, ``FROM a, b``, ``NATURAL JOIN``, a ``JOIN`` whose ``ON``
   names no column) is refused, and so are more than ``max_joins`` joins in the whole query.

:func:`collect_bounded` runs the checked query: it keeps at most ``max_rows + 1`` rows
(``LazyFrame.head``) and refuses a result with more than ``max_rows``, and waits for the
collect at most ``time_limit_s`` seconds in a worker thread. Polars cannot cancel a running
query, so on a timeout the worker thread is abandoned (a daemon thread: it computes on until
it finishes or the process exits, and its result is dropped); ``fleet mine`` exits right after
the error.

Every refusal is a :class:`QueryRefused` with a one-line problem that names the limit and how to
raise it (``hint``); it never quotes data the query would have read.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Final, Mapping, Sequence

from fleetcore.errors import ConfigError, FleetError

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)

#: names of functions that read or write files (polars SQL's ``read_parquet`` ..., DuckDB-style ``copy``/``glob``)
FILE_FUNC_RE: Final = re.compile(r"^(read|scan|write|sink|copy|load|glob)_?", re.IGNORECASE)
#: functions whose names look like file access but are not (none in polars SQL today)
SAFE_FUNCS: Final = frozenset()
_PROBLEM_CHARS: Final = 400


@dataclass(frozen=True)
class QueryLimits:
    """Bounds on one query. ``None`` for ``max_rows`` / ``time_limit_s`` means no bound.

    ``max_chars``: length of the query text; ``max_nesting``: depth of parentheses, ``CASE`` and
    prefix operators; ``max_terms``: operators (``AND``/``OR``/``NOT`` and arithmetic);
    ``max_joins``: joins in the whole query; ``max_rows``: rows of the result; ``time_limit_s``:
    seconds to compute the result.
    """

    max_chars: int = 20_000
    max_nesting: int = 32  # sqlglot and polars' SQL parser give up near 50 levels
    max_terms: int = 500
    max_joins: int = 4
    max_rows: int | None = 1_000_000
    time_limit_s: float | None = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in _OPTIONAL:
                continue
            if f.name == "time_limit_s":
                ok = not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 and v == v and v != float("inf")
                want = "a number of seconds > 0"
            else:
                ok = not isinstance(v, bool) and isinstance(v, int) and v >= (0 if f.name == "max_joins" else 1)
                want = f"an integer >= {0 if f.name == 'max_joins' else 1}"
            if not ok:
                raise ConfigError("query limits", f"expected {want}{' or null' if f.name in _OPTIONAL else ''}, found {v!r}", field=f.name)

    @classmethod
    def from_mapping(cls, doc: Any, *, path: str, field: str = "limits", base: "QueryLimits | None" = None) -> "QueryLimits":
        """``base`` (default: the defaults) with the keys of ``doc`` (a config mapping) replaced.
        Raises ConfigError naming ``path`` and ``field.<key>``."""
        base = base if base is not None else cls()
        if doc is None:
            return base
        if not isinstance(doc, Mapping):
            raise ConfigError(path, f"expected a mapping of query limits {sorted(LIMIT_NAMES)}, found {doc!r}", field=field)
        values = {f.name: getattr(base, f.name) for f in fields(cls)}
        for key, v in doc.items():
            if key not in LIMIT_NAMES:
                raise ConfigError(path, f"unknown query limit; expected one of {sorted(LIMIT_NAMES)}", field=f"{field}.{key}")
            try:
                cls(**{str(key): v})  # validates this one value
            except ConfigError as exc:
                raise ConfigError(path, exc.problem, field=f"{field}.{key}") from None
            values[str(key)] = v
        return cls(**values)


_OPTIONAL: Final = frozenset({"max_rows", "time_limit_s"})
LIMIT_NAMES: Final = frozenset(f.name for f in fields(QueryLimits))


class QueryRefused(FleetError):
    """A query that is not read-only over the registered tables, or that breaks a :class:`QueryLimits`
    bound. ``problem`` is one line; ``line``/``column`` locate it in the query where known (1-based);
    ``limit`` names the broken bound (None for a read-only refusal)."""

    def __init__(self, problem: str, *, line: int | None = None, column: int | None = None, limit: str | None = None) -> None:
        self.line = line
        self.column = column
        self.limit = limit
        super().__init__("query", _one_line(problem), code="query_limit" if limit else "query_refused")


def _one_line(text: str) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= _PROBLEM_CHARS else s[: _PROBLEM_CHARS - 3] + "..."


Hint = Callable[[str], str]


def default_hint(limit: str) -> str:
    return f"raise QueryLimits.{limit}"


# token kinds (sqlglot TokenType names) counted as operator terms: boolean connectives and arithmetic
# (a comparison sits under a connective, so ``a = 1 OR a = 2`` is one term)
_TERM_TOKENS: Final = frozenset({
    "AND", "OR", "NOT", "XOR", "DAMP", "PLUS", "DASH", "STAR", "SLASH", "MOD", "DIV", "DPIPE", "AMP", "PIPE", "CARET", "TILDA",
    "LSHIFT", "RSHIFT",
})
_PREFIX_TOKENS: Final = frozenset({"NOT", "DASH", "PLUS", "TILDA"})
_STRING_TOKENS: Final = frozenset({"STRING", "NATIONAL_STRING", "RAW_STRING", "BIT_STRING", "HEX_STRING", "BYTE_STRING"})


def check_sql(sql: str, *, tables: Sequence[str], limits: QueryLimits | None = None, hint: Hint = default_hint) -> set[str]:
    """Refuse anything but one bounded, read-only query over ``tables`` (see the module docstring);
    returns the names of the registered tables the query reads. Raises :class:`QueryRefused`."""
    import sqlglot
    from sqlglot.errors import ParseError, TokenError

    lim = limits if limits is not None else QueryLimits()
    names = {t.lower() for t in tables}
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("empty query: expected one SELECT statement")
    if len(sql) > lim.max_chars:
        raise QueryRefused(f"the query has {len(sql):,} characters, more than max_chars = {lim.max_chars:,}; {hint('max_chars')}",
                           limit="max_chars")
    try:
        tokens = sqlglot.tokenize(sql)
    except TokenError as exc:
        raise QueryRefused(f"cannot tokenize the query: {exc}") from exc
    _check_tokens(tokens, lim, hint)
    try:
        stmts = [s for s in sqlglot.parse(sql) if s is not None]
    except ParseError as exc:
        e0 = exc.errors[0] if exc.errors else {}
        raise QueryRefused(f"SQL syntax error: {e0.get('description') or exc}", line=e0.get("line"), column=e0.get("col")) from exc
    except RecursionError:
        raise QueryRefused("the query is nested too deeply for the SQL parser: simplify it", limit="max_nesting") from None
    if len(stmts) != 1:
        raise QueryRefused(f"expected exactly one SELECT statement, found {len(stmts)}")
    try:
        return _check_tree(stmts[0], sql, names, lim, hint)
    except RecursionError:
        raise QueryRefused("the query is nested too deeply to check: simplify it", limit="max_nesting") from None


def _check_tokens(tokens: list[Any], lim: QueryLimits, hint: Hint) -> None:
    depth = cases = run = terms = 0
    deepest = None
    for i, tok in enumerate(tokens):
        kind = tok.token_type.name
        if kind in _STRING_TOKENS:
            run = 0
            continue
        if kind == "SEMICOLON" and i != len(tokens) - 1:
            raise QueryRefused("only one statement is allowed (found ';' before the end)", line=tok.line, column=tok.col)
        if kind in ("L_PAREN", "L_BRACKET", "L_BRACE"):
            depth += 1
        elif kind in ("R_PAREN", "R_BRACKET", "R_BRACE"):
            depth = max(depth - 1, 0)
        elif kind == "CASE":
            cases += 1
        elif kind == "END":
            cases = max(cases - 1, 0)
        run = run + 1 if kind in _PREFIX_TOKENS else 0
        if kind in _TERM_TOKENS:
            terms += 1
        if depth + cases + run > lim.max_nesting and deepest is None:
            deepest = tok
        if kind in ("VAR", "IDENTIFIER") or tok.text.isidentifier():
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and nxt.token_type.name == "L_PAREN" and FILE_FUNC_RE.match(tok.text) and tok.text.lower() not in SAFE_FUNCS:
                raise QueryRefused(f"function {tok.text}() is not allowed: queries may only read the registered tables",
                                   line=tok.line, column=tok.col - len(tok.text) + 1)
    if deepest is not None:
        raise QueryRefused(f"the query nests parentheses, CASE and prefix operators deeper than max_nesting = {lim.max_nesting}; "
                           f"{hint('max_nesting')}", line=deepest.line, column=deepest.col, limit="max_nesting")
    if terms > lim.max_terms:
        raise QueryRefused(f"the query has {terms:,} operators (AND/OR/NOT and arithmetic), more than max_terms = "
                           f"{lim.max_terms:,}; use IN (...) for a list of values, or {hint('max_terms')}", limit="max_terms")


def _check_tree(stmt: Any, sql: str, names: set[str], lim: QueryLimits, hint: Hint) -> set[str]:
    from sqlglot import exp

    if not isinstance(stmt, exp.Query):
        raise QueryRefused(f"only SELECT queries are allowed, found a {stmt.key.upper()} statement")
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    used: set[str] = set()
    joins = 0
    for node in stmt.walk():
        if isinstance(node, exp.Into):
            raise QueryRefused("SELECT ... INTO is not allowed (queries are read-only)")
        if isinstance(node, (exp.Create, exp.Insert, exp.Drop, exp.Delete, exp.Update, exp.Copy, exp.Command, exp.Merge, exp.Alter)):
            raise QueryRefused(f"{node.key.upper()} is not allowed (queries are read-only)")
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise QueryRefused(f"table functions are not allowed ({node.this.sql()[:60]}): use one of the registered tables {sorted(names)}")
            if node.args.get("db") or node.args.get("catalog"):
                raise QueryRefused(f"qualified table name {node.sql()[:80]!r} is not allowed; tables: {sorted(names)}")
            name = node.name.lower()
            if name in names and name not in ctes:
                used.add(name)
            if name not in names and name not in ctes:
                pos = locate(sql, node.name) or (None, None)
                raise QueryRefused(f"unknown table {node.name[:80]!r}: only {sorted(names)} are visible", line=pos[0], column=pos[1])
        if isinstance(node, exp.Func):
            fname = node.sql_name().lower() if not isinstance(node, exp.Anonymous) else str(node.name).lower()
            if FILE_FUNC_RE.match(fname) and fname not in SAFE_FUNCS:
                raise QueryRefused(f"function {fname}() is not allowed: queries may only read the registered tables")
        if isinstance(node, exp.Join):
            joins += 1
            if _is_cross(node):
                raise QueryRefused("cross joins are not allowed (CROSS JOIN, FROM a, b, NATURAL JOIN or ON without a column): "
                                   "join on a key with JOIN ... ON a.x = b.x or USING (x)")
    if joins > lim.max_joins:
        raise QueryRefused(f"the query has {joins} joins, more than max_joins = {lim.max_joins}; {hint('max_joins')}", limit="max_joins")
    return used


def _is_cross(join: Any) -> bool:
    from sqlglot import exp

    kind = str(join.args.get("kind") or "").upper()
    method = str(join.args.get("method") or "").upper()
    if kind == "CROSS" or method == "NATURAL":
        return True
    if join.args.get("using"):
        return False
    on = join.args.get("on")
    return on is None or next(on.find_all(exp.Column), None) is None


def locate(sql: str, word: str) -> tuple[int, int] | None:
    """(line, column), 1-based, of the first whole-word ``word`` in ``sql`` (case-insensitive)."""
    m = re.search(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])", sql, flags=re.IGNORECASE)
    if m is None:
        return None
    before = sql[: m.start()]
    line = before.count("\n") + 1
    col = m.start() - (before.rfind("\n") + 1) + 1
    return line, col


def collect_bounded(lf: "pl.LazyFrame", limits: QueryLimits | None = None, *, hint: Hint = default_hint,
                    what: str = "query") -> "pl.DataFrame":
    """Collect a checked query's LazyFrame within ``limits.max_rows`` and ``limits.time_limit_s``
    (see the module docstring). Raises :class:`QueryRefused` on a bound; polars errors pass through."""
    lim = limits if limits is not None else QueryLimits()
    if lim.max_rows is not None:
        lf = lf.head(lim.max_rows + 1)
    df = _collect_within(lf, lim.time_limit_s, hint, what)
    if lim.max_rows is not None and df.height > lim.max_rows:
        raise QueryRefused(f"the {what} returned more than max_rows = {lim.max_rows:,} rows; {hint('max_rows')}", limit="max_rows")
    return df


def _collect_within(lf: "pl.LazyFrame", seconds: float | None, hint: Hint, what: str) -> "pl.DataFrame":
    if seconds is None:
        return lf.collect()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["df"] = lf.collect()
        except Exception as exc:  # re-raised in the caller's thread
            box["exc"] = exc

    worker = threading.Thread(target=work, name="fleet-query-collect", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        log.warning("%s exceeded %s s: its collect thread is abandoned (polars cannot cancel it)", what, seconds)
        raise QueryRefused(f"the {what} exceeded the time limit of {seconds:g} s (time_limit_s); {hint('time_limit_s')}",
                           limit="time_limit_s")
    if "exc" in box:
        raise box["exc"]
    if "df" not in box:
        raise QueryRefused(f"the {what} stopped without a result")
    return box["df"]
