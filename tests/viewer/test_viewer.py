from __future__ import annotations

import base64
import io
import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from mapforge.cli import main
from mapforge.errors import InputError
from tests.report.run_fixture import POINT_COLOR, add_dense_workspace, make_run_folder

pytest.importorskip("viser", reason="the viewer needs viser (pip install viser)")

from mapforge.viewer import start_viewer  # noqa: E402
from mapforge.viewer.server import gaussian_covariances  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--window-size=800,600", "--remote-debugging-port=0", "--remote-allow-origins=*",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("run"))


def test_viewer_serves_the_run_and_selects_views(run: Path) -> None:
    viewer = start_viewer(run, host="127.0.0.1", port=0)
    try:
        assert viewer.port > 0 and viewer.url.startswith("http://127.0.0.1:")
        assert viewer.contents == ["300 sparse points", "400 Gaussians", "6 registered cameras"]
        page = urllib.request.urlopen(viewer.url, timeout=10).read()
        assert b"<html" in page.lower()
        first = viewer.order[0]
        viewer._select(viewer.order[3], client=None)
        assert viewer.dropdown.value == "view_03.png"
        assert viewer.photo_image.visible and viewer.test_image.visible  # view_03 has a test render
        viewer._select(first + 1, client=None)
        assert not viewer.test_image.visible  # view_01 has none
        viewer._render(first)
        assert viewer.render_image.visible and viewer.render_image.image.shape == (48, 64, 3)
    finally:
        viewer.stop()


def test_serve_warns_off_loopback_and_prints_the_address_it_serves(run: Path, capsys, monkeypatch) -> None:
    import types

    import mapforge.viewer.server as server

    def stop(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "time", types.SimpleNamespace(sleep=stop))
    with pytest.raises(KeyboardInterrupt):
        server.serve(run, host="0.0.0.0", port=0)
    printed = capsys.readouterr()
    assert "warning: serving on 0.0.0.0 shares the viewer" in printed.err
    port = int(re.search(r"serving on 0\.0\.0\.0:(\d+);", printed.out).group(1))
    assert port > 0 and f"open http://127.0.0.1:{port} in a browser" in printed.out
    with pytest.raises(KeyboardInterrupt):
        server.serve(run, host="127.0.0.1", port=0)
    assert "warning" not in capsys.readouterr().err


def test_viewer_shows_the_fused_cloud_and_the_mesh_as_layers(tmp_path: Path) -> None:
    out = make_run_folder(tmp_path, parts="sfm")
    add_dense_workspace(out)
    from mapforge.viewer.server import ViewerConfig

    viewer = start_viewer(out, host="127.0.0.1", port=0, config=ViewerConfig(max_points=1000))
    try:
        assert viewer.contents[1:3] == ["1500 dense points", "mesh with 6 vertices and 8 triangles"]
        assert {"sparse points", "dense points", "mesh", "cameras"} <= set(viewer.layers)
        assert viewer.layers["dense points"].points.shape == (1000, 3)  # subsampled to the point limit
        mesh = viewer.layers["mesh"]
        assert mesh.visible
        mesh.visible = False  # what the layer's checkbox does
        assert not mesh.visible
    finally:
        viewer.stop()


def test_gaussian_covariances() -> None:
    half = np.sqrt(0.5)
    cov = gaussian_covariances(np.log([[1.0, 2.0, 3.0]]), np.array([[half, 0.0, 0.0, half]]))  # 90 deg about z
    np.testing.assert_allclose(cov[0], np.diag([4.0, 1.0, 9.0]), atol=1e-6)


def test_nothing_to_view_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import mapforge.cli

    with pytest.raises(InputError, match="nothing to view"):
        start_viewer(tmp_path, port=0)
    assert main(["view", str(tmp_path / "absent"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


class _DevTools:
    """A headless Chromium driven through its DevTools protocol (only what the test needs)."""

    def __init__(self, browser: str, profile: Path):
        from websockets.sync.client import connect

        self.socket = None
        self.process = subprocess.Popen(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        # Chromium logs to stderr all along: drain it in a thread (a full pipe would block the browser).
        lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=lambda: [lines.put(line) for line in self.process.stderr], daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port within 60 s") from None
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://")[1].split("/")[0].rsplit(":", 1)[1])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def screenshot(self) -> np.ndarray:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        try:
            if self.socket is not None:
                self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.reader.join(timeout=10)
            self.process.stderr.close()


def _scene_drawn(shot: np.ndarray) -> tuple[bool, str]:
    """Whether the 3D canvas (left of viser's control panel) shows the scene: many colours and the points' red."""
    canvas = shot[:, : int(shot.shape[1] * 0.55)].reshape(-1, 3).astype(int)
    colours = len(np.unique(canvas @ np.array([65536, 256, 1])))
    target = POINT_COLOR.astype(int)
    red = int((np.abs(canvas - target).max(axis=1) < 60).sum())
    return colours > 200 and red > 300, f"{colours} colours, {red} pixels of the points' red"


def test_viewer_draws_the_scene_in_a_browser(run: Path) -> None:
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium browser found (apt-get install chromium) for the headless viewer test")
    viewer = start_viewer(run, host="127.0.0.1", port=0)
    profile = Path(tempfile.mkdtemp(prefix="mapforge-chromium-"))
    devtools = None
    try:
        devtools = _DevTools(browser, profile)
        devtools.call("Page.navigate", url=viewer.url)
        drawn, detail = False, "no screenshot"
        deadline = time.monotonic() + 90
        while not drawn and time.monotonic() < deadline:
            time.sleep(1.0)
            shot = devtools.screenshot()
            drawn, detail = _scene_drawn(shot)
        assert drawn, f"the viewer's canvas stayed (nearly) blank: {detail}"
    finally:
        if devtools is not None:
            devtools.close()
        viewer.stop()
        shutil.rmtree(profile, ignore_errors=True)
