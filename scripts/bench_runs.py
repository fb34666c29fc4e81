"""The bench scripts' shared reading of JSON lines: runs grouped by label,
and medians that skip missing values."""
import json
import statistics
from collections import defaultdict


def load(path):
    """Every JSON line of `path`, grouped by its "label"."""
    runs = defaultdict(list)
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            runs[r["label"]].append(r)
    return runs


def med(rs, f):
    """The median of f(r) over `rs`, leaving out None; None if none is left."""
    v = [f(r) for r in rs if f(r) is not None]
    return statistics.median(v) if v else None
