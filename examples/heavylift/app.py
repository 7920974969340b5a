#!/usr/bin/env python3
"""heavylift: an example app with the command-line shape of the original guide.

    python3 app.py -i input.jsonl -o output.jsonl -c config.json

Reads one JSON object per line ({"id": ..., "text": ...}), scores each text against the
config's keywords, and writes one JSON object per line. CSV input (a `text` column) works too.
Exits non-zero on a record it cannot read, naming the line, so failures show in stderr.
"""
import argparse
import csv
import json
import sys


def score(text: str, keywords: list[str]) -> float:
    words = text.lower().split()
    if not words:
        return 0.0
    hits = sum(1 for w in words if w.strip(".,;:!?") in keywords)
    return round(hits / len(words), 4)


def records(path: str):
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                yield n, row
        return
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON ({e.msg})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-i", "--input", required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("-c", "--config")
    args = parser.parse_args()
    config = {"keywords": ["batch", "azure", "parallel"], "threshold": 0.1}
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            config.update(json.load(f))
    keywords = [k.lower() for k in config["keywords"]]
    with open(args.output, "w", encoding="utf-8") as out:
        for n, rec in records(args.input):
            if not isinstance(rec, dict) or "text" not in rec:
                sys.exit(f"{args.input}:{n}: expected an object with a 'text' field")
            if config.get("fail_on") and rec.get("id") == config["fail_on"]:
                sys.exit(f"{args.input}:{n}: asked to fail on id {rec['id']!r}")
            s = score(str(rec["text"]), keywords)
            out.write(json.dumps({"id": rec.get("id"), "score": s, "hot": s >= config["threshold"]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
