"""Write prometheusrule.yaml, a prometheus-operator PrometheusRule, from alerts.yaml (the one place rules are edited).

    python deploy/prometheus/generate.py            # rewrite prometheusrule.yaml
    python deploy/prometheus/generate.py --check    # exit 1 if prometheusrule.yaml is not what alerts.yaml gives

The rule file's text goes under ``spec:`` indented, comments and all, so the manifest reads like the file it
comes from; the result is then parsed back and must equal the rule file, or nothing is written. Kept here,
beside its input, rather than in the ``proxy`` package: it turns one repository file into another, the wheel
ships neither, and the sidecar never runs it. Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = """\
# Generated from alerts.yaml by generate.py: edit alerts.yaml, then run `python deploy/prometheus/generate.py`
# (tests/deploy/test_prometheusrule.py fails while the two disagree).
# prometheus-operator loads it when its Prometheus resource's ruleSelector and ruleNamespaceSelector select it:
# kube-prometheus-stack selects the label `release: <its Helm release name>` by default; add that label here
# (or with kustomize) if yours does.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: resilience-proxy
  labels:
    app.kubernetes.io/name: resilience-proxy
    app.kubernetes.io/component: alerting-rules
spec:
"""


class GenerateError(Exception):
    pass


def rules_body(source: str) -> str:
    """The rule file without its leading comment block (it is about the file itself, not the rules)."""
    lines = source.splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    if any(line.startswith(("---", "...", "%")) for line in lines):
        raise GenerateError("alerts.yaml must be one YAML document without directives")
    return "\n".join(lines)


def generate(source: str) -> str:
    """The PrometheusRule manifest for the Prometheus rule file ``source``."""
    rules = yaml.safe_load(source)
    if not isinstance(rules, dict) or set(rules) != {"groups"}:
        raise GenerateError("alerts.yaml must hold exactly one key, groups")
    body = "\n".join(f"  {line}" if line.strip() else "" for line in rules_body(source).splitlines())
    manifest = HEADER + body + "\n"
    if yaml.safe_load(manifest)["spec"] != rules:
        raise GenerateError("indenting alerts.yaml under spec: changed its meaning (a flow-style or "
                            "unusually indented block?): write it in plain block style")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=HERE / "alerts.yaml", help="the Prometheus rule file")
    parser.add_argument("--output", type=Path, default=HERE / "prometheusrule.yaml", help="the manifest to write")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the manifest differs")
    args = parser.parse_args(argv)
    try:
        manifest = generate(args.source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, GenerateError) as error:
        print(f"{args.source}: {error}", file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != manifest:
            print(f"{args.output} is out of date with {args.source}: run python deploy/prometheus/generate.py",
                  file=sys.stderr)
            return 1
        return 0
    args.output.write_text(manifest, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
