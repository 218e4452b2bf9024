#!/usr/bin/env python3
"""Load a page in headless Chromium through the DevTools protocol (Python
standard library only), wait in real time until a JavaScript condition
holds, print the value of a JavaScript expression as JSON and save a PNG
screenshot.

Why not --dump-dom with --virtual-time-budget: virtual time does not advance
while a network fetch is pending, and the dashboard keeps an EventSource
stream open for a running run, so such a page never becomes "ready".

usage: cdp_page.py CHROMIUM URL WAIT_JS VALUE_JS SCREENSHOT.png [TIMEOUT_S]
exit 0 when WAIT_JS became true, 1 on timeout, 2 on errors.
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse


class WS:
    """A minimal WebSocket client (RFC 6455: text frames, client masking)."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.s = socket.create_connection((u.hostname, u.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.s.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            if not chunk:
                raise OSError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise OSError("websocket handshake refused: %r" % head[:200])
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text):
        data = text.encode()
        hdr = bytearray([0x81])
        n = len(data)
        if n < 126:
            hdr.append(0x80 | n)
        elif n < 65536:
            hdr.append(0x80 | 126)
            hdr += struct.pack(">H", n)
        else:
            hdr.append(0x80 | 127)
            hdr += struct.pack(">Q", n)
        mask = os.urandom(4)
        hdr += mask
        self.s.sendall(bytes(hdr) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise OSError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op in (0x1, 0x0):
                msg += payload
                if b0 & 0x80:
                    return msg.decode()
            elif op == 0x8:
                raise OSError("websocket closed by the browser")


class CDP:
    def __init__(self, ws):
        self.ws = ws
        self.next = 0

    def call(self, method, params=None, session=None):
        self.next += 1
        msg = {"id": self.next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            r = json.loads(self.ws.recv())
            if r.get("id") == self.next:
                if "error" in r:
                    raise RuntimeError("%s: %s" % (method, r["error"]))
                return r.get("result", {})


def main():
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    chromium, url, wait_js, value_js, shot = sys.argv[1:6]
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 20.0
    prof = tempfile.mkdtemp(prefix="hd-chromium-")
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--hide-scrollbars", "--user-data-dir=" + prof,
                             "--remote-debugging-port=0", "--window-size=1280,900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        portf = os.path.join(prof, "DevToolsActivePort")
        t0 = time.time()
        while not (os.path.exists(portf) and len(open(portf).read().split("\n")) >= 2):
            if time.time() - t0 > 30 or proc.poll() is not None:
                print("chromium did not start its DevTools endpoint", file=sys.stderr)
                return 2
            time.sleep(0.1)
        port, path = open(portf).read().split("\n")[:2]
        cdp = CDP(WS("ws://127.0.0.1:%s%s" % (port, path)))
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sess = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Emulation.setDeviceMetricsOverride",
                 {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, sess)
        cdp.call("Page.enable", {}, sess)
        cdp.call("Page.navigate", {"url": url}, sess)
        ok = False
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = cdp.call("Runtime.evaluate", {"expression": "!!(%s)" % wait_js, "returnByValue": True}, sess)
            if r.get("result", {}).get("value") is True:
                ok = True
                break
            time.sleep(0.25)
        time.sleep(0.5)  # let the last frame paint
        r = cdp.call("Runtime.evaluate", {"expression": "JSON.stringify(%s)" % value_js, "returnByValue": True}, sess)
        print(r.get("result", {}).get("value"))
        png = cdp.call("Page.captureScreenshot", {"format": "png"}, sess)["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        return 0 if ok else 1
    except (OSError, RuntimeError, ValueError) as e:
        print("cdp: %s" % e, file=sys.stderr)
        return 2
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(prof, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
