"""A small kustomize, enough for deploy/k8s/, so CI can render the manifests with only Python.

Supports exactly the kustomization fields deploy/k8s uses, and refuses any other (so a new field
cannot be silently ignored): `resources` (files and directories), `namespace`, `labels`
(`pairs`, with `includeSelectors: false`), `images` (`name`, `newName`, `newTag`) and `patches`
(`path` or inline `patch`, with or without a `target` by `kind`/`name`/`group`): strategic-merge
patches (maps merged, `containers`/`env`/`ports`/`volumes`/`volumeMounts` merged by `name`, other
lists replaced, `$patch: delete` removes the resource) and JSON 6902 `add`/`replace`/`remove`.

tests/deploy/test_k8s.py compares its output with the real `kubectl kustomize` wherever kubectl
is installed, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "ports": "name",
              "volumes": "name", "volumeMounts": "name"}


class Unsupported(Exception):
    pass


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise Unsupported(f"{directory}: kustomize_lite does not implement {sorted(unknown)}")
    resources: list[dict] = []
    for entry in kustomization.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for patch in kustomization.get("patches") or []:
        text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
        resources = apply_patch(resources, yaml.safe_load(text), patch.get("target"))
    for group in kustomization.get("labels") or []:
        if group.get("includeSelectors") or group.get("includeTemplates"):
            raise Unsupported("labels with includeSelectors/includeTemplates")
        for resource in resources:
            resource.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
    for image in kustomization.get("images") or []:
        for resource in resources:
            for container in containers(resource):
                set_image(container, image)
    if "namespace" in kustomization:
        for resource in resources:
            resource.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return resources


def containers(resource: dict) -> list[dict]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("containers", []), *spec.get("initContainers", [])]


def set_image(container: dict, image: dict) -> None:
    name, _, tag = container["image"].partition(":")
    if name != image["name"]:
        return
    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag or 'latest')}"


def matches(resource: dict, target: dict | None, patch: dict | list) -> bool:
    if target is None:
        return (
            isinstance(patch, dict)
            and resource["kind"] == patch["kind"]
            and resource["metadata"]["name"] == patch["metadata"]["name"]
        )
    group = resource["apiVersion"].rpartition("/")[0]
    return all(
        [
            target.get("kind", resource["kind"]) == resource["kind"],
            target.get("name", resource["metadata"]["name"]) == resource["metadata"]["name"],
            target.get("group", group) == group,
        ]
    )


def apply_patch(resources: list[dict], patch: dict | list, target: dict | None) -> list[dict]:
    result = []
    hit = False
    for resource in resources:
        if not matches(resource, target, patch):
            result.append(resource)
            continue
        hit = True
        if isinstance(patch, list):
            result.append(json6902(resource, patch))
        elif patch.get("$patch") == "delete":
            continue
        else:
            body = {key: value for key, value in patch.items() if key not in ("apiVersion", "kind", "metadata")}
            merged = strategic_merge(resource, body)
            if target is None:
                metadata = {k: v for k, v in patch.get("metadata", {}).items() if k != "name"}
                merged["metadata"] = strategic_merge(merged["metadata"], metadata)
            result.append(merged)
    if not hit:
        raise Unsupported(f"a patch matches no resource: target={target} patch={patch}")
    return result


def strategic_merge(base: object, patch: object, key: str | None = None) -> object:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for name, value in patch.items():
            merged[name] = strategic_merge(merged[name], value, name) if name in merged else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        merged = copy.deepcopy(base)
        for item in patch:
            for index, existing in enumerate(merged):
                if existing.get(merge_key) == item.get(merge_key):
                    merged[index] = strategic_merge(existing, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def json6902(resource: dict, operations: list[dict]) -> dict:
    patched = copy.deepcopy(resource)
    for operation in operations:
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        node = patched
        for part in parents:
            if operation["op"] == "add":
                node = node.setdefault(part, {})
            else:
                node = node[part]
        if operation["op"] in ("add", "replace"):
            node[last] = copy.deepcopy(operation["value"])
        elif operation["op"] == "remove":
            del node[last]
        else:
            raise Unsupported(f"JSON patch op {operation['op']!r}")
    return patched
