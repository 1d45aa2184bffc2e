# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes client of the modules that read nodes or patch Deployments directly."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
except ImportError:
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None


def _load_configuration(module):
    """Load the module's kubeconfig/context, in-cluster auth, or the default kubeconfig;
    fails the module when the kubernetes library is missing."""
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    kubeconfig, context = module.params.get("kubeconfig"), module.params.get("context")
    try:
        if kubeconfig or context:
            k8s_config.load_kube_config(kubeconfig, context)
        else:
            try:
                k8s_config.load_incluster_config()
            except k8s_config.ConfigException:
                k8s_config.load_kube_config()
    except Exception as exc:  # missing or broken kubeconfig, unknown context ...
        module.fail_json(msg="cannot load the Kubernetes configuration: %s" % exc)


def core_v1(module):
    """A CoreV1Api (nodes) configured for the module."""
    _load_configuration(module)
    return k8s_client.CoreV1Api()


def apps_v1(module):
    """An AppsV1Api (Deployments) configured for the module."""
    _load_configuration(module)
    return k8s_client.AppsV1Api()
