"""The viewer page in a real headless browser (Debian's chromium + chromedriver, driven by Selenium).

It loads the page served from the planted world's bundle, picks a latent, checks the heatmaps drew the
planted cells, picks an image, checks its latent list and a patch's latents, and takes a screenshot.

Expected pixels follow the drawing rule of ``saebench/viewer/static/viewer.js`` (documented in
``docs/viewer.md``): the image is scaled nearest-neighbour; a patch where the latent is silent is covered with
black at alpha 0.6; an active patch with rgb(255, 48, 0) at alpha ``0.35 + 0.45 * value / scale``, ``scale``
being the largest patch value drawn in that view.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saebench.viewer.demo import OBJECT_LATENT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
HEAT = np.array([255.0, 48.0, 0.0])
PIXEL_TOL = 3  # canvas blending rounds alpha and colour to 8 bits (premultiplied), so +-1-2 per channel

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        f"headless-browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium "
        "chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root, where chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--force-device-scale-factor=1",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(str(CHROMEDRIVER)), options=options
    )  # explicit path: no download
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, expected: str, timeout: float = 10) -> None:
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {script}") == expected)


def canvas_pixels(driver, element) -> np.ndarray:
    """``(h, w, 3)`` RGB of a canvas element, exported losslessly with ``toDataURL('image/png')``."""
    url = driver.execute_script("return arguments[0].toDataURL('image/png');", element)
    png = base64.b64decode(url.removeprefix("data:image/png;base64,"))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)


def expected_heatmap(image: np.ndarray, patch_values: np.ndarray, scale: float, side: int) -> np.ndarray:
    """The page's drawing rule (module docstring) for a square image and a ``(rows, cols)`` patch grid."""
    zoom = side // image.shape[0]
    out = image.repeat(zoom, axis=0).repeat(zoom, axis=1).astype(np.float64)
    rows, cols = patch_values.shape
    cell = side // rows
    for (r, c), value in np.ndenumerate(patch_values):
        block = out[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]
        if value > 0:
            alpha = 0.35 + 0.45 * min(1.0, value / scale)
            block[:] = alpha * HEAT + (1 - alpha) * block
        else:
            block[:] = 0.4 * block
    return out


def cell_means(pixels: np.ndarray, grid: int) -> np.ndarray:
    """``(grid, grid, 3)`` mean colour of each patch cell of a square canvas."""
    cell = pixels.shape[0] // grid
    return pixels[: grid * cell, : grid * cell].reshape(grid, cell, grid, cell, 3).mean(axis=(1, 3))


