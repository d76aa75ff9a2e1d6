"""A stateful toolhost tool in Python: CSV tables in memory, queried step by step.

`load` parses CSV text into a named table kept in the tool's state (snapshotted by the host,
so a resumed session still has its tables); `query` filters, sorts and projects rows;
`aggregate` groups and sums/averages/counts; `save` also writes a table to the `tables` state
namespace as JSON, durable beyond the session's snapshots.
"""

import csv
import io
from dataclasses import dataclass, field
from typing import Annotated, Dict, List, Literal, Optional, Union

from toolhost_tool import Access, Capabilities, InvalidInput, Namespace, Tool, log

MAX_ROWS = 100_000


@dataclass
class Table:
    columns: List[str]
    rows: List[List[str]]


@dataclass
class Tables:
    """Everything the tool keeps in memory: the session's tables by name."""

    tables: Dict[str, Table] = field(default_factory=dict)


@dataclass
class Load:
    """Parse CSV text (first row: column names) into the table `table`, replacing it."""

    op: Literal["load"]
    table: Annotated[str, "Name to store the table under."]
    csv: Annotated[str, "CSV text; the first row holds the column names."]


@dataclass
class Condition:
    column: str
    op: Literal["=", "!=", "<", "<=", ">", ">=", "contains"]
    value: Union[str, float]


@dataclass
class Query:
    """Rows of `table` matching every condition in `where`, sorted and projected."""

    op: Literal["query"]
    table: str
    where: List[Condition] = field(default_factory=list)
    select: Annotated[Optional[List[str]], "Columns to return (all if omitted)."] = None
    sort_by: Optional[str] = None
    descending: bool = False
    limit: Annotated[int, "At most this many rows."] = 100


@dataclass
class Aggregate:
    """Groups `table` by `group_by` and applies `function` to `column` in each group."""

    op: Literal["aggregate"]
    table: str
    function: Literal["count", "sum", "avg", "min", "max"]
    column: Optional[str] = None
    group_by: Optional[str] = None


@dataclass
class Save:
    """Writes `table` to the `tables` state namespace."""

    op: Literal["save"]
    table: str


@dataclass
class ListTables:
    """Names, columns and row counts of the loaded tables."""

    op: Literal["list"]


Input = Union[Load, Query, Aggregate, Save, ListTables]


def _number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:
        return None


def _matches(cell: str, cond: Condition) -> bool:
    if cond.op == "contains":
        return str(cond.value).lower() in cell.lower()
    left, right = _number(cell), cond.value if isinstance(cond.value, float) else _number(cond.value)
    if left is None or right is None:  # compare as text
        left, right = cell, str(cond.value)
    return {
        "=": left == right, "!=": left != right, "<": left < right,
        "<=": left <= right, ">": left > right, ">=": left >= right,
    }[cond.op]


class TableTool(Tool):
    """Loads CSV tables and filters, sorts and aggregates them; tables persist across the session."""

    name = "table"
    version = "0.1.0"
    capabilities = Capabilities.of(state={"tables": Access.READ_WRITE})
    state: Tables

    def call(self, input: Input) -> dict:
        if isinstance(input, Load):
            return self.load(input)
        if isinstance(input, ListTables):
            return {"tables": [
                {"name": n, "columns": t.columns, "rows": len(t.rows)} for n, t in sorted(self.state.tables.items())
            ]}
        table = self.table(input.table)
        if isinstance(input, Query):
            return self.query(table, input)
        if isinstance(input, Aggregate):
            return self.aggregate(table, input)
        Namespace("tables").set_json(input.table, table)
        return {"saved": input.table, "rows": len(table.rows)}

    def table(self, name: str) -> Table:
        try:
            return self.state.tables[name]
        except KeyError:
            raise InvalidInput(f"no table `{name}`; load it first") from None

    def load(self, input: Load) -> dict:
        rows = list(csv.reader(io.StringIO(input.csv)))
        if not rows or not rows[0]:
            raise InvalidInput("at `csv`: no header row")
        if len(rows) - 1 > MAX_ROWS:
            raise InvalidInput(f"at `csv`: more than {MAX_ROWS} rows")
        columns, body = rows[0], rows[1:]
        for i, row in enumerate(body, start=2):
            if len(row) != len(columns):
                raise InvalidInput(f"at `csv`: line {i} has {len(row)} fields, the header {len(columns)}")
        self.state.tables[input.table] = Table(columns, body)
        log.info(f"loaded {input.table}: {len(body)} rows")
        return {"table": input.table, "columns": columns, "rows": len(body)}

    @staticmethod
    def column(table: Table, name: str, field_name: str) -> int:
        try:
            return table.columns.index(name)
        except ValueError:
            raise InvalidInput(f"at `{field_name}`: no column `{name}` (columns: {table.columns})") from None

    def query(self, table: Table, q: Query) -> dict:
        rows = table.rows
        for i, cond in enumerate(q.where):
            index = self.column(table, cond.column, f"where[{i}].column")
            rows = [r for r in rows if _matches(r[index], cond)]
        if q.sort_by is not None:
            index = self.column(table, q.sort_by, "sort_by")
            numeric = all(_number(r[index]) is not None for r in rows)
            rows = sorted(rows, key=lambda r: _number(r[index]) if numeric else r[index], reverse=q.descending)
        columns = q.select or table.columns
        indexes = [self.column(table, c, "select") for c in columns]
        limited = rows[: max(q.limit, 0)]
        return {"columns": columns, "rows": [[r[i] for i in indexes] for r in limited], "matched": len(rows)}

    def aggregate(self, table: Table, a: Aggregate) -> dict:
        groups: Dict[str, List[List[str]]] = {}
        key_index = self.column(table, a.group_by, "group_by") if a.group_by else None
        for row in table.rows:
            groups.setdefault(row[key_index] if key_index is not None else "*", []).append(row)
        if a.function == "count":
            return {"groups": {k: len(v) for k, v in sorted(groups.items())}}
        if a.column is None:
            raise InvalidInput(f"at `column`: `{a.function}` needs a column")
        index = self.column(table, a.column, "column")
        result = {}
        for key, rows in sorted(groups.items()):
            values = [_number(r[index]) for r in rows]
            if any(v is None for v in values):
                raise InvalidInput(f"at `column`: `{a.column}` has a non-numeric value")
            result[key] = {
                "sum": lambda: sum(values), "avg": lambda: sum(values) / len(values),
                "min": lambda: min(values), "max": lambda: max(values),
            }[a.function]()
        return {"groups": result}
