#!/usr/bin/env python3
"""Parses a Prometheus text exposition (stdin) with prometheus_client's
parser and prints every sample as one JSON object:
{"families": {name: type}, "samples": {"name{k=v,...}": value}}.
A malformed exposition makes the parser raise: exit status 1."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families, samples = {}, {}
for family in text_string_to_metric_families(text):
    families[family.name] = family.type
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        key = f"{s.name}{{{labels}}}" if labels else s.name
        if key in samples:
            sys.exit(f"duplicate sample {key}")
        samples[key] = s.value
json.dump({"families": families, "samples": samples}, sys.stdout)
