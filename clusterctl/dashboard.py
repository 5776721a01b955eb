"""Whether the scheduler's dashboard draws its pages, and what to install where when it does not.

distributed serves the dashboard's pages (``/status``, ``/individual-*``) only when the scheduler's
Python has bokeh at start; without it ``/status`` answers 200 with a one-line "Dask needs bokeh" page
and the other pages 404, while ``/health`` still says ok. So the check reads the page itself.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import webbrowser
from urllib.parse import urlsplit, urlunsplit

from clusterctl.state import ClusterState

BOKEH_REQUIREMENT = "bokeh>=3.1"
NODE_EXTRA = "clusterctl[node]"
PAGE_TIMEOUT = 15.0  # the first render of /status builds every plot: a second or two on a busy host
# What every bokeh page that distributed serves carries: the script that draws the plots in the browser.
DRAWN_MARK = "Bokeh.embed"


def check_pages(url: str, current: ClusterState | None = None, timeout: float = PAGE_TIMEOUT) -> str | None:
    """None when ``url`` (a dashboard's ``/status``, through the tunnel) answers the bokeh page; otherwise
    a warning that says what it answered instead and, when bokeh is what is missing, what to install on
    which host of ``current`` (``install_hint``)."""
    status_url = urlunsplit(urlsplit(url)._replace(path="/status", query="", fragment=""))
    hint = f"; {install_hint(current)}" if current is not None else ""
    try:
        with urllib.request.urlopen(status_url, timeout=timeout) as answer:
            body = answer.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return f"{status_url} answered {exc.code} {exc.reason}: the dashboard has no pages{hint}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"the dashboard does not answer at {status_url} ({reason}): see 'clusterctl status'"
    if DRAWN_MARK in body:
        return None
    needs = re.search(r"Dask needs (bokeh[^<\s]*)", body)  # distributed's page when bokeh did not import
    if needs:
        return (f"the dashboard has no pages: the scheduler started without {needs.group(1)}"
                f" (not installed, or another version){hint}")
    return f"{status_url} answered a page without the dashboard's plots: {_text(body)[:120]!r}"


def install_hint(current: ClusterState) -> str:
    """What to install on which host, and what to run then, for the dashboard's pages of ``current``."""
    record = current.scheduler
    host = current.host(record.host) if record is not None else None
    where = f"the scheduler host {host.address}" if host is not None else "the scheduler host"
    python = current.pythons.get(record.host, "python") if record is not None else "python"
    return (f"install {BOKEH_REQUIREMENT} on {where} ({python} -m pip install '{BOKEH_REQUIREMENT}', or the"
            f" '{NODE_EXTRA}' extra; 'clusterctl exec --cluster {current.cluster} --role scheduler --"
            f" {{python}} -m pip install \"{BOKEH_REQUIREMENT}\"' does it from here), then restart the cluster"
            f" ('clusterctl down --cluster {current.cluster}', then 'clusterctl up {current.inventory}'):"
            " the scheduler loads the dashboard when it starts")


def open_in_browser(url: str) -> bool:
    """Open ``url`` in the browser Python's ``webbrowser`` finds here ($BROWSER, or one of the display's);
    False when there is none."""
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
