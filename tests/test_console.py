"""The web console (``clusterrpc.console``) in a real browser: a daemon with ``http_console``
serves ``/console`` behind its XML-RPC credentials; headless Chromium (Debian's ``chromium``
and ``chromium-driver``, installed by ``.ci/run``) loads it, reads the member table, the leader
and the counters, submits the ``kvstore`` form with a bad value and sees that field's error,
then a good value and sees it applied — and the plugin's secret is never on the page. Without
the browser the HTTP-level tests still run; the browser test skips saying what is missing."""

from __future__ import annotations

import base64
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clusterrpc
from clusterrpc.keyring import Keyring
from clusterrpc.transports.http import http_credentials
from tests.conftest import scaled
from tests.test_cli_daemon import start
from tests.test_cli_members import free_udp_port
from tests.test_cli_rpc import Server, write_keyring

pytestmark = pytest.mark.timeout(scaled(120.0))

TOKEN = "console-Token_0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class Console:
    def __init__(self, server: Server, keyring: Keyring) -> None:
        self.server = server
        self.keyring = keyring
        self.http = server.urls["http"]  # http://127.0.0.1:PORT/RPC2
        self.page = self.http.rsplit("/", 1)[0] + "/console"
        user, password = http_credentials(keyring)
        self.authorization = "Basic " + base64.b64encode(
            f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    directory = tmp_path_factory.mktemp("console")
    write_keyring(directory / "cluster.keys")
    port = free_udp_port()
    config = directory / "node.toml"
    config.write_text(
        f'name = "n1"\nkeyring = "cluster.keys"\nhttp_console = true\n'
        f'listen = ["udp://127.0.0.1:{port}", "http://127.0.0.1:0"]\ntimeout = 5\n'
        "drain_timeout = 1\n\n[membership]\nseeds = []\n\n"
        f'[election]\nvoters = {{ n1 = "udp://127.0.0.1:{port}" }}\nstate_dir = "state"\n'
        "election_timeout = 0.3\nheartbeat_interval = 0.05\n\n"
        f'[plugins.kvstore]\nmax_keys = 10\nwrite_token = "{TOKEN}"\n')
    server = start(config, 2)
    try:
        yield Console(server, Keyring.load(directory / "cluster.keys"))
    finally:
        server.kill()


def fetch(url: str, *, authorization: str | None = None, method: str = "GET"
          ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_console_is_behind_the_xmlrpc_credentials(console: Console) -> None:
    status, headers, _ = fetch(console.page)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    status, headers, body = fetch(console.page, authorization=console.authorization)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert b'<meta name="clusterrpc-rpc-path" content="/RPC2">' in body
    status, headers, _ = fetch(console.page + "/console.js", authorization=console.authorization)
    assert status == 200
    assert headers["Content-Type"].startswith("text/javascript")
    assert fetch(console.page, authorization=console.authorization, method="POST")[0] == 405
    assert fetch(console.page + "/nope", authorization=console.authorization)[0] == 404


def test_a_node_without_http_console_serves_no_page(tmp_path: Path) -> None:
    write_keyring(tmp_path / "cluster.keys")
    config = tmp_path / "node.toml"
    config.write_text('name = "n1"\nkeyring = "cluster.keys"\nlisten = ["http://127.0.0.1:0"]\n')
    server = start(config, 1)
    try:
        page = server.urls["http"].rsplit("/", 1)[0] + "/console"
        keyring = Keyring.load(tmp_path / "cluster.keys")
        user, password = http_credentials(keyring)
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        assert fetch(page, authorization=authorization)[0] == 404
    finally:
        server.kill()


def browser() -> Any:
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
               if found is None]
    if missing:
        pytest.skip(f"headless Chromium is not installed ({', '.join(missing)} missing: Debian "
                    "packages chromium and chromium-driver, which .ci/run installs)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps"):
        options.add_argument(argument)
    # The driver is named: Selenium Manager never runs, so nothing is downloaded.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_the_console_in_a_real_browser(console: Console) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    driver = browser()
    try:
        driver.set_page_load_timeout(scaled(20))
        # Every request of the page carries the credentials, as after a browser's login prompt.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                               {"headers": {"Authorization": console.authorization}})
        driver.get(console.page)
        wait = WebDriverWait(driver, scaled(20))

        def text_of(selector: str) -> str:
            text: str = driver.find_element(By.CSS_SELECTOR, selector).text
            return text

        wait.until(lambda _: driver.find_element(By.TAG_NAME, "body").get_attribute(
            "data-loaded") == "true" or text_of("#page-error"))
        assert text_of("#page-error") == ""
        assert text_of("#node-name") == "n1"
        rows = driver.find_elements(By.CSS_SELECTOR, "#members tbody tr")
        assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in rows] == ["alive"]
        assert rows[0].find_elements(By.TAG_NAME, "td")[0].text == "n1 (this node)"
        # The election may still be deciding when the page loads: press Refresh until it has
        # (bounded by the wait's timeout, four presses a second at most).
        def leader_shown(_: object) -> bool:
            if text_of("#leader") == "n1":
                return True
            driver.find_element(By.ID, "refresh").click()
            return False

        WebDriverWait(driver, scaled(20), poll_frequency=0.25).until(leader_shown)
        assert int(text_of("#term")) >= 1
        counters = {row.find_elements(By.TAG_NAME, "td")[0].text
                    for row in driver.find_elements(By.CSS_SELECTOR, "#counters tbody tr")}
        assert "accepted" in counters

        form = driver.find_element(By.CSS_SELECTOR, 'form[data-plugin="kvstore"]')
        labels = [label.text for label in form.find_elements(By.TAG_NAME, "label")]
        assert labels[:2] == ["Maximum keys", "Maximum value length"]  # from the metadata
        max_keys = form.find_element(By.CSS_SELECTOR, '[data-path="plugins.kvstore.max_keys"]')
        assert max_keys.get_attribute("value") == "10"
        token = form.find_element(By.CSS_SELECTOR, '[data-path="plugins.kvstore.write_token"]')
        assert token.get_attribute("type") == "password"
        assert token.get_attribute("value") == ""
        assert "set" in (token.get_attribute("placeholder") or "")

        error = form.find_element(By.CSS_SELECTOR,
                                  '[data-error-for="plugins.kvstore.max_keys"]')
        max_keys.clear()
        max_keys.send_keys("0")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda _: error.text != "")
        assert error.text.startswith("below the minimum 1")
        assert max_keys.get_attribute("aria-invalid") == "true"

        max_keys.clear()
        max_keys.send_keys("25")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        status = form.find_element(By.CSS_SELECTOR, ".form-status")
        wait.until(lambda _: status.text.startswith("applied"))
        assert error.text == ""
        assert TOKEN not in driver.page_source
    finally:
        driver.quit()
    with clusterrpc.connect(console.server.urls["udp"], keyring=console.keyring,
                            timeout=scaled(5)) as n1:
        shown = n1.plugins.configuration("kvstore")
        assert shown["values"]["max_keys"] == 25
        assert shown["secrets_set"] == ["write_token"]  # kept: the form left it empty


def test_a_get_with_an_oversized_body_is_refused(console: Console) -> None:
    import socket  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    where = urllib.parse.urlsplit(console.page)
    assert where.hostname == "127.0.0.1"
    size = 5 << 20  # beyond the default 4 MiB codec limit (Limits.max_size)
    head = (f"GET /console HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
            f"{console.authorization}\r\nContent-Length: {size}\r\n\r\n").encode()
    with socket.create_connection((where.hostname, where.port), timeout=scaled(20)) as sock:
        sock.sendall(head)
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):  # bounded; the server answers before the end
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
