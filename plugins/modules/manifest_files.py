#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: manifest_files
short_description: Write Kubernetes manifests into a directory, one file each
version_added: 0.1.0
description:
  - Writes each manifest as C(<dest>/<kind>-<name>.yaml) (kind lower-cased), with sorted keys so that
    rendering twice gives identical files. Used by the render mode of the collection's roles.
  - Only files whose content changes are written; the result lists them.
  - With O(validate), every manifest is first checked strictly (unknown fields are errors)
    against the OpenAPI schemas of those Kubernetes versions; when any is invalid, nothing is
    written and the failure lists every problem.
options:
  dest:
    description: Directory to write into; created when missing.
    type: path
    required: true
  manifests:
    description: The manifests, each a mapping with C(kind) and C(metadata.name).
    type: list
    elements: dict
    required: true
  mode:
    description: Permissions of the written files; a Secret is always written with V(0600), readable by its owner only.
    type: raw
    default: "0644"
  validate:
    description: Kubernetes versions (for example V(1.29.0)) to validate every manifest against; empty validates nothing.
    type: list
    elements: str
    default: []
requirements:
  - PyYAML
  - kubernetes-validate (only for O(validate))
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Reports which files would change without writing them.
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
"""

EXAMPLES = r"""
- name: Render the registries manifests
  aios.platform.manifest_files:
    dest: build/manifests/registries
    manifests: "{{ registries_manifests }}"
"""

RETURN = r"""
files:
  description: Every file the manifests map to.
  type: list
  elements: str
  returned: always
written:
  description: The files whose content changed (or would change in check mode).
  type: list
  elements: str
  returned: always
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core
    yaml = None

try:
    import kubernetes_validate
except ImportError:
    kubernetes_validate = None
    KUBERNETES_VALIDATE_ERROR = traceback.format_exc()
else:
    KUBERNETES_VALIDATE_ERROR = None


def file_name(manifest):
    """``<kind>-<name>.yaml``; ValueError naming what is missing."""
    kind = manifest.get("kind")
    name = (manifest.get("metadata") or {}).get("name")
    if not kind or not name:
        raise ValueError("every manifest needs kind and metadata.name; got kind=%r name=%r" % (kind, name))
    return "%s-%s.yaml" % (kind.lower(), name)


def problems(manifest, versions):
    """Every way ``manifest`` is invalid for the Kubernetes ``versions``."""
    found = []
    for version in versions:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            found.append("%s (Kubernetes %s): %s%s" % (file_name(manifest), version,
                                                       path + ": " if path else "", exc.message))
        except (kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.InvalidSchemaError) as exc:
            found.append("%s (Kubernetes %s): no schema: %s" % (file_name(manifest), version, exc))
    return found


def render(manifest):
    return yaml.safe_dump(manifest, default_flow_style=False, sort_keys=True, indent=2)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            manifests=dict(type="list", elements="dict", required=True),
            mode=dict(type="raw", default="0644"),
            validate=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    if yaml is None:
        module.fail_json(msg="PyYAML is required on the host that renders the manifests")
    dest = module.params["dest"]
    versions = module.params["validate"]
    if versions and kubernetes_validate is None:
        module.fail_json(msg=missing_required_lib("kubernetes-validate") + " (or validate nothing)",
                         exception=KUBERNETES_VALIDATE_ERROR)
    if versions:
        invalid = []
        for manifest in module.params["manifests"]:
            try:
                invalid.extend(problems(manifest, versions))
            except ValueError as exc:  # no kind or name
                module.fail_json(msg=str(exc))
        if invalid:
            module.fail_json(msg="%d manifest problem(s), nothing written: %s"
                             % (len(invalid), "; ".join(invalid)), problems=invalid)
    files, written, seen = [], [], {}
    for manifest in module.params["manifests"]:
        try:
            name = file_name(manifest)
        except ValueError as exc:
            module.fail_json(msg=str(exc))
        if name in seen:
            module.fail_json(msg="two manifests map to %s in %s" % (name, dest))
        seen[name] = True
        path = os.path.join(dest, name)
        files.append(path)
        secret = manifest.get("kind") == "Secret"
        attributes = module.load_file_common_arguments(
            dict(path=path, mode="0600" if secret else module.params["mode"]))
        content = render(manifest)
        try:
            with open(path, "r") as handle:
                unchanged = handle.read() == content
        except (IOError, OSError):
            unchanged = False
        if unchanged:
            if module.set_fs_attributes_if_different(attributes, False):
                written.append(path)
            continue
        written.append(path)
        if not module.check_mode:
            if not os.path.isdir(dest):
                os.makedirs(dest)
            tmp = path + ".tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            # A Secret's values are never readable by others, not even for a moment.
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(content)
            os.rename(tmp, path)
            module.set_fs_attributes_if_different(attributes, False)
    module.exit_json(changed=bool(written), files=files, written=written)


if __name__ == "__main__":
    main()
