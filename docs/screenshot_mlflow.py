"""The README's MLflow browser screenshots, taken from a real browser (not part of the package
or the tests).

    srstudy launch --workdir /tmp/default-study            # the embedded default study
    python docs/screenshot_mlflow.py --workdir /tmp/default-study \
        --srstudy-python /path/to/srstudy-env/bin/python   # this script's Python needs playwright

It starts `mlflow ui` on 127.0.0.1 (with the srstudy environment's Python) over the study's
`mlflow.db`, opens the trials link `srstudy launch` prints (`srstudy.tracking.browser_links`)
in headless Chromium, closes the assistant panel, picks the columns the README names (hides
Dataset, Source, Models; adds the objectives, the searched settings and `pareto_rank`) and saves
`docs/mlflow_runs.png` (1600×900); then the study run's page as `docs/mlflow_study_run.png`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

DOCS = Path(__file__).resolve().parent
HIDE = ["Dataset", "Source", "Models"]
SHOW = ["val_psnr", "gpu_energy_j", "params", "latency_ms",  # metrics (gpu_energy_j: GPU studies only)
        "student.rank", "alpha", "student.embed_dim", "student.n_groups",  # the searched settings
        "pareto_rank"]  # tag: 0 = the front
LINKS = ("import json, sys; from srstudy.tracking import browser_links; "
         "print(json.dumps(browser_links(*sys.argv[1:])))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow ui did not answer at {url} within {seconds:.0f} s")


def toggle_columns(page: Page, names: list[str]) -> None:
    """Tick (or untick) each named column in the runs table's Columns menu."""
    page.get_by_test_id("column-selection-dropdown").first.click()
    search = page.get_by_placeholder("Search columns")
    for name in names:
        search.fill(name)
        page.wait_for_timeout(600)
        titles = [t for t in page.locator(".du-bois-light-tree-title").all() if t.inner_text().strip() == name]
        if titles:
            titles[0].click()
        else:
            print(f"column {name!r} not in this study (not logged); left out")
    page.keyboard.press("Escape")


def close_assistant(page: Page) -> None:
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a `srstudy launch` folder (study.json, mlflow.db)")
    ap.add_argument("--srstudy-python", default="python", help="a Python with srstudy and mlflow installed")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    parent = json.loads((workdir / "study.json").read_text())["parent_run_id"]
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    url = f"http://127.0.0.1:{free_port()}"
    links = json.loads(subprocess.run([args.srstudy_python, "-c", LINKS, store, parent, url],
                                      check=True, capture_output=True, text=True).stdout)
    proc = subprocess.Popen([args.srstudy_python, "-m", "mlflow", "ui", "--backend-store-uri", store,
                             "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]],
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(links["trials"])
            page.get_by_text("matching runs").wait_for(timeout=120_000)
            close_assistant(page)
            toggle_columns(page, HIDE + SHOW)
            page.wait_for_timeout(2000)
            page.screenshot(path=DOCS / "mlflow_runs.png")
            page.goto(links["study_run"])
            page.get_by_text("Description").first.wait_for(timeout=120_000)
            close_assistant(page)
            show_more = page.get_by_text("Show more", exact=True)
            if show_more.count():
                show_more.first.click()
            page.wait_for_timeout(2000)
            page.screenshot(path=DOCS / "mlflow_study_run.png")
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the mlflow ui this script started, and its worker
        proc.wait(timeout=60)
    for name in ("mlflow_runs.png", "mlflow_study_run.png"):
        print(f"{DOCS / name}: {(DOCS / name).stat().st_size / 1024:.0f} kB")


if __name__ == "__main__":
    main()
