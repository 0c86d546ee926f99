"""Scrapes a Prometheus text exposition and prints it as JSON, parsed by prometheus_client's own parser.

Usage: metrics_scrape.py URL
Prints {"content_type": ..., "families": {name: type}, "samples": [[name, {labels}, value], ...]}.
A parse error (the exposition is not valid text format) exits non-zero with the parser's message.
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as resp:
        content_type = resp.headers.get("Content-Type", "")
        text = resp.read().decode("utf-8")
    families = {}
    samples = []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples.append([s.name, dict(s.labels), s.value])
    json.dump({"content_type": content_type, "families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
