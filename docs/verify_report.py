#!/usr/bin/env python3
"""Checks a Footprint disclosure report without Footprint: Python's standard library for the
canonical form and the hashes, and OpenSSL for the Ed25519 signature.

    python3 docs/verify_report.py report.json [--public-key report-signing.key.pub]

It writes the report's members again in the canonical form (docs/REPORT.md), checks that this
gives the file's bytes, that the manifest's `report_sha256` and `manifest_sha256` hold, and that
the signature over the manifest's bytes verifies (with the key in the file, or the one given).
It re-derives nothing from the ledger: that is what `footprint report verify` adds.
Exit status 0 when everything holds.
"""

import argparse
import decimal
import hashlib
import json
import os
import subprocess
import sys
import tempfile


def canonical(value):
    """The canonical JSON text of a value read with decimals kept as written."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(canonical(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-8"))
        return "{" + ",".join(json.dumps(key, ensure_ascii=False) + ":" + canonical(value[key]) for key in keys) + "}"
    raise TypeError(f"not JSON: {value!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report")
    parser.add_argument("--public-key", help="SPKI PEM the report must be signed with")
    args = parser.parse_args()
    raw = open(args.report, "rb").read()
    document = json.loads(raw, parse_float=decimal.Decimal)
    problems = []
    if (canonical(document) + "\n").encode("utf-8") != raw:
        problems.append("file: not in canonical form (rewritten, its bytes differ)")
    report_bytes = canonical(document["report"]).encode("utf-8")
    manifest_bytes = canonical(document["manifest"]).encode("utf-8")
    if hashlib.sha256(report_bytes).hexdigest() != document["manifest"]["report_sha256"]:
        problems.append("report: its SHA-256 differs from manifest.report_sha256")
    if hashlib.sha256(manifest_bytes).hexdigest() != document["manifest_sha256"]:
        problems.append("manifest: its SHA-256 differs from manifest_sha256")
    signature = document.get("signature")
    if signature is None:
        problems.append("signature: none")
    else:
        with tempfile.TemporaryDirectory() as scratch:
            paths = {name: os.path.join(scratch, name) for name in ("manifest", "signature", "key.pem")}
            open(paths["manifest"], "wb").write(manifest_bytes)
            open(paths["signature"], "wb").write(bytes.fromhex(signature["value"]))
            key = open(args.public_key).read() if args.public_key else signature["public_key_pem"]
            open(paths["key.pem"], "w").write(key)
            checked = subprocess.run(
                ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", paths["key.pem"], "-rawin",
                 "-in", paths["manifest"], "-sigfile", paths["signature"]],
                capture_output=True, text=True)
            if checked.returncode != 0:
                problems.append("signature: OpenSSL does not verify it: " + (checked.stdout + checked.stderr).strip())
    for problem in problems:
        print("FAILED " + problem)
    if not problems:
        print(f"{args.report}: canonical, hashes hold, Ed25519 signature verified by OpenSSL "
              f"({document['manifest']['period_from']} to {document['manifest']['period_to']})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