def test_pick_latent_then_image_in_a_headless_browser(browser, base_url, world, tmp_path):
    latent = 2  # "blue checker": its tint must turn the blue cells red-dominant
    browser.get(base_url + "/")
    wait_for(browser, "document.body.dataset.ready", "1")

    # Pick the latent in the latent table (it lists only latents that fire).
    browser.find_element(By.CSS_SELECTOR, f"#latent-table tr[data-latent='{latent}']").click()
    wait_for(browser, "document.body.dataset.latent", str(latent))
    assert browser.find_element(By.ID, "latent-heading").text == f"Latent {latent}"
    canvases = browser.find_elements(By.CSS_SELECTOR, "#top-images canvas.heatmap")
    image_mean = world.codes[:, :, latent].mean(axis=1)
    expected_top = sorted(np.flatnonzero(image_mean > 0), key=lambda i: (-image_mean[i], i))[:4]
    assert [int(c.get_attribute("data-image")) for c in canvases] == expected_top
    patch_codes = world.codes[:, 1:, latent].reshape(-1, 4, 4)
    scale = patch_codes[expected_top].max()
    for canvas, image in zip(canvases, expected_top, strict=True):
        pixels = canvas_pixels(browser, canvas)
        assert pixels.shape == (96, 96, 3) and pixels.std() > 10  # drawn, not blank
        np.testing.assert_allclose(
            pixels, expected_heatmap(world.images[image], patch_codes[image], scale, 96), atol=PIXEL_TOL
        )
        planted = world.masks[image] == latent
        means, raw = cell_means(pixels, 4), cell_means(world.images[image].astype(float), 4)
        assert planted.any() and np.all(means[planted].argmax(axis=-1) == 0)  # heat colour: red leads
        assert np.all(means[~planted] <= 0.4 * raw[~planted] + PIXEL_TOL)  # silent cells are darkened
    bars = browser.find_elements(By.CSS_SELECTOR, "#class-dist .bar-row")
    assert [b.find_elements(By.TAG_NAME, "span")[0].text for b in bars] == list(world.class_names)

    # Pick a top image where "any object" outweighs the latent, so a patch's list must be sorted by value.
    def object_leads(i: int) -> bool:
        return world.codes[i, 1:, OBJECT_LATENT].max() > world.codes[i, 1:, latent].max()

    image = next(i for i in expected_top if object_leads(i))
    browser.find_elements(By.CSS_SELECTOR, "#top-images figure")[expected_top.index(image)].click()
    wait_for(browser, "document.body.dataset.image", str(image))
    means = world.codes[image].mean(axis=0)
    ranked = sorted(np.flatnonzero(means > 0), key=lambda s: (-means[s], s))
    rows = browser.find_elements(By.CSS_SELECTOR, "#image-latents tbody tr")
    assert [int(r.get_attribute("data-latent")) for r in rows] == ranked
    assert "selected" in rows[ranked.index(latent)].get_attribute("class")
    big = browser.find_element(By.ID, "image-canvas")
    big_pixels = canvas_pixels(browser, big)
    np.testing.assert_allclose(
        big_pixels,
        expected_heatmap(world.images[image], patch_codes[image], patch_codes[image].max(), 256),
        atol=PIXEL_TOL,
    )

    # Click a planted patch: the token table lists that token's latents, strongest first.
    row, col = np.argwhere(world.masks[image] == latent)[0]
    ActionChains(browser).move_to_element_with_offset(
        big, int((col - 1.5) * 64), int((row - 1.5) * 64)
    ).click().perform()
    token = 1 + row * 4 + col
    token_rows = browser.find_elements(By.CSS_SELECTOR, "#token-latents tbody tr")
    assert [int(r.get_attribute("data-latent")) for r in token_rows] == [OBJECT_LATENT, latent]
    assert (
        browser.find_element(By.ID, "token-heading").text == f"Patch row {row}, column {col} (token {token})"
    )

    # Screenshot: the window's size, not blank, and the image canvas shows the heatmap where it was drawn.
    png = browser.get_screenshot_as_png()
    (tmp_path / "viewer.png").write_bytes(png)
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    viewport = browser.execute_script("return [window.innerHeight, window.innerWidth];")
    assert shot.shape == (viewport[0], viewport[1], 3) and viewport[1] == WINDOW[0]
    colours = shot @ np.array([65536.0, 256.0, 1.0])  # one number per RGB triple
    assert shot.std() > 20 and len(np.unique(colours)) > 50  # a drawn page, not a blank or flat one
    x, y = (
        round(v)
        for v in browser.execute_script(
            "const r = arguments[0].getBoundingClientRect(); return [r.x, r.y];", big
        )
    )
    crop = shot[y : y + 256, x : x + 256]
    np.testing.assert_allclose(crop, big_pixels, atol=PIXEL_TOL)
    assert np.all(cell_means(crop, 4)[world.masks[image] == latent].argmax(axis=-1) == 0)
    # Untick "heatmap": the image view shows the plain image, scaled nearest-neighbour.
    browser.find_element(By.ID, "show-heatmap").click()
    plain = world.images[image].repeat(8, axis=0).repeat(8, axis=1)
    WebDriverWait(browser, 5).until(lambda d: np.abs(canvas_pixels(d, big) - plain).max() <= PIXEL_TOL)
    assert browser.find_element(By.ID, "status").text == ""
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
