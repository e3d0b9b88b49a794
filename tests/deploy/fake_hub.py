"""A local stand-in for the few Hugging Face Hub endpoints `tinycats export hf --push` uses.

It answers as the Hub does for huggingface_hub 2.x (read in 2.4.0; the client's own code
is cited per endpoint), keeps every request, and stores what was committed, so a test
can assert exactly which files reached the "Hub" and with which bytes:

- POST /api/repos/create (hf_api.HfApi.create_repo): 401 without a token, 409 when the
  repo exists (the client accepts it with exist_ok), else {"url": ...}.
- POST /api/validate-yaml (HfApi._validate_yaml): the card's front matter must parse.
- POST /api/models/<id>/preupload/<rev> (_commit_api._fetch_upload_modes): "lfs" for
  binary samples (a NUL byte, git's own test), files over 10 MiB and the LFS patterns of
  the Hub's default .gitattributes; "regular" otherwise.
- POST /<id>.git/info/lfs/objects/batch (lfs.post_lfs_batch_info): basic transfer, an
  upload href on this server and a verify href.
- PUT /lfs-upload/<oid> (lfs._upload_single_part) and POST /lfs-verify (lfs_upload):
  the bytes must hash to the oid they were announced with.
- POST /api/models/<id>/commit/<rev> (_commit_api._send_commit): ndjson header, then
  "file" (base64) and "lfsFile" (oid, which must have been uploaded) lines.

The Xet protocol (hf_xet's content-addressed store) is out of reach of a fake: tests run
the client with HF_HUB_DISABLE_XET=1, which takes the LFS batch path above.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

LFS_PATTERNS = ("*.safetensors", "*.onnx", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.zip")
"""From the .gitattributes the Hub writes into every new model repo."""
LFS_SIZE = 10 * 2**20


@dataclass
class FakeHub:
    token: str
    repos: dict[str, dict] = field(default_factory=dict)  # repo_id -> {"private", "files"}
    lfs: dict[str, bytes] = field(default_factory=dict)  # oid -> bytes
    requests: list[tuple[str, str]] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    url: str = ""


def start(token: str) -> tuple[FakeHub, ThreadingHTTPServer]:
    hub = FakeHub(token=token)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _json(self, status: int, doc: object) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if self.headers.get("authorization") == f"Bearer {hub.token}":
                return True
            self._json(401, {"error": "Invalid username or password."})
            return False

        def do_PUT(self) -> None:
            hub.requests.append(("PUT", self.path))
            data = self._body()
            oid = self.path.rsplit("/", 1)[-1]
            if hashlib.sha256(data).hexdigest() != oid:
                self._json(400, {"error": "sha256 does not match the oid"})
                return
            hub.lfs[oid] = data
            self._json(200, {})

        def do_POST(self) -> None:
            hub.requests.append(("POST", self.path.split("?")[0]))
            path = self.path.split("?")[0]
            body = self._body()
            if path == "/api/validate-yaml":
                content = json.loads(body)["content"]
                match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
                try:
                    yaml.safe_load(match.group(1) if match else "")
                except yaml.YAMLError as err:
                    self._json(400, {"errors": [{"message": str(err)}]})
                    return
                self._json(200, {"errors": [], "warnings": []})
                return
            if not self._authorised():
                return
            if path == "/api/repos/create":
                doc = json.loads(body)
                repo_id = (
                    f"{doc['organization']}/{doc['name']}"
                    if doc.get("organization")
                    else doc["name"]
                )
                if repo_id in hub.repos:
                    self._json(409, {"error": "You already created this model repo"})
                    return
                hub.repos[repo_id] = {"private": doc.get("visibility") == "private", "files": {}}
                self._json(200, {"url": f"{hub.url}/{repo_id}"})
                return
            if m := re.fullmatch(r"/api/models/(.+)/preupload/([^/]+)", path):
                files = json.loads(body)["files"]
                modes = []
                for f in files:
                    sample = base64.b64decode(f["sample"])
                    lfs = (
                        b"\x00" in sample
                        or f["size"] > LFS_SIZE
                        or any(fnmatch.fnmatch(f["path"], p) for p in LFS_PATTERNS)
                    )
                    modes.append(
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False,
                        }
                    )
                self._json(200, {"files": modes, "commitOid": "0" * 40})
                return
            if m := re.fullmatch(r"/(.+)\.git/info/lfs/objects/batch", path):
                objects = json.loads(body)["objects"]
                self._json(
                    200,
                    {
                        "transfer": "basic",
                        "objects": [
                            {
                                "oid": o["oid"],
                                "size": o["size"],
                                "actions": {
                                    "upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"},
                                    "verify": {"href": f"{hub.url}/lfs-verify"},
                                },
                            }
                            for o in objects
                        ],
                    },
                )
                return
            if path == "/lfs-verify":
                doc = json.loads(body)
                ok = len(hub.lfs.get(doc["oid"], b"")) == doc["size"]
                self._json(200 if ok else 404, {})
                return
            if m := re.fullmatch(r"/api/models/(.+)/commit/([^/]+)", path):
                repo = hub.repos.get(m.group(1))
                if repo is None:
                    self._json(404, {"error": "Repository not found"})
                    return
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                header = lines[0]["value"]
                for line in lines[1:]:
                    value = line["value"]
                    if line["key"] == "file":
                        repo["files"][value["path"]] = base64.b64decode(value["content"])
                    elif line["key"] == "lfsFile":
                        if value["oid"] not in hub.lfs:
                            self._json(400, {"error": f"LFS object {value['oid']} not uploaded"})
                            return
                        repo["files"][value["path"]] = hub.lfs[value["oid"]]
                hub.commits.append(
                    {"repo": m.group(1), "summary": header["summary"], "lines": lines}
                )
                oid = hashlib.sha1(body).hexdigest()
                self._json(
                    200,
                    {
                        "commitUrl": f"{hub.url}/{m.group(1)}/commit/{oid}",
                        "commitOid": oid,
                        "pullRequestUrl": None,
                    },
                )
                return
            self._json(404, {"error": f"no fake for POST {path}"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hub, server
