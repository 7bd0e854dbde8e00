#!/usr/bin/env python3
"""Open a report.html in headless Chromium: save a screenshot, check that every figure loaded
(no broken image) and that the page logged nothing to the console.

    python scripts/check_report_in_browser.py runs/demo/report/report.html --screenshot shot.png

Prints one line per image and per console message, then ``OK`` or ``FAILED``; exit code 0 when
every image decoded and the console stayed silent, 1 otherwise, 2 when Chromium is missing or
the page does not exist. Chromium is Debian's ``chromium`` (or ``chromium-browser``,
``google-chrome``), found on PATH or named by ``--chromium``.

How: the page is loaded in an iframe of a small probe page (with file access allowed between
local files) whose script lists, after the iframe's load event, each image's ``complete`` and
``naturalWidth``; ``--dump-dom`` returns the probe's DOM with that list. Console messages come
from Chromium's own log (``--enable-logging=stderr``: lines with ``CONSOLE``).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--allow-file-access-from-files", "--no-first-run", "--disable-extensions"]
_PROBE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<iframe id="page" src="{url}" style="width:1200px;height:900px"></iframe>
<pre id="probe">pending</pre>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument;
  var lines = doc ? Array.from(doc.images).map(function (im) {{
    var ok = im.complete && im.naturalWidth > 0;
    return (ok ? "ok" : "broken") + "\\t" + im.naturalWidth + "x" + im.naturalHeight + "\\t" +
      (im.getAttribute("alt") || im.getAttribute("src").slice(0, 40));
  }}) : ["noaccess"];
  document.getElementById("probe").textContent = "done\\n" + lines.join("\\n");
}});
</script></body></html>
"""
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)\]\s*(.*)$")


def find_chromium(name: str | None = None) -> str | None:
    """The Chromium executable: ``name`` if given, else the first of BROWSERS on PATH."""
    for cand in ([name] if name else BROWSERS):
        path = shutil.which(cand)
        if path:
            return path
    return None


def check(page: Path, chromium: str, screenshot: Path | None = None,
          timeout: float = 60.0) -> dict:
    """Load ``page``; returns {"images": [(status, size, name)], "console": [msg], "ok": bool}."""
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="sparsesim-browser-") as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(_PROBE.format(url=html.escape(url, quote=True)), encoding="utf-8")
        profile = ["--user-data-dir=" + str(Path(tmp) / "profile")]
        run = subprocess.run(
            [chromium, *FLAGS, *profile, "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [chromium, *FLAGS, *profile, "--window-size=1280,2400",
                 "--virtual-time-budget=10000", f"--screenshot={screenshot.resolve()}", url],
                capture_output=True, text=True, timeout=timeout, check=False)
    m = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    body = html.unescape(m.group(1)) if m else "no probe output"
    lines = body.splitlines()
    images = [tuple(line.split("\t")) for line in lines[1:]] if lines[:1] == ["done"] else []
    console = [c.group(1) for line in run.stderr.splitlines() if (c := _CONSOLE.search(line))]
    loaded = lines[:1] == ["done"] and "noaccess" not in body
    ok = loaded and bool(images) and all(i[0] == "ok" for i in images) and not console
    return {"images": images, "console": console, "loaded": loaded, "ok": ok,
            "screenshot": str(screenshot) if screenshot and screenshot.is_file() else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path, help="the report.html to open")
    ap.add_argument("--screenshot", type=Path, default=None, help="PNG to write")
    ap.add_argument("--chromium", default=None, help="browser executable (default: on PATH)")
    args = ap.parse_args(argv)
    if not args.page.is_file():
        why = ("is a directory: give the report.html inside it" if args.page.is_dir()
               else "no such file")
        print(f"check_report_in_browser: {args.page}: {why}", file=sys.stderr)
        return 2
    browser = find_chromium(args.chromium)
    if browser is None:
        print("check_report_in_browser: Chromium not found (apt install chromium)",
              file=sys.stderr)
        return 2
    res = check(args.page, browser, args.screenshot)
    if not res["loaded"]:
        print("page did not load in the probe")
    elif not res["images"]:
        print("the page has no images (a report always has figures)")
    for status, size, name in res["images"]:
        print(f"image {status:<6} {size:>10}  {name}")
    for msg in res["console"]:
        print(f"console: {msg}")
    if res["screenshot"]:
        print(f"screenshot: {res['screenshot']}")
    print("OK" if res["ok"] else "FAILED")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
