"""A run record as a trace: native Perfetto TrackEvent protobuf (for ui.perfetto.dev) or Chrome
JSON. The timeline (tracks, lanes, flows, counters) is built once, in ``timeline``, and written
by a format's ``TraceWriter``.

Entry points: :func:`export_perfetto`, :func:`export_chrome_json`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddscope._lazy import lazy_exports

if TYPE_CHECKING:
    from ddscope.exporters.trace.chrome_json import export_chrome_json
    from ddscope.exporters.trace.perfetto import export_perfetto

__all__ = ["export_chrome_json", "export_perfetto"]
_LAZY = {
    "export_chrome_json": "ddscope.exporters.trace.chrome_json",
    "export_perfetto": "ddscope.exporters.trace.perfetto",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
