"""Point a published asv dashboard at local copies of its JavaScript and CSS.

asv's index.html loads jQuery, Flot, Bootstrap, stupidtable and blueimp-md5 from CDNs, which a
machine without internet access cannot reach (the page then shows nothing but a load error).
This copies the Debian packages' files (experiments/dashboard/setup.sh installs them) into
HTML_DIR/vendor/ and rewrites every CDN tag of the published pages to them. Debian ships
Flot 4 where asv asks for 0.8.3: Flot 4 split the hover and legend code out of its core, so
those plugins are loaded too. flot-orderbars has no Debian package; it only orders the bars
of asv's parameter bar charts, which Flot draws without it, so its tag is dropped. Flot 4
draws ``axisLabel`` itself, so asv's own jquery.flot.axislabels.js (written for 0.8, it drew
every axis label a second time) is dropped as well.

    python experiments/dashboard/localize.py HTML_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from subquad.files import atomic_write_bytes, atomic_write_text

JS = Path("/usr/share/javascript")
FLOT = JS / "jquery-flot"

#: CDN URL fragment -> local files (in order) that replace its tag; [] drops the tag
REPLACE: dict[str, list[Path]] = {
    "code.jquery.com/jquery-": [JS / "jquery" / "jquery.min.js"],
    "flot/0.8.3/jquery.flot.min.js": [FLOT / "jquery.flot.js", FLOT / "jquery.flot.hover.js",
                                      FLOT / "jquery.flot.legend.js"],
    "flot/0.8.3/jquery.flot.time.min.js": [FLOT / "jquery.flot.time.js"],
    "flot/0.8.3/jquery.flot.selection.min.js": [FLOT / "jquery.flot.selection.js"],
    "flot/0.8.3/jquery.flot.categories.min.js": [FLOT / "jquery.flot.categories.js"],
    "flot-orderbars": [],
    "stupidtable": [JS / "jquery-stupidtable" / "stupidtable.min.js"],
    "blueimp-md5": [JS / "blueimp-md5" / "md5.min.js"],
    "bootstrap@3.1.1/dist/js/bootstrap.min.js": [JS / "bootstrap" / "js" / "bootstrap.min.js"],
    "bootstrap@3.1.1/dist/css/bootstrap.min.css": [JS / "bootstrap" / "css" /
                                                  "bootstrap.min.css"],
}

#: asv's bundled axis-label plugin for Flot 0.8 (Flot 4 has axis labels built in)
OWN_AXISLABELS = re.compile(r'<script[^>]*src="jquery\.flot\.axislabels\.js"[^>]*>\s*</script>')

TAG = re.compile(r'<script[^>]*src="(https?://[^"]+)"[^>]*>\s*</script>'
                 r'|<link[^>]*href="(https?://[^"]+\.css)"[^>]*>')


def _local_tag(path: Path) -> str:
    rel = f"vendor/{path.name}"
    if path.suffix == ".css":
        return f'<link rel="stylesheet" href="{rel}">'
    return f'<script type="text/javascript" src="{rel}"></script>'


def localize(html_dir: Path) -> list[str]:
    """Rewrite every page of ``html_dir``; return the CDN URLs replaced or dropped."""
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    for files in REPLACE.values():
        for f in files:
            if not f.exists():
                raise SystemExit(f"localize: {f} missing (run experiments/dashboard/setup.sh)")
            atomic_write_bytes(vendor / f.name, f.read_bytes())
    fonts = JS / "bootstrap" / "fonts"  # bootstrap.min.css refers to ../fonts/
    if fonts.is_dir():
        (html_dir / "fonts").mkdir(exist_ok=True)
        for f in fonts.iterdir():
            if f.is_file():
                atomic_write_bytes(html_dir / "fonts" / f.name, f.read_bytes())
    seen: list[str] = []

    def swap(match: re.Match) -> str:
        url = match.group(1) or match.group(2)
        for key, files in REPLACE.items():
            if key in url:
                seen.append(url)
                return "\n    ".join(_local_tag(f) for f in files)
        raise SystemExit(f"localize: no local copy for {url}")

    for page in html_dir.glob("*.html"):
        text = page.read_text()
        atomic_write_text(page, OWN_AXISLABELS.sub("", TAG.sub(swap, text)))
    return seen


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    urls = localize(Path(argv[0]))
    print(f"localize: {len(urls)} CDN tags replaced in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
