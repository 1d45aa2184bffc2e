"""Stand-in for ansible-test's pip bootstrap script where its download host is unreachable.

ansible-test sanity creates a virtual environment per test and bootstraps pip in it by
running a script it downloads from ci-files.testing.ansible.com, cached under
~/.ansible/test/cache/get_pip_<version>.py. CI machines reach only the package
registries, so `make sanity` puts this script in that cache: it installs pip with the
standard library's ensurepip, then the packages ansible-test asked for from the
configured package index.
"""

import ensurepip
import os
import subprocess
import sys

# get-pip.py options that plain `pip install` does not know.
_GET_PIP_ONLY = ("--no-setuptools", "--no-wheel")

# ensurepip disables pip's configuration in os.environ; the install below needs the
# machine's (index, certificates), so it gets the environment as it was.
environment = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
packages = [arg for arg in sys.argv[1:] if arg not in _GET_PIP_ONLY]
subprocess.check_call([sys.executable, "-m", "pip", "install", *packages], env=environment)
