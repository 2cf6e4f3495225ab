"""Screenshots of `mlp-backend serve` for the docs: draw a digit in headless chromium, capture both views.

    mlp-backend train --epochs 3 --out /tmp/x
    python examples/serve_screenshot.py /tmp/x/model.npz docs/img/serve

Needs Playwright (pip install -e '.[serve-test]') and a chromium (apt-get install chromium).
"""
import argparse
import os
import shutil
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from mlp_backend.apps.serve import make_server

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# a handwritten-looking '4' in the pad's 280x280 coordinates: two strokes
STROKES = [[(95, 45), (88, 95), (78, 150), (150, 152), (205, 146)], [(170, 60), (166, 140), (160, 250)]]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("out_dir")
    p.add_argument("--chromium", default=os.environ.get("MLP_BACKEND_CHROMIUM") or shutil.which("chromium"))
    a = p.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    server = make_server(a.model, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=a.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 860}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_selector("body[data-state=idle]", state="attached")
            box = page.locator("#pad").bounding_box()
            for stroke in STROKES:
                page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
                page.mouse.up()
            page.wait_for_selector("body[data-state=idle][data-answered]", state="attached")
            print("predicted:", page.locator("#prediction").inner_text(), page.locator("#confidence").inner_text())
            page.screenshot(path=str(out / "draw.png"), full_page=True)
            page.click("#tab-run")
            page.wait_for_selector("body[data-errors=shown]", state="attached", timeout=120_000)
            page.screenshot(path=str(out / "run.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"wrote {out / 'draw.png'} and {out / 'run.png'}")


if __name__ == "__main__":
    main()
