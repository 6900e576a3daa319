"""The widget-free session layer: requests, results, cache, one-pass groups, progressive results,
prewarming and a newest-wins worker, for one model. See :mod:`nbviz.session.session`.

Imports no widget library: tests, benchmarks and every view (the Explorer, and later panels)
build on :class:`Session`.
"""

from nbviz.session.context import Context
from nbviz.session.results import Request, Result
from nbviz.session.session import Session, check_point, clean_error

__all__ = ["Session", "Request", "Result", "Context", "check_point", "clean_error"]
