"""Screenshot a report page in a real (headless) Chromium, to look at it as a reader would.

Nothing here is needed to use sparsejax; it needs Python's ``playwright`` (``pip install playwright``) and a
Chromium. Offline, a Chromium build comes from the npm registry (``@sparticuz/chromium``, brotli-compressed)::

    npm pack @sparticuz/chromium@131.0.1 && tar xzf sparticuz-chromium-131.0.1.tgz
    python -c "import brotli, tarfile, io, os; b = 'package/bin/'; \\
      open('chromium', 'wb').write(brotli.decompress(open(b + 'chromium.br', 'rb').read())); os.chmod('chromium', 0o755); \\
      [tarfile.open(fileobj=io.BytesIO(brotli.decompress(open(b + t + '.tar.br', 'rb').read()))).extractall(t) \\
       for t in ('al2023', 'swiftshader')]" && cp swiftshader/* .
    LD_LIBRARY_PATH=$PWD/al2023/lib:$PWD FONTCONFIG_FILE=/etc/fonts/fonts.conf \\
      python experiments/report_screenshot.py runs/toy/report.html report.png --chromium ./chromium
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("page")
    p.add_argument("out")
    p.add_argument("--chromium", help="a Chromium executable (default: playwright's own)")
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--no-zygote", "--single-process", "--use-gl=angle", "--use-angle=swiftshader",
             "--in-process-gpu", "--disable-dev-shm-usage"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=flags, timeout=60_000)
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        page.goto(Path(args.page).resolve().as_uri())
        page.screenshot(path=args.out, full_page=True)
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0)).length")
        print(f"{args.out}: {page.evaluate('document.images.length')} images ({broken} broken), "
              f"{page.evaluate('document.body.scrollHeight')} px tall")
        browser.close()


if __name__ == "__main__":
    main()
