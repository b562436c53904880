#!/usr/bin/python
"""abri's image module: the images a host's stacks run, loaded from a bundle when missing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_images
short_description: Tell which pinned images a host lacks, and load them from an image bundle
description:
  - For hosts with no registry access. I(images) maps each image reference the host's
    compose files name to the image id it must have (the bundle's config digest, written
    by C(abri images bundle)). The module asks the host's Docker engine (its API, one
    request per image) which of them it lacks or holds with another id.
  - With I(load), the archive at that path on the host (the bundle, copied there by the
    playbook only when something is missing) is loaded with C(docker load), then every
    image is checked again; one still missing or with another id fails the module, naming
    it. Nothing is loaded when nothing is missing (changed=false).
  - Works while holding the host's abri lock (C(/run/lock/abri.lock)).
  - Check mode reports what would be loaded.
options:
  images:
    description: Image reference (as compose.yml names it) -> the image id it must have.
    type: dict
    required: true
  load:
    description: Path of the bundle on the host to load the missing images from; empty
      only reports what is missing.
    type: str
    default: ""
author: abri
"""

EXAMPLES = r"""
- name: Find the images the host lacks
  abri_images:
    images: "{{ abri_image_bundle.images }}"
  register: abri_images
"""

RETURN = r"""
missing:
  description: The references the host lacked (before a load).
  type: list
  returned: always
changes:
  description: What changed, one line each.
  type: list
  returned: always
"""

import subprocess
import urllib.parse

from ansible.module_utils.abri_docker import DockerError, get
from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.basic import AnsibleModule


def image_id(ref):
    """The id of the image the engine has under ref, or None."""
    try:
        return get("/images/" + urllib.parse.quote(ref, safe="/:@") + "/json").get("Id")
    except DockerError as exc:
        if exc.status == 404:
            return None
        raise


def lacking(images):
    return sorted(ref for ref, want in images.items() if image_id(ref) != want)


def main():
    module = AnsibleModule(
        argument_spec={
            "images": {"type": "dict", "required": True},
            "load": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    images = {str(k): str(v) for k, v in (module.params["images"] or {}).items()}
    path = module.params["load"]
    changes = []
    try:
        missing = lacking(images)
        if missing and path:
            changes.append(f"load {', '.join(missing)} from the image bundle")
            if not module.check_mode:
                with host_lock(module, "abri_images"):
                    proc = subprocess.run(["docker", "load", "-q", "-i", path],
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        module.fail_json(msg=f"docker load of the image bundle {path} failed: "
                                             f"{proc.stderr.strip()[-2000:]}", missing=missing)
                still = lacking(images)
                if still:
                    module.fail_json(msg="after loading the image bundle the host still lacks "
                                         + ", ".join(f"{r} (id {images[r][:19]})" for r in still)
                                         + "; write the bundle again with 'abri images bundle'",
                                     missing=missing)
    except DockerError as exc:
        module.fail_json(msg=f"asking the Docker engine for the images failed: {exc}")
    module.exit_json(changed=bool(changes), changes=changes, missing=missing)


if __name__ == "__main__":
    main()
