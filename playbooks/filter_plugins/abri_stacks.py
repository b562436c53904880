"""Ansible filters over the stack catalog (stacks/<name>/stack.yml manifests).

``abri_stack_order``  orders stack names so that providers come before their users
                      (``provides``/``uses`` in the manifests); ties keep alphabetical order.
``abri_image_ref``    the image reference of a manifest's ``image`` block, with the registry host
                      replaced by a mirror when one is set (the repository path is kept).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


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
        return {"abri_stack_order": abri_stack_order, "abri_image_ref": abri_image_ref}
