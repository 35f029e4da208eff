"""Rendering deploy/k8s/ kustomizations: with ``kubectl kustomize`` / ``kustomize build`` when one is
installed, else with ``render_subset`` below.

``render_subset`` implements only what deploy/k8s/ uses: ``resources`` (files or kustomization
directories), ``configMapGenerator`` (``files``, ``behavior`` create or merge,
``disableNameSuffixHash: true``) and ``patches`` given as JSON 6902 files with a kind/name target.
Anything else is an error, so a kustomization that outgrows it fails loudly here; where a real
kustomize is present, tests/deploy compares the two renderings.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "classic": K8S / "overlays" / "classic",
                  "with-redis": K8S / "overlays" / "with-redis", "webhooks": K8S / "overlays" / "webhooks"}

_KNOWN = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render_kustomize(directory: Path) -> list[dict[str, Any]]:
    command = kustomize_command()
    assert command is not None
    out = subprocess.run([*command, str(directory)], check=True, capture_output=True, text=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_subset(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - _KNOWN
    assert not unknown, f"{directory}: render_subset does not implement {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(render_subset(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for generator in spec.get("configMapGenerator", []):
        assert set(generator) <= {"name", "files", "behavior", "options"}, generator
        assert generator.get("options") == {"disableNameSuffixHash": True}, generator
        data = {Path(f).name: (directory / f).read_text() for f in generator["files"]}
        behavior = generator.get("behavior", "create")
        if behavior == "create":
            objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
                            "data": data})
        else:
            assert behavior == "merge", generator
            [existing] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == generator["name"]]
            existing["data"].update(data)
    for patch in spec.get("patches", []):
        assert set(patch) == {"path", "target"}, patch
        target = patch["target"]
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        matched = [i for i, o in enumerate(objects)
                   if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        assert matched, f"{directory}: patch target {target} matches nothing"
        for i in matched:
            objects[i] = jsonpatch.apply_patch(objects[i], operations)
    return objects


def render(directory: Path) -> list[dict[str, Any]]:
    return render_kustomize(directory) if kustomize_command() else render_subset(directory)
