#!/usr/bin/env python3
"""Validates an OpenADR 3 report (JSON) against the `report` schema of the OpenADR 3.0.1
specification (docs/openadr3/openadr3-3.0.1-schemas.json, the OpenAPI components unchanged).

    python3 scripts/check_openadr_report.py REPORT.json

Prints "valid" or each violation with its JSON path, and exits 1 on any. Needs `jsonschema`.
"""

import json
import pathlib
import sys

import jsonschema

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "docs/openadr3/openadr3-3.0.1-schemas.json"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    spec = json.loads(SCHEMAS.read_text())
    schema = {"$ref": "#/components/schemas/report", "components": spec["components"]}
    report = json.loads(pathlib.Path(sys.argv[1]).read_text())
    # OpenAPI 3.0 schema objects are a draft-4 dialect (`nullable` aside, which only loosens).
    validator = jsonschema.Draft4Validator(schema)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    for error in errors:
        path = "/".join(str(p) for p in error.absolute_path) or "(root)"
        print(f"{path}: {error.message}")
    if errors:
        sys.exit(1)
    print("valid")


if __name__ == "__main__":
    main()
