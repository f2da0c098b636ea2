#!/usr/bin/env python3
"""Checks a Footprint disclosure report without Footprint: Python's standard library for the
canonical form and the hashes, and OpenSSL for the Ed25519 signature.

    python3 docs/verify_report.py report.json [--public-key report-signing.key.pub]

It writes the report's members again in the canonical form (docs/REPORT.md), checks that this
gives the file's bytes, that the manifest's `report_sha256` and `manifest_sha256` hold, and that
the signature over the manifest's bytes verifies (with the key in the file, or the one given).
It also does the report's arithmetic again from its exact integers, with Python's own decimals:
every kWh, m3 and kg figure from its mJ, mL and mg; PUE, WUE, CUE; the annex's energy totals;
the conservation lines. It re-derives nothing from the ledger: that is what `footprint report
verify` adds. Exit status 0 when everything holds.
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


def rounded(numerator, denominator, places):
    """numerator / denominator rounded half to even to `places` places, as the report writes it."""
    quotient = decimal.Decimal(numerator) / decimal.Decimal(denominator)
    return quotient.quantize(decimal.Decimal(1).scaleb(-places), rounding=decimal.ROUND_HALF_EVEN)


def arithmetic(report):
    """Problems found doing the report's arithmetic again."""
    problems = []
    per_unit = {"mJ": (3_600_000_000, "kWh"), "mL": (1_000_000, "m3"), "mg": (1_000_000, "kgCO2e")}

    def check(name, reported, expected):
        if reported is not None and expected is not None and decimal.Decimal(reported) != expected:
            problems.append(f"{name}: the report says {reported}, the arithmetic gives {expected}")

    sections = [report["facility"]["kpis"], report["carbon"]["instruments"],
                {key: report["carbon"][key] for key in ("location_based", "market_based", "embodied")}]
    for section in sections:
        for key, field in section.items():
            exact = field.get("exact")
            if exact and field["value"] is not None and exact["unit"] in per_unit:
                divisor, unit = per_unit[exact["unit"]]
                if field["unit"] == unit:
                    check(key, field["value"], rounded(exact["value"], divisor, 3))
    kpis, indicators = report["facility"]["kpis"], report["facility"]["indicators"]
    eit = kpis["eit"]["exact"]["value"]
    if kpis["edc"]["exact"] and eit:
        check("pue", indicators["pue"]["value"], rounded(kpis["edc"]["exact"]["value"], eit, 4))
    if kpis["win"]["exact"] and eit:
        check("wue", indicators["wue"]["value"], rounded(kpis["win"]["exact"]["value"] * 3_600_000, eit, 4))
    if eit:
        location = report["carbon"]["location_based"]["exact"]["value"]
        check("cue_location", indicators["cue_location"]["value"], rounded(location * 3_600, eit, 4))
    for index, job in enumerate(report["jobs"]):
        energy = job["energy_mj"]
        parts = energy["gpu"] + energy["cpu"] + energy["dram"] + energy["host_remainder"] + energy["facility_overhead"]
        if parts != energy["total"]:
            problems.append(f"jobs[{index}].energy_mj: the parts add up to {parts}, not {energy['total']}")
        check(f"jobs[{index}].energy_kwh.total", job["energy_kwh"]["total"], rounded(energy["total"], 3_600_000_000, 3))
    totals = {
        "energy": sum(job["energy_mj"]["total"] for job in report["jobs"]),
        "water": sum(job["water_ml"] for job in report["jobs"]),
        "co2e_location_based": sum(job["co2e_mg"]["location_based"] for job in report["jobs"]),
        "co2e_market_based": sum(job["co2e_mg"]["market_based"] for job in report["jobs"]),
        "co2e_embodied": sum(job["co2e_mg"]["embodied"] for job in report["jobs"]),
    }
    for quantity, line in report["conservation"].items():
        if line["jobs"] + line["idle"] + line["unattributed"] != line["site"]:
            problems.append(f"conservation.{quantity}: jobs + idle + unattributed != site")
        if totals[quantity] != line["jobs"] or line["jobs_in_annex"] != line["jobs"]:
            problems.append(f"conservation.{quantity}: the annex's jobs add up to {totals[quantity]}, not {line['jobs']}")
    return problems


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
    problems.extend(arithmetic(document["report"]))
    for problem in problems:
        print("FAILED " + problem)
    if not problems:
        print(f"{args.report}: canonical, hashes hold, Ed25519 signature verified by OpenSSL, "
              f"arithmetic redone ({len(document['report']['jobs'])} jobs) "
              f"({document['manifest']['period_from']} to {document['manifest']['period_to']})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
