"""A device written without any of hexroad's code, as a device maker would.

It signs with the `http-message-signatures` package (RFC 9421, ed25519, the
package's own default label) and uploads with `tuspy` (tus 1.0), both from
PyPI and used unmodified. tuspy sends fixed headers only, so it talks to a
small signing proxy here that signs each request it forwards, the way a
device's network layer would.

    independent_device.py BASE_URL

prints one JSON report on stdout; the Rust test (cli/tests/devices.rs) checks
it against hexroad's tables.
"""

import base64
import datetime
import hashlib
import http.client
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms
from tusclient import client as tus_client
from tusclient.exceptions import TusUploadFailed

BASE = sys.argv[1].rstrip("/")
KEY = Ed25519PrivateKey.generate()
DEVICE_ID = KEY.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
).hex()


class Keys(HTTPSignatureKeyResolver):
    def resolve_private_key(self, key_id):
        return KEY

    def resolve_public_key(self, key_id):
        return KEY.public_key()


SIGNER = HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=Keys())
SESSION = requests.Session()

# What each request's signature covers: the request line, and the headers
# that give it its meaning (RFC 9421 leaves the choice to the signer; these
# are what hexroad asks for).
COVER = {
    "POST": ("@method", "@path", "@authority", "upload-length", "upload-metadata"),
    "PATCH": ("@method", "@path", "@authority", "upload-offset", "upload-checksum"),
    "HEAD": ("@method", "@path", "@authority"),
    "DELETE": ("@method", "@path", "@authority"),
}


def sign(prepared, components, body=None):
    SIGNER.sign(
        prepared,
        key_id=DEVICE_ID,
        nonce=uuid.uuid4().hex,
        covered_component_ids=components,
        body=body,
    )
    return prepared


def gpx(seconds, start_lat, ago_s):
    """A plausible drive: one fix a second, 12 m/s north, ending ago_s ago."""
    end = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=ago_s)
    lines = ['<?xml version="1.0"?>',
             '<gpx version="1.1" creator="indie" xmlns="http://www.topografix.com/GPX/1/1">',
             "<trk><trkseg>"]
    for i in range(seconds):
        t = end - datetime.timedelta(seconds=seconds - 1 - i)
        lat = start_lat + i * 12.0 / 111_195.0
        lines.append(
            f'<trkpt lat="{lat:.7f}" lon="24.9400000"><ele>12.0</ele>'
            f"<time>{t.strftime('%Y-%m-%dT%H:%M:%SZ')}</time><hdop>0.9</hdop></trkpt>"
        )
    lines.append("</trkseg></trk></gpx>")
    return "\n".join(lines).encode()


def metadata(data, drive):
    fields = {"kind": "gnss", "format": "gpx", "sha256": hashlib.sha256(data).hexdigest(),
              "drive_id": drive, "filename": f"{drive}.gpx"}
    return fields


def encoded(fields):
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def register():
    body = json.dumps({"public_key": DEVICE_ID, "contributor_id": "indie-maker",
                       "make": "Indie", "model": "python"}).encode()
    req = requests.Request("POST", BASE + "/v1/devices", data=body,
                           headers={"Content-Type": "application/json"}).prepare()
    sign(req, ("@method", "@path", "@authority"), body=body)
    label = req.headers["Signature-Input"].split("=", 1)[0]
    r = SESSION.send(req)
    return {"status": r.status_code, "label": label,
            "signature_input": req.headers["Signature-Input"], "body": r.json()}


