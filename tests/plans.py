"""Walk an executed Spark plan through adaptive stages, caches and reused exchanges."""

from __future__ import annotations

from pyspark.sql import DataFrame


def scan_nodes(df: DataFrame) -> list:
    """The distinct file-scan operators a query ran (a cached plan counts once)."""
    jvm = df.sparkSession.sparkContext._jvm
    seen: dict[int, object] = {}
    visited: set[int] = set()
    stack = [df._jdf.queryExecution().executedPlan()]
    while stack:
        node = stack.pop()
        ident = jvm.System.identityHashCode(node)
        if ident in visited:
            continue
        visited.add(ident)
        name = node.getClass().getSimpleName()
        if name == "FileSourceScanExec":
            seen[ident] = node
        elif name == "AdaptiveSparkPlanExec":
            stack.append(node.executedPlan())
        elif name in (
            "ShuffleQueryStageExec",
            "BroadcastQueryStageExec",
            "TableCacheQueryStageExec",
            "ResultQueryStageExec",  # Spark 4: the final stage of an adaptive plan
        ):
            stack.append(node.plan())
        elif name == "InMemoryTableScanExec":
            stack.append(node.relation().cachedPlan())
        elif name == "ReusedExchangeExec":
            stack.append(node.child())
        children = node.children()
        stack.extend(children.apply(i) for i in range(children.size()))
    return list(seen.values())


def partition_count(scan) -> int:
    """How many partitions a file scan read: an array in Spark 3.5, a ``ScanFileListing`` in 4."""
    selected = scan.selectedPartitions()
    try:
        return len(selected)
    except TypeError:  # not an array: Spark 4's listing
        return int(selected.partitionCount())
