"""Ansible filters over the stack catalog (stacks/<name>/stack.yml manifests).

``abri_stack_order``  orders stack names so that providers come before their users
                      (``provides``/``uses`` in the manifests); ties keep alphabetical order.
``abri_catalog``      the catalog of a kit directory: stack name -> manifest.
``abri_mqtt_clients`` broker users for the stacks of a host that use mqtt: name -> password.
``abri_image_ref``    the image reference of a manifest's ``image`` block, with the registry host
                      replaced by a mirror when one is set (the repository path is kept).
"""

from __future__ import annotations

import glob
import os

import yaml
from ansible.errors import AnsibleFilterError


def abri_catalog(kit_dir):
    """Read every ``<kit_dir>/stacks/*/stack.yml``: a dict stack name -> manifest."""
    catalog = {}
    for path in sorted(glob.glob(os.path.join(str(kit_dir), "stacks", "*", "stack.yml"))):
        name = os.path.basename(os.path.dirname(path))
        try:
            with open(path, encoding="utf-8") as handle:
                manifest = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleFilterError(f"cannot read the manifest {path}: {exc}") from exc
        if not isinstance(manifest, dict):
            raise AnsibleFilterError(f"the manifest {path} is not a mapping")
        catalog[name] = manifest
    if not catalog:
        raise AnsibleFilterError(f"no stacks/*/stack.yml under {kit_dir!r} (abri_kit_dir)")
    return catalog


def abri_mqtt_clients(names, catalog, secrets):
    """Broker users of the stacks ``names`` that use mqtt: stack name -> its mqtt_password."""
    clients = {}
    for name in sorted(names):
        if "mqtt" in (catalog.get(name, {}).get("uses") or []):
            password = ((secrets or {}).get(name) or {}).get("mqtt_password")
            if not password:
                raise AnsibleFilterError(
                    f"abri_secrets.{name}.mqtt_password is missing (stack {name} uses mqtt)"
                )
            clients[name] = password
    return clients


def abri_stack_order(names, manifests):
    """Order ``names`` (stacks to deploy) by dependency; ``manifests`` maps name -> manifest."""
    names = sorted(set(names))
    provider_of = {}
    for name in names:
        for capability in manifests.get(name, {}).get("provides", []) or []:
            provider_of.setdefault(capability, name)
    deps = {}
    for name in names:
        if name not in manifests:
            raise AnsibleFilterError(f"stack {name!r} is not in the catalog")
        uses = manifests[name].get("uses", []) or []
        deps[name] = {provider_of[c] for c in uses if c in provider_of and provider_of[c] != name}
    ordered, done = [], set()
    while len(ordered) < len(names):
        ready = [n for n in names if n not in done and deps[n] <= done]
        if not ready:
            cycle = sorted(n for n in names if n not in done)
            raise AnsibleFilterError(f"stack dependencies form a cycle: {', '.join(cycle)}")
        ordered.append(ready[0])
        done.add(ready[0])
    return ordered


def abri_image_ref(image, mirror=""):
    """``registry/repository:tag`` of a manifest image, the registry replaced by ``mirror``."""
    try:
        registry = image.get("registry") or "docker.io"
        repository = image["repository"]
        tag = image["tag"]
    except (AttributeError, KeyError, TypeError) as exc:
        raise AnsibleFilterError(f"manifest image needs repository and tag: {exc}") from exc
    host = (mirror or "").strip().rstrip("/") or registry
    if "://" in host:
        raise AnsibleFilterError(f"registry mirror must be host[:port], not a URL: {host!r}")
    return f"{host}/{repository}:{tag}"


class FilterModule:
    """abri's catalog filters."""

    def filters(self):
        return {
            "abri_catalog": abri_catalog,
            "abri_image_ref": abri_image_ref,
            "abri_mqtt_clients": abri_mqtt_clients,
            "abri_stack_order": abri_stack_order,
        }