def signed_upload(data, drive):
    """A whole upload with plain signed requests: create, then one PATCH."""
    create = requests.Request("POST", BASE + "/v1/uploads", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
        "Upload-Metadata": encoded(metadata(data, drive))}).prepare()
    r = SESSION.send(sign(create, COVER["POST"]))
    assert r.status_code == 201, (r.status_code, r.text)
    url = BASE + r.headers["Location"]
    checksum = "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()
    out = {"created": r.status_code}

    def patch(components, tamper=False):
        req = requests.Request("PATCH", url, data=data, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Upload-Checksum": checksum,
            "Content-Type": "application/offset+octet-stream"}).prepare()
        sign(req, components)
        if tamper:
            # Signed over the right headers, then one of them changed.
            req.headers["Upload-Offset"] = "1"
        return SESSION.send(req)

    def refusal(r):
        return {"status": r.status_code, **(r.json() if r.content else {})}

    # Refused: a signature that leaves out the headers the server needs covered.
    out["wrong_components"] = refusal(patch(("@method", "@path", "@authority")))
    # Refused: a covered header altered after signing.
    out["tampered"] = refusal(patch(COVER["PATCH"], tamper=True))
    head = SESSION.send(sign(requests.Request("HEAD", url, headers={
        "Tus-Resumable": "1.0.0"}).prepare(), COVER["HEAD"]))
    out["offset_after_refusals"] = int(head.headers.get("Upload-Offset", "-1"))
    r = patch(COVER["PATCH"])
    out["final"] = {"status": r.status_code,
                    "upload_status": r.headers.get("Hexroad-Upload-Status"),
                    "upload_id": r.headers.get("Hexroad-Upload-Id")}
    return out


class SigningProxy(BaseHTTPRequestHandler):
    """Forwards tuspy's requests to hexroad, signed; can cut one PATCH."""

    protocol_version = "HTTP/1.1"
    cut_next_patch = False
    cut_bytes = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.forward()

    def do_PATCH(self):
        self.forward()

    def do_HEAD(self):
        self.forward()

    def do_DELETE(self):
        self.forward()

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length",
                                        "accept-encoding", "keep-alive")}
        req = requests.Request(self.command, BASE + self.path, headers=headers,
                               data=body).prepare()
        sign(req, COVER[self.command])
        if self.command == "PATCH" and SigningProxy.cut_next_patch:
            SigningProxy.cut_next_patch = False
            self.cut(req, body)
            return
        r = SESSION.send(req)
        self.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        content = b"" if self.command == "HEAD" else r.content
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if content:
            self.wfile.write(content)

    def cut(self, req, body):
        """Sends the signed PATCH with half its body, then drops the
        connection, as a car leaving coverage would; tuspy sees a 502."""
        url = urlsplit(req.url)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.putrequest("PATCH", url.path, skip_accept_encoding=True)
        for k, v in req.headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        half = len(body) // 2
        conn.send(body[:half])
        time.sleep(0.3)
        conn.sock.close()
        SigningProxy.cut_bytes = half
        message = b'{"error":"cut","message":"the connection was cut"}'
        self.send_response(502)
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        self.wfile.write(message)


def tuspy_upload(data, drive, chunk):
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), SigningProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = tus_client.TusClient(f"http://127.0.0.1:{proxy.server_address[1]}/v1/uploads")
        fields = metadata(data, drive)

        def uploader(url=None):
            from io import BytesIO
            return client.uploader(file_stream=BytesIO(data), url=url, chunk_size=chunk,
                                   metadata=fields, upload_checksum=True)

        first = uploader()
        first.upload_chunk()
        SigningProxy.cut_next_patch = True
        cut_seen = False
        try:
            first.upload_chunk()
        except TusUploadFailed:
            cut_seen = True
        url = first.url
        # Resume as a restarted device would: a new uploader on the same
        # URL asks the server for the offset (HEAD) and goes on from there.
        offset = -1
        for _ in range(50):
            resumed = uploader(url)
            offset = resumed.offset
            if offset > chunk:
                break
            time.sleep(0.2)
        resumed.upload()
        return {"cut_seen": cut_seen, "chunk": chunk, "cut_bytes": SigningProxy.cut_bytes,
                "offset_after_cut": offset, "final_offset": resumed.offset,
                "upload_id": url.rsplit("/", 1)[1]}
    finally:
        proxy.shutdown()


def main():
    report = {"device_id": DEVICE_ID, "register": register()}
    signed = gpx(240, 60.17, 1800)
    report["signed_upload"] = signed_upload(signed, "indie-signed")
    resumable = gpx(300, 60.19, 1200)
    report["tuspy"] = tuspy_upload(resumable, "indie-tuspy", 4096)
    report["tuspy"]["bytes"] = len(resumable)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
